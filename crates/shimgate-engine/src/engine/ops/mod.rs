//! [`Engine`]: the operations both APIs call. Each operation follows "look up -> lock the
//! process -> check the state table -> run the runtime -> commit -> queue the event".
//!
//! Concurrency invariants:
//! * The container map is locked only to look up, insert or remove (never across an await).
//! * One async mutex per process (`Process::op`) serialises operations on that process; the
//!   exit path never takes it, so an exit is handled even while a long operation runs.
//! * `State` and `Wait` take no async lock: State answers within containerd's 2 s even while a
//!   runtime call is in flight, and a cancelled Wait leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::mpsc;

use super::cgroup::{Cgroup, CgroupError};
use super::container::{lock, spec_has_own_pidns, Container, ExecGate, Process};
use super::error::{Error, Kind, Result};
use super::event::{Event, EventKind, EventSink};
use super::guards;
use super::lifecycle::{self, ExitNote};
use super::mount;
use super::private_file::write_private;
use super::runc::Runc;
use super::runtime::{CreateOpts, ExecOpts, OciRuntime, RestoreOpts, RuntimeStdio};
use super::state::{self, Op, State};
use super::types::{
    CheckpointSpec, ContainerId, CreateSpec, Deleted, ExecId, ExecSpec, Exit, PidInfo, ProcessRef,
    ProcessState, RuncOptions, Status,
};
use crate::io::{IoConfig, ProcessIo, StdioSpec, CLOSE_WAIT};
use crate::reaper::{Spawner, Subscription};

/// When a shim may exit after `Shutdown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownPolicy {
    /// Only once no container is left (runc.v2: a group shim serves many).
    WhenEmpty,
    /// Always (runc.v1).
    Always,
}

/// How the requests of an API name a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Every request carries a container id and an exec id (empty = init): the task API. The
    /// adapter builds `(ContainerId, ProcessRef)` from the request alone.
    PerRequest,
    /// The shim serves one container and a request names one process id: the container's own
    /// id is init, any other id an exec of it (the legacy shim API). Names are turned into
    /// `(ContainerId, ProcessRef)` by [`Engine::resolve`].
    SoleContainer,
}

