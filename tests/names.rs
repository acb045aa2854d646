//! Names containerd lets through must never touch the shim's own files nor be refused where
//! the Go shim works:
//! * an exec named `init` or `shim` leaves the container's `init.pid` / `shim.pid` alone
//!   (crash recovery and `delete` read them: a wrong pid there is signalled after a crash);
//! * a runc.v2 group annotation with characters outside `[A-Za-z0-9._-]` (a `/`, a space,
//!   `..`) is accepted, as the Go runc.v2 shim accepts it: the value is only hashed into the
//!   socket name, never used as a path.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The container's own pid files present in `bundle`, with their contents.
fn own_pid_files(bundle: &Path) -> Vec<(String, String)> {
    ["init.pid", "shim.pid"]
        .iter()
        .filter_map(|n| {
            std::fs::read_to_string(bundle.join(n))
                .ok()
                .map(|v| (n.to_string(), v))
        })
        .collect()
}

fn exec_ids_leave_the_containers_own_files_alone(s: Series, rt: Runtime) {
    let Some(c) = Ctd::start_series(s, Shims::Ours) else {
        return;
    };
    let id = c.id("names");
    c.run_detached(rt, &id, &[], &["sleep", "600"]);
    let bundle = if rt == V1_LINUX {
        c.bundle_v1(&id)
    } else {
        c.bundle(&id)
    };
    let before = own_pid_files(&bundle);
    assert!(
        before.iter().any(|(n, _)| n == "init.pid"),
        "{}: no init.pid in {}",
        rt.short,
        bundle.display()
    );
    // runc.v1 (`start`) and the legacy runtime (containerd) write shim.pid.
    assert_eq!(
        before.iter().any(|(n, _)| n == "shim.pid"),
        rt != RUNC_V2,
        "{}: {before:?}",
        rt.short
    );
    for exec_id in ["init", "shim"] {
        std::thread::scope(|s| {
            let running = s.spawn(|| {
                c.ctr(&[
                    "task",
                    "exec",
                    "--exec-id",
                    exec_id,
                    &id,
                    "sh",
                    "-c",
                    "sleep 2; exit 4",
                ])
            });
            // While it runs, and after it is gone, the container's own files are untouched.
            std::thread::sleep(Duration::from_millis(1200));
            assert_eq!(
                own_pid_files(&bundle),
                before,
                "{}: while exec {exec_id} runs",
                rt.short
            );
            let r = running.join().unwrap();
            assert_eq!(r.code, 4, "{}: exec {exec_id}: {}", rt.short, r.brief());
        });
        assert_eq!(
            own_pid_files(&bundle),
            before,
            "{}: after exec {exec_id}",
            rt.short
        );
    }
    // The container is still the one its pid file names, and still controllable.
    let (pid, status) = c.tasks()[&id].clone();
    assert_eq!(status, "RUNNING");
    let init_pid = before.iter().find(|(n, _)| n == "init.pid").unwrap();
    assert_eq!(init_pid.1.trim(), pid.to_string());
    c.assert_clean();
}

series_matrix!(exec_ids_leave_the_containers_own_files_alone);

/// The socket a runc.v2 shim of `group` listens on, as the Go shim names it.
fn socket_of(c: &Ctd, group: &str) -> PathBuf {
    let a = shimgate::api::v2::bootstrap::socket_address(
        Path::new("/run/containerd/s"),
        &c.addr.display().to_string(),
        &c.ns,
        group,
    );
    PathBuf::from(a.strip_prefix("unix://").unwrap())
}

#[test]
fn any_group_annotation_value_is_accepted_and_never_a_path() {
    let Some(c) = Ctd::start() else { return };
    let escape = format!("/tmp/sg-group-escape-{}", std::process::id());
    let odd = [
        "pod/with/slashes".to_string(),
        "a group with spaces".to_string(),
        format!("../../../../../../..{escape}"),
    ];
    for (n, group) in odd.iter().enumerate() {
        // Two containers per group (the runc.v2 annotation, then the CRI sandbox one for the
        // second group), one shim per group.
        let key = if n == 1 {
            "io.kubernetes.cri.sandbox-id"
        } else {
            "io.containerd.runc.v2.group"
        };
        let ann = format!("{key}={group}");
        let ids = [c.id("odd"), c.id("odd")];
        for id in &ids {
            c.run_detached(RUNC_V2, id, &["--annotation", &ann], &["sleep", "600"]);
        }
        let want = format!("unix://{}", socket_of(&c, group).display());
        for id in &ids {
            let addr = std::fs::read_to_string(c.bundle(id).join("address")).unwrap();
            assert_eq!(addr.trim(), want, "group {group:?}");
        }
        let r = c.ctr(&["task", "exec", "--exec-id", "e", &ids[1], "echo", "served"]);
        assert_eq!(r.stdout, b"served\n", "{}", r.brief());
    }
    assert_eq!(c.shim_pids().len(), odd.len(), "one shim per group");
    assert!(
        !Path::new(&escape).exists(),
        "the group value was used as a path: {escape}"
    );
    c.assert_clean();
    assert!(!Path::new(&escape).exists());
}
