//! doctor's findings: what it concludes from the gathered [`Report`], one function per finding
//! id. Every finding carries a stable `id` (tools match on it; MIGRATION.md lists them all),
//! a severity, a `subject` (the daemon, shim, path … it is about), a message and a step.
//!
//! Adding a finding is one local change: a function here and its line in [`CHECKS`] (with the
//! id and one sentence, which MIGRATION.md's table must then list: a unit test checks it). The
//! runner gives every finding its check's id, so a check cannot report under another's id;
//! only the quirk check reports each matrix quirk under that quirk's own id.

use std::path::Path;

use serde::Serialize;

use super::{InstallName, Report, Shim};
use crate::admin::inspect::BinaryKind;
use crate::cli::Personality;
use crate::compat::{parse_containerd_version, Matrix, Severity};

/// What a finding is about. `kind` says which of the other fields are set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub kind: SubjectKind,
    /// The daemon's or shim's pid (`daemon`, `runtime`: its daemon, `shim`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A file: the containerd binary, a socket, a bundle, an installed shim name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A runtime type, a kernel feature, or a bundle's `namespace/id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The kinds of subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    /// The machine as a whole.
    Host,
    /// The containerd executable in `$PATH` (`path`).
    ContainerdBinary,
    /// A running containerd (`pid`).
    Daemon,
    /// A runtime type of a running containerd (`pid` of the daemon, `name` of the runtime).
    Runtime,
    /// A running shim (`pid`).
    Shim,
    /// A socket file (`path`).
    Socket,
    /// A bundle directory (`path`, `name`: its container as `namespace/id`).
    Bundle,
    /// A kernel feature (`name`).
    KernelFeature,
    /// A file `shimgate install` manages (`path`).
    File,
}

impl Subject {
    fn new(kind: SubjectKind) -> Subject {
        Subject {
            kind,
            pid: None,
            path: None,
            name: None,
        }
    }
    pub fn host() -> Subject {
        Subject::new(SubjectKind::Host)
    }
    pub fn containerd_binary(path: &str) -> Subject {
        Subject {
            path: Some(path.to_string()),
            ..Subject::new(SubjectKind::ContainerdBinary)
        }
    }
    pub fn daemon(pid: u32) -> Subject {
        Subject {
            pid: Some(pid),
            ..Subject::new(SubjectKind::Daemon)
        }
    }
    pub fn runtime(daemon: u32, runtime: &str) -> Subject {
        Subject {
            pid: Some(daemon),
            name: Some(runtime.to_string()),
            ..Subject::new(SubjectKind::Runtime)
        }
    }
    pub fn shim(pid: u32) -> Subject {
        Subject {
            pid: Some(pid),
            ..Subject::new(SubjectKind::Shim)
        }
    }
    pub fn socket(path: &str) -> Subject {
        Subject {
            path: Some(path.to_string()),
            ..Subject::new(SubjectKind::Socket)
        }
    }
    pub fn bundle(path: &str, container: &str) -> Subject {
        Subject {
            path: Some(path.to_string()),
            name: Some(container.to_string()),
            ..Subject::new(SubjectKind::Bundle)
        }
    }
    pub fn kernel_feature(name: &str) -> Subject {
        Subject {
            name: Some(name.to_string()),
            ..Subject::new(SubjectKind::KernelFeature)
        }
    }
    pub fn file(path: &str) -> Subject {
        Subject {
            path: Some(path.to_string()),
            ..Subject::new(SubjectKind::File)
        }
    }
}

/// Something the operator should know or do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable identifier: a [`CHECKS`] id or a quirk id from compat/matrix.toml.
    pub id: String,
    pub severity: Severity,
    pub subject: Subject,
    pub message: String,
    /// What to do about it (may be empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub step: String,
}

/// The findings one check reports; the runner stamps them with the check's id.
pub struct Found {
    id: &'static str,
    list: Vec<Finding>,
}

impl Found {
    fn add(
        &mut self,
        severity: Severity,
        subject: Subject,
        message: String,
        step: impl Into<String>,
    ) {
        self.list.push(Finding {
            id: self.id.to_string(),
            severity,
            subject,
            message,
            step: step.into(),
        });
    }
}

