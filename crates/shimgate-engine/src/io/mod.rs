//! A process's stdio: parsing the request ([`spec`]), preparing what the runtime hands the
//! container (pipes, a console socket, a logging binary), and copying bytes between the
//! container and containerd's FIFOs.
//!
//! Guarantees:
//! * No output byte is lost: each output stream has one pump task that only stops at end of
//!   stream (or when the process is deleted and its IO closed after a grace period). When a
//!   process exits, [`ProcessIo::drain`] makes every output pump read until its pipe is empty
//!   before the exit is published, so a consumer that stops reading at the exit event has
//!   everything the process wrote.
//!   (A file that refuses output, such as a full disk, is the exception: what it refuses is
//!   dropped and logged rather than left to block the process; see [`fd::Mover`].)
//! * Nothing here blocks the shim's serving thread: every stdio path is stat'ed, created and
//!   opened on a blocking thread, given up at a deadline ([`IoConfig::deadline`]); containerd's
//!   FIFOs are opened non-blocking, our own read side first (a keep-alive that also lets
//!   containerd restart and reopen its end), then the write side; a `file://` FIFO waits for
//!   its reader as the Go shim's open does, but only that process's setup waits. Pipes, FIFOs
//!   and the pty master wait on the poller; files are written on blocking threads.
//! * stdin has a keep-alive writer so the container does not see end of file when the client
//!   goes away; `CloseIO` drops exactly that writer, and bytes already in the FIFO are still
//!   delivered before end of file.
//!
//! Concurrency: `ProcessIo` is shared (`&self`) by the RPC handlers of one process; its
//! mutable parts sit behind a std mutex that is never held across an await.

pub mod binary;
pub mod console;
pub mod fd;
mod open;
mod pump;
mod snap;
pub mod spec;

use std::fs::File;
use std::io as stdio;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::reaper::Spawner;
use crate::sync::lock;

pub use console::ConsoleSocket;
use fd::{Moved, Mover, PollFd, Sink};
use open::*;
use pump::*;
use snap::*;
pub use snap::{Frozen, IoSnap, PumpSnap, SinkSnap};
pub use spec::StdioSpec;

/// Errors of stdio setup.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{0}")]
    InvalidUri(String),
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: stdio::Error,
    },
}

fn os(what: impl Into<String>) -> impl FnOnce(stdio::Error) -> IoError {
    let what = what.into();
    move |source| IoError::Os { what, source }
}

/// The stdio a runtime invocation gives the container process (its fd 0, 1, 2); `None` means
/// `/dev/null`.
#[derive(Default)]
pub struct ContainerStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// What a process's IO needs to know about it.
pub struct IoConfig<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub spec: &'a StdioSpec,
    pub terminal: bool,
    /// Owner for the container's ends of the pipes (`io_uid`/`io_gid`).
    pub uid: u32,
    pub gid: u32,
    /// When opening the stdio paths is given up (a FIFO nobody reads, a hung filesystem):
    /// the opens run on a blocking thread and the caller gets DEADLINE_EXCEEDED.
    pub deadline: std::time::Instant,
}

/// How long `drain` waits for a stalled consumer before letting the exit go out anyway (the
/// bytes are still delivered afterwards; only their ordering before the exit event yields).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Buffer size for output pipes and FIFOs (kernel memory, used only while a reader lags).
const OUTPUT_PIPE_BYTES: i32 = 1 << 20;
/// How long closing waits for output pumps to reach end of stream.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Output targets opened before the runtime runs, plus what the pumps will read from.
struct Pending {
    stdin: Option<StdinSide>,
    stdout: Option<(OwnedFd, Sink)>,
    stderr: Option<(OwnedFd, Sink)>,
    /// tty: the stdout target the master is copied to.
    tty_out: Option<Sink>,
    console: Option<ConsoleSocket>,
}

struct StdinSide {
    /// Our read end of the client's FIFO.
    reader: OwnedFd,
    /// The end the pump writes into (the container's stdin pipe). `None` with a terminal: the
    /// pump writes to the master.
    pipe_w: Option<OwnedFd>,
}

