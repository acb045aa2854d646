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
//! * FIFOs are opened without ever blocking: we open our own read side first (a keep-alive that
//!   also lets containerd restart and reopen its end), then the write side.
//! * stdin has a keep-alive writer so the container does not see end of file when the client
//!   goes away; `CloseIO` drops exactly that writer, and bytes already in the FIFO are still
//!   delivered before end of file.
//!
//! Concurrency: `ProcessIo` is shared (`&self`) by the RPC handlers of one process; its
//! mutable parts sit behind a std mutex that is never held across an await.

pub mod binary;
pub mod console;
pub mod fd;
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

pub use console::ConsoleSocket;
use fd::{Moved, Mover, PollFd, Sink};
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

/// Control handle of one output pump.
struct Pump {
    drain: mpsc::UnboundedSender<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Live {
    pending: Option<Pending>,
    pumps: Vec<Pump>,
    stdin_task: Option<JoinHandle<()>>,
    stdin_keepalive: Option<OwnedFd>,
    master: Option<Arc<PollFd>>,
    logger: Option<binary::Logger>,
}

/// The stdio of one process (init or exec).
pub struct ProcessIo {
    live: Mutex<Live>,
}

fn lock(m: &Mutex<Live>) -> std::sync::MutexGuard<'_, Live> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Open an output target: a FIFO (read side first, as keep-alive, so the write open cannot
/// block or fail) or a file appended to.
fn open_output(
    path: &Path,
    create: bool,
    shared: &mut Option<(PathBuf, Arc<File>)>,
) -> Result<Sink, IoError> {
    if create {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(os(format!("create {}", dir.display())))?;
        }
    }
    let fifo = !create && fd::is_fifo(path).map_err(os(format!("stat {}", path.display())))?;
    if fifo {
        let keep = fd::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(os("open fifo"))?;
        let w = fd::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK).map_err(os("open fifo"))?;
        fd::grow_pipe(w.as_fd(), OUTPUT_PIPE_BYTES);
        let p = PollFd::new(w).map_err(os("register fifo"))?;
        // The keep-alive reader lives exactly as long as the writer's pump.
        return Ok(Sink::Poll(Arc::new(p), Some(keep)));
    }
    if let Some((p, f)) = shared {
        if p == path {
            return Ok(Sink::File(f.clone()));
        }
    }
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(create)
        .mode(0o644)
        .open(path)
        .map_err(os(format!("open {}", path.display())))?;
    let f = Arc::new(f);
    *shared = Some((path.to_path_buf(), f.clone()));
    Ok(Sink::File(f))
}

fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> Result<(), IoError> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    nix::unistd::fchown(
        fd.as_fd(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| IoError::Os {
        what: "chown stdio pipe".into(),
        source: e.into(),
    })
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

        // stdin (every mode but Null may have one). Only FIFOs can be polled; containerd
        // never passes anything else for stdin.
        let mut keepalive = None;
        if let Some(path) = cfg.spec.stdin() {
            if !fd::is_fifo(path).map_err(os(format!("stat {}", path.display())))? {
                return Err(IoError::InvalidUri(format!(
                    "stdin {} is not a FIFO",
                    path.display()
                )));
            }
            let reader =
                fd::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(os("open stdin"))?;
            keepalive = Some(
                fd::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK).map_err(os("open stdin"))?,
            );
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
            StdioSpec::Paths {
                stdout,
                stderr,
                create_file,
                ..
            } => {
                let mut shared = None;
                if cfg.terminal {
                    if let Some(p) = stdout {
                        pending.tty_out = Some(open_output(p, *create_file, &mut shared)?);
                    }
                } else {
                    for (target, slot, fdslot) in [
                        (stdout, &mut pending.stdout, &mut stdio_fds.stdout),
                        (stderr, &mut pending.stderr, &mut stdio_fds.stderr),
                    ] {
                        if let Some(p) = target {
                            let sink = open_output(p, *create_file, &mut shared)?;
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
            pumps.push(spawn_output_pump(Arc::new(src), sink));
        }
        if let (Some(m), Some(sink)) = (&master, pending.tty_out.take()) {
            pumps.push(spawn_output_pump(m.clone(), sink));
        }
        let stdin_task = match pending.stdin.take() {
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
                        let reader = side.reader;
                        Some(tokio::spawn(stdin_pump(reader, dst)))
                    }
                    None => None,
                }
            }
            None => None,
        };
        let mut live = lock(&self.live);
        live.pumps = pumps;
        live.stdin_task = stdin_task;
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
                    p.drain.send(tx).ok().map(|_| rx)
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
        let (pumps, stdin_task, logger) = {
            let mut live = lock(&self.live);
            live.stdin_keepalive = None;
            live.pending = None;
            live.master = None;
            (
                std::mem::take(&mut live.pumps),
                live.stdin_task.take(),
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
        if let Some(t) = stdin_task {
            t.abort();
        }
        if let Some(mut l) = logger {
            l.stop().await;
        }
    }
}

fn spawn_output_pump(src: Arc<PollFd>, sink: Sink) -> Pump {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(output_pump(src, sink, rx));
    Pump { drain: tx, task }
}

/// Copy `src` to `sink` until end of stream. A drain request makes it move everything that
/// is in the source right now, then acknowledge.
async fn output_pump(
    src: Arc<PollFd>,
    sink: Sink,
    mut drain: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut mover = Mover::default();
    let mut drain_open = true;
    loop {
        tokio::select! {
            biased;
            req = drain.recv(), if drain_open => {
                let Some(ack) = req else { drain_open = false; continue };
                let eof = loop {
                    match mover.step(&src, &sink, false).await {
                        Ok(Moved::Bytes(_)) => {}
                        Ok(Moved::Empty) => break false,
                        Ok(Moved::Eof) | Err(_) => break true,
                    }
                };
                if let Sink::Poll(fifo, _) = &sink {
                    wait_for_consumer(fifo).await;
                }
                let _ = ack.send(());
                if eof {
                    return;
                }
            }
            r = mover.step(&src, &sink, true) => match r {
                Ok(Moved::Bytes(_)) | Ok(Moved::Empty) => {}
                Ok(Moved::Eof) => {
                    // The process side is done. Drains that come now wait for this pump to
                    // end, so let the reader take what is still in the FIFO first.
                    if let Sink::Poll(fifo, _) = &sink {
                        wait_for_consumer(fifo).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "copying container output stopped");
                    return;
                }
            },
        }
    }
}

/// After a drain moved everything into the FIFO, give the reader the chance to take it before
/// the exit goes out: some clients (containerd 1.6's, behind `ctr run`) close their FIFO
/// readers as soon as they see the exit, dropping whatever they had not read yet. Waits while
/// the reader makes progress; a reader that stops (or is gone: only our keep-alive holds the
/// FIFO) ends the wait after `STALL`. The caller bounds the whole drain anyway.
async fn wait_for_consumer(fifo: &PollFd) {
    const STALL: Duration = Duration::from_millis(100);
    let mut level = fd::pending_bytes(fifo.as_fd());
    let mut last_progress = tokio::time::Instant::now();
    while level > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = fd::pending_bytes(fifo.as_fd());
        if now < level {
            last_progress = tokio::time::Instant::now();
        } else if last_progress.elapsed() > STALL {
            return;
        }
        level = now;
    }
}

/// Copy the client's stdin FIFO into the container until end of file (all writers, including
/// our keep-alive, closed), then close the container's side (dropping `dst` when it is the
/// pipe; a pty master stays open for output).
async fn stdin_pump(reader: OwnedFd, dst: Arc<PollFd>) {
    let reader = match PollFd::new(reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "stdin is not pollable");
            return;
        }
    };
    let sink = Sink::Poll(dst, None);
    let mut mover = Mover::default();
    while let Ok(Moved::Bytes(_)) = mover.step(&reader, &sink, true).await {}
}

#[cfg(test)]
mod tests;