/// One kind of finding: its id, what it means (MIGRATION.md's table), and the function that
/// looks for it.
pub struct Check {
    pub id: &'static str,
    pub about: &'static str,
    pub find: fn(&Report, &Matrix, &mut Found),
}

/// The id under which the quirk check is listed; its findings carry each quirk's own id.
pub const QUIRK_CHECK: &str = "<quirk id>";

/// Every check doctor runs, in report order (findings are then sorted by severity, stably).
pub const CHECKS: &[Check] = &[
    Check { id: "containerd-missing", about: "containerd is neither in $PATH nor running", find: containerd_missing },
    Check { id: "containerd-not-running", about: "containerd is installed but no daemon runs: only the binary and the host were checked", find: containerd_not_running },
    Check { id: "containerd-version-unknown", about: "a running containerd did not tell its version", find: containerd_version_unknown },
    Check { id: "containerd-config-unreadable", about: "a running containerd's config file could not be read or parsed", find: containerd_config_unreadable },
    Check { id: "containerd-version-unparsed", about: "a containerd version string is not a release version", find: containerd_version_unparsed },
    Check { id: "containerd-not-in-matrix", about: "a containerd version is outside compat/matrix.toml", find: containerd_not_in_matrix },
    Check { id: QUIRK_CHECK, about: "a known quirk of this containerd version that matters for the runtimes in use (ids from compat/matrix.toml)", find: quirks },
    Check { id: "runtime-not-offered", about: "a runtime is configured or running that this containerd version no longer offers", find: runtime_not_offered },
    Check { id: "containerd-restart-pending", about: "a daemon runs another version than the containerd binary now installed at its path", find: containerd_restart_pending },
    Check { id: "runtime-binary-missing", about: "no shim binary exists for a configured runtime", find: runtime_binary_missing },
    Check { id: "new-shims-not-shimgate", about: "a daemon would start some new containers under other shims than shimgate", find: new_shims_not_shimgate },
    Check { id: "new-shims-shimgate", about: "a daemon starts new containers under shimgate", find: new_shims_shimgate },
    Check { id: "install-overwritten", about: "a name `shimgate install` switched is no longer what it put there (a package upgrade wrote over it, or it was removed)", find: install_overwritten },
    Check { id: "shim-not-shimgate", about: "a running shim is not shimgate (its containers keep it until recreated)", find: shim_not_shimgate },
    Check { id: "shim-outdated", about: "a shimgate shim runs another build than the one now installed", find: shim_outdated },
    Check { id: "shim-abstract-socket", about: "a running shim listens on an abstract socket (CVE-2020-15257)", find: shim_abstract_socket },
    Check { id: "shim-orphaned", about: "a running shim's containerd is not running", find: shim_orphaned },
    Check { id: "stale-socket", about: "a socket in /run/containerd/s that nobody serves", find: stale_socket },
    Check { id: "stale-bundle", about: "a bundle whose shim is gone", find: stale_bundle },
    Check { id: "runc-missing", about: "runc is not in $PATH", find: runc_missing },
    Check { id: "kernel-feature-missing", about: "a kernel feature shimgate uses is unavailable (problem for PR_SET_CHILD_SUBREAPER, warning otherwise)", find: kernel_feature_missing },
    Check { id: "selinux-label", about: "SELinux is enabled and the shimgate binary a daemon would run has another type than containerd's own binary", find: selinux_label },
    Check { id: "runc-v1-on-cgroup-v2", about: "io.containerd.runc.v1 in use on cgroup v2", find: runc_v1_on_cgroup_v2 },
    Check { id: "legacy-runtime-on-cgroup-v2", about: "a daemon configures or offers io.containerd.runtime.v1.linux on a cgroup v2 host, where it cannot run a container (problem if configured, info if only offered)", find: legacy_runtime_on_cgroup_v2 },
];

/// Run every check: the findings, most severe first (report order within a severity).
pub fn judge(r: &Report, m: &Matrix) -> Vec<Finding> {
    let mut all = Vec::new();
    for c in CHECKS {
        let mut found = Found {
            id: c.id,
            list: Vec::new(),
        };
        (c.find)(r, m, &mut found);
        all.extend(found.list);
    }
    all.sort_by_key(|x| std::cmp::Reverse(x.severity));
    all
}

use Severity::{Info, Problem, Warn};

