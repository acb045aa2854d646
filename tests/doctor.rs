//! `shimgate doctor` against a live private containerd whose legacy runtime runs the Go
//! `containerd-shim` while runc.v1 and runc.v2 run shimgate: it must name each running shim
//! correctly (personality, binary, containers, socket, memory), see the daemon's version and
//! config, say which binary new containers of each runtime get, and flag a stale socket.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::net::UnixListener;
use std::process::Command;

use common::*;

/// Run doctor as a registered child (the tests' orphan reaper would otherwise take its exit
/// status: "No child processes").
fn doctor(args: &[&str]) -> (i32, String) {
    let out = run_cmd(
        Command::new(shimgate_bin()).arg("doctor").args(args),
        None,
        std::time::Duration::from_secs(120),
    );
    assert!(!out.timed_out, "doctor {args:?} hung");
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
    let (_, json_again) = doctor(&["--json"]);
    let _ = std::fs::remove_file(&stale);
    println!("{human}");
    let r: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert!(
        code >= 1,
        "a stale socket is a warning at least (exit {code})"
    );
    assert_eq!(r["exit_code"], code);
    let again: serde_json::Value = serde_json::from_str(&json_again).unwrap();
    for report in [&r, &again] {
        let errors = schema_errors(report);
        assert!(errors.is_empty(), "{errors:#?}\n{report:#}");
    }
    // The schema has teeth: a finding without its id does not pass.
    let mut broken = r.clone();
    broken["findings"][0].as_object_mut().unwrap().remove("id");
    assert!(!schema_errors(&broken).is_empty());
    // The findings about what this test runs (its daemon, its shims, its stale socket) are
    // the same, by id and subject, in both runs.
    let ours = |report: &serde_json::Value| {
        let shim_pids: Vec<u64> = report["shims"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["containerd_pid"] == c.pid())
            .map(|s| s["pid"].as_u64().unwrap())
            .collect();
        let mut v: Vec<(String, String)> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| {
                let sub = &f["subject"];
                let pid = sub["pid"].as_u64();
                (sub["kind"] == "daemon" || sub["kind"] == "runtime") && pid == Some(c.pid().into())
                    || sub["kind"] == "shim" && pid.is_some_and(|p| shim_pids.contains(&p))
                    || sub["path"] == stale.display().to_string().as_str()
            })
            .map(|f| (f["id"].to_string(), f["subject"].to_string()))
            .collect();
        v.sort();
        v
    };
    let found = ours(&r);
    assert_eq!(found, ours(&again), "{json}\n{json_again}");
    let go_shim_pid = r["shims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["containerd_pid"] == c.pid() && s["binary"]["kind"] == "go-containerd")
        .map(|s| s["pid"].clone())
        .unwrap_or_else(|| panic!("the Go shim in {json}"));
    for (id, subject) in [
        (
            "\"stale-socket\"",
            serde_json::json!({"kind": "socket", "path": stale.display().to_string()}),
        ),
        (
            "\"shim-not-shimgate\"",
            serde_json::json!({"kind": "shim", "pid": go_shim_pid}),
        ),
        (
            "\"new-shims-not-shimgate\"",
            serde_json::json!({"kind": "daemon", "pid": c.pid()}),
        ),
    ] {
        assert!(
            found.contains(&(id.to_string(), subject.to_string())),
            "{id} {subject} not in {found:#?}"
        );
    }

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

/// The matrix row `shimgate doctor` should place a daemon of series `s` in.
fn matrix_series(s: Series) -> &'static str {
    match s {
        Series::V1_6 => "1.6",
        Series::V1_7 => "1.7",
        Series::V2_2 => "2.0-2.2",
        Series::V2_3 => "2.3+",
    }
}