/// What a pump can be asked between two moves.
enum Ctl {
    /// Move everything the source holds right now, then acknowledge.
    Drain(oneshot::Sender<()>),
    /// Stop and hand back the ends and any unwritten bytes (live upgrade).
    Freeze(oneshot::Sender<PumpParts>),
}

/// A pump's ends, as a freeze returns them.
struct PumpParts {
    src: Arc<PollFd>,
    sink: Sink,
    pending: Vec<u8>,
}

/// Control handle of one pump.
struct Pump {
    ctl: mpsc::UnboundedSender<Ctl>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Live {
    pending: Option<Pending>,
    pumps: Vec<Pump>,
    stdin_pump: Option<Pump>,
    stdin_keepalive: Option<OwnedFd>,
    master: Option<Arc<PollFd>>,
    logger: Option<binary::Logger>,
}

/// The stdio of one process (init or exec).
pub struct ProcessIo {
    live: Mutex<Live>,
}

impl ProcessIo {
    /// A process with no IO at all.
    pub fn none() -> Self {
        ProcessIo {
            live: Mutex::new(Live::default()),
        }
    }

    /// Prepare everything the runtime needs to start the process: returns the IO object, the
    /// fds for the container, and the console socket path when a terminal is wanted.
    pub async fn prepare(
        cfg: IoConfig<'_>,
        spawner: &Spawner,
    ) -> Result<(ProcessIo, ContainerStdio, Option<PathBuf>), IoError> {
        let mut stdio_fds = ContainerStdio::default();
        let mut pending = Pending {
            stdin: None,
            stdout: None,
            stderr: None,
            tty_out: None,
            console: None,
        };
        let mut logger = None;

        let opened = open_paths_within(
            cfg.spec,
            cfg.terminal,
            tokio::time::Instant::from_std(cfg.deadline),
        )
        .await?;
        let mut keepalive = None;
        if let Some((reader, keep)) = opened.stdin {
            keepalive = Some(keep);
            let pipe_w = if cfg.terminal {
                None
            } else {
                let (r, w) = fd::pipe().map_err(os("stdin pipe"))?;
                chown_fd(&r, cfg.uid, cfg.gid)?;
                stdio_fds.stdin = Some(r);
                Some(w)
            };
            pending.stdin = Some(StdinSide { reader, pipe_w });
        }

        match cfg.spec {
            StdioSpec::Null => {}
            StdioSpec::Paths { .. } => {
                if cfg.terminal {
                    if let Some(t) = opened.stdout {
                        pending.tty_out = Some(sink(t)?);
                    }
                } else {
                    for (target, slot, fdslot) in [
                        (opened.stdout, &mut pending.stdout, &mut stdio_fds.stdout),
                        (opened.stderr, &mut pending.stderr, &mut stdio_fds.stderr),
                    ] {
                        if let Some(t) = target {
                            let sink = sink(t)?;
                            let (r, w) = fd::pipe().map_err(os("output pipe"))?;
                            fd::grow_pipe(r.as_fd(), OUTPUT_PIPE_BYTES);
                            chown_fd(&w, cfg.uid, cfg.gid)?;
                            *fdslot = Some(w);
                            *slot = Some((r, sink));
                        }
                    }
                }
            }
            StdioSpec::Binary { path, args, .. } => {
                let (l, out_w, err_w) = binary::start(spawner, path, args, cfg.id, cfg.namespace)
                    .await
                    .map_err(os(format!("start logging binary {}", path.display())))?;
                if cfg.terminal {
                    let p = PollFd::new(out_w).map_err(os("logger pipe"))?;
                    pending.tty_out = Some(Sink::Poll(Arc::new(p), None));
                    drop(err_w);
                } else {
                    stdio_fds.stdout = Some(out_w);
                    stdio_fds.stderr = Some(err_w);
                }
                logger = Some(l);
            }
        }

        let console_path = if cfg.terminal {
            let sock = ConsoleSocket::new().map_err(os("create console socket"))?;
            let p = sock.path().to_path_buf();
            pending.console = Some(sock);
            Some(p)
        } else {
            None
        };

        let io = ProcessIo {
            live: Mutex::new(Live {
                pending: Some(pending),
                stdin_keepalive: keepalive,
                logger,
                ..Live::default()
            }),
        };
        Ok((io, stdio_fds, console_path))
    }