fn containerd_missing(r: &Report, _: &Matrix, f: &mut Found) {
    if r.containerd_binary.is_none() && r.daemons.is_empty() {
        f.add(
            Problem,
            Subject::host(),
            "containerd is neither installed (not in $PATH) nor running".into(),
            "install containerd (Debian: apt-get install containerd), then run shimgate install",
        );
    }
}

fn containerd_not_running(r: &Report, _: &Matrix, f: &mut Found) {
    if let (Some(b), true) = (&r.containerd_binary, r.daemons.is_empty()) {
        f.add(
            Warn,
            Subject::containerd_binary(&b.path),
            "no containerd is running: only the installed binary and the host were checked".into(),
            "start containerd and run shimgate doctor again",
        );
    }
}

fn containerd_version_unknown(r: &Report, _: &Matrix, f: &mut Found) {
    for d in r.daemons.iter().filter(|d| d.version.is_none()) {
        f.add(
            Warn,
            Subject::daemon(d.pid),
            format!("containerd pid {} did not tell its version", d.pid),
            "",
        );
    }
}

fn containerd_config_unreadable(r: &Report, _: &Matrix, f: &mut Found) {
    for d in &r.daemons {
        if let Some(e) = &d.config_error {
            f.add(
                Warn,
                Subject {
                    path: d.config_path.clone(),
                    ..Subject::daemon(d.pid)
                },
                format!(
                    "containerd pid {}: config {} could not be read: {e}",
                    d.pid,
                    d.config_path.as_deref().unwrap_or("?")
                ),
                "",
            );
        }
    }
}

/// A containerd version doctor found: who has it, and which runtimes it uses.
struct Site {
    who: String,
    subject: Subject,
    version: String,
    used: Vec<String>,
}

/// The runtime type a shim personality serves.
pub fn runtime_of(personality: &str) -> Option<&'static str> {
    Personality::from_report_name(personality)?.runtime_name()
}

/// The installed binary's version, then each daemon's (with the runtimes it uses: configured
/// ones and those of its running shims).
fn sites(r: &Report) -> Vec<Site> {
    let mut v = Vec::new();
    if let Some(b) = &r.containerd_binary {
        if let Some(ver) = &b.version {
            v.push(Site {
                who: format!("installed containerd {}", b.path),
                subject: Subject::containerd_binary(&b.path),
                version: ver.clone(),
                used: Vec::new(),
            });
        }
    }
    for d in &r.daemons {
        let Some(ver) = &d.version else { continue };
        let mut used = d.config.runtime_types();
        used.extend(
            r.shims
                .iter()
                .filter(|s| s.containerd_pid == Some(d.pid))
                .filter_map(|s| runtime_of(&s.personality).map(str::to_string)),
        );
        v.push(Site {
            who: format!("containerd pid {}", d.pid),
            subject: Subject::daemon(d.pid),
            version: ver.clone(),
            used,
        });
    }
    v
}

fn containerd_version_unparsed(r: &Report, _: &Matrix, f: &mut Found) {
    for s in sites(r) {
        if parse_containerd_version(&s.version).is_none() {
            f.add(
                Warn,
                s.subject,
                format!(
                    "{}: version {:?} is not a release version",
                    s.who, s.version
                ),
                "",
            );
        }
    }
}

fn containerd_not_in_matrix(r: &Report, m: &Matrix, f: &mut Found) {
    for s in sites(r) {
        let Some(v) = parse_containerd_version(&s.version) else {
            continue;
        };
        if m.release(&v).is_none() {
            f.add(
                Warn,
                s.subject,
                format!(
                    "{}: containerd {} is not in shimgate's compatibility matrix",
                    s.who, s.version
                ),
                "check MIGRATION.md and the release notes of this containerd before switching",
            );
        }
    }
}

fn quirks(r: &Report, m: &Matrix, f: &mut Found) {
    let mut seen = std::collections::BTreeSet::new();
    for s in sites(r) {
        let Some(v) = parse_containerd_version(&s.version) else {
            continue;
        };
        if m.release(&v).is_none() {
            continue;
        }
        for q in m.quirks(&v) {
            let relevant = q.runtimes.is_empty()
                || s.used.is_empty()
                || q.runtimes.iter().any(|rt| s.used.contains(rt));
            if !relevant || !seen.insert((q.id.clone(), s.version.clone())) {
                continue;
            }
            f.list.push(Finding {
                id: q.id.clone(),
                severity: q.severity,
                subject: s.subject.clone(),
                message: format!(
                    "containerd {} ({}): {} — shimgate: {}",
                    s.version, s.who, q.summary, q.shimgate
                ),
                step: q.advice.clone(),
            });
        }
    }
}

