//! Unit tests of `admin/doctor/findings.rs`, kept beside it so the module reads as its job alone.

use super::*;
use crate::admin::doctor::{config::DaemonConfig, Daemon, HostInfo, NextShim};

fn report(daemons: Vec<Daemon>) -> Report {
    Report {
        format: 1,
        shimgate_version: "t".into(),
        containerd_binary: None,
        daemons,
        shims: Vec::new(),
        stale_sockets: Vec::new(),
        stale_bundles: Vec::new(),
        installs: Vec::new(),
        host: HostInfo {
            selinux: Some("enforcing".into()),
            kernel: "6".into(),
            cgroup: "v2".into(),
            runc_path: Some("/usr/bin/runc".into()),
            runc_version: None,
            features: Vec::new(),
        },
        findings: Vec::new(),
        verdict: String::new(),
        exit_code: 0,
    }
}

fn daemon(exe_label: &str, shim_label: &str) -> Daemon {
    let next = |rt: &str| NextShim {
        runtime: rt.into(),
        path: Some("/nonexistent/bin/containerd-shim-runc-v2".into()),
        binary: Some(BinaryKind::Shimgate {
            version: "1".into(),
        }),
        label: Some(shim_label.into()),
    };
    Daemon {
        pid: 7,
        exe: "/usr/bin/containerd".into(),
        exe_label: Some(exe_label.into()),
        version: Some("1.7.27".into()),
        series: Some("1.7".into()),
        config_path: None,
        config_error: None,
        address: "/run/containerd/containerd.sock".into(),
        root: "/var/lib/containerd".into(),
        state: "/run/containerd".into(),
        config: DaemonConfig::default(),
        next_shims: vec![next("io.containerd.runc.v1"), next("io.containerd.runc.v2")],
    }
}

#[test]
fn selinux_label_mismatch_is_one_warning_per_file() {
    let m = Matrix::builtin().unwrap();
    let exec = "system_u:object_r:container_runtime_exec_t:s0";
    let r = report(vec![daemon(exec, "system_u:object_r:bin_t:s0")]);
    let f: Vec<Finding> = judge(&r, &m)
        .into_iter()
        .filter(|x| x.id == "selinux-label")
        .collect();
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].severity, Severity::Warn);
    assert_eq!(
        f[0].subject,
        Subject::file("/nonexistent/bin/containerd-shim-runc-v2")
    );
    assert!(f[0]
        .step
        .starts_with("semanage fcontext -a -t container_runtime_exec_t "));
    let r = report(vec![daemon(exec, exec)]);
    assert!(!judge(&r, &m).iter().any(|x| x.id == "selinux-label"));
}

#[test]
fn legacy_runtime_on_cgroup_v2_by_daemon() {
    let m = Matrix::builtin().unwrap();
    let with = |pid: u32, cfg: &str| Daemon {
        pid,
        version: Some("1.6.20".into()),
        series: Some("1.6".into()),
        config: crate::admin::doctor::config::parse(cfg).unwrap(),
        next_shims: Vec::new(),
        ..daemon("", "")
    };
    let cri_v1 = r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.old]
  runtime_type = "io.containerd.runtime.v1.linux"
"#;
    let disabled = r#"disabled_plugins = ["io.containerd.runtime.v1.linux"]"#;
    let on = |cgroup: &str| {
        let mut r = report(vec![with(10, ""), with(11, cri_v1), with(12, disabled)]);
        r.host.cgroup = cgroup.into();
        let f = judge(&r, &m);
        let mut got: Vec<(Subject, Severity)> = f
            .iter()
            .filter(|x| x.id == "legacy-runtime-on-cgroup-v2")
            .map(|x| (x.subject.clone(), x.severity))
            .collect();
        got.sort_by_key(|(s, _)| format!("{s:?}"));
        (f, got)
    };
    // Offered by default: said; configured for CRI: a problem; disabled: nothing.
    let (f, got) = on("v2 (unified)");
    assert_eq!(
        got,
        [
            (Subject::daemon(10), Severity::Info),
            (Subject::daemon(11), Severity::Problem)
        ],
        "{f:#?}"
    );
    assert!(f.iter().any(|x| x.id == "legacy-runtime-on-cgroup-v2"
        && x.step.contains("io.containerd.runc.v2")
        && x.step.contains("disabled_plugins")));
    assert!(on("hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)")
        .1
        .is_empty());
}

#[test]
fn ids_are_unique_well_formed_and_documented() {
    let migration = include_str!("../../../../MIGRATION.md");
    let m = Matrix::builtin().unwrap();
    let mut ids: Vec<&str> = CHECKS
        .iter()
        .map(|c| c.id)
        .filter(|id| *id != QUIRK_CHECK)
        .collect();
    ids.extend(m.quirk.iter().map(|q| q.id.as_str()));
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        assert!(seen.insert(*id), "finding id {id} is used twice");
        assert!(
            !id.is_empty()
                && id.split('-').all(|p| !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
            "finding id {id:?} is not lower-case words joined by '-'"
        );
        assert!(
            migration.contains(&format!("| `{id}` |")),
            "finding id {id} is not in MIGRATION.md's table of doctor finding ids"
        );
    }
}
