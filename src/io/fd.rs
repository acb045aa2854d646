//! File-descriptor plumbing shared by the stdio code: pipes, non-blocking pollable fds, and
//! FIFO opens that never block the runtime thread.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A pipe as (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    let new = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags & !OFlag::O_NONBLOCK
    };
    if new != flags {
        fcntl(fd, FcntlArg::F_SETFL(new))?;
    }
    Ok(())
}

pub fn is_fifo(path: &Path) -> io::Result<bool> {
    Ok(std::fs::metadata(path)?.file_type().is_fifo())
}

/// Open with raw flags (always close-on-exec).
pub fn open(path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(io::Error::from)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    Ok(fd)
}

/// A non-blocking fd registered with the runtime's poller (pipes, FIFOs, pty masters).
pub struct PollFd {
    fd: AsyncFd<OwnedFd>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl PollFd {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        set_nonblocking(fd.as_fd(), true)?;
        // SAFETY: an `OwnedFd` is a valid open descriptor, and the `AsyncFd` owns it: it stays
        // open and the same until the `AsyncFd` is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| e.into_parts().1)?;
        Ok(PollFd { fd })
    }

    pub fn raw(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }

    /// Read once, waiting for data. `Ok(0)` is end of stream; a pty master's EIO (slave side
    /// closed) is reported as end of stream too.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut g = self.fd.readable().await?;
            match g.try_io(|fd| read_raw(fd.get_ref().as_fd(), buf)) {
                Ok(r) => return r,
                Err(_) => continue,
            }
        }
    }

    /// Read once without waiting (`WouldBlock` when nothing is buffered).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_raw(self.fd.get_ref().as_fd(), buf)
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
        Ok(())
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

fn read_raw(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EIO) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where copied output goes: a pollable FIFO/pipe, or a file written with ordinary (quick)
/// blocking writes. Regular files cannot be registered with epoll.
pub enum Sink {
    /// The fd written to, and a companion kept open for as long as the sink lives (our own
    /// read side of an output FIFO).
    Poll(PollFd, Option<OwnedFd>),
    File(std::sync::Arc<File>),
}

impl Sink {
    pub async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Poll(p, _) => p.write_all(data).await,
            Sink::File(f) => (&**f).write_all(data),
        }
    }
}

pub fn is_would_block(e: &io::Error) -> bool {
    would_block(e)
}
