//! The core's side of a live upgrade: everything it holds, written down so a new image of the
//! shim (same pid, same children, same descriptors after `execve`) can take over.
//!
//! Two steps on the old side, because only the second may not be interrupted:
//! 1. [`Engine::freeze_io`] (async): every process's pumps stop at a safe point and hand back
//!    their descriptors and unwritten bytes. Processes keep running; output waits in pipes.
//! 2. [`Engine::capture`] (synchronous, immediately before `execve`): containers, processes,
//!    exits. Nothing can change state between it and the `execve`, since the runtime is
//!    single-threaded and neither step awaits. An exit that was reaped but whose handling had
//!    not finished is captured as reaped-but-unhandled and handled again by the new image
//!    (every step before publication is idempotent).
//!
//! On the new side [`Engine::thaw`] rebuilds it all, re-claims every live pid before the
//! reaper's first sweep (so exits during the hand-over, left as zombies, reach their owners),
//! and re-runs unhandled exits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::container::{lock, Container, ExecGate, Process};
use super::error::{Error, Result};
use super::event::EventSink;
use super::lifecycle::ExitNote;
use super::ops::{Engine, RuntimeFactory, Tombstone};
use super::state::State;
use super::types::{ContainerId, Deleted, ExecId, Exit, MountSpec, RuncOptions, StdioRequest};
use super::ApiProfile;
use crate::io::{Frozen, IoSnap, ProcessIo};
use crate::reaper::{RawExit, Spawner};

