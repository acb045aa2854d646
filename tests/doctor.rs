//! `shimgate doctor` against a live private containerd whose legacy runtime runs the Go
//! `containerd-shim` while runc.v1 and runc.v2 run shimgate: it must name each running shim
//! correctly (personality, binary, containers, socket, memory), see the daemon's version and
//! config, say which binary new containers of each runtime get, and flag a stale socket.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::process::Command;

use common::*;

fn doctor(args: &[&str]) -> (i32, String) {
    // Through `run_cmd`: the child is registered, so the zombie sweep of `Ctd` cannot reap it
    // before we do (that made this test fail now and then with ECHILD).
    let out = run_cmd(
        Command::new(shimgate_bin()).arg("doctor").args(args),
        None,
        std::time::Duration::from_secs(60),
    );
    (out.code, out.text())
}

#[test]
fn identifies_go_and_shimgate_shims_side_by_side() {
    let Some(c) = Ctd::start() else {
        return;
    };
    // The legacy runtime gets the Go shim; the task API runtimes keep shimgate.
    let go = go_shim("containerd-shim").expect("the Go containerd-shim (Debian's containerd)");
    std::fs::remove_file(c.shims.join("containerd-shim")).unwrap();
    symlink(&go, c.shims.join("containerd-shim")).unwrap();

    let legacy = c.id("doc-go");
    c.run_detached(V1_LINUX, &legacy, &[], &["sleep", "300"]);
    let v2 = c.id("doc-v2");
    c.run_detached(RUNC_V2, &v2, &[], &["sleep", "300"]);
    let v1 = c.id("doc-v1");
    c.run_detached(RUNC_V1, &v1, &[], &["sleep", "300"]);

    // A socket nobody listens on any more, where shims keep theirs.
    let stale = std::path::PathBuf::from(format!(
        "/run/containerd/s/sgtest-doctor-{}",
        std::process::id()
    ));
    let _ = std::fs::create_dir_all("/run/containerd/s");
    drop(UnixListener::bind(&stale).unwrap());

    let (code, json) = doctor(&["--json"]);
    let (_, human) = doctor(&[]);
    let _ = std::fs::remove_file(&stale);
    println!("{human}");
    let r: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(
        code >= 1,
        "a stale socket is a warning at least (exit {code})"
    );
    assert_eq!(r["exit_code"], code);

    // The daemon: version from the daemon itself, the matrix series, config, next shims.
    let d = r["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pid"] == c.pid())
        .unwrap_or_else(|| panic!("our containerd {} in {json}", c.pid()));
    let want_version = {
        let v = Command::new("containerd")
            .arg("--version")
            .output()
            .unwrap();
        String::from_utf8_lossy(&v.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap()
            .trim_start_matches('v')
            .to_string()
    };
    assert_eq!(d["version"], want_version.as_str());
    assert!(d["series"].is_string(), "{d}");
    assert_eq!(d["address"], c.addr.display().to_string().as_str());
    assert_eq!(
        d["state"],
        c.dir.join("state").display().to_string().as_str()
    );
    let next = |rt: &str| {
        d["next_shims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["runtime"] == rt)
            .unwrap_or_else(|| panic!("{rt} in {d}"))
            .clone()
    };
    assert_eq!(
        next("io.containerd.runtime.v1.linux")["binary"]["kind"],
        "go-containerd"
    );
    for rt in ["io.containerd.runc.v1", "io.containerd.runc.v2"] {
        let n = next(rt);
        assert_eq!(n["binary"]["kind"], "shimgate", "{n}");
        assert_eq!(n["binary"]["version"], env!("CARGO_PKG_VERSION"));
    }

    // Each running shim: found by its container, named correctly.
    let shim_of = |id: &str| {
        let key = format!("{}/{id}", c.ns);
        r["shims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == key.as_str())
            })
            .unwrap_or_else(|| panic!("no shim for {key} in {json}"))
            .clone()
    };
    for (id, personality, kind) in [
        (&legacy, "shim-v1", "go-containerd"),
        (&v2, "runc-v2", "shimgate"),
        (&v1, "runc-v1", "shimgate"),
    ] {
        let s = shim_of(id);
        assert_eq!(s["personality"], personality, "{s}");
        assert_eq!(s["binary"]["kind"], kind, "{s}");
        assert_eq!(s["containerd_pid"], c.pid(), "{s}");
        assert_eq!(s["orphaned"], false, "{s}");
        assert_eq!(s["abstract_socket"], false, "{s}");
        let socket = s["sockets"][0].as_str().unwrap_or_default();
        assert!(socket.starts_with("/run/containerd/s/"), "{s}");
        assert!(s["pss_kib"].as_u64().is_some_and(|k| k > 0), "{s}");
        assert!(s["children"].as_u64().is_some_and(|n| n >= 1), "{s}");
        assert!(
            human.contains(&format!(
                "pid {:<7} {personality}",
                s["pid"].as_u64().unwrap()
            )),
            "{human}"
        );
    }
    // The v1 shim's bundle names it by shim.pid; the task API shims by their socket.
    assert_eq!(
        shim_of(&legacy)["pid"].as_u64().unwrap().to_string(),
        std::fs::read_to_string(c.bundle_v1(&legacy).join("shim.pid"))
            .unwrap()
            .trim()
    );

    assert!(
        r["stale_sockets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == stale.display().to_string().as_str()),
        "{json}"
    );
    assert!(
        human.contains(&format!("rm {}", stale.display())),
        "{human}"
    );
    assert!(human.contains("verdict: "), "{human}");
    for f in [
        "PR_SET_CHILD_SUBREAPER",
        "pidfd_open",
        "splice",
        "OOM notification",
    ] {
        assert!(
            r["host"]["features"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == f),
            "{f}"
        );
    }
    c.assert_clean();
}
