//! A hung or misbehaving runtime inside a real shim: the affected RPC ends with
//! DEADLINE_EXCEEDED carrying what the runtime said, other containers of the same shim keep
//! answering meanwhile, and a runtime that floods stderr or fails with garbage gives a clear
//! error. The runtime is a wrapper in front of runc on the shims' PATH, which misbehaves only
//! for containers whose id says so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::*;

fn install_wrapper(c: &Ctd) {
    let runc = which("runc").expect("runc");
    let script = format!(
        r#"#!/bin/sh
# Misbehave for containers named hang-*, flood-*, garbage-* on pause; otherwise real runc.
sub=""; last=""
for a in "$@"; do
  case "$a" in create|start|exec|kill|delete|pause|resume|ps|update) [ -z "$sub" ] && sub="$a";; esac
  last="$a"
done
if [ "$sub" = pause ]; then
  case "$last" in
    hang-*) echo "runc: stuck talking to the kernel" >&2; exec sleep 300;;
    flood-*) head -c 5000000 /dev/zero | tr '\0' 'E' >&2; exit 1;;
    garbage-*) printf '\377\376 not json at all\n' >&2; exit 3;;
  esac
fi
exec {runc} "$@"
"#,
        runc = runc.display()
    );
    let p = c.shims.join("runc");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_hung_runtime_call_times_out_and_the_shim_keeps_serving_others() {
    let Some(c) = Ctd::start_env(Shims::Ours, &[("SHIMGATE_RUNTIME_SHORT_TIMEOUT", "2")]) else {
        return;
    };
    install_wrapper(&c);
    let group = c.id("grp");
    let ann = format!("io.containerd.runc.v2.group={group}");
    let stuck = c.id("hang");
    let other = c.id("fine");
    for id in [&stuck, &other] {
        c.run_detached(RUNC_V2, id, &["--annotation", &ann], &["sleep", "300"]);
    }
    assert_eq!(c.shim_pids().len(), 1, "both containers in one shim");

    // Pause of the stuck one hangs in the runtime; meanwhile the other container answers.
    let t = Instant::now();
    let pause = std::thread::scope(|s| {
        let h = s.spawn(|| c.ctr(&["task", "pause", &stuck]));
        std::thread::sleep(Duration::from_millis(300));
        let t2 = Instant::now();
        let e = c.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "meanwhile",
            &other,
            "sh",
            "-c",
            "echo ok",
        ]);
        assert!(e.code == 0 && e.stdout == b"ok\n", "{}", e.brief());
        assert!(
            t2.elapsed() < Duration::from_secs(2),
            "other container waited {:?}",
            t2.elapsed()
        );
        h.join().unwrap()
    });
    assert_ne!(pause.code, 0);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "pause took {:?}",
        t.elapsed()
    );
    let err = pause.err();
    assert!(err.contains("deadline exceeded"), "{}", pause.brief());
    assert!(
        err.contains("stuck talking to the kernel"),
        "the runtime's own words: {}",
        pause.brief()
    );
    // The stuck container is still running and controllable.
    assert!(c.wait_status(&stuck, "RUNNING", Duration::from_secs(5)));
    c.assert_clean();
}

#[test]
fn a_flooding_or_garbage_runtime_gives_a_clear_error() {
    let Some(c) = Ctd::start() else { return };
    install_wrapper(&c);
    let flood = c.id("flood");
    let garbage = c.id("garbage");
    for id in [&flood, &garbage] {
        c.run_detached(RUNC_V2, id, &[], &["sleep", "300"]);
    }
    let r = c.ctr(&["task", "pause", &flood]);
    assert_ne!(r.code, 0);
    assert!(
        r.err().contains("OCI runtime pause failed: EEEE"),
        "{}",
        r.brief()
    );
    assert!(r.stderr.len() < 5 << 20, "the flood was capped");
    let r = c.ctr(&["task", "pause", &garbage]);
    assert_ne!(r.code, 0);
    assert!(r.err().contains("not json at all"), "{}", r.brief());
    for id in [&flood, &garbage] {
        assert!(c.wait_status(id, "RUNNING", Duration::from_secs(5)));
    }
    c.assert_clean();
}
