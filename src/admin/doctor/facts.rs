//! The facts doctor gathers ([`Report`]): containerd binaries and daemons with their
//! configured runtimes, running shims, stale sockets and bundles, install state, host
//! features. Gathering only reads; judging them is `findings`, showing them `render`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use super::{config, judge, Finding};
use crate::admin::host::{self, is_serving_shim, shim_personality, Proc};
use crate::admin::inspect::{self, BinaryKind};
use crate::admin::{exit, install, run_tool};
use crate::api::v2::bootstrap::{go_clean, DEFAULT_SOCKET_DIR};
use crate::cli::{Personality, LEGACY_RUNTIME};
use crate::compat::{parse_containerd_version, Matrix, Severity};
use crate::search_path::{which, which_in};

/// The containerd binary found in `$PATH`.
#[derive(Debug, Clone, Serialize)]
pub struct Binary {
    pub path: String,
    pub version: Option<String>,
    pub series: Option<String>,
}

/// Which program containerd would start for a runtime now.
#[derive(Debug, Clone, Serialize)]
pub struct NextShim {
    pub runtime: String,
    pub path: Option<String>,
    pub binary: Option<BinaryKind>,
    /// The SELinux label of the file it runs (only where SELinux is enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A running containerd.
#[derive(Debug, Clone, Serialize)]
pub struct Daemon {
    pub pid: u32,
    pub exe: String,
    /// The SELinux label of its executable (only where SELinux is enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_label: Option<String>,
    /// What the daemon answers (`ctr version`), else its executable's `--version`.
    pub version: Option<String>,
    pub series: Option<String>,
    pub config_path: Option<String>,
    pub config_error: Option<String>,
    pub address: String,
    pub root: String,
    pub state: String,
    pub config: config::DaemonConfig,
    pub next_shims: Vec<NextShim>,
}

/// A running shim process.
#[derive(Debug, Clone, Serialize)]
pub struct Shim {
    pub pid: u32,
    /// `shim-v1` (containerd-shim), `runc-v1`, `runc-v2` or `other`.
    pub personality: String,
    pub argv0: String,
    pub exe: String,
    pub binary: BinaryKind,
    /// The Go shim's own `-v` answer, when it has one.
    pub binary_version: Option<String>,
    pub namespace: Option<String>,
    /// containerd's address from the shim's command line.
    pub containerd_address: Option<String>,
    pub containerd_pid: Option<u32>,
    pub orphaned: bool,
    pub sockets: Vec<String>,
    pub abstract_socket: bool,
    /// `namespace/id` of the containers it serves.
    pub containers: Vec<String>,
    pub children: usize,
    pub pss_kib: Option<u64>,
}

/// A bundle whose shim is gone.
#[derive(Debug, Clone, Serialize)]
pub struct StaleBundle {
    pub path: String,
    pub container: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub kernel: String,
    pub cgroup: String,
    /// `enforcing` or `permissive` where SELinux is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    pub runc_path: Option<String>,
    pub runc_version: Option<String>,
    pub features: Vec<host::Feature>,
}

/// A prefix `shimgate install` switched (from its manifest).
#[derive(Debug, Clone, Serialize)]
pub struct InstallState {
    pub prefix: String,
    pub manifest: String,
    pub shimgate_version: String,
    pub names: Vec<InstallName>,
}

/// One name an install manages, as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct InstallName {
    pub path: String,
    /// `ok` (as install left it), `changed` or `missing`.
    pub state: String,
    /// What the file is now, when it is not what install put there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub now: Option<BinaryKind>,
    /// The package owning the path now (dpkg or rpm), when it is not what install put there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// The version of the `--json` report's layout (schema/doctor.schema.json).
pub const REPORT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_FORMAT`].
    pub format: u32,
    pub shimgate_version: String,
    pub containerd_binary: Option<Binary>,
    pub daemons: Vec<Daemon>,
    pub shims: Vec<Shim>,
    pub stale_sockets: Vec<String>,
    pub stale_bundles: Vec<StaleBundle>,
    pub installs: Vec<InstallState>,
    pub host: HostInfo,
    pub findings: Vec<Finding>,
    /// `ok`, `warnings` or `problems`.
    pub verdict: String,
    pub exit_code: i32,
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// `containerd github.com/containerd/containerd 1.6.20~ds1 <rev>` -> `1.6.20~ds1`.
fn containerd_version_of(exe: &Path) -> Option<String> {
    let mut c = Command::new(exe);
    c.arg("--version");
    let out = run_tool(c).ok().filter(|o| o.status == 0)?;
    let line = first_line(&out.stdout);
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields
        .get(2)
        .or(fields.last())
        .map(|v| v.trim_start_matches('v').to_string())
}

/// The daemon's own answer (`ctr -a <sock> version`, "Server: … Version: x").
fn server_version(address: &str) -> Option<String> {
    let ctr = which("ctr")?;
    let mut c = Command::new(ctr);
    c.args(["-a", address, "version"]);
    let out = run_tool(c).ok().filter(|o| o.status == 0)?;
    let server = out.stdout.split("Server:").nth(1)?;
    server.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Version:")
            .map(|v| v.trim().trim_start_matches('v').to_string())
    })
}

fn series(m: &Matrix, version: Option<&str>) -> Option<String> {
    let v = parse_containerd_version(version?)?;
    m.release(&v).map(|r| r.series.clone())
}

pub(super) fn is_daemon(p: &Proc) -> bool {
    let named = p.argv0_base() == "containerd" || p.exe_base() == "containerd";
    // `containerd publish` (the legacy shim's event helper) and other subcommands are short-lived
    // clients, not daemons.
    named
        && !p.args.iter().skip(1).any(|a| {
            matches!(
                a.as_str(),
                "publish" | "config" | "oci-hook" | "--version" | "-v"
            )
        })
}

pub(super) fn runtime_binary_name(runtime: &str) -> Option<String> {
    // io.containerd.runc.v2 -> containerd-shim-runc-v2 (the last two dot-separated parts).
    let mut parts = runtime.rsplit('.');
    let b = parts.next()?;
    let a = parts.next()?;
    Some(format!("containerd-shim-{a}-{b}"))
}

fn daemon_of(p: &Proc, m: &Matrix) -> Daemon {
    let selinux = host::selinux_mode().is_some();
    let cwd = host::cwd(p.pid).unwrap_or_else(|| PathBuf::from("/"));
    let config_flag = p.flag(&["config", "c"]);
    let config_path = config_flag
        .clone()
        .map(|c| cwd.join(c))
        .or_else(|| Some(PathBuf::from(config::DEFAULT_CONFIG)).filter(|p| p.exists()));
    let (cfg, config_error) = match &config_path {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match config::parse(&text) {
                Ok(c) => (c, None),
                Err(e) => (config::DaemonConfig::default(), Some(e.to_string())),
            },
            Err(e) => (config::DaemonConfig::default(), Some(e.to_string())),
        },
        None => (config::DaemonConfig::default(), None),
    };
    let address = p
        .flag(&["address", "a"])
        .or_else(|| cfg.address.clone())
        .unwrap_or_else(|| config::DEFAULT_ADDRESS.to_string());
    let root = p
        .flag(&["root"])
        .or_else(|| cfg.root.clone())
        .unwrap_or_else(|| config::DEFAULT_ROOT.to_string());
    let state = p
        .flag(&["state"])
        .or_else(|| cfg.state.clone())
        .unwrap_or_else(|| config::DEFAULT_STATE.to_string());
    let exe_path = PathBuf::from(format!("/proc/{}/exe", p.pid));
    let version = server_version(&address).or_else(|| containerd_version_of(&exe_path));
    let series = series(m, version.as_deref());
    let exe = p
        .exe
        .as_ref()
        .map(|e| e.display().to_string())
        .unwrap_or_default();

    // Which binary containerd would run for each runtime now: $PATH of the daemon, then the
    // directory of its executable (its lookup order); the legacy runtime runs its `shim`.
    let path_env = host::env_var(p.pid, "PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let exe_dir = p
        .exe
        .as_ref()
        .and_then(|e| e.parent())
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let search = format!("{path_env}:{exe_dir}");
    let offered: Vec<String> = version
        .as_deref()
        .and_then(parse_containerd_version)
        .and_then(|v| m.release(&v))
        .map(|r| r.runtimes.clone())
        .unwrap_or_else(|| {
            Personality::ALL
                .iter()
                .filter_map(|p| p.runtime_name())
                .map(String::from)
                .collect()
        });
    let mut runtimes: BTreeSet<String> = offered.into_iter().collect();
    runtimes.extend(cfg.runtime_types());
    let next_shims = runtimes
        .into_iter()
        .filter_map(|rt| {
            let path = if rt == LEGACY_RUNTIME {
                let shim = cfg
                    .v1_shim
                    .clone()
                    .unwrap_or_else(|| Personality::ShimV1.binary_name().into());
                if shim.starts_with('/') {
                    Some(PathBuf::from(shim)).filter(|p| p.exists())
                } else {
                    which_in(&search, &shim)
                }
            } else if rt.starts_with('/') {
                Some(PathBuf::from(&rt)).filter(|p| p.exists())
            } else {
                which_in(&search, &runtime_binary_name(&rt)?)
            };
            let binary = path.as_deref().map(inspect::classify);
            let label = selinux
                .then(|| path.as_deref().and_then(host::selinux_label))
                .flatten();
            Some(NextShim {
                runtime: rt,
                path: path.map(|p| p.display().to_string()),
                binary,
                label,
            })
        })
        .collect();
    Daemon {
        pid: p.pid,
        exe,
        exe_label: selinux.then(|| host::selinux_label(&exe_path)).flatten(),
        version,
        series,
        config_path: config_path.map(|c| c.display().to_string()),
        config_error,
        address,
        root,
        state,
        config: cfg,
        next_shims,
    }
}

/// `-v` of a Go shim binary ("  Version:  1.6.20~ds1").
fn go_shim_version(pid: u32) -> Option<String> {
    let mut c = Command::new(format!("/proc/{pid}/exe"));
    c.arg("-v");
    let out = run_tool(c).ok().filter(|o| o.status == 0)?;
    out.stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix("Version:")
            .map(|v| v.trim().to_string())
    })
}

/// A bundle: which container, and how its shim can be recognised.
struct Bundle {
    dir: PathBuf,
    container: String,
    /// Socket path from `address` (without `unix://`).
    socket: Option<String>,
    shim_pid: Option<u32>,
}

