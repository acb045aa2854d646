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

/// A process's IO in a form that survives `execve` (live upgrade): descriptor numbers, kept
/// open, and the bytes a pump had read but not yet written.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct IoSnap {
    pub outputs: Vec<PumpSnap>,
    pub stdin: Option<PumpSnap>,
    pub stdin_keepalive: Option<i32>,
    pub master: Option<i32>,
    /// A logging binary still running at the freeze, and a pidfd for exactly that process
    /// (only both together are adopted: a bare pid may have been recycled by then).
    pub logger_pid: Option<u32>,
    #[serde(default)]
    pub logger_pidfd: Option<i32>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PumpSnap {
    pub src: i32,
    pub sink: SinkSnap,
    pub pending: Vec<u8>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum SinkSnap {
    Poll { fd: i32, keep: Option<i32> },
    File { fd: i32 },
}

/// A frozen [`ProcessIo`]: the snapshot, and the objects that keep its descriptors open
/// until the `execve` (or until a failed upgrade thaws them again).
pub struct Frozen {
    pub snap: IoSnap,
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Frozen {
    /// Every descriptor the snapshot names (to clear close-on-exec on).
    pub fn fds(&self) -> Vec<i32> {
        self.snap.fds()
    }
}

impl IoSnap {
    /// Every descriptor this snapshot names.
    pub fn fds(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for p in self.outputs.iter().chain(self.stdin.iter()) {
            v.push(p.src);
            match p.sink {
                SinkSnap::Poll { fd, keep } => {
                    v.push(fd);
                    v.extend(keep);
                }
                SinkSnap::File { fd } => v.push(fd),
            }
        }
        v.extend(self.stdin_keepalive);
        v.extend(self.master);
        v.extend(self.logger_pidfd);
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The descriptors this snapshot names, checked to be shared only the way one process IO
    /// shares them (see [`Adopted`]): a poll-registered descriptor by several pumps, one file
    /// by stdout and stderr; everything else named once. Checked before anything is adopted,
    /// so a bad document is refused while a rollback can still use every descriptor.
    pub fn checked_fds(&self) -> Result<Vec<i32>, String> {
        #[derive(PartialEq)]
        enum Role {
            Poll,
            File,
            Once,
        }
        let mut seen: std::collections::HashMap<i32, Role> = Default::default();
        let mut add = |fd: i32, role: Role| -> Result<(), String> {
            if fd <= 2 {
                return Err(format!("hand-over names descriptor {fd} for process IO"));
            }
            match seen.get(&fd) {
                None => {
                    seen.insert(fd, role);
                    Ok(())
                }
                Some(r) if *r == role && role != Role::Once => Ok(()),
                Some(_) => Err(format!(
                    "hand-over names descriptor {fd} twice in one process's IO"
                )),
            }
        };
        for p in self.outputs.iter().chain(self.stdin.iter()) {
            add(p.src, Role::Poll)?;
            match p.sink {
                SinkSnap::Poll { fd, keep } => {
                    add(fd, Role::Poll)?;
                    if let Some(k) = keep {
                        add(k, Role::Once)?;
                    }
                }
                SinkSnap::File { fd } => add(fd, Role::File)?,
            }
        }
        if let Some(m) = self.master {
            add(m, Role::Poll)?;
        }
        for fd in self.stdin_keepalive.iter().chain(self.logger_pidfd.iter()) {
            add(*fd, Role::Once)?;
        }
        let mut v: Vec<i32> = seen.into_keys().collect();
        v.sort_unstable();
        Ok(v)
    }
}

fn raw(fd: &impl std::os::fd::AsRawFd) -> i32 {
    fd.as_raw_fd()
}

fn sink_snap(sink: &Sink) -> SinkSnap {
    match sink {
        Sink::Poll(p, keep) => SinkSnap::Poll {
            fd: p.raw(),
            keep: keep.as_ref().map(raw),
        },
        Sink::File(f) => SinkSnap::File { fd: raw(&**f) },
    }
}

/// Descriptors handed over across `execve`, each taken into ownership exactly once. The only
/// sharing a snapshot may express is the one a process IO really has: one poll-registered
/// descriptor (a pty master) as several pumps' source or sink, one file as stdout and stderr.
/// Any other repetition is refused (two owners would close one descriptor twice). Uniqueness
/// across the processes of a document is the document's check (`startup::upgrade`).
#[derive(Default)]
struct Adopted {
    taken: std::collections::HashSet<i32>,
    polls: std::collections::HashMap<i32, Arc<PollFd>>,
    files: std::collections::HashMap<i32, Arc<File>>,
}

impl Adopted {
    fn owned(&mut self, fd: i32) -> Result<OwnedFd, IoError> {
        if fd <= 2 || !self.taken.insert(fd) {
            return Err(IoError::InvalidUri(format!(
                "hand-over names descriptor {fd} twice or as stdio"
            )));
        }
        // Is it open at all? (A hand-over naming a closed descriptor is refused, not trusted.)
        // SAFETY: F_GETFD on a plain number; no descriptor is borrowed or owned by it.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(IoError::Os {
                what: format!("handed-over descriptor {fd}"),
                source: stdio::Error::last_os_error(),
            });
        }
        // SAFETY: the previous image passed `fd` across execve for us; it is open (checked
        // just above) and `taken` guarantees this is the only owner this image creates.
        let o = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            o.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Ok(o)
    }

    fn poll(&mut self, fd: i32) -> Result<Arc<PollFd>, IoError> {
        if let Some(p) = self.polls.get(&fd) {
            return Ok(p.clone());
        }
        let p = Arc::new(PollFd::new(self.owned(fd)?).map_err(os("register handed-over fd"))?);
        self.polls.insert(fd, p.clone());
        Ok(p)
    }

    fn sink(&mut self, s: &SinkSnap) -> Result<Sink, IoError> {
        Ok(match *s {
            SinkSnap::Poll { fd, keep } => {
                let keep = match keep {
                    Some(k) => Some(self.owned(k)?),
                    None => None,
                };
                Sink::Poll(self.poll(fd)?, keep)
            }
            SinkSnap::File { fd } => {
                if let Some(f) = self.files.get(&fd) {
                    Sink::File(f.clone())
                } else {
                    let f = Arc::new(File::from(self.owned(fd)?));
                    self.files.insert(fd, f.clone());
                    Sink::File(f)
                }
            }
        })
    }
}