fn runtime_not_offered(r: &Report, m: &Matrix, f: &mut Found) {
    for s in sites(r) {
        let Some(rel) = parse_containerd_version(&s.version).and_then(|v| m.release(&v)) else {
            continue;
        };
        let mut used = s.used.clone();
        used.sort();
        used.dedup();
        for rt in used.iter().filter(|rt| !rel.runtimes.contains(rt)) {
            f.add(
                Problem,
                match s.subject.pid {
                    Some(pid) => Subject::runtime(pid, rt),
                    None => s.subject.clone(),
                },
                format!(
                    "{}: runtime {rt} is used but containerd {} does not offer it",
                    s.who, s.version
                ),
                "move those containers to io.containerd.runc.v2 (change the runtime in the config or client and recreate them)",
            );
        }
    }
}

fn containerd_restart_pending(r: &Report, _: &Matrix, f: &mut Found) {
    let Some(b) = &r.containerd_binary else {
        return;
    };
    for d in &r.daemons {
        if let (Some(bv), Some(dv)) = (&b.version, &d.version) {
            if bv != dv && Path::new(&b.path) == Path::new(&d.exe) {
                f.add(
                    Warn,
                    Subject::daemon(d.pid),
                    format!(
                        "containerd pid {} runs {dv}, but {} is now {bv}",
                        d.pid, b.path
                    ),
                    "restart containerd to run the installed version (running containers are kept)",
                );
            }
        }
    }
}

fn runtime_binary_missing(r: &Report, _: &Matrix, f: &mut Found) {
    for d in &r.daemons {
        let configured = d.config.runtime_types();
        for n in d
            .next_shims
            .iter()
            .filter(|n| n.path.is_none() && configured.contains(&n.runtime))
        {
            f.add(
                Warn,
                Subject::runtime(d.pid, &n.runtime),
                format!(
                    "containerd pid {}: no binary found for configured runtime {} (its containers cannot start)",
                    d.pid, n.runtime
                ),
                "run shimgate install (it provides every shim name)",
            );
        }
    }
}

fn new_shims_not_shimgate(r: &Report, _: &Matrix, f: &mut Found) {
    for d in &r.daemons {
        let not_ours: Vec<String> = d
            .next_shims
            .iter()
            .filter_map(|n| match (&n.path, &n.binary) {
                (None, _) | (Some(_), Some(BinaryKind::Shimgate { .. })) => None,
                (Some(p), kind) => Some(format!(
                    "{} ({} {p})",
                    n.runtime,
                    kind.as_ref()
                        .map_or("unknown binary".into(), BinaryKind::describe)
                )),
            })
            .collect();
        if !not_ours.is_empty() {
            f.add(
                Info,
                Subject::daemon(d.pid),
                format!(
                    "containerd pid {}: new containers of {} do not start under shimgate",
                    d.pid,
                    not_ours.join(", ")
                ),
                "run shimgate install to switch new containers to shimgate",
            );
        }
    }
}

fn new_shims_shimgate(r: &Report, _: &Matrix, f: &mut Found) {
    for d in &r.daemons {
        let mut ours = Vec::new();
        let mut others = false;
        for n in d.next_shims.iter().filter(|n| n.path.is_some()) {
            match &n.binary {
                Some(BinaryKind::Shimgate { version }) => {
                    ours.push(format!("{} (shimgate {version})", n.runtime));
                }
                _ => others = true,
            }
        }
        // Said only when every runtime is shimgate; otherwise new-shims-not-shimgate speaks.
        if !ours.is_empty() && !others {
            f.add(
                Info,
                Subject::daemon(d.pid),
                format!(
                    "containerd pid {}: new containers start under shimgate: {}",
                    d.pid,
                    ours.join(", ")
                ),
                "",
            );
        }
    }
}

