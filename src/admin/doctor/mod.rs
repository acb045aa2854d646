//! `shimgate doctor`: what an operator moving a host between containerd versions (or onto
//! shimgate) needs to know, and what to do about it.
//!
//! It gathers facts ([`Report`]): containerd versions (the binary in `$PATH` and every running
//! daemon, via `ctr version` or the daemon's own executable), the runtime types each daemon's
//! config uses and which binary it would start for each, every running shim (personality from
//! argv[0], binary by content, socket kind, containers, memory), stale sockets and bundles,
//! orphaned shims, runc, the cgroup mode and the kernel features shimgate uses. Then it judges
//! them against the compatibility matrix ([`crate::compat`]) into findings with a severity and
//! a step to take. Exit code: 0 nothing to do, 1 warnings, 2 problems.

pub mod config;
mod facts;
pub mod findings;
mod render;

pub use facts::*;
pub use findings::{judge, Finding, Subject};
pub use render::render;

use std::path::Path;

use super::exit;
use crate::compat::Matrix;

/// `shimgate doctor [--json] [--matrix FILE] [--state-dir DIR]`. Returns the exit code.
pub fn main(json: bool, matrix: Option<&Path>, state_dir: &Path) -> i32 {
    let m = match matrix {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))
            .and_then(|t| Matrix::parse(&t).map_err(|e| e.to_string())),
        None => Matrix::builtin().map_err(|e| e.to_string()),
    };
    let m = match m {
        Ok(m) => m,
        Err(e) => {
            eprintln!("shimgate doctor: {e}");
            return exit::REFUSED;
        }
    };
    let r = gather(&m, state_dir);
    if json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("shimgate doctor: encode report: {e}");
                return exit::REFUSED;
            }
        }
    } else {
        print!("{}", render(&r));
    }
    r.exit_code
}

#[cfg(test)]
mod tests {
    use super::facts::{is_daemon, runtime_binary_name};
    use super::*;
    use crate::admin::host::{is_serving_shim, shim_personality, Proc};
    use crate::admin::inspect::BinaryKind;
    use crate::compat::Severity;

    fn proc(args: &[&str]) -> Proc {
        Proc {
            pid: 1,
            ppid: 0,
            args: args.iter().map(|s| s.to_string()).collect(),
            exe: None,
        }
    }

    #[test]
    fn shim_and_daemon_recognition() {
        assert!(is_serving_shim(&proc(&[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            "x",
            "-address",
            "/run/containerd/containerd.sock"
        ])));
        assert!(!is_serving_shim(&proc(&[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "n",
            "-id",
            "x",
            "start"
        ])));
        assert!(is_serving_shim(&proc(&[
            "containerd-shim",
            "-namespace",
            "n",
            "-workdir",
            "/w"
        ])));
        assert!(!is_serving_shim(&proc(&[
            "/usr/bin/containerd",
            "--config",
            "/c"
        ])));
        assert!(is_daemon(&proc(&["/usr/bin/containerd", "--config", "/c"])));
        assert!(!is_daemon(&proc(&[
            "/usr/bin/containerd",
            "--address",
            "/s",
            "publish",
            "--topic",
            "/tasks/exit"
        ])));
        assert_eq!(
            runtime_binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(shim_personality("containerd-shim-runsc-v1"), Some("other"));
    }

    fn empty_report() -> Report {
        Report {
            format: REPORT_FORMAT,
            shimgate_version: "t".into(),
            containerd_binary: Some(Binary {
                path: "/usr/bin/containerd".into(),
                version: Some("1.4.2".into()),
                series: Some("1.4".into()),
            }),
            daemons: Vec::new(),
            shims: Vec::new(),
            stale_sockets: vec!["/run/containerd/s/dead".into()],
            stale_bundles: Vec::new(),
            installs: Vec::new(),
            host: HostInfo {
                selinux: None,
                kernel: "6".into(),
                cgroup: "v1 (legacy)".into(),
                runc_path: Some("/usr/sbin/runc".into()),
                runc_version: Some("runc version 1.1.5".into()),
                features: Vec::new(),
            },
            findings: Vec::new(),
            verdict: String::new(),
            exit_code: 0,
        }
    }

    #[test]
    fn orphaned_and_abstract_shims_are_warnings() {
        let m = Matrix::builtin().unwrap();
        let shim = Shim {
            pid: 42,
            personality: "shim-v1".into(),
            argv0: "containerd-shim".into(),
            exe: "/usr/bin/containerd-shim".into(),
            binary: BinaryKind::GoContainerd,
            binary_version: None,
            namespace: Some("moby".into()),
            containerd_address: Some("/run/containerd/containerd.sock".into()),
            containerd_pid: None,
            orphaned: true,
            sockets: vec!["@/containerd-shim/moby/c1/shim.sock".into()],
            abstract_socket: true,
            containers: vec!["moby/c1".into()],
            children: 1,
            pss_kib: Some(6000),
        };
        let r = Report {
            containerd_binary: Some(Binary {
                path: "/usr/bin/containerd".into(),
                version: Some("1.6.20".into()),
                series: Some("1.6".into()),
            }),
            stale_sockets: Vec::new(),
            shims: vec![shim],
            ..empty_report()
        };
        let f = judge(&r, &m);
        assert!(f.iter().all(|x| x.severity <= Severity::Warn), "{f:#?}");
        assert!(f
            .iter()
            .any(|x| x.severity == Severity::Warn && x.message.contains("not running")));
        assert!(f
            .iter()
            .any(|x| x.severity == Severity::Warn && x.message.contains("abstract socket")));
        assert!(f.iter().any(|x| x.step.contains("kill shim pid 42")));
        let text = render(&Report {
            findings: f,
            exit_code: 1,
            ..r
        });
        assert!(
            text.contains("GONE (orphaned)") && text.contains("(ABSTRACT)"),
            "{text}"
        );
    }

    #[test]
    fn judging_old_containerd_and_stale_sockets() {
        let m = Matrix::builtin().unwrap();
        let f = judge(&empty_report(), &m);
        assert_eq!(f[0].severity, Severity::Problem, "{f:#?}");
        assert!(f[0].message.contains("CVE-2020-15257"), "{f:#?}");
        assert!(f
            .iter()
            .any(|x| x.severity == Severity::Warn && x.step == "rm /run/containerd/s/dead"));
        assert!(f
            .iter()
            .any(|x| x.message.contains("no containerd is running")));
        let text = render(&Report {
            findings: f,
            exit_code: 2,
            ..empty_report()
        });
        assert!(text.contains("PROBLEMS"), "{text}");
        assert!(text.contains("1. upgrade containerd"), "{text}");
    }
}