/// The stdio of one process (init or exec).
pub struct ProcessIo {
    live: Mutex<Live>,
}

/// An output target as the filesystem gave it (opened on a blocking thread), before it is
/// registered with the poller.
enum Target {
    /// A FIFO: our write end, and our own read end kept open as a keep-alive.
    Fifo { w: OwnedFd, keep: OwnedFd },
    /// Anything else (a regular file, a character device), appended to.
    File(Arc<File>),
}

/// Everything a process's stdio paths gave, opened together off the serving thread.
#[derive(Default)]
struct Opened {
    /// Our read end of the client's stdin FIFO and the keep-alive writer.
    stdin: Option<(OwnedFd, OwnedFd)>,
    stdout: Option<Target>,
    stderr: Option<Target>,
}

/// The open in progress on the blocking thread, for the side that gives up waiting on it.
#[derive(Default)]
struct Opening {
    path: Mutex<Option<PathBuf>>,
    /// `path` is known to be a FIFO (a reader of ours can let its open go). Unknown on a
    /// filesystem that hangs: touching the path again would only hang another thread.
    fifo: std::sync::atomic::AtomicBool,
    cancelled: std::sync::atomic::AtomicBool,
}

impl Opening {
    /// About to touch `path` (which may block): refused once the waiting side gave up.
    fn enter(&self, path: &Path) -> Result<(), IoError> {
        if self.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(IoError::Os {
                what: format!("open {}", path.display()),
                source: stdio::Error::new(stdio::ErrorKind::TimedOut, "given up"),
            });
        }
        *lock(&self.path) = Some(path.to_path_buf());
        self.fifo.store(false, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn is_fifo(&self) {
        self.fifo.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a FIFO given up on is held open for reading, so the writer blocked in `open` on
/// the blocking thread is let go.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Open an output target. A FIFO named plainly (containerd's own) is opened without ever
/// waiting: our read side first, as a keep-alive, then the write side. A `file://` target
/// (`create`) is opened as Go's shim opens it: directories and file created, append, and for
/// a FIFO that means waiting until a reader comes; a keep-alive read side is added then, so it
/// behaves as any FIFO sink afterwards. Blocking: runs on a blocking thread.
fn open_output(
    path: &Path,
    create: bool,
    shared: &mut Option<(PathBuf, Arc<File>)>,
    opening: &Opening,
) -> Result<Target, IoError> {
    opening.enter(path)?;
    if create {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(os(format!("create {}", dir.display())))?;
        }
    }
    let fifo = !create && fd::is_fifo(path).map_err(os(format!("stat {}", path.display())))?;
    if fifo {
        let keep = fd::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(os("open fifo"))?;
        let w = fd::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK).map_err(os("open fifo"))?;
        // The keep-alive reader lives exactly as long as the writer's pump.
        return Ok(Target::Fifo { w, keep });
    }
    if let Some((p, f)) = shared {
        if p == path {
            return Ok(Target::File(f.clone()));
        }
    }
    // A `file://` FIFO: the open below waits for its reader.
    if create && fd::is_fifo(path).unwrap_or(false) {
        opening.is_fifo();
    }
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(create)
        .mode(0o644)
        .open(path)
        .map_err(os(format!("open {}", path.display())))?;
    opening.enter(path)?;
    let is_fifo = f
        .metadata()
        .map(|m| m.file_type().is_fifo())
        .map_err(os(format!("stat {}", path.display())))?;
    if is_fifo {
        let keep = fd::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(os("open fifo"))?;
        return Ok(Target::Fifo {
            w: OwnedFd::from(f),
            keep,
        });
    }
    let f = Arc::new(f);
    *shared = Some((path.to_path_buf(), f.clone()));
    Ok(Target::File(f))
}

/// Open every path of a process's stdio (blocking: runs on a blocking thread).
fn open_paths(spec: &StdioSpec, terminal: bool, opening: &Opening) -> Result<Opened, IoError> {
    let mut opened = Opened::default();
    // stdin (every mode but Null may have one). Only FIFOs can be polled; containerd never
    // passes anything else for stdin.
    if let Some(path) = spec.stdin() {
        opening.enter(path)?;
        if !fd::is_fifo(path).map_err(os(format!("stat {}", path.display())))? {
            return Err(IoError::InvalidUri(format!(
                "stdin {} is not a FIFO",
                path.display()
            )));
        }
        let reader =
            fd::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK).map_err(os("open stdin"))?;
        let keepalive =
            fd::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK).map_err(os("open stdin"))?;
        opened.stdin = Some((reader, keepalive));
    }
    if let StdioSpec::Paths {
        stdout,
        stderr,
        create_file,
        ..
    } = spec
    {
        let mut shared = None;
        if let Some(p) = stdout {
            opened.stdout = Some(open_output(p, *create_file, &mut shared, opening)?);
        }
        if let (Some(p), false) = (stderr, terminal) {
            opened.stderr = Some(open_output(p, *create_file, &mut shared, opening)?);
        }
    }
    Ok(opened)
}