/// A process as a [`Addressing::SoleContainer`] request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessName<'a> {
    /// The request addresses init implicitly (an RPC that only applies to the container).
    Init,
    /// An existing process: the container id for init, otherwise an exec id.
    Id(&'a str),
    /// The id an `Exec` request wants to register.
    NewExec(&'a str),
}

/// How an API differs, as data the core reads (nobody writes `if v1`).
#[derive(Debug, Clone)]
pub struct ApiProfile {
    /// Runtime name used in messages (`io.containerd.runc.v2`).
    pub runtime_name: &'static str,
    /// The events this shim publishes itself.
    pub publishes: &'static [EventKind],
    pub shutdown: ShutdownPolicy,
    /// Error for an id the shim does not hold: class and message. Under
    /// [`Addressing::SoleContainer`] this is also the answer when the container is addressed
    /// before it was created.
    pub missing_container: (Kind, &'static str),
    /// Error for a process id the container does not hold: class and message, in which
    /// `{id}` stands for the id.
    pub missing_process: (Kind, &'static str),
    pub addressing: Addressing,
    /// The directory containerd keeps this API's bundles in, as `<dir>/<namespace>/<id>`
    /// (`io.containerd.runtime.v2.task`, `io.containerd.runtime.v1.linux`). A Create whose
    /// bundle is anywhere else is refused before anything touches the filesystem. `None`
    /// (tests) accepts any absolute path.
    pub bundle_dir: Option<&'static str>,
}

impl ApiProfile {
    fn publishes(&self, k: EventKind) -> bool {
        self.publishes.contains(&k)
    }

    fn missing_container(&self) -> Error {
        let (kind, msg) = self.missing_container;
        Error::new(kind, msg)
    }

    fn missing_process(&self, id: &str) -> Error {
        let (kind, template) = self.missing_process;
        Error::new(kind, template.replace("{id}", id))
    }
}

/// Builds the runtime driver for a container from its options.
pub trait RuntimeFactory: Send + Sync {
    fn runtime(&self, options: &RuncOptions, bundle: &Path) -> Arc<dyn OciRuntime>;
}

/// The production factory: a runc-compatible CLI, rooted at `<root>/<namespace>`.
pub struct RuncFactory {
    pub spawner: Spawner,
    pub namespace: String,
    /// Per-call deadlines for the runtime (`Deadlines::from_env()` in the shim).
    pub deadlines: super::runc::Deadlines,
}

impl RuntimeFactory for RuncFactory {
    fn runtime(&self, o: &RuncOptions, bundle: &Path) -> Arc<dyn OciRuntime> {
        let mut runc = Runc::new(
            self.spawner.clone(),
            o.binary(),
            Path::new(o.root_base()).join(&self.namespace),
            bundle,
            (!o.criu_path.is_empty()).then(|| o.criu_path.clone()),
            o.systemd_cgroup,
        );
        runc.deadlines = self.deadlines;
        Arc::new(runc)
    }
}

pub struct Inner {
    pub profile: ApiProfile,
    pub namespace: String,
    pub shim_pid: u32,
    pub(super) spawner: Spawner,
    pub(super) factory: Arc<dyn RuntimeFactory>,
    pub(super) containers: Mutex<HashMap<ContainerId, Arc<Container>>>,
    /// Ids whose Create is in progress (so two Creates of one id cannot race).
    pub(super) creating: Mutex<HashSet<ContainerId>>,
    /// Notified whenever a container is added or removed (for [`Engine::idle_for`]).
    changed: tokio::sync::Notify,
    /// Recently deleted containers (bounded): see [`Tombstone`].
    pub(super) tombstones: Mutex<std::collections::VecDeque<Tombstone>>,
    sink: Arc<dyn EventSink>,
    pub(super) exits: mpsc::UnboundedSender<ExitNote>,
    /// Watches the exit dispatcher (see [`Engine::dispatcher_ended`]).
    dispatcher: crate::supervise::Ended,
}

impl Inner {
    /// Report OOM kills in `c`'s cgroup that were not reported yet, as one event. Called by the
    /// OOM watcher when the kernel signals (`notified`) and by the exit path before an exit is
    /// published, so an OOM kill's event always precedes the exit it caused and is reported
    /// exactly once whichever side sees it first. Without a kernel counter, each notification
    /// counts as one OOM (what the Go shims do).
    pub fn report_ooms(&self, c: &Container, notified: bool) {
        let Some(cg) = lock(&c.cgroup).clone() else {
            return;
        };
        let now = cg.oom_kill_count();
        let mut seen = lock(&c.oom_seen);
        let report = match (now, *seen) {
            (Some(n), Some(s)) => n > s,
            (Some(_), None) | (None, _) => notified,
        };
        if now.is_some() {
            *seen = now;
        }
        drop(seen);
        if report {
            tracing::info!(id = %c.id, "OOM kill in container cgroup");
            self.emit(Event::Oom {
                container_id: c.id.to_string(),
            });
        }
    }

    /// Wake whoever waits for a container to be added or removed ([`Engine::idle_for`]).
    pub(super) fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    /// Queue an event if this personality publishes its kind.
    pub fn emit(&self, ev: Event) {
        if self.profile.publishes(ev.kind()) {
            self.sink.publish(ev);
        }
    }
}

/// What the shim remembers of a container it deleted. If containerd dies between the shim's
/// Delete and its own bookkeeping (Shutdown, bundle removal), the restarted containerd still
/// lists the task; answering `State` with "stopped, exit N" (instead of NOT_FOUND, which
/// makes clients such as ctr refuse to delete it) lets it be removed the normal way, after
/// which Delete's NOT_FOUND tells containerd it is already gone.
#[derive(Debug, Clone)]
pub(super) struct Tombstone {
    pub(super) id: ContainerId,
    pub(super) bundle: PathBuf,
    pub(super) deleted: Deleted,
}

/// How many deleted containers are remembered.
const TOMBSTONES: usize = 256;

/// How long a Delete waits for its process's exit event to be delivered before answering.
/// containerd acts on the Delete answer at once (the legacy runtime publishes `/tasks/delete`
/// itself, a client such as `ctr run --rm` reports the end): an exit that arrived later would
/// read as an exit after the delete. A live containerd takes the event in milliseconds (the
/// legacy shim's `containerd publish` run in ~100 ms); the bound only covers a containerd
/// that cannot take events while it still sends requests.
const EXIT_BEFORE_DELETE: std::time::Duration = std::time::Duration::from_secs(10);

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn read_pid_file(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::from(e).context(format!("read pid file {}", path.display())))?;
    s.trim()
        .parse::<u32>()
        .map_err(|_| Error::unknown(format!("pid file {} holds {:?}", path.display(), s.trim())))
}

/// The container's own pid files in its bundle (`init.pid` written by the runtime, `shim.pid`
/// by `start` or by containerd's legacy runtime): crash recovery and `delete` read them.
const CONTAINER_PID_FILES: [&str; 2] = ["init", "shim"];

/// An exec's pid file: `<exec-id>.pid`, as the Go shims name it, except for an exec whose id
/// would make that one of the container's own files (`--exec-id init` would otherwise
/// overwrite `init.pid` while it runs, and remove it afterwards). Those are named
/// `exec--<id>.pid`: no valid id contains `--`, so the name can be nobody else's either.
fn exec_pid_file(bundle: &Path, exec_id: &ExecId) -> PathBuf {
    let id = exec_id.as_str();
    if CONTAINER_PID_FILES.contains(&id) {
        bundle.join(format!("exec--{id}.pid"))
    } else {
        bundle.join(format!("{id}.pid"))
    }
}

/// How long preparing a process may take before it is given up (opening its stdio targets):
/// the runtime's deadline for calls that start processes (`SHIMGATE_RUNTIME_TIMEOUT`).
fn setup_limit() -> std::time::Duration {
    super::runc::Deadlines::from_env().long
}

/// Run blocking work (mount(2), umount(2) on a filesystem that may hang) on the runtime's
/// blocking threads instead of the serving thread.
async fn off_thread<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::unknown(format!("{what}: {e}")))
}

