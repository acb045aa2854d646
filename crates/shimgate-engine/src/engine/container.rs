//! A container and its processes: what the core keeps per init and per exec.
//!
//! Locking (see also `engine`):
//! * `Process::op` (async mutex) serialises the operations on one process (start, kill, delete,
//!   pause...). It is held across runtime calls, but never while waiting for an exit.
//! * `Process::st` and `Container::execs`/`gate` are std mutexes held only for a few field
//!   updates, never across an await.
//! * `Wait` only watches `Process::exited`, so it holds no lock at all and is cancel-safe.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use super::cgroup::Cgroup;
use super::runtime::{OciRuntime, RuntimeStdio};
use super::state::{self, State};
use super::types::{ContainerId, ExecId, Exit, MountSpec, RuncOptions, StdioRequest};
use crate::io::ProcessIo;
use crate::reaper::RawExit;

pub(crate) use crate::sync::lock;

/// Mutable facts about a process.
#[derive(Debug)]
pub struct ProcState {
    pub state: State,
    pub pid: u32,
    pub exit: Option<Exit>,
    /// A start is between "runtime asked to start it" and "start event queued"; an exit that
    /// arrives meanwhile waits in `stashed_exit` so the start event goes out first.
    pub starting: bool,
    pub stashed_exit: Option<RawExit>,
    /// `runc pause` is running: State reports PAUSING.
    pub pausing: bool,
    /// The exit as reaped, recorded synchronously at reap time (before the lifecycle has
    /// handled it): a live upgrade that happens in between hands it over to be handled.
    pub reaped_exit: Option<RawExit>,
}

/// An init or exec process.
pub struct Process {
    pub exec_id: Option<ExecId>,
    pub op: tokio::sync::Mutex<()>,
    st: Mutex<ProcState>,
    /// Set (at reap time, synchronously) once the pid has been reaped: from then on the pid may
    /// belong to someone else and must never be signalled.
    reaped: AtomicBool,
    /// A pidfd for the process once its pid is claimed (kernels with pidfds): signals through
    /// it can never reach a process that recycled the pid.
    pidfd: Mutex<Option<std::os::fd::OwnedFd>>,
    /// Exec only: counted in its container's `ExecGate::running`.
    gate_counted: AtomicBool,
    exited_tx: watch::Sender<Option<Exit>>,
    pub io: Mutex<Arc<ProcessIo>>,
    pub stdio: StdioRequest,
    /// Exec only: the OCI Process JSON to run.
    pub spec: Option<Vec<u8>>,
}

impl Process {
    pub fn new(exec_id: Option<ExecId>, stdio: StdioRequest, spec: Option<Vec<u8>>) -> Self {
        let (exited_tx, _) = watch::channel(None);
        Process {
            exec_id,
            op: tokio::sync::Mutex::new(()),
            st: Mutex::new(ProcState {
                state: State::Created,
                pid: 0,
                exit: None,
                starting: false,
                stashed_exit: None,
                pausing: false,
                reaped_exit: None,
            }),
            reaped: AtomicBool::new(false),
            pidfd: Mutex::new(None),
            gate_counted: AtomicBool::new(false),
            exited_tx,
            io: Mutex::new(Arc::new(ProcessIo::none())),
            stdio,
            spec,
        }
    }

    pub fn kind(&self) -> state::Kind {
        if self.exec_id.is_some() {
            state::Kind::Exec
        } else {
            state::Kind::Init
        }
    }

