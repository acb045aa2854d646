//! The runc driver against a fake runc script: argument order, pid files, error text from
//! `log.json`, kill classification, deadlines, and output capping. The fake records its argv
//! and behaves according to `FAKE_RUNC_MODE` written into its directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use super::*;
use crate::reaper::Reaper;

const FAKE: &str = r#"#!/bin/sh
# fake runc: record argv, then act on the mode file next to this script
dir=$(dirname "$0")
printf '%s\n' "$@" > "$dir/argv.$$"
mv "$dir/argv.$$" "$dir/argv"
mode=$(cat "$dir/mode" 2>/dev/null)
log=""
prev=""
for a in "$@"; do
  [ "$prev" = "--log" ] && log="$a"
  [ "$prev" = "--pid-file" ] && pidfile="$a"
  prev="$a"
done
case "$mode" in
  ok)
    [ -n "$pidfile" ] && printf 4242 > "$pidfile"
    case " $* " in *" ps "*) echo '[1,2,3]';; esac
    exit 0;;
  fail)
    echo '{"level":"warning","msg":"noise","time":"t"}' >> "$log"
    echo '{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"t"}' >> "$log"
    exit 1;;
  notrunning)
    echo '{"level":"error","msg":"container not running","time":"t"}' >> "$log"
    exit 1;;
  gone)
    echo '{"level":"error","msg":"container \"x\" does not exist","time":"t"}' >> "$log"
    exit 1;;
  garbage)
    echo 'panic: something broke' >&2
    exit 2;;
  flood)
    head -c 10000000 /dev/zero | tr '\0' 'x' >&2
    exit 1;;
  hang)
    exec sleep 60;;
  stdin)
    cat > "$dir/stdin"
    exit 0;;
esac
exit 0
"#;