fn install_overwritten(r: &Report, _: &Matrix, f: &mut Found) {
    for i in &r.installs {
        for n in i.names.iter().filter(|n| n.state != "ok") {
            let InstallName {
                path, now, owner, ..
            } = n;
            let what = match (n.state.as_str(), now) {
                ("missing", _) => "is gone".to_string(),
                (_, Some(kind)) => format!("is now {}", kind.describe()),
                _ => "has changed".to_string(),
            };
            let by = owner
                .as_ref()
                .map_or(String::new(), |o| format!(" (owned by package {o})"));
            f.add(
                Warn,
                Subject::file(path),
                format!(
                    "{path} was switched to shimgate by `shimgate install` (manifest {}) but {what}{by}: new containers that use it no longer start under shimgate",
                    i.manifest
                ),
                format!(
                    "shimgate install --prefix {} (switches it back and keeps the new file as {path}{})",
                    i.prefix,
                    crate::admin::install::KEPT_SUFFIX
                ),
            );
        }
    }
}

fn shim_label(s: &Shim) -> String {
    if s.containers.is_empty() {
        format!("shim pid {}", s.pid)
    } else {
        format!("shim pid {} ({})", s.pid, s.containers.join(", "))
    }
}

fn shim_not_shimgate(r: &Report, _: &Matrix, f: &mut Found) {
    for s in r
        .shims
        .iter()
        .filter(|s| !matches!(s.binary, BinaryKind::Shimgate { .. }))
    {
        f.add(
            Info,
            Subject::shim(s.pid),
            format!(
                "{} runs {}; its containers keep it until they are recreated",
                shim_label(s),
                s.binary.describe()
            ),
            "",
        );
    }
}

fn shim_outdated(r: &Report, _: &Matrix, f: &mut Found) {
    for s in &r.shims {
        let BinaryKind::Shimgate { version: running } = &s.binary else {
            continue;
        };
        let Some(runtime) = runtime_of(&s.personality) else {
            continue;
        };
        let installed = r
            .daemons
            .iter()
            .find(|d| Some(d.pid) == s.containerd_pid)
            .and_then(|d| d.next_shims.iter().find(|n| n.runtime == runtime))
            .and_then(|n| match &n.binary {
                Some(BinaryKind::Shimgate { version }) if version != running => Some(version),
                _ => None,
            });
        if let Some(installed) = installed {
            f.add(
                Info,
                Subject::shim(s.pid),
                format!(
                    "{} runs shimgate {running}, {installed} is installed",
                    shim_label(s)
                ),
                "shimgate upgrade --all moves shimgate shims onto the installed binary; their containers keep running",
            );
        }
    }
}

fn shim_abstract_socket(r: &Report, _: &Matrix, f: &mut Found) {
    for s in r.shims.iter().filter(|s| s.abstract_socket) {
        f.add(
            Warn,
            Subject::shim(s.pid),
            format!(
                "{} listens on an abstract socket ({}): reachable from any process in the host network namespace (CVE-2020-15257)",
                shim_label(s),
                s.sockets.join(", ")
            ),
            "upgrade containerd to 1.3.9+/1.4.3+, then recreate these containers",
        );
    }
}

fn shim_orphaned(r: &Report, _: &Matrix, f: &mut Found) {
    for s in r.shims.iter().filter(|s| s.orphaned) {
        f.add(
            Warn,
            Subject::shim(s.pid),
            format!(
                "{} serves containerd at {}, which is not running",
                shim_label(s),
                s.containerd_address.as_deref().unwrap_or("?")
            ),
            format!(
                "start that containerd again (it reconnects to the shim), or stop the containers and kill shim pid {}",
                s.pid
            ),
        );
    }
}

fn stale_socket(r: &Report, _: &Matrix, f: &mut Found) {
    for s in &r.stale_sockets {
        f.add(
            Warn,
            Subject::socket(s),
            format!("stale shim socket {s}: nobody listens on it"),
            format!("rm {s}"),
        );
    }
}

fn stale_bundle(r: &Report, _: &Matrix, f: &mut Found) {
    for b in &r.stale_bundles {
        f.add(
            Warn,
            Subject::bundle(&b.path, &b.container),
            format!("stale bundle {} ({}): {}", b.path, b.container, b.why),
            "restart containerd (it cleans up bundles whose shim is gone), or delete the task with ctr",
        );
    }
}

fn runc_missing(r: &Report, _: &Matrix, f: &mut Found) {
    if r.host.runc_path.is_none() {
        f.add(
            Problem,
            Subject::host(),
            "runc is not in $PATH".into(),
            "install runc (Debian: apt-get install runc), or name a runtime binary in the runtime options",
        );
    }
}