    /// Start copying, once the runtime has created the process (and, with a terminal, sent
    /// the pty master).
    pub async fn start(&self) -> Result<(), IoError> {
        let Some(mut pending) = lock(&self.live).pending.take() else {
            return Ok(());
        };
        let master = match pending.console.take() {
            Some(sock) => {
                let m = sock.receive_master().await.map_err(os("receive console"))?;
                Some(Arc::new(PollFd::new(m).map_err(os("register console"))?))
            }
            None => None,
        };
        let mut pumps = Vec::new();
        for (src, sink) in [pending.stdout.take(), pending.stderr.take()]
            .into_iter()
            .flatten()
        {
            let src = PollFd::new(src).map_err(os("register output pipe"))?;
            pumps.push(spawn_pump(Arc::new(src), sink, Mover::default(), true));
        }
        if let (Some(m), Some(sink)) = (&master, pending.tty_out.take()) {
            pumps.push(spawn_pump(m.clone(), sink, Mover::default(), true));
        }
        let stdin_pump = match pending.stdin.take() {
            Some(side) => {
                let dst = match (side.pipe_w, &master) {
                    (Some(w), _) => {
                        Some(Arc::new(PollFd::new(w).map_err(os("register stdin pipe"))?))
                    }
                    (None, Some(m)) => Some(m.clone()),
                    (None, None) => None,
                };
                match dst {
                    Some(dst) => {
                        let reader = PollFd::new(side.reader).map_err(os("register stdin"))?;
                        Some(spawn_pump(
                            Arc::new(reader),
                            Sink::Poll(dst, None),
                            Mover::default(),
                            false,
                        ))
                    }
                    None => None,
                }
            }
            None => None,
        };
        let mut live = lock(&self.live);
        live.pumps = pumps;
        live.stdin_pump = stdin_pump;
        live.master = master;
        Ok(())
    }