/// Unmount everything under a container's rootfs, off the serving thread.
pub(super) async fn unmount_rootfs(dir: &Path) -> std::result::Result<(), String> {
    let dir = dir.to_path_buf();
    off_thread("unmount rootfs", move || mount::unmount_all(&dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The OCI Process JSON with `terminal` forced to what the request says; every other field is
/// passed through untouched.
fn process_with_terminal(spec: &[u8], terminal: bool) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(spec).map_err(|e| {
        Error::invalid_argument(format!("exec process spec is not valid JSON: {e}"))
    })?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::invalid_argument("exec process spec is not a JSON object"))?;
    obj.insert("terminal".into(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&v).map_err(|e| Error::unknown(format!("encode process spec: {e}")))
}

fn io_error(e: crate::io::IoError) -> Error {
    let kind = match &e {
        crate::io::IoError::InvalidUri(_) => Kind::InvalidArgument,
        crate::io::IoError::Os { source, .. } => {
            Error::from(std::io::Error::from(source.kind())).kind()
        }
    };
    Error::new(kind, super::error::chain(&e))
}

impl Engine {
    pub fn new(
        profile: ApiProfile,
        namespace: &str,
        spawner: Spawner,
        factory: Arc<dyn RuntimeFactory>,
        sink: Arc<dyn EventSink>,
    ) -> Engine {
        let (tx, mut rx) = mpsc::unbounded_channel::<ExitNote>();
        let (line, dispatcher) = crate::supervise::lifeline();
        let inner = Arc::new(Inner {
            profile,
            namespace: namespace.to_string(),
            shim_pid: std::process::id(),
            spawner,
            factory,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            tombstones: Mutex::new(std::collections::VecDeque::new()),
            changed: tokio::sync::Notify::new(),
            sink,
            exits: tx,
            dispatcher,
        });
        let weak = Arc::downgrade(&inner);
        // The exit dispatcher: one task, woken only by exits; each exit is handled in its own
        // short-lived task because an init exit may wait for its execs' exits. It is a
        // critical task (`crate::supervise`), and so are those handlers: one that panicked
        // lost an exit, so the dispatcher ends with it (and the daemon ends the shim).
        tokio::spawn(async move {
            let _line = line;
            let mut handlers = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    note = rx.recv() => {
                        let Some(note) = note else { return };
                        let Some(inner) = weak.upgrade() else { return };
                        if crate::supervise::fault("exit-dispatcher-ends") {
                            return;
                        }
                        handlers.spawn(lifecycle::on_exit(inner, note));
                    }
                    Some(done) = handlers.join_next(), if !handlers.is_empty() => {
                        if let Err(e) = done {
                            if e.is_panic() {
                                tracing::error!(error = %e, "an exit handler panicked");
                                return;
                            }
                        }
                    }
                }
            }
        });
        Engine { inner }
    }

    /// Ends when the exit dispatcher does (a critical task, see `crate::supervise`).
    pub fn dispatcher_ended(&self) -> crate::supervise::Ended {
        self.inner.dispatcher.clone()
    }

    /// The shared state, for the hand-over (`engine::handover`) only.
    pub(super) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    pub fn profile(&self) -> &ApiProfile {
        &self.inner.profile
    }

    pub fn shim_pid(&self) -> u32 {
        self.inner.shim_pid
    }

    pub fn container_count(&self) -> usize {
        lock(&self.inner.containers).len()
    }

    pub fn container_ids(&self) -> Vec<ContainerId> {
        lock(&self.inner.containers).keys().cloned().collect()
    }

    /// Return once the shim has held no container (and created none) for `limit` without
    /// interruption. Sleeps on a notification while containers exist, so an idle shim with
    /// containers never wakes for it. A serving shim uses this to end itself when containerd
    /// forgot it (containerd died between a Delete and the Shutdown that should follow, or
    /// between `start` and the first Create).
    pub async fn idle_for(&self, limit: std::time::Duration) {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let empty = self.container_count() == 0 && lock(&self.inner.creating).is_empty();
            if !empty {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(limit) => {
                    if self.container_count() == 0 && lock(&self.inner.creating).is_empty() {
                        return;
                    }
                }
                _ = &mut changed => {}
            }
        }
    }

    /// Whether a `Shutdown` request should end this shim now.
    pub fn should_shutdown(&self) -> bool {
        match self.inner.profile.shutdown {
            ShutdownPolicy::Always => true,
            ShutdownPolicy::WhenEmpty => {
                self.container_count() == 0 && lock(&self.inner.creating).is_empty()
            }
        }
    }

    fn container(&self, id: &ContainerId) -> Result<Arc<Container>> {
        lock(&self.inner.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| self.inner.profile.missing_container())
    }

    fn process(&self, c: &Container, p: &ProcessRef) -> Result<Arc<Process>> {
        match p {
            ProcessRef::Init => Ok(c.init.clone()),
            ProcessRef::Exec(e) => c
                .exec(e)
                .ok_or_else(|| self.inner.profile.missing_process(e.as_str())),
        }
    }

    /// Turn a process name of an [`Addressing::SoleContainer`] API into the container and
    /// process it means. Only a lookup: whether the process exists is left to the operation
    /// that follows (which answers with the profile's errors), except that nothing can be named
    /// before the container exists, and an exec may not take the container's own id (the two
    /// share one namespace under this addressing).
    pub fn resolve(&self, name: ProcessName<'_>) -> Result<(ContainerId, ProcessRef)> {
        let profile = &self.inner.profile;
        if profile.addressing != Addressing::SoleContainer {
            return Err(Error::invalid_argument(format!(
                "{} names processes by container and exec id",
                profile.runtime_name
            )));
        }
        let sole = {
            let containers = lock(&self.inner.containers);
            let mut ids = containers.keys();
            match (ids.next(), ids.next()) {
                (Some(id), None) => Some(id.clone()),
                (None, _) => None,
                (Some(_), Some(_)) => {
                    return Err(Error::failed_precondition(format!(
                        "{} containers in a shim that serves one",
                        containers.len()
                    )))
                }
            }
        };
        // With no container, the one just deleted (if any) still answers for its init: see
        // [`Tombstone`].
        let last = || lock(&self.inner.tombstones).back().map(|t| t.id.clone());
        match (name, sole) {
            (ProcessName::Id(id), None) => match last() {
                Some(t) if t.as_str() == id => Ok((t, ProcessRef::Init)),
                _ => Err(profile.missing_process(id)),
            },
            (ProcessName::Init, None) => match last() {
                Some(t) => Ok((t, ProcessRef::Init)),
                None => Err(profile.missing_container()),
            },
            (ProcessName::NewExec(_), None) => Err(profile.missing_container()),
            (ProcessName::Init, Some(c)) => Ok((c, ProcessRef::Init)),
            (ProcessName::Id(id), Some(c)) if id == c.as_str() => Ok((c, ProcessRef::Init)),
            // Not a valid exec id means not one of ours; it never reaches the filesystem.
            (ProcessName::Id(id), Some(c)) => ExecId::new(id)
                .map(|e| (c, ProcessRef::Exec(e)))
                .map_err(|_| profile.missing_process(id)),
            (ProcessName::NewExec(id), Some(c)) if id == c.as_str() => {
                Err(Error::already_exists(format!("id {id}")))
            }
            (ProcessName::NewExec(id), Some(c)) => Ok((c, ProcessRef::Exec(ExecId::new(id)?))),
        }
    }

    /// Route the future exit of `pid` (claimed inside `sub`) to the lifecycle.
    pub(super) fn claim(&self, sub: &Subscription, pid: u32, c: &Arc<Container>, p: &Arc<Process>) {
        let tx = self.inner.exits.clone();
        let (wc, wp): (Weak<Container>, Weak<Process>) = (Arc::downgrade(c), Arc::downgrade(p));
        let pidfd = sub.claim_with_pidfd(
            pid as i32,
            Box::new(move |exit| {
                if let (Some(container), Some(process)) = (wc.upgrade(), wp.upgrade()) {
                    process.mark_reaped();
                    process.st().reaped_exit = Some(exit);
                    let _ = tx.send(ExitNote {
                        container,
                        process,
                        exit,
                    });
                }
            }),
        );
        p.set_pidfd(pidfd);
    }

    // The operations are in create.rs, start.rs, delete.rs, control.rs and queries.rs.

    /// The guard that finishes a start of `p` however it ends (see `guards`).
    fn starting(&self, c: &Arc<Container>, p: &Arc<Process>) -> guards::Starting {
        guards::Starting {
            inner: self.inner.clone(),
            c: c.clone(),
            p: p.clone(),
        }
    }
}

