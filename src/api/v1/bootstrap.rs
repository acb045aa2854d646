//! What the v1 shim sets up before it can serve: the socket (inherited on fd 3, or `-socket`)
//! and its log FIFOs in the work directory.
//!
//! Abstract sockets: containerd before 1.3.9 / 1.4.3 ran `containerd-shim -socket <name>` with
//! an abstract unix socket name, which any process in the host's network namespace can connect
//! to, whatever its uid (CVE-2020-15257; our peer-credential check narrows that but does not
//! close it for processes running as root in other containers sharing the host network). Newer
//! containerd binds a socket *file* itself and passes it on fd 3, so a `-socket` that is not a
//! file path is refused unless the operator opts in with `-allow-abstract-socket`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use crate::cli::ShimV1Args;
use crate::startup::daemon;

/// Longest socket address the Go shim accepts (`socketPathLimit`), counting an abstract name's
/// leading NUL.
pub const SOCKET_PATH_LIMIT: usize = 106;

/// Where to serve, as `-socket` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// No `-socket`: the listener containerd bound, on fd 3.
    Inherited,
    /// `-socket unix:///path`: a socket file.
    Path(PathBuf),
    /// An abstract socket name (without the leading NUL). Go's rule: an address without
    /// `unix://` is abstract; so is a `unix://` address starting with `@` or NUL.
    Abstract(Vec<u8>),
}

/// Classify `-socket` the way the Go shim (and Go's `net` package) reads it.
pub fn listen_spec(socket: Option<&str>) -> ListenSpec {
    let Some(s) = socket.filter(|s| !s.is_empty()) else {
        return ListenSpec::Inherited;
    };
    match s.strip_prefix("unix://") {
        Some(p) => match p.strip_prefix('@').or_else(|| p.strip_prefix('\0')) {
            Some(name) => ListenSpec::Abstract(name.as_bytes().to_vec()),
            None => ListenSpec::Path(PathBuf::from(p)),
        },
        // Go prefixes a NUL to the whole string, a leading '@' included.
        None => ListenSpec::Abstract(s.as_bytes().to_vec()),
    }
}

/// The refusal an operator reads when containerd (or they) asked for an abstract socket.
pub fn abstract_refusal(socket: &str) -> String {
    format!(
        "refusing to serve on abstract unix socket {socket:?}: any process in the host network \
         namespace can reach an abstract socket (CVE-2020-15257). containerd >= 1.3.9 / 1.4.3 \
         passes containerd-shim a socket file on fd 3 and no -socket flag; upgrade containerd, \
         or give -socket unix:///<path> for a socket file. To accept the abstract socket anyway \
         (for an old containerd you cannot upgrade yet), add -allow-abstract-socket"
    )
}

/// Why the v1 shim cannot get its listening socket or its log FIFOs. The texts are what
/// containerd shows after `containerd-shim: ` (the Go shim's wording where it had one).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The inherited fd 3 is unusable.
    #[error(transparent)]
    Inherited(#[from] daemon::StartupError),
    /// `name` is shown as given: `{:?}` of a path, or `"\x00name"` for an abstract one.
    #[error("{name}: unix socket path too long (> {SOCKET_PATH_LIMIT})")]
    PathTooLong { name: String },
    #[error("listen on {socket}: {source}")]
    Listen {
        socket: String,
        source: std::io::Error,
    },
    #[error("{}", abstract_refusal(socket))]
    AbstractRefused { socket: String },
    #[error("abstract socket @{name}: {source}")]
    AbstractName {
        name: String,
        source: std::io::Error,
    },
    #[error("create {path}: {source}")]
    CreateFifo { path: String, source: nix::Error },
    #[error("open {path}: {source}")]
    OpenFifo { path: String, source: nix::Error },
    #[error("{path}: {source}")]
    StatFifo { path: String, source: nix::Error },
    #[error("{path} is not a FIFO")]
    NotAFifo { path: String },
}

