//! The console socket runc hands a pty master through (`--console-socket`), and window-size
//! changes on that master.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::fd::PollFd;

/// A listening socket in a private temporary directory; removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

fn temp_base() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl ConsoleSocket {
    pub fn new() -> io::Result<Self> {
        let base = temp_base();
        let mut last = None;
        // A random name in a shared directory: create exclusively (mkdir fails if it exists)
        // with mode 0700 so nobody else can put a socket there first.
        for _ in 0..16 {
            let dir = base.join(format!("pty{}", random_u64()));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let path = dir.join("pty.sock");
                    let listener = match UnixListener::bind(&path) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = std::fs::remove_dir_all(&dir);
                            return Err(e);
                        }
                    };
                    return Ok(ConsoleSocket {
                        dir,
                        path,
                        listener,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("cannot create console socket directory")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receive the pty master runc sent. runc has normally connected and sent it by the time
    /// its create/exec returned; a runtime that is slower (or that connects and never sends)
    /// gets [`CONSOLE_WAIT`] in all. Both the accept and the receive wait on the poller, so
    /// only the process being set up waits, never the shim.
    pub async fn receive_master(self) -> io::Result<OwnedFd> {
        let received = async {
            self.listener.set_nonblocking(true)?;
            let l = tokio::net::UnixListener::from_std(self.listener.try_clone()?)?;
            let (stream, _) = l.accept().await?;
            loop {
                stream.readable().await?;
                match stream.try_io(tokio::io::Interest::READABLE, || recv_master(&stream)) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return r,
                }
            }
        };
        tokio::time::timeout(CONSOLE_WAIT, received)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no console from runtime"))?
    }
}

/// How long a runtime may take to hand over a terminal after it was asked to create it.
const CONSOLE_WAIT: Duration = Duration::from_secs(10);

/// One non-blocking `recvmsg` of the message carrying the pty master.
fn recv_master(stream: &impl AsRawFd) -> io::Result<OwnedFd> {
    let mut name = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut name)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            let mut it = fds.into_iter();
            if let Some(first) = it.next() {
                for extra in it {
                    // SAFETY: received via SCM_RIGHTS, so each is a new fd we own.
                    drop(unsafe { OwnedFd::from_raw_fd(extra) });
                }
                // SAFETY: as above; this one becomes the master we keep.
                return Ok(unsafe { OwnedFd::from_raw_fd(first) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "runtime connected to the console socket but sent no terminal",
    ))
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use std::os::unix::fs::DirBuilderExt;

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // Uniqueness, not secrecy, is what matters (the mkdir is exclusive).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        return t ^ u64::from(std::process::id()).rotate_left(32);
    }
    u64::from_ne_bytes(b)
}

/// Set the window size of a pty master (rows = height, cols = width).
pub fn resize(master: &PollFd, width: u32, height: u32) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u32::from(u16::MAX)) as u16,
        ws_col: width.min(u32::from(u16::MAX)) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the pointer, which is valid for the call; the
    // fd is a pty master we own.
    let rc = unsafe { libc::ioctl(master.raw(), libc::TIOCSWINSZ, &ws) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