    /// After the process exited: wait (at most `limit`) until every output pump has moved
    /// everything that was in its pipe.
    pub async fn drain(&self, limit: Duration) {
        let acks: Vec<_> = {
            let live = lock(&self.live);
            live.pumps
                .iter()
                .filter_map(|p| {
                    let (tx, rx) = oneshot::channel();
                    p.ctl.send(Ctl::Drain(tx)).ok().map(|_| rx)
                })
                .collect()
        };
        let all = async {
            for a in acks {
                // A pump that ended drops the sender: that also means "nothing left".
                let _ = a.await;
            }
        };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                "output consumer stalled; publishing the exit before all output was delivered"
            );
        }
    }

    /// Stop every pump at a safe point and hand back the IO as a snapshot (live upgrade). The
    /// process keeps running; its output waits in the kernel's pipes meanwhile.
    pub async fn freeze(&self) -> Result<Frozen, IoError> {
        let (pumps, stdin_pump, keepalive, master, mut logger) = {
            let mut live = lock(&self.live);
            if live.pending.is_some() {
                return Err(IoError::InvalidUri(
                    "process IO is being set up; try again".into(),
                ));
            }
            (
                std::mem::take(&mut live.pumps),
                live.stdin_pump.take(),
                live.stdin_keepalive.take(),
                live.master.take(),
                live.logger.take(),
            )
        };
        let mut keep: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
        let live_logger = logger.as_mut().and_then(|l| l.handover());
        let mut snap = IoSnap {
            stdin_keepalive: keepalive.as_ref().map(raw),
            master: master.as_ref().map(|m| m.raw()),
            logger_pid: live_logger.as_ref().map(|(pid, _)| *pid),
            logger_pidfd: live_logger.as_ref().map(|(_, fd)| raw(fd)),
            ..IoSnap::default()
        };
        keep.push(Box::new(live_logger));
        let freeze = |p: Pump| async move {
            let (tx, rx) = oneshot::channel();
            if p.ctl.send(Ctl::Freeze(tx)).is_err() {
                return None;
            }
            // A pump that already ended (end of stream) owns nothing any more.
            rx.await.ok()
        };
        for p in pumps {
            if let Some(parts) = freeze(p).await {
                snap.outputs.push(PumpSnap {
                    src: parts.src.raw(),
                    sink: sink_snap(&parts.sink),
                    pending: parts.pending,
                });
                keep.push(Box::new((parts.src, parts.sink)));
            }
        }
        if let Some(p) = stdin_pump {
            if let Some(parts) = freeze(p).await {
                snap.stdin = Some(PumpSnap {
                    src: parts.src.raw(),
                    sink: sink_snap(&parts.sink),
                    pending: parts.pending,
                });
                keep.push(Box::new((parts.src, parts.sink)));
            }
        }
        keep.push(Box::new((keepalive, master, logger)));
        Ok(Frozen { snap, _keep: keep })
    }

    /// Rebuild a frozen process IO in a new image (live upgrade) and start its pumps again.
    /// Call inside the runtime, before the reaper's first sweep (the logger is re-claimed).
    pub fn thaw(snap: &IoSnap, spawner: &Spawner) -> Result<ProcessIo, IoError> {
        let mut a = Adopted::default();
        let master = match snap.master {
            Some(m) => Some(a.poll(m)?),
            None => None,
        };
        let mut pumps = Vec::new();
        for p in &snap.outputs {
            let src = a.poll(p.src)?;
            let sink = a.sink(&p.sink)?;
            pumps.push(spawn_pump(
                src,
                sink,
                Mover::with_pending(p.pending.clone()),
                true,
            ));
        }
        let stdin_pump = match &snap.stdin {
            Some(p) => {
                let src = a.poll(p.src)?;
                let sink = a.sink(&p.sink)?;
                Some(spawn_pump(
                    src,
                    sink,
                    Mover::with_pending(p.pending.clone()),
                    false,
                ))
            }
            None => None,
        };
        let stdin_keepalive = match snap.stdin_keepalive {
            Some(k) => Some(a.owned(k)?),
            None => None,
        };
        let logger = match (snap.logger_pid, snap.logger_pidfd) {
            (Some(pid), Some(fd)) => Some(binary::Logger::adopt(spawner, pid, a.owned(fd)?)),
            _ => None,
        };
        Ok(ProcessIo {
            live: Mutex::new(Live {
                pending: None,
                pumps,
                stdin_pump,
                stdin_keepalive,
                master,
                logger,
            }),
        })
    }

    /// `CloseIO`: drop the stdin keep-alive writer. Bytes already in the FIFO still reach the
    /// container; it sees end of file once the client has closed its side too.
    pub fn close_stdin(&self) {
        lock(&self.live).stdin_keepalive = None;
    }

    pub fn resize(&self, width: u32, height: u32) -> stdio::Result<()> {
        let master = lock(&self.live).master.clone();
        match master {
            Some(m) => console::resize(&m, width, height),
            None => Ok(()),
        }
    }

    /// Close everything: wait (at most `wait`) for output pumps to finish on their own, then
    /// stop them, stop a logging binary, and release every fd.
    pub async fn close(&self, wait: Duration) {
        let (pumps, stdin_pump, logger) = {
            let mut live = lock(&self.live);
            live.stdin_keepalive = None;
            live.pending = None;
            live.master = None;
            (
                std::mem::take(&mut live.pumps),
                live.stdin_pump.take(),
                live.logger.take(),
            )
        };
        let deadline = tokio::time::Instant::now() + wait;
        for p in pumps {
            let mut task = p.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        if let Some(p) = stdin_pump {
            p.task.abort();
        }
        if let Some(mut l) = logger {
            l.stop().await;
        }
    }
}

#[cfg(test)]
mod tests;