fn kernel_feature_missing(r: &Report, _: &Matrix, f: &mut Found) {
    for feat in r.host.features.iter().filter(|x| !x.available) {
        let severity = if feat.name == "PR_SET_CHILD_SUBREAPER" {
            Problem
        } else {
            Warn
        };
        f.add(
            severity,
            Subject::kernel_feature(&feat.name),
            format!(
                "kernel feature {} is unavailable: {}",
                feat.name, feat.without
            ),
            "",
        );
    }
}

fn selinux_label(r: &Report, _: &Matrix, f: &mut Found) {
    use crate::admin::host::selinux_type;
    let mut seen = std::collections::BTreeSet::new();
    for d in &r.daemons {
        let Some(want) = d.exe_label.as_deref().and_then(selinux_type) else {
            continue;
        };
        for n in &d.next_shims {
            let (Some(path), Some(BinaryKind::Shimgate { .. }), Some(label)) =
                (&n.path, &n.binary, &n.label)
            else {
                continue;
            };
            let Some(have) = selinux_type(label) else {
                continue;
            };
            // The label that counts is the executed file's: the target of the shim name.
            let file = std::fs::canonicalize(path)
                .map_or_else(|_| path.clone(), |p| p.display().to_string());
            if have == want || !seen.insert(file.clone()) {
                continue;
            }
            f.add(
                Warn,
                Subject::file(&file),
                format!(
                    "{file} (shimgate, run for {} by containerd pid {}) is labelled {have}, containerd's own binary {want}",
                    n.runtime, d.pid
                ),
                format!("semanage fcontext -a -t {want} '{file}' && restorecon -v {file}"),
            );
        }
    }
}

fn runc_v1_on_cgroup_v2(r: &Report, _: &Matrix, f: &mut Found) {
    let runc_v1 = "io.containerd.runc.v1".to_string();
    if r.host.cgroup.starts_with("v2")
        && (r
            .shims
            .iter()
            .any(|s| s.personality == Personality::RuncV1.report_name())
            || r.daemons
                .iter()
                .any(|d| d.config.runtime_types().contains(&runc_v1)))
    {
        f.add(
            Info,
            Subject::host(),
            "io.containerd.runc.v1 on cgroup v2: the Go runc.v1 shim has no stats or OOM events there; shimgate's has".into(),
            "",
        );
    }
}

/// The legacy runtime cannot run a single container on a cgroup v2 host: containerd's v1
/// runtime loads each new task's cgroup as v1 and fails the create ("cgroups: cgroup
/// mountpoint does not exist"). A problem where a daemon's config uses it (every container of
/// that runtime fails), worth knowing where the daemon merely offers it (`ctr --runtime`, an
/// old Docker's default).
fn legacy_runtime_on_cgroup_v2(r: &Report, m: &Matrix, f: &mut Found) {
    const LEGACY: &str = crate::cli::LEGACY_RUNTIME;
    if !r.host.cgroup.starts_with("v2") {
        return;
    }
    for d in &r.daemons {
        let configured = d.config.runtime_types().iter().any(|t| t == LEGACY);
        let disabled = d
            .config
            .disabled_plugins
            .iter()
            .any(|p| p == LEGACY || p == "linux");
        let offered = !disabled
            && d.version
                .as_deref()
                .and_then(parse_containerd_version)
                .and_then(|v| m.release(&v))
                .is_some_and(|rel| rel.runtimes.iter().any(|t| t == LEGACY));
        if !configured && !offered {
            continue;
        }
        f.add(
            if configured { Problem } else { Info },
            Subject::daemon(d.pid),
            format!(
                "containerd pid {}: {LEGACY} is {} but cannot run containers on this cgroup v2 host: containerd's legacy runtime supports cgroup v1 only (shimgate's containerd-shim refuses such creates before runc runs, so nothing is left behind)",
                d.pid,
                if configured { "configured" } else { "offered" }
            ),
            format!(
                "run containers with io.containerd.runc.v2 (CRI runtime_type, ctr --runtime; Docker 20.10+ does); to refuse the legacy runtime outright, add \"{LEGACY}\" to disabled_plugins"
            ),
        );
    }
}

#[cfg(test)]
mod tests;