/// [`open_paths`] on a blocking thread, given up at `deadline`. A FIFO the thread is stuck
/// opening (nobody reads it) is then opened for reading by us for a moment, which lets the
/// thread go; what it opened is closed. A thread stuck in a hung filesystem stays stuck until
/// the kernel lets it go, but nobody waits for it.
async fn open_paths_within(
    spec: &StdioSpec,
    terminal: bool,
    deadline: tokio::time::Instant,
) -> Result<Opened, IoError> {
    if spec.stdin().is_none() && !matches!(spec, StdioSpec::Paths { .. }) {
        return Ok(Opened::default());
    }
    let opening = Arc::new(Opening::default());
    let (s, o) = (spec.clone(), opening.clone());
    let started = tokio::time::Instant::now();
    let mut job = tokio::task::spawn_blocking(move || open_paths(&s, terminal, &o));
    match tokio::time::timeout_at(deadline, &mut job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(IoError::Os {
            what: "open stdio".into(),
            source: stdio::Error::other(e),
        }),
        Err(_) => {
            opening
                .cancelled
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let path = lock(&opening.path).clone();
            let fifo = path
                .clone()
                .filter(|_| opening.fifo.load(std::sync::atomic::Ordering::SeqCst));
            tokio::spawn(release(fifo, job));
            Err(IoError::Os {
                what: format!(
                    "open {}",
                    path.as_deref().unwrap_or(Path::new("stdio")).display()
                ),
                source: stdio::Error::new(
                    stdio::ErrorKind::TimedOut,
                    format!(
                        "not done after {:.1}s (a FIFO nobody reads? a hung filesystem?)",
                        started.elapsed().as_secs_f64()
                    ),
                ),
            })
        }
    }
}

