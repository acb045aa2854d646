//! The human-readable report (`shimgate doctor` without `--json`).

use super::*;
use crate::admin::inspect::BinaryKind;
use crate::compat::Severity;

fn kib(k: Option<u64>) -> String {
    match k {
        Some(k) if k >= 1024 => format!("{:.1} MiB", k as f64 / 1024.0),
        Some(k) => format!("{k} KiB"),
        None => "?".into(),
    }
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "shimgate doctor {}", r.shimgate_version);
    let _ = writeln!(o, "\ncontainerd");
    match &r.containerd_binary {
        Some(b) => {
            let _ = writeln!(
                o,
                "  installed  {} {} (matrix series {})",
                b.path,
                b.version.as_deref().unwrap_or("(version unknown)"),
                b.series.as_deref().unwrap_or("unknown")
            );
        }
        None => {
            let _ = writeln!(o, "  installed  (not in $PATH)");
        }
    }
    if r.daemons.is_empty() {
        let _ = writeln!(o, "  running    none");
    }
    for d in &r.daemons {
        let _ = writeln!(
            o,
            "  running    pid {} {} {} (series {})",
            d.pid,
            d.exe,
            d.version.as_deref().unwrap_or("(version unknown)"),
            d.series.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            o,
            "             config {}  socket {}  state {}",
            d.config_path.as_deref().unwrap_or("(defaults)"),
            d.address,
            d.state
        );
        let types = d.config.runtime_types();
        let _ = writeln!(
            o,
            "             runtimes in config: {}{}{}",
            if types.is_empty() {
                "none (clients choose; ctr and Docker 20.10+ use io.containerd.runc.v2)".to_string()
            } else {
                types.join(", ")
            },
            d.config
                .default_runtime_name
                .as_ref()
                .map_or(String::new(), |n| format!("; CRI default {n:?}")),
            d.config
                .v1_shim
                .as_ref()
                .map_or(String::new(), |s| format!("; v1 shim {s:?}")),
        );
        for n in &d.next_shims {
            let _ = writeln!(
                o,
                "             new {:<32} -> {} ({})",
                n.runtime,
                n.path.as_deref().unwrap_or("(not found)"),
                n.binary.as_ref().map_or("-".into(), BinaryKind::describe)
            );
        }
    }
    let _ = writeln!(o, "\nshims ({})", r.shims.len());
    for s in &r.shims {
        let version = match (&s.binary, &s.binary_version) {
            (BinaryKind::Shimgate { .. }, _) => s.binary.describe(),
            (k, Some(v)) => format!("{} {v}", k.describe()),
            (k, None) => k.describe(),
        };
        let _ = writeln!(
            o,
            "  pid {:<7} {:<8} {:<24} {}",
            s.pid, s.personality, version, s.exe
        );
        let _ = writeln!(
            o,
            "              containers {}  socket {}{}  PSS {}  containerd {}",
            if s.containers.is_empty() {
                "-".into()
            } else {
                s.containers.join(",")
            },
            if s.sockets.is_empty() {
                "-".into()
            } else {
                s.sockets.join(",")
            },
            if s.abstract_socket { " (ABSTRACT)" } else { "" },
            kib(s.pss_kib),
            match s.containerd_pid {
                Some(p) => format!("pid {p}"),
                None => "GONE (orphaned)".into(),
            }
        );
    }
    if !r.installs.is_empty() {
        let _ = writeln!(o, "\ninstalls ({})", r.installs.len());
    }
    for i in &r.installs {
        let _ = writeln!(
            o,
            "  {}  shimgate {}  manifest {}",
            i.prefix, i.shimgate_version, i.manifest
        );
        for n in &i.names {
            let now = match (&n.now, &n.owner) {
                (Some(k), Some(p)) => format!(" (now {}, package {p})", k.describe()),
                (Some(k), None) => format!(" (now {})", k.describe()),
                _ => String::new(),
            };
            let _ = writeln!(o, "    {:<8} {}{now}", n.state, n.path);
        }
    }
    let _ = writeln!(o, "\nhost");
    let _ = writeln!(
        o,
        "  kernel {}  cgroup {}{}  runc {}",
        r.host.kernel,
        r.host.cgroup,
        r.host
            .selinux
            .as_ref()
            .map_or(String::new(), |m| format!("  SELinux {m}")),
        r.host.runc_version.as_deref().unwrap_or("(not found)")
    );
    for feat in &r.host.features {
        let _ = writeln!(
            o,
            "  {:<3} {:<24} {}",
            if feat.available { "ok" } else { "NO" },
            feat.name,
            if feat.available {
                &feat.used_for
            } else {
                &feat.without
            }
        );
    }
    let _ = writeln!(o, "\nfindings");
    if r.findings.is_empty() {
        let _ = writeln!(o, "  none");
    }
    // Many findings of one id (a hundred Go shims still running) would drown the rest: the
    // first few are shown, then a count (--json lists them all).
    const SHOWN_PER_ID: usize = 3;
    let mut per_id: std::collections::BTreeMap<&str, usize> = Default::default();
    for x in &r.findings {
        *per_id.entry(&x.id).or_default() += 1;
    }
    let mut shown: std::collections::BTreeMap<&str, usize> = Default::default();
    for x in &r.findings {
        let n = shown.entry(&x.id).or_default();
        *n += 1;
        let total = per_id.get(x.id.as_str()).copied().unwrap_or(0);
        if total > SHOWN_PER_ID + 1 && *n > SHOWN_PER_ID {
            if *n == SHOWN_PER_ID + 1 {
                let _ = writeln!(
                    o,
                    "  {:<7} … and {} more {} (shimgate doctor --json lists them)",
                    "",
                    total - SHOWN_PER_ID,
                    x.id
                );
            }
            continue;
        }
        let tag = match x.severity {
            Severity::Problem => "PROBLEM",
            Severity::Warn => "WARN",
            Severity::Info => "info",
        };
        let _ = writeln!(o, "  {tag:<7} {}  [{}]", x.message, x.id);
    }
    let mut steps: Vec<&str> = Vec::new();
    for x in &r.findings {
        if !x.step.is_empty() && !steps.contains(&x.step.as_str()) {
            steps.push(&x.step);
        }
    }
    let _ = writeln!(
        o,
        "\nverdict: {}",
        match r.exit_code {
            0 => "OK: nothing needs doing",
            1 => "WARNINGS: works, but see the steps",
            _ => "PROBLEMS: follow the steps before moving this host",
        }
    );
    for (i, s) in steps.iter().enumerate() {
        let _ = writeln!(o, "  {}. {s}", i + 1);
    }
    o
}