/// One reaper for this test binary, polling only claimed pids (see `start_polling_thread`).
fn spawner() -> Spawner {
    static R: OnceLock<Reaper> = OnceLock::new();
    let r = R.get_or_init(|| {
        let r = Reaper::new();
        r.start_polling_thread(Duration::from_millis(5)).unwrap();
        r
    });
    Spawner::new(r.clone())
}

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    fn new(mode: &str) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("runc");
        std::fs::write(&bin, FAKE).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("mode"), mode).unwrap();
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        Fake { dir }
    }
    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn runc(&self) -> Runc {
        let mut r = Runc::new(
            spawner(),
            self.dir.path().join("runc").to_str().unwrap(),
            PathBuf::from("/run/containerd/runc/ns1"),
            &self.bundle(),
            Some("/usr/sbin/criu".into()),
            true,
        );
        r.deadlines = Deadlines {
            long: Duration::from_secs(5),
            short: Duration::from_millis(300),
        };
        r
    }
    fn argv(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("argv"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn global_flags_come_first_in_go_order() {
    let f = Fake::new("ok");
    rt().block_on(f.runc().start("c1")).unwrap();
    let log = f.bundle().join("log.json");
    assert_eq!(
        f.argv(),
        [
            "--root",
            "/run/containerd/runc/ns1",
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "--criu",
            "/usr/sbin/criu",
            "--systemd-cgroup",
            "start",
            "c1"
        ]
    );
}

#[test]
fn create_passes_bundle_pid_file_and_flags() {
    let f = Fake::new("ok");
    let pid_file = f.bundle().join("init.pid");
    rt().block_on(f.runc().create(
        "c1",
        &f.bundle(),
        CreateOpts {
            pid_file: pid_file.clone(),
            console_socket: Some("/tmp/pty1/pty.sock".into()),
            no_pivot: true,
            no_new_keyring: true,
            ..Default::default()
        },
    ))
    .unwrap();
    let a = f.argv();
    let tail: Vec<&str> = a[9..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "create",
            "--bundle",
            f.bundle().to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
            "--console-socket",
            "/tmp/pty1/pty.sock",
            "--no-pivot",
            "--no-new-keyring",
            "c1"
        ]
    );
    assert_eq!(std::fs::read_to_string(pid_file).unwrap(), "4242");
}

#[test]
fn exec_writes_a_private_process_file_and_removes_it() {
    let f = Fake::new("ok");
    let pid_file = f.bundle().join("e1.pid");
    rt().block_on(f.runc().exec(
        "c1",
        &f.bundle(),
        br#"{"args":["true"]}"#,
        ExecOpts {
            pid_file,
            ..Default::default()
        },
    ))
    .unwrap();
    let a = f.argv();
    assert_eq!(a[9], "exec");
    assert_eq!(a[10], "--process");
    assert!(a[11].ends_with(".e1.process.json"));
    assert!(!Path::new(&a[11]).exists(), "process file left behind");
    assert_eq!(
        &a[12..],
        [
            "--detach",
            "--pid-file",
            f.bundle().join("e1.pid").to_str().unwrap(),
            "c1"
        ]
    );
}

#[test]
fn failure_text_comes_from_log_json() {
    let f = Fake::new("fail");
    let e = rt().block_on(f.runc().start("c1")).unwrap_err();
    assert_eq!(e.kind(), Kind::Unknown);
    assert_eq!(
        e.message(),
        r#"OCI runtime start failed: exec: "nope": executable file not found in $PATH"#
    );
}

#[test]
fn garbage_output_still_gives_a_clear_error() {
    let f = Fake::new("garbage");
    let e = rt().block_on(f.runc().pause("c1")).unwrap_err();
    assert_eq!(
        e.message(),
        "OCI runtime pause failed: panic: something broke"
    );
}

#[test]
fn kill_of_finished_or_missing_container_is_not_found() {
    let f = Fake::new("notrunning");
    let e = rt().block_on(f.runc().kill("c1", 9, false)).unwrap_err();
    assert_eq!(e.to_string(), "process already finished: not found");
    std::fs::write(f.dir.path().join("mode"), "gone").unwrap();
    let e = rt().block_on(f.runc().kill("c1", 9, true)).unwrap_err();
    assert_eq!(e.to_string(), "no such container: not found");
    assert!(f.argv().contains(&"--all".to_string()));
}

#[test]
fn delete_ignores_does_not_exist() {
    let f = Fake::new("gone");
    rt().block_on(f.runc().delete("c1", true)).unwrap();
    assert!(f.argv().contains(&"--force".to_string()));
}

#[test]
fn hung_runtime_hits_the_deadline() {
    let f = Fake::new("hang");
    let t = std::time::Instant::now();
    let e = rt().block_on(f.runc().kill("c1", 15, false)).unwrap_err();
    assert_eq!(e.kind(), Kind::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn flooding_runtime_is_capped_and_reported() {
    let f = Fake::new("flood");
    let e = rt().block_on(f.runc().resume("c1")).unwrap_err();
    assert!(
        e.message().len() <= MESSAGE_CAP + 100,
        "{}",
        e.message().len()
    );
    assert!(e.message().starts_with("OCI runtime resume failed: xxx"));
}

#[test]
fn ps_parses_json_and_update_feeds_stdin() {
    let f = Fake::new("ok");
    let pids = rt().block_on(f.runc().ps("c1")).unwrap();
    assert_eq!(pids, [1, 2, 3]);
    std::fs::write(f.dir.path().join("mode"), "stdin").unwrap();
    rt().block_on(f.runc().update("c1", br#"{"memory":{"limit":1}}"#))
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(f.dir.path().join("stdin")).unwrap(),
        r#"{"memory":{"limit":1}}"#
    );
    assert_eq!(&f.argv()[9..], ["update", "--resources", "-", "c1"]);
}

#[test]
fn missing_binary_is_failed_precondition() {
    let r = Runc::new(
        spawner(),
        "/nonexistent/runc",
        "/run/x".into(),
        Path::new("/tmp"),
        None,
        false,
    );
    let e = rt().block_on(r.start("c1")).unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
}