impl Inner {
    fn reaper_subscribe(&self) -> Subscription {
        self.spawner.reaper().subscribe()
    }
}

/// A bundle must be where containerd puts them: an absolute, `..`-free path ending in
/// `<bundle_dir>/<namespace>/<id>`. Checked lexically (the state dir itself may sit behind a
/// symlink such as `/var/run`).
fn check_bundle(bundle: &Path, bundle_dir: Option<&str>, ns: &str, id: &str) -> Result<()> {
    use std::path::Component;
    let bad = |why: &str| {
        Err(Error::invalid_argument(format!(
            "bundle path {:?} {why}",
            bundle.display().to_string()
        )))
    };
    if !bundle.is_absolute() {
        return bad("is not absolute");
    }
    if bundle
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return bad("contains . or .. components");
    }
    let Some(dir) = bundle_dir else {
        return Ok(());
    };
    let names: Vec<_> = bundle
        .components()
        .rev()
        .take(3)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if names.len() < 3 || names[0] != id || names[1] != ns || names[2] != dir {
        return bad(&format!(
            "is not a containerd bundle (expected …/{dir}/{ns}/{id})"
        ));
    }
    Ok(())
}

/// What `delete` (the cleanup action) needs to know about a bundle, whoever wrote it.
pub fn read_bundle_options(bundle: &Path) -> RuncOptions {
    let mut o: RuncOptions = std::fs::read(bundle.join("options.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if o.binary_name.is_empty() {
        if let Ok(b) = std::fs::read_to_string(bundle.join("runtime")) {
            o.binary_name = b.trim().to_string();
        }
    }
    o
}

mod control;
mod create;
mod delete;
mod queries;
mod start;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_is_forced_and_other_fields_kept() {
        let out = process_with_terminal(br#"{"args":["sh"],"terminal":false,"x-future":1}"#, true)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["terminal"], true);
        assert_eq!(v["x-future"], 1);
        assert_eq!(v["args"][0], "sh");
        assert_eq!(
            process_with_terminal(b"[1]", false).unwrap_err().kind(),
            Kind::InvalidArgument
        );
    }

    #[test]
    fn bundles_must_be_where_containerd_puts_them() {
        let dir = Some("io.containerd.runtime.v2.task");
        let ok = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc");
        assert!(check_bundle(ok, dir, "k8s.io", "abc").is_ok());
        for (bad, ns, id) in [
            (
                "relative/io.containerd.runtime.v2.task/k8s.io/abc",
                "k8s.io",
                "abc",
            ),
            ("/etc", "k8s.io", "etc"),
            (
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/other",
                "k8s.io",
                "abc",
            ),
            (
                "/run/containerd/io.containerd.runtime.v2.task/default/abc",
                "k8s.io",
                "abc",
            ),
            (
                "/run/x/io.containerd.runtime.v2.task/k8s.io/../k8s.io/abc",
                "k8s.io",
                "abc",
            ),
            ("/tmp/evil/k8s.io/abc", "k8s.io", "abc"),
        ] {
            let e = check_bundle(Path::new(bad), dir, ns, id).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{bad}");
        }
        assert!(check_bundle(Path::new("/tmp/anything"), None, "ns", "x").is_ok());
    }

    #[test]
    fn exec_pid_files_never_take_the_containers_own_names() {
        let b = Path::new("/b");
        let f = |id: &str| exec_pid_file(b, &ExecId::new(id).unwrap());
        assert_eq!(f("e1"), Path::new("/b/e1.pid"));
        assert_eq!(f("exec-init"), Path::new("/b/exec-init.pid"));
        assert_eq!(f("init"), Path::new("/b/exec--init.pid"));
        assert_eq!(f("shim"), Path::new("/b/exec--shim.pid"));
        // No valid id maps onto a reserved name.
        assert!(ExecId::new("exec--init").is_err());
    }

    #[test]
    fn bundle_options_fall_back_to_runtime_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_bundle_options(d.path()), RuncOptions::default());
        std::fs::write(d.path().join("runtime"), "/usr/sbin/crun").unwrap();
        assert_eq!(read_bundle_options(d.path()).binary(), "/usr/sbin/crun");
        std::fs::write(
            d.path().join("options.json"),
            r#"{"binary_name":"youki","root":"/r"}"#,
        )
        .unwrap();
        let o = read_bundle_options(d.path());
        assert_eq!((o.binary(), o.root_base()), ("youki", "/r"));
    }
}