    pub fn st(&self) -> MutexGuard<'_, ProcState> {
        lock(&self.st)
    }

    pub fn io(&self) -> Arc<ProcessIo> {
        lock(&self.io).clone()
    }

    pub fn set_io(&self, io: Arc<ProcessIo>) {
        *lock(&self.io) = io;
    }

    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::SeqCst);
    }

    pub fn set_pidfd(&self, fd: Option<std::os::fd::OwnedFd>) {
        *lock(&self.pidfd) = fd;
    }

    /// Signal the process: through its pidfd when there is one, else by pid unless it has
    /// been reaped. `Ok(false)` when it is already gone.
    pub fn signal(&self, sig: i32) -> std::io::Result<bool> {
        if self.is_reaped() {
            return Ok(false);
        }
        let r = match lock(&self.pidfd).as_ref() {
            Some(fd) => crate::reaper::pidfd_signal(fd, sig),
            None => {
                let pid = self.st().pid as i32;
                // SAFETY: plain kill(2) of a process we have not reaped (checked above), so
                // the pid cannot have been recycled yet.
                if unsafe { libc::kill(pid, sig) } < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn set_gate_count(&self) {
        self.gate_counted.store(true, Ordering::SeqCst);
    }

    pub fn is_gate_counted(&self) -> bool {
        self.gate_counted.load(Ordering::SeqCst)
    }

    /// Clear the gate count; true if it was set (so the caller decrements exactly once).
    pub fn take_gate_count(&self) -> bool {
        self.gate_counted.swap(false, Ordering::SeqCst)
    }

    pub fn is_reaped(&self) -> bool {
        self.reaped.load(Ordering::SeqCst)
    }

    /// Record the exit for waiters (once; later calls keep the first).
    pub fn publish_exit_to_waiters(&self, exit: Exit) {
        self.exited_tx.send_if_modified(|cur| {
            if cur.is_none() {
                *cur = Some(exit);
                true
            } else {
                false
            }
        });
    }

    /// Wait until the process has exited. Cancel-safe and lock-free.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited_tx.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`, which we borrow: cannot happen. Keep
                // waiting rather than invent an exit.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Bookkeeping that lets the init exit wait for every exec exit (init's exit is the last exit
/// of a container) and refuses exec starts once init is gone.
#[derive(Debug, Default)]
pub struct ExecGate {
    pub init_exited: bool,
    /// Exec starts in flight (runtime called, pid not yet known).
    pub starting: usize,
    /// Execs started whose exit has not been published yet.
    pub running: usize,
}

pub struct Container {
    pub id: ContainerId,
    pub bundle: PathBuf,
    pub runtime: Arc<dyn OciRuntime>,
    pub options: RuncOptions,
    pub init: Arc<Process>,
    pub execs: Mutex<HashMap<ExecId, Arc<Process>>>,
    pub gate: Mutex<ExecGate>,
    pub gate_changed: Notify,
    pub cgroup: Mutex<Option<Arc<Cgroup>>>,
    /// The cgroup's OOM-kill count last reported (see `Inner::report_ooms`); `None` until the
    /// cgroup is watched.
    pub oom_seen: Mutex<Option<u64>>,
    /// The container has its own pid namespace: when init dies the kernel kills the rest.
    pub own_pidns: bool,
    pub rootfs: Vec<MountSpec>,
    pub rootfs_mounted: bool,
    /// Restore from this checkpoint at Start (Create did not run the runtime).
    pub checkpoint: Option<PathBuf>,
    pub parent_checkpoint: Option<PathBuf>,
    /// Stdio prepared at Create for a restore that happens at Start.
    pub restore_stdio: Mutex<Option<(RuntimeStdio, Option<PathBuf>)>>,
    /// Large temporary data (CRIU work directories): `CreateSpec::work_dir`.
    pub work_dir: PathBuf,
}

impl Container {
    pub fn exec(&self, id: &ExecId) -> Option<Arc<Process>> {
        lock(&self.execs).get(id).cloned()
    }

    pub fn gate(&self) -> MutexGuard<'_, ExecGate> {
        lock(&self.gate)
    }

    pub fn init_pid(&self) -> u32 {
        self.init.st().pid
    }

    pub fn is_paused(&self) -> bool {
        let st = self.init.st();
        st.state == State::Paused
    }
}

/// Does the OCI spec give the container its own (new) pid namespace?
pub fn spec_has_own_pidns(config_json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Ns {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        path: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Linux {
        #[serde(default)]
        namespaces: Vec<Ns>,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        linux: Option<Linux>,
    }
    match serde_json::from_slice::<Spec>(config_json) {
        Ok(s) => s.linux.is_some_and(|l| {
            l.namespaces
                .iter()
                .any(|n| n.kind == "pid" && n.path.as_deref().unwrap_or("").is_empty())
        }),
        // Unknown: assume shared, so init's exit kills the rest explicitly (harmless if not).
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidns_detection() {
        assert!(spec_has_own_pidns(
            br#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#
        ));
        assert!(!spec_has_own_pidns(
            br#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#
        ));
        assert!(!spec_has_own_pidns(
            br#"{"linux":{"namespaces":[{"type":"mount"}]}}"#
        ));
        assert!(!spec_has_own_pidns(b"not json"));
    }

    #[tokio::test]
    async fn wait_returns_first_exit_and_is_cancel_safe() {
        let p = Arc::new(Process::new(None, StdioRequest::default(), None));
        // A cancelled wait leaves nothing behind.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(5), p.wait()).await;
        let p2 = p.clone();
        let h = tokio::spawn(async move { p2.wait().await });
        let at = std::time::SystemTime::now();
        p.publish_exit_to_waiters(Exit {
            pid: 1,
            status: 3,
            at,
        });
        p.publish_exit_to_waiters(Exit {
            pid: 1,
            status: 9,
            at,
        });
        assert_eq!(h.await.unwrap().status, 3);
        assert_eq!(p.wait().await.status, 3);
    }
}
