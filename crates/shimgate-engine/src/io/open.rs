//! Opening a process's stdio targets (FIFOs, files, the logging binary's pipes) on a
//! blocking thread, bounded by a deadline, and releasing what a given-up open still holds.

use super::*;

/// An output target as the filesystem gave it (opened on a blocking thread), before it is
/// registered with the poller.
pub(super) enum Target {
    /// A FIFO: our write end, and our own read end kept open as a keep-alive.
    Fifo { w: OwnedFd, keep: OwnedFd },
    /// Anything else (a regular file, a character device), appended to.
    File(Arc<File>),
}

/// Everything a process's stdio paths gave, opened together off the serving thread.
#[derive(Default)]
pub(super) struct Opened {
    /// Our read end of the client's stdin FIFO and the keep-alive writer.
    pub(super) stdin: Option<(OwnedFd, OwnedFd)>,
    pub(super) stdout: Option<Target>,
    pub(super) stderr: Option<Target>,
}

/// The open in progress on the blocking thread, for the side that gives up waiting on it.
#[derive(Default)]
pub(super) struct Opening {
    pub(super) path: Mutex<Option<PathBuf>>,
    /// `path` is known to be a FIFO (a reader of ours can let its open go). Unknown on a
    /// filesystem that hangs: touching the path again would only hang another thread.
    pub(super) fifo: std::sync::atomic::AtomicBool,
    pub(super) cancelled: std::sync::atomic::AtomicBool,
}

impl Opening {
    /// About to touch `path` (which may block): refused once the waiting side gave up.
    pub(super) fn enter(&self, path: &Path) -> Result<(), IoError> {
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

    pub(super) fn is_fifo(&self) {
        self.fifo.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long a FIFO given up on is held open for reading, so the writer blocked in `open` on
/// the blocking thread is let go.
pub(super) const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Open an output target. A FIFO named plainly (containerd's own) is opened without ever
/// waiting: our read side first, as a keep-alive, then the write side. A `file://` target
/// (`create`) is opened as Go's shim opens it: directories and file created, append, and for
/// a FIFO that means waiting until a reader comes; a keep-alive read side is added then, so it
/// behaves as any FIFO sink afterwards. Blocking: runs on a blocking thread.
pub(super) fn open_output(
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
pub(super) fn open_paths(
    spec: &StdioSpec,
    terminal: bool,
    opening: &Opening,
) -> Result<Opened, IoError> {
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
pub(super) async fn open_paths_within(
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
pub(super) async fn release(fifo: Option<PathBuf>, job: JoinHandle<Result<Opened, IoError>>) {
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
pub(super) fn sink(t: Target) -> Result<Sink, IoError> {
    match t {
        Target::Fifo { w, keep } => {
            fd::grow_pipe(w.as_fd(), OUTPUT_PIPE_BYTES);
            let p = PollFd::new(w).map_err(os("register fifo"))?;
            Ok(Sink::Poll(Arc::new(p), Some(keep)))
        }
        Target::File(f) => Ok(Sink::File(f)),
    }
}

pub(super) fn chown_fd(fd: &OwnedFd, uid: u32, gid: u32) -> Result<(), IoError> {
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