/// Let go of a blocking open given up on (see [`open_paths_within`]): a `fifo` it waits on
/// is opened for reading by us until the job ended.
async fn release(fifo: Option<PathBuf>, job: JoinHandle<Result<Opened, IoError>>) {
    let reader = match fifo {
        Some(p) => tokio::task::spawn_blocking(move || {
            fd::open(&p, OFlag::O_RDONLY | OFlag::O_NONBLOCK).ok()
        })
        .await
        .ok()
        .flatten(),
        None => None,
    };
    // Whatever the job opened is closed when its result is dropped here.
    let _ = tokio::time::timeout(RELEASE_WAIT, job).await;
    drop(reader);
}

/// Register an opened output target with the poller (FIFOs) or keep it as a file.
fn sink(t: Target) -> Result<Sink, IoError> {
    match t {
        Target::Fifo { w, keep } => {
            fd::grow_pipe(w.as_fd(), OUTPUT_PIPE_BYTES);
            let p = PollFd::new(w).map_err(os("register fifo"))?;
            Ok(Sink::Poll(Arc::new(p), Some(keep)))
        }
        Target::File(f) => Ok(Sink::File(f)),
    }
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

fn spawn_pump(src: Arc<PollFd>, sink: Sink, mover: Mover, output: bool) -> Pump {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump(src, sink, mover, rx, output));
    Pump { ctl: tx, task }
}

/// Copy `src` to `sink` until end of stream: container output to a FIFO or file (`output`),
/// or a client's stdin FIFO into the container (the container's end is closed at end of file
/// when the pump drops it; a shared pty master stays open for output).
///
/// Between moves it takes requests: a drain (output only) moves everything that is in the
/// source right now, then acknowledges; a freeze hands the ends and any unwritten bytes back.
/// A move interrupted by a request loses nothing (see [`Mover`]).
async fn pump(
    src: Arc<PollFd>,
    sink: Sink,
    mut mover: Mover,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    output: bool,
) {
    let mut ctl_open = true;
    loop {
        tokio::select! {
            biased;
            req = ctl.recv(), if ctl_open => match req {
                None => ctl_open = false,
                Some(Ctl::Freeze(reply)) => {
                    mover.settle(&src).await;
                    let pending = mover.take_pending();
                    let _ = reply.send(PumpParts { src, sink, pending });
                    return;
                }
                Some(Ctl::Drain(ack)) => {
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
            },
            r = mover.step(&src, &sink, true) => match r {
                Ok(Moved::Bytes(_)) | Ok(Moved::Empty) => {}
                Ok(Moved::Eof) => {
                    // The process side is done. Drains that come now wait for this pump to
                    // end, so let the reader take what is still in the FIFO first.
                    if let (true, Sink::Poll(fifo, _)) = (output, &sink) {
                        wait_for_consumer(fifo).await;
                    }
                    return;
                }
                Err(e) => {
                    if output {
                        tracing::warn!(error = %e, "copying container output stopped");
                    }
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

#[cfg(test)]
mod tests;