/// Bind (or adopt) the listening socket.
pub fn listen(args: &ShimV1Args) -> Result<UnixListener, BootstrapError> {
    let socket = args.socket.as_deref().unwrap_or("");
    match listen_spec(args.socket.as_deref()) {
        ListenSpec::Inherited => Ok(daemon::inherited_listener()?),
        ListenSpec::Path(p) => {
            if p.as_os_str().len() > SOCKET_PATH_LIMIT {
                return Err(BootstrapError::PathTooLong {
                    name: format!("{p:?}"),
                });
            }
            UnixListener::bind(&p).map_err(|source| BootstrapError::Listen {
                socket: p.display().to_string(),
                source,
            })
        }
        ListenSpec::Abstract(_) if !args.allow_abstract_socket => {
            Err(BootstrapError::AbstractRefused {
                socket: socket.to_string(),
            })
        }
        ListenSpec::Abstract(name) => bind_abstract(&name),
    }
}

fn bind_abstract(name: &[u8]) -> Result<UnixListener, BootstrapError> {
    use std::os::linux::net::SocketAddrExt;
    let shown = String::from_utf8_lossy(name);
    if name.len() + 1 > SOCKET_PATH_LIMIT {
        return Err(BootstrapError::PathTooLong {
            name: format!("\"\\x00{shown}\""),
        });
    }
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(|source| {
        BootstrapError::AbstractName {
            name: shown.to_string(),
            source,
        }
    })?;
    UnixListener::bind_addr(&addr).map_err(|source| BootstrapError::Listen {
        socket: format!("abstract socket @{shown}"),
        source,
    })
}

/// The shim's two log FIFOs in the work directory, held open read-write: containerd (and a
/// restarted containerd) reads them, and because we hold a read side ourselves a write never
/// fails for want of a reader. The descriptors are non-blocking, so while nobody drains them a
/// full FIFO drops log lines instead of stalling the shim.
pub struct ShimLogs {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub const STDOUT_LOG: &str = "shim.stdout.log";
pub const STDERR_LOG: &str = "shim.stderr.log";

/// Open (creating, as the Go shim does, if containerd has not) the log FIFOs of `workdir`.
pub fn open_logs(workdir: &Path) -> Result<ShimLogs, BootstrapError> {
    Ok(ShimLogs {
        stdout: open_fifo(&workdir.join(STDOUT_LOG))?,
        stderr: open_fifo(&workdir.join(STDERR_LOG))?,
    })
}

fn open_fifo(path: &Path) -> Result<OwnedFd, BootstrapError> {
    let shown = || path.display().to_string();
    match nix::unistd::mkfifo(path, Mode::S_IRWXU) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(source) => {
            return Err(BootstrapError::CreateFifo {
                path: shown(),
                source,
            })
        }
    }
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| BootstrapError::OpenFifo {
        path: shown(),
        source,
    })?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|source| BootstrapError::StatFifo {
        path: shown(),
        source,
    })?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return Err(BootstrapError::NotAFifo { path: shown() });
    }
    Ok(fd)
}

/// Point fds 1 and 2 at the log FIFOs. containerd gave us pipes there that it copies into the
/// same FIFOs; those pipes die with containerd, the FIFOs do not. Anything that reaches our
/// stdout/stderr (a panic message) then still lands where a restarted containerd reads.
pub fn redirect_stdio(logs: &ShimLogs) {
    for (fd, target) in [(&logs.stdout, 1), (&logs.stderr, 2)] {
        // SAFETY: dup2 onto 1 or 2 only replaces what those descriptors refer to; `fd` stays
        // owned (and open) by `logs`.
        unsafe {
            libc::dup2(fd.as_raw_fd(), target);
        }
    }
}