/// The unix socket containerd 2.x recorded for a bundle in `bootstrap.json` (the shim's start
/// answer). Needed where no `address` file exists: the Go runc.v2 shim of 2.3 writes none, and
/// 2.3 CRI attaches pod containers to a running shim without `start`.
fn bootstrap_socket(bundle: &Path) -> Option<String> {
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bootstrap.json")).ok()?).ok()?;
    j.get("address")?
        .as_str()?
        .strip_prefix("unix://")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn bundles(state: &Path) -> Vec<Bundle> {
    let mut out = Vec::new();
    for kind in ["io.containerd.runtime.v2.task", LEGACY_RUNTIME] {
        let Ok(nss) = std::fs::read_dir(state.join(kind)) else {
            continue;
        };
        for ns in nss.flatten() {
            let Ok(ids) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for id in ids.flatten() {
                let name = id.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !id.path().is_dir() {
                    continue;
                }
                let dir = id.path();
                let socket = std::fs::read_to_string(dir.join("address"))
                    .ok()
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .map(|a| a.strip_prefix("unix://").unwrap_or(&a).to_string())
                    .or_else(|| bootstrap_socket(&dir));
                let shim_pid = std::fs::read_to_string(dir.join("shim.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                out.push(Bundle {
                    container: format!("{}/{name}", ns.file_name().to_string_lossy()),
                    dir,
                    socket,
                    shim_pid,
                });
            }
        }
    }
    out
}

/// What the install manifests in `state_dir` recorded, and how each name stands now.
fn installs(state_dir: &Path) -> Vec<InstallState> {
    let root = Path::new("/");
    install::manifests(state_dir)
        .into_iter()
        .map(|(file, m)| InstallState {
            names: m
                .records
                .iter()
                .filter(|r| r.installed != install::UNCHANGED)
                .map(|r| {
                    let state = install::record_state(root, r);
                    let here = state == "changed";
                    InstallName {
                        path: r.path.clone(),
                        state: state.to_string(),
                        now: here.then(|| inspect::classify(Path::new(&r.path))),
                        owner: here
                            .then(|| install::package_owner(root, Path::new(&r.path)))
                            .flatten(),
                    }
                })
                .collect(),
            prefix: m.prefix,
            manifest: file.display().to_string(),
            shimgate_version: m.shimgate_version,
        })
        .collect()
}

/// Gather the facts. `state_dir`: where `shimgate install` keeps its manifests.
pub fn gather(m: &Matrix, state_dir: &Path) -> Report {
    let procs = host::processes();
    let containerd_binary = which("containerd").map(|p| {
        let version = containerd_version_of(&p);
        Binary {
            path: p.display().to_string(),
            series: series(m, version.as_deref()),
            version,
        }
    });
    let daemons: Vec<Daemon> = procs
        .iter()
        .filter(|p| is_daemon(p))
        .map(|p| daemon_of(p, m))
        .collect();

    // Bundles of every running daemon, and of the default state dir.
    let mut states: BTreeSet<String> = daemons.iter().map(|d| d.state.clone()).collect();
    states.insert(config::DEFAULT_STATE.to_string());
    let all_bundles: Vec<Bundle> = states.iter().flat_map(|s| bundles(Path::new(s))).collect();
    let listening = host::listening_paths();

    let daemon_addr = |a: &str| {
        let a = go_clean(a.strip_prefix("unix://").unwrap_or(a));
        daemons
            .iter()
            .find(|d| go_clean(&d.address) == a)
            .map(|d| d.pid)
    };

    let mut shims = Vec::new();
    for p in procs.iter().filter(|p| is_serving_shim(p)) {
        let argv0 = p.argv0_base().to_string();
        let personality = shim_personality(&argv0).unwrap_or("other").to_string();
        let exe_link = PathBuf::from(format!("/proc/{}/exe", p.pid));
        let binary = inspect::classify(&exe_link);
        // Only binaries known to answer `-v` and exit are run; anything else is just named.
        let binary_version = match &binary {
            BinaryKind::Shimgate { version } => Some(version.clone()),
            BinaryKind::GoContainerd => go_shim_version(p.pid),
            BinaryKind::Other => None,
        };
        let sockets = host::listening_sockets(p.pid);
        let abstract_socket = sockets.iter().any(|s| s.starts_with('@'));
        let mut containers: Vec<String> = all_bundles
            .iter()
            .filter(|b| {
                b.shim_pid == Some(p.pid) || b.socket.as_ref().is_some_and(|s| sockets.contains(s))
            })
            .map(|b| b.container.clone())
            .collect();
        let namespace = p.flag(&["namespace"]);
        if containers.is_empty() {
            // No bundle names this shim (orphan, or a state dir we do not know): its own
            // command line, or its cwd (the bundle it started in), still tell.
            let id = p.flag(&["id"]).or_else(|| {
                host::cwd(p.pid).and_then(|c| c.file_name().map(|n| n.to_string_lossy().into()))
            });
            if let (Some(ns), Some(id)) = (&namespace, id) {
                containers.push(format!("{ns}/{id}"));
            }
        }
        containers.sort();
        containers.dedup();
        let containerd_address = p.flag(&["address"]);
        let containerd_pid = containerd_address.as_deref().and_then(daemon_addr);
        shims.push(Shim {
            pid: p.pid,
            personality,
            argv0: p.args.first().cloned().unwrap_or_default(),
            exe: p
                .exe
                .as_ref()
                .map(|e| e.display().to_string())
                .unwrap_or_default(),
            binary,
            binary_version,
            namespace,
            orphaned: containerd_pid.is_none(),
            containerd_address,
            containerd_pid,
            sockets,
            abstract_socket,
            containers,
            children: host::children(&procs, p.pid).len(),
            pss_kib: host::pss_kib(p.pid),
        });
    }

    // Sockets in the shim socket directory that nobody serves.
    let mut stale_sockets = Vec::new();
    if let Ok(rd) = std::fs::read_dir(DEFAULT_SOCKET_DIR) {
        for e in rd.flatten() {
            let is_socket = e
                .file_type()
                .is_ok_and(|t| std::os::unix::fs::FileTypeExt::is_socket(&t));
            if is_socket && !host::socket_live(&e.path(), &listening) {
                stale_sockets.push(e.path().display().to_string());
            }
        }
    }
    stale_sockets.sort();

    // Bundles whose shim is gone: containerd runs `delete` for them when it next starts.
    let stale_bundles = all_bundles
        .iter()
        .filter_map(|b| {
            let why = match (b.shim_pid, &b.socket) {
                (Some(pid), _) if !host::alive(pid) => format!("shim pid {pid} is gone"),
                (Some(_), _) => return None,
                (None, Some(s)) if !host::socket_live(Path::new(s), &listening) => {
                    format!("nobody serves its socket {s}")
                }
                (None, Some(_)) => return None,
                (None, None) => "no address and no shim.pid".to_string(),
            };
            Some(StaleBundle {
                path: b.dir.display().to_string(),
                container: b.container.clone(),
                why,
            })
        })
        .collect();

    let cgroup = host::cgroup_mode();
    let runc_path = which("runc");
    let runc_version = runc_path.as_ref().and_then(|p| {
        let mut c = Command::new(p);
        c.arg("--version");
        run_tool(c)
            .ok()
            .filter(|o| o.status == 0)
            .map(|o| first_line(&o.stdout))
    });
    let host = HostInfo {
        selinux: host::selinux_mode(),
        kernel: host::kernel_release(),
        features: host::kernel_features(&cgroup),
        cgroup,
        runc_path: runc_path.map(|p| p.display().to_string()),
        runc_version,
    };

    let mut r = Report {
        format: REPORT_FORMAT,
        shimgate_version: crate::VERSION.to_string(),
        containerd_binary,
        daemons,
        shims,
        stale_sockets,
        stale_bundles,
        installs: installs(state_dir),
        host,
        findings: Vec::new(),
        verdict: String::new(),
        exit_code: 0,
    };
    r.findings = judge(&r, m);
    let worst = r.findings.iter().map(|f| f.severity).max();
    (r.verdict, r.exit_code) = match worst {
        Some(Severity::Problem) => ("problems".into(), exit::PROBLEMS),
        Some(Severity::Warn) => ("warnings".into(), exit::PARTIAL),
        _ => ("ok".into(), exit::OK),
    };
    r
}