/// One process as the new image needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcSnap {
    pub exec_id: Option<String>,
    pub state: State,
    pub pid: u32,
    pub exit: Option<Exit>,
    /// Reaped, not yet handled: the new image handles it.
    pub reaped_exit: Option<Exit>,
    pub stdio: StdioRequest,
    /// Exec only: the OCI Process JSON.
    pub spec: Option<String>,
    /// Counted among its container's running execs.
    pub gate_counted: bool,
    pub io: IoSnap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSnap {
    pub id: String,
    pub bundle: PathBuf,
    pub options: RuncOptions,
    pub own_pidns: bool,
    pub rootfs: Vec<MountSpec>,
    pub rootfs_mounted: bool,
    pub checkpoint: Option<PathBuf>,
    pub parent_checkpoint: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub init_exited: bool,
    pub oom_seen: Option<u64>,
    pub init: ProcSnap,
    pub execs: Vec<ProcSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TombstoneSnap {
    pub id: String,
    pub bundle: PathBuf,
    pub deleted: Deleted,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CoreSnap {
    pub containers: Vec<ContainerSnap>,
    pub tombstones: Vec<TombstoneSnap>,
}

impl CoreSnap {
    /// Every descriptor the snapshot names (to keep across `execve`).
    pub fn fds(&self) -> Vec<i32> {
        self.containers
            .iter()
            .flat_map(|c| std::iter::once(&c.init).chain(c.execs.iter()))
            .flat_map(|p| p.io.fds())
            .collect()
    }
}

/// The frozen IO of every process, keyed by (container, exec), kept alive until the `execve`.
pub struct FrozenIo {
    ios: Vec<(String, Option<String>, Frozen)>,
}

impl FrozenIo {
    /// Every descriptor that must survive the `execve`.
    pub fn fds(&self) -> Vec<i32> {
        self.ios.iter().flat_map(|(_, _, f)| f.fds()).collect()
    }
}

fn exit_of(r: RawExit) -> Exit {
    Exit {
        pid: r.pid as u32,
        status: r.status,
        at: r.at,
    }
}

impl Engine {
    /// Whether the shim is in a state it can hand over; a clear refusal otherwise.
    pub fn can_hand_over(&self) -> Result<()> {
        let inner = self.inner();
        if !lock(&inner.creating).is_empty() {
            return Err(Error::failed_precondition("a container is being created"));
        }
        let containers: Vec<_> = lock(&inner.containers).values().cloned().collect();
        for c in containers {
            if lock(&c.restore_stdio).is_some() {
                return Err(Error::failed_precondition(format!(
                    "container {} waits to be restored from a checkpoint",
                    c.id
                )));
            }
            let procs: Vec<_> = std::iter::once(c.init.clone())
                .chain(lock(&c.execs).values().cloned())
                .collect();
            for p in procs {
                let st = p.st();
                if st.starting || st.pausing {
                    return Err(Error::failed_precondition(format!(
                        "container {} has an operation in progress",
                        c.id
                    )));
                }
            }
            if c.gate().starting > 0 {
                return Err(Error::failed_precondition(format!(
                    "container {} has an exec starting",
                    c.id
                )));
            }
        }
        Ok(())
    }

    /// Step 1: stop every process's pumps at a safe point and collect their descriptors. Call
    /// after [`Engine::can_hand_over`] with no request running (the server quiesced): then no
    /// process has IO being set up and nothing here can fail. A process whose IO still
    /// refuses is logged and handed over without IO rather than abandoning the descriptors
    /// already frozen (there is no way back for those but the new image).
    pub async fn freeze_io(&self) -> FrozenIo {
        let containers: Vec<_> = lock(&self.inner().containers).values().cloned().collect();
        let mut ios = Vec::new();
        for c in containers {
            let procs: Vec<_> = std::iter::once(c.init.clone())
                .chain(lock(&c.execs).values().cloned())
                .collect();
            for p in procs {
                match p.io().freeze().await {
                    Ok(f) => ios.push((
                        c.id.to_string(),
                        p.exec_id.as_ref().map(|e| e.to_string()),
                        f,
                    )),
                    Err(e) => tracing::error!(
                        id = %c.id,
                        exec_id = p.exec_id.as_ref().map(|e| e.as_str()).unwrap_or(""),
                        error = %e,
                        "hand-over: process IO could not be frozen; it is not carried over"
                    ),
                }
            }
        }
        FrozenIo { ios }
    }

    /// Step 2 (synchronous, right before `execve`): the state of every container.
    pub fn capture(&self, frozen: &FrozenIo) -> CoreSnap {
        let inner = self.inner();
        let io_of = |c: &str, e: Option<&str>| {
            frozen
                .ios
                .iter()
                .find(|(ci, ei, _)| ci == c && ei.as_deref() == e)
                .map(|(_, _, f)| f.snap.clone())
                .unwrap_or_default()
        };
        let snap_proc = |c: &Container, p: &Process| {
            let st = p.st();
            let handled = matches!(st.state, State::Stopped | State::Deleted);
            ProcSnap {
                exec_id: p.exec_id.as_ref().map(|e| e.to_string()),
                state: st.state,
                pid: st.pid,
                exit: st.exit,
                reaped_exit: if handled {
                    None
                } else {
                    st.reaped_exit.map(exit_of)
                },
                stdio: p.stdio.clone(),
                spec: p
                    .spec
                    .as_ref()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
                gate_counted: p.is_gate_counted(),
                io: io_of(c.id.as_str(), p.exec_id.as_ref().map(|e| e.as_str())),
            }
        };
        let containers: Vec<_> = lock(&inner.containers).values().cloned().collect();
        let containers = containers
            .iter()
            .map(|c| ContainerSnap {
                id: c.id.to_string(),
                bundle: c.bundle.clone(),
                options: c.options.clone(),
                own_pidns: c.own_pidns,
                rootfs: c.rootfs.clone(),
                rootfs_mounted: c.rootfs_mounted,
                checkpoint: c.checkpoint.clone(),
                parent_checkpoint: c.parent_checkpoint.clone(),
                work_dir: c.work_dir.clone(),
                init_exited: c.gate().init_exited,
                oom_seen: *lock(&c.oom_seen),
                init: snap_proc(c, &c.init),
                execs: lock(&c.execs).values().map(|p| snap_proc(c, p)).collect(),
            })
            .collect();
        let tombstones = lock(&inner.tombstones)
            .iter()
            .map(|t| TombstoneSnap {
                id: t.id.to_string(),
                bundle: t.bundle.clone(),
                deleted: t.deleted,
            })
            .collect();
        CoreSnap {
            containers,
            tombstones,
        }
    }

    /// The new image: rebuild the core from a snapshot. Call inside the runtime, before the
    /// reaper's first sweep.
    pub fn thaw(
        snap: &CoreSnap,
        profile: ApiProfile,
        namespace: &str,
        spawner: Spawner,
        factory: Arc<dyn RuntimeFactory>,
        sink: Arc<dyn EventSink>,
    ) -> Result<Engine> {
        let core = Engine::new(profile, namespace, spawner.clone(), factory.clone(), sink);
        let inner = core.inner().clone();
        let mut pending_exits = Vec::new();
        for cs in &snap.containers {
            let id = ContainerId::new(&cs.id)?;
            let build = |ps: &ProcSnap| -> Result<Arc<Process>> {
                let exec_id = ps.exec_id.as_deref().map(ExecId::new).transpose()?;
                let p = Arc::new(Process::new(
                    exec_id,
                    ps.stdio.clone(),
                    ps.spec.as_ref().map(|s| s.clone().into_bytes()),
                ));
                {
                    let mut st = p.st();
                    st.state = ps.state;
                    st.pid = ps.pid;
                    st.exit = ps.exit;
                }
                if let Some(e) = ps.exit {
                    p.publish_exit_to_waiters(e);
                }
                if ps.gate_counted {
                    p.set_gate_count();
                }
                let io = ProcessIo::thaw(&ps.io, &spawner)
                    .map_err(|e| Error::failed_precondition(format!("adopt IO: {e}")))?;
                p.set_io(Arc::new(io));
                Ok(p)
            };
            let init = build(&cs.init)?;
            let mut execs = std::collections::HashMap::new();
            for es in &cs.execs {
                let p = build(es)?;
                if let Some(e) = p.exec_id.clone() {
                    execs.insert(e, p);
                }
            }
            let running = execs.values().filter(|p| p.is_gate_counted()).count();
            let c = Arc::new(Container {
                id: id.clone(),
                bundle: cs.bundle.clone(),
                runtime: factory.runtime(&cs.options, &cs.bundle),
                options: cs.options.clone(),
                init: init.clone(),
                execs: Mutex::new(execs),
                gate: Mutex::new(ExecGate {
                    init_exited: cs.init_exited,
                    starting: 0,
                    running,
                }),
                gate_changed: tokio::sync::Notify::new(),
                cgroup: Mutex::new(None),
                oom_seen: Mutex::new(cs.oom_seen),
                own_pidns: cs.own_pidns,
                rootfs: cs.rootfs.clone(),
                rootfs_mounted: cs.rootfs_mounted,
                checkpoint: cs.checkpoint.clone(),
                parent_checkpoint: cs.parent_checkpoint.clone(),
                restore_stdio: Mutex::new(None),
                work_dir: cs.work_dir.clone(),
            });
            // Re-claim every pid whose exit has not been seen; exits during the hand-over are
            // zombies now and reach these claims at the reaper's first sweep.
            let sub = spawner.reaper().subscribe();
            let procs =
                std::iter::once((&cs.init, init.clone())).chain(cs.execs.iter().filter_map(|es| {
                    Some((es, c.exec(&ExecId::new(es.exec_id.as_deref()?).ok()?)?))
                }));
            for (ps, p) in procs {
                if let Some(e) = ps.reaped_exit {
                    p.mark_reaped();
                    pending_exits.push(ExitNote {
                        container: c.clone(),
                        process: p,
                        exit: RawExit {
                            pid: e.pid as i32,
                            status: e.status,
                            at: e.at,
                        },
                    });
                } else if ps.pid != 0 && !matches!(ps.state, State::Stopped | State::Deleted) {
                    core.claim(&sub, ps.pid, &c, &p);
                } else if ps.pid != 0 {
                    p.mark_reaped();
                }
            }
            drop(sub);
            if matches!(cs.init.state, State::Running | State::Paused)
                && cs.init.reaped_exit.is_none()
            {
                // Keep the OOM count from the snapshot: kills during the hand-over are still
                // reported (by the exit path or the next notification).
                core.watch_cgroup(&c, cs.init.pid, false);
            }
            lock(&inner.containers).insert(id, c);
        }
        {
            let mut t = lock(&inner.tombstones);
            for ts in &snap.tombstones {
                t.push_back(Tombstone {
                    id: ContainerId::new(&ts.id)?,
                    bundle: ts.bundle.clone(),
                    deleted: ts.deleted,
                });
            }
        }
        for note in pending_exits {
            let _ = inner.exits.send(note);
        }
        Ok(core)
    }
}