/// doctor on hosts running containerd 1.7, 2.2 and 2.3 (private daemons of the peers, each
/// with containers of every runtime type that series starts): the daemon's version and matrix
/// series, its address and state from its own config format (2.3: version 4, the address
/// under the grpc server plugin), and for each runtime type the binary containerd would start
/// (shimgate here). The matrix row is checked against the daemon itself: every runtime type it
/// lists starts a container there, the legacy runtime fails on 2.x, and no runtime in use is
/// reported as one the daemon does not offer.
#[test]
fn knows_1_7_2_2_and_2_3_hosts() {
    let m = shimgate::compat::Matrix::builtin().unwrap();
    for s in [Series::V1_7, Series::V2_2, Series::V2_3] {
        let Some(c) = Ctd::start_series(s, Shims::Ours) else {
            return;
        };
        let row = m
            .containerd
            .iter()
            .find(|r| r.series == matrix_series(s))
            .unwrap_or_else(|| panic!("no matrix row {}", matrix_series(s)));
        let mut want: Vec<&str> = s.runtimes().iter().map(|r| r.name).collect();
        want.sort_unstable();
        let mut listed: Vec<&str> = row.runtimes.iter().map(String::as_str).collect();
        listed.sort_unstable();
        assert_eq!(listed, want, "{s}: matrix row {} runtimes", row.series);
        let mut ids = Vec::new();
        for rt in s.runtimes() {
            let id = c.id(&format!("doc-{}", rt.short));
            c.run_detached(*rt, &id, &[], &["sleep", "300"]);
            ids.push((id, *rt));
        }
        if !s.runtimes().contains(&V1_LINUX) {
            let id = c.id("doc-gone");
            let r = c.run(V1_LINUX, &id, &["--rm"], &["true"]);
            assert_ne!(r.code, 0, "{s} ran the legacy runtime: {}", r.brief());
            c.ctr(&["c", "rm", &id]);
        }

        let (_, json) = doctor(&["--json"]);
        let r: serde_json::Value =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        let d = r["daemons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["pid"] == c.pid())
            .unwrap_or_else(|| panic!("{s}: our containerd {} in {json}", c.pid()))
            .clone();
        assert!(
            d["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(s.version())),
            "{s}: {d}"
        );
        assert_eq!(d["series"], row.series.as_str(), "{s}: {d}");
        assert_eq!(
            d["address"],
            c.addr.display().to_string().as_str(),
            "{s}: {d}"
        );
        assert_eq!(
            d["state"],
            c.dir.join("state").display().to_string().as_str(),
            "{s}: {d}"
        );
        assert!(d["config_error"].is_null(), "{s}: {d}");
        for rt in s.runtimes() {
            let n = d["next_shims"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["runtime"] == rt.name)
                .unwrap_or_else(|| panic!("{s}: {} in {d}", rt.name));
            assert_eq!(n["binary"]["kind"], "shimgate", "{s}: {n}");
        }
        if s.is_2x() {
            assert!(
                !d["next_shims"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["runtime"] == V1_LINUX.name),
                "{s}: {d}"
            );
        }
        // Each running shim is found with its container and daemon.
        for (id, rt) in &ids {
            let key = format!("{}/{id}", c.ns);
            let shim = r["shims"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| {
                    x["containers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k == key.as_str())
                })
                .unwrap_or_else(|| panic!("{s}: no shim for {key} in {json}"));
            let personality = match rt.short {
                "runcv1" => "runc-v1",
                "runcv2" => "runc-v2",
                _ => "shim-v1",
            };
            assert_eq!(shim["personality"], personality, "{s}: {shim}");
            assert_eq!(shim["binary"]["kind"], "shimgate", "{s}: {shim}");
            assert_eq!(shim["containerd_pid"], c.pid(), "{s}: {shim}");
        }
        // Nothing this daemon does is judged impossible for its version; on 2.x the runc.v1
        // containers earn the warning that 2.x no longer ships that shim (by id and subject,
        // the stable interface).
        let findings = r["findings"].as_array().unwrap();
        let about_ours = |f: &&serde_json::Value| f["subject"]["pid"] == c.pid();
        for f in findings.iter().filter(about_ours) {
            assert!(f["severity"] != "problem", "{s}: {f}");
        }
        let runc_v1_warned = findings
            .iter()
            .filter(about_ours)
            .any(|f| f["id"] == "runc-v1-not-shipped" && f["severity"] == "warn");
        assert_eq!(runc_v1_warned, s.is_2x(), "{s}: {findings:?}");
        c.assert_clean();
    }
}

/// A containerd 2.3 host still on its Go runc.v2 shim (where an operator starts): that shim
/// writes no `address` file (2.3 keeps the address in `bootstrap.json`), yet doctor must find
/// its containers and not call their bundles stale.
#[test]
fn recognises_the_go_shims_of_2_3() {
    let Some(c) = Ctd::start_series(Series::V2_3, Shims::Go) else {
        return;
    };
    let id = c.id("doc-go23");
    c.run_detached(RUNC_V2, &id, &[], &["sleep", "300"]);
    assert!(!c.bundle(&id).join("address").exists());
    let (_, json) = doctor(&["--json"]);
    let r: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let key = format!("{}/{id}", c.ns);
    let shim = r["shims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| {
            x["containers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == key.as_str())
        })
        .unwrap_or_else(|| panic!("no shim for {key} in {json}"))
        .clone();
    assert_eq!(shim["personality"], "runc-v2", "{shim}");
    assert_eq!(shim["binary"]["kind"], "go-containerd", "{shim}");
    assert_eq!(shim["containerd_pid"], c.pid(), "{shim}");
    let ours = c.dir.display().to_string();
    let stale: Vec<&serde_json::Value> = r["stale_bundles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["path"].as_str().is_some_and(|p| p.starts_with(&ours)))
        .collect();
    assert!(stale.is_empty(), "live bundles called stale: {stale:?}");
    c.assert_clean();
}

/// Errors of a `doctor --json` report against schema/doctor.schema.json (empty: valid).
fn schema_errors(report: &serde_json::Value) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/doctor.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    v.iter_errors(report)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}