/// Show an abstract name the way operators write it.
pub fn display_socket(spec: &ListenSpec) -> String {
    match spec {
        ListenSpec::Inherited => "fd 3 (inherited)".into(),
        ListenSpec::Path(p) => p.display().to_string(),
        ListenSpec::Abstract(n) => format!("@{}", OsStr::from_bytes(n).to_string_lossy()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(socket: &str, allow: bool) -> ShimV1Args {
        ShimV1Args {
            socket: Some(socket.into()),
            allow_abstract_socket: allow,
            ..Default::default()
        }
    }

    #[test]
    fn socket_flag_follows_go_rules() {
        assert_eq!(listen_spec(None), ListenSpec::Inherited);
        assert_eq!(listen_spec(Some("")), ListenSpec::Inherited);
        assert_eq!(
            listen_spec(Some("unix:///run/s/x")),
            ListenSpec::Path("/run/s/x".into())
        );
        // What containerd < 1.3.9 passed: no scheme, so abstract.
        assert_eq!(
            listen_spec(Some("/containerd-shim/default/c1/shim.sock")),
            ListenSpec::Abstract(b"/containerd-shim/default/c1/shim.sock".to_vec())
        );
        assert_eq!(
            listen_spec(Some("@x")),
            ListenSpec::Abstract(b"@x".to_vec())
        );
        assert_eq!(
            listen_spec(Some("unix://@x")),
            ListenSpec::Abstract(b"x".to_vec())
        );
        assert_eq!(
            listen_spec(Some("unix://\0x")),
            ListenSpec::Abstract(b"x".to_vec())
        );
    }

    #[test]
    fn abstract_socket_is_refused_with_the_way_out() {
        for s in [
            "/containerd-shim/default/c1/shim.sock",
            "unix://@shim",
            "@shim",
        ] {
            let e = listen(&args(s, false)).unwrap_err();
            assert!(matches!(e, BootstrapError::AbstractRefused { .. }), "{e:?}");
            let e = e.to_string();
            assert!(e.contains("abstract"), "{e}");
            assert!(e.contains("1.3.9") && e.contains("1.4.3"), "{e}");
            assert!(e.contains("-allow-abstract-socket"), "{e}");
            assert!(e.contains("unix:///"), "{e}");
        }
    }

    #[test]
    fn abstract_socket_with_opt_in_is_served() {
        let name = format!("shimgate-test-{}", std::process::id());
        let l = listen(&args(&format!("unix://@{name}"), true)).unwrap();
        use std::os::linux::net::SocketAddrExt;
        let addr = l.local_addr().unwrap();
        assert_eq!(addr.as_abstract_name(), Some(name.as_bytes()));
        let to = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixStream::connect_addr(&to).unwrap();
        // Too long for the Go limit.
        let long = "x".repeat(SOCKET_PATH_LIMIT);
        let e = listen(&args(&long, true)).unwrap_err();
        assert!(matches!(e, BootstrapError::PathTooLong { .. }), "{e:?}");
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn socket_file_is_bound() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.sock");
        let l = listen(&args(&format!("unix://{}", p.display()), false)).unwrap();
        assert_eq!(l.local_addr().unwrap().as_pathname(), Some(p.as_path()));
        // In use: an error, not a stolen socket.
        assert!(listen(&args(&format!("unix://{}", p.display()), false)).is_err());
    }

    #[test]
    fn log_fifos_are_created_and_never_block() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let logs = open_logs(d.path()).unwrap();
        for name in [STDOUT_LOG, STDERR_LOG] {
            let m = std::fs::metadata(d.path().join(name)).unwrap();
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
        }
        // Nobody reads: writes fill the FIFO, then fail instead of blocking.
        let mut f = std::fs::File::from(logs.stdout.try_clone().unwrap());
        let chunk = vec![b'x'; 4096];
        let mut refused = false;
        for _ in 0..1024 {
            if f.write(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
        // A regular file in the way is an error.
        std::fs::write(d.path().join("x"), "").unwrap();
        assert!(open_fifo(&d.path().join("x")).is_err());
    }
}
