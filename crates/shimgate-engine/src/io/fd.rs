//! File-descriptor plumbing shared by the stdio code: pipes, non-blocking pollable fds, and
//! FIFO opens that never block the runtime thread.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

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

    /// One successful write (waiting for room as needed); returns how much was written.
    /// Cancel-safe: nothing is written unless it returns.
    pub async fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            let mut g = self.fd.writable().await?;
            match g.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(io::Error::from)) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => continue,
            }
        }
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

/// Where copied output goes: a pollable FIFO/pipe, or a file (regular files and character
/// devices cannot be registered with epoll; a [`Mover`] writes them on blocking threads).
pub enum Sink {
    /// The fd written to, and a companion kept open for as long as the sink lives (our own
    /// read side of an output FIFO).
    Poll(std::sync::Arc<PollFd>, Option<OwnedFd>),
    File(std::sync::Arc<File>),
}

impl Sink {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Sink::Poll(p, _) => p.as_fd(),
            Sink::File(f) => f.as_fd(),
        }
    }

    /// One write; see [`PollFd::write_some`]. Files are never written here (that could block
    /// the serving thread): a [`Mover`] writes them on a blocking thread.
    pub async fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Poll(p, _) => p.write_some(data).await,
            Sink::File(_) => Err(io::Error::other(
                "file sinks are written on a blocking thread",
            )),
        }
    }
}

pub fn is_would_block(e: &io::Error) -> bool {
    would_block(e)
}

/// Most bytes one splice call moves.
const SPLICE_CHUNK: usize = 1 << 20;

fn splice_raw(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: splice(2) on two descriptors we hold, no offsets (both pipes, or a file
        // opened for append as the destination); no memory is passed.
        let n = unsafe {
            libc::splice(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes waiting in a pipe (FIONREAD); 0 when unknown.
pub fn pending_bytes(fd: BorrowedFd<'_>) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 {
        0
    } else {
        n
    }
}

/// Can `fd` take a write right now? (After a splice's EAGAIN this tells a full destination
/// from an empty source.)
fn writable_now(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid pollfd with a zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLOUT != 0
}

/// How bytes are moved from a source to a sink: `splice(2)` keeps them in the kernel (pipe to
/// pipe or pipe to file); when either end cannot splice (a pty, an odd file) the mover falls
/// back, once and for good, to read/write through a buffer.
///
/// Cancel safety: bytes read but not yet written live in the mover (not in a future's
/// locals), and every await sits either before a read or between two writes whose progress
/// is recorded. So a step may be dropped at any await without losing a byte, and
/// [`Mover::take_pending`] hands over what is still unwritten (a live upgrade does that).
///
/// A file sink (a regular file, a character device) cannot be polled, and a write to it may
/// block for as long as its filesystem likes (a hung network mount): such writes run on the
/// runtime's blocking threads, one at a time per mover, never on the serving thread. The job
/// in flight is kept in the mover, so a step dropped while it runs loses nothing: the next
/// step, or [`Mover::settle`], collects its outcome first. Output a file refuses (ENOSPC, EIO,
/// EFBIG…) is discarded and counted rather than left in the pipe, so a full disk does not
/// wedge the process writing to it; the count is logged (`output dropped`).
pub struct Mover {
    splice: bool,
    buf: Vec<u8>,
    /// `buf[start..end]` was read and is not written yet.
    start: usize,
    end: usize,
    /// A file sink's write running on a blocking thread.
    job: Option<tokio::task::JoinHandle<FileJob>>,
    /// Output the file sink refused since it last took some.
    refused: u64,
    refusing: bool,
}

/// The outcome of one write to a file sink, with the buffer it wrote from.
struct FileJob {
    buf: Vec<u8>,
    result: io::Result<usize>,
    spliced: bool,
}

/// What a finished file job means for the step that waits on it.
enum Outcome {
    Moved(Moved),
    /// The source was empty.
    SourceEmpty,
    /// Try again (splice is not possible here: the mover now copies through its buffer).
    Retry,
}

/// One step of a [`Mover`].
#[derive(Debug)]
pub enum Moved {
    Bytes(usize),
    /// The source reached end of stream.
    Eof,
    /// Drain mode only: the source is empty right now.
    Empty,
}

impl Default for Mover {
    fn default() -> Self {
        Mover {
            splice: true,
            buf: Vec::new(),
            start: 0,
            end: 0,
            job: None,
            refused: 0,
            refusing: false,
        }
    }
}

impl Drop for Mover {
    fn drop(&mut self) {
        if self.refusing {
            tracing::warn!(
                bytes = self.refused,
                "output dropped: the output file did not take the end of the output"
            );
        }
    }
}

impl Mover {
    /// A mover that first writes `pending` (bytes a previous owner had read but not written).
    pub fn with_pending(pending: Vec<u8>) -> Mover {
        let end = pending.len();
        let mut m = Mover::default();
        m.splice = end == 0;
        m.buf = pending;
        m.end = end;
        m
    }

    /// Bytes read but not written yet (empty in splice mode).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let v = self.buf[self.start..self.end].to_vec();
        self.start = 0;
        self.end = 0;
        v
    }

    fn buffer(&mut self) -> &mut [u8] {
        if self.buf.len() < 64 * 1024 {
            self.buf.resize(64 * 1024, 0);
        }
        &mut self.buf
    }

    /// Read one chunk into the buffer: waiting for data, or (drain mode) only what is there.
    async fn read_chunk(&mut self, src: &PollFd, wait_for_data: bool) -> io::Result<usize> {
        let buf = self.buffer();
        if wait_for_data {
            src.read(buf).await
        } else {
            src.try_read(buf)
        }
    }

    /// Write what is pending, recording progress after every write.
    async fn flush(&mut self, sink: &Sink) -> io::Result<()> {
        while self.start < self.end {
            let n = sink.write_some(&self.buf[self.start..self.end]).await?;
            self.start += n;
        }
        self.start = 0;
        self.end = 0;
        Ok(())
    }

    /// Collect the outcome of a file write a dropped step left running (call before
    /// [`Mover::take_pending`]).
    pub async fn settle(&mut self, src: &PollFd) {
        if let Some(job) = self.job.take() {
            if let Ok(done) = job.await {
                let _ = self.outcome(src, done);
            }
        }
    }

    /// Output the file sink did not take: discarded, counted, and said once per episode.
    fn refuse(&mut self, n: usize, e: &io::Error) {
        if !self.refusing {
            tracing::warn!(error = %e, "output dropped: the output file does not take it; discarding until it does");
            self.refusing = true;
        }
        self.refused += n as u64;
    }

    fn took(&mut self) {
        if self.refusing {
            tracing::warn!(
                bytes = self.refused,
                "output dropped: the output file takes output again"
            );
            self.refusing = false;
            self.refused = 0;
        }
    }

    /// What a finished file job means. A splice that failed for the destination's sake
    /// discards what it could not move (read from the source and dropped).
    fn outcome(&mut self, src: &PollFd, done: FileJob) -> io::Result<Outcome> {
        if !done.spliced {
            self.buf = done.buf;
            let n = self.end - self.start;
            self.start = 0;
            self.end = 0;
            match done.result {
                Ok(_) => self.took(),
                Err(e) => self.refuse(n, &e),
            }
            return Ok(Outcome::Moved(Moved::Bytes(n)));
        }
        match done.result {
            Ok(0) => Ok(Outcome::Moved(Moved::Eof)),
            Ok(n) => {
                self.took();
                Ok(Outcome::Moved(Moved::Bytes(n)))
            }
            Err(e) if would_block(&e) => Ok(Outcome::SourceEmpty),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.splice = false;
                Ok(Outcome::Retry)
            }
            Err(e) => {
                let mut scratch = [0u8; 64 * 1024];
                match src.try_read(&mut scratch) {
                    Ok(0) => Ok(Outcome::Moved(Moved::Eof)),
                    Ok(n) => {
                        self.refuse(n, &e);
                        Ok(Outcome::Moved(Moved::Bytes(n)))
                    }
                    Err(r) if would_block(&r) => Ok(Outcome::SourceEmpty),
                    Err(r) => Err(r),
                }
            }
        }
    }

    /// [`Mover::step`] into a file sink: reads wait on the poller as usual; every write runs
    /// on a blocking thread (see the type's docs).
    async fn step_file(
        &mut self,
        src: &Arc<PollFd>,
        file: &Arc<File>,
        wait_for_data: bool,
    ) -> io::Result<Moved> {
        loop {
            if let Some(job) = self.job.as_mut() {
                // A job a dropped step left behind: its outcome first.
                let done = job.await.map_err(io::Error::other)?;
                self.job = None;
                match self.outcome(src, done)? {
                    Outcome::Moved(m) => return Ok(m),
                    Outcome::SourceEmpty | Outcome::Retry => {}
                }
            }
            if self.start < self.end {
                let buf = std::mem::take(&mut self.buf);
                let (start, end, f) = (self.start, self.end, file.clone());
                self.job = Some(tokio::task::spawn_blocking(move || {
                    let result = (&*f).write_all(&buf[start..end]).map(|()| end - start);
                    FileJob {
                        buf,
                        result,
                        spliced: false,
                    }
                }));
                continue;
            }
            if self.splice {
                let guard = if wait_for_data {
                    Some(src.fd.readable().await?)
                } else {
                    None
                };
                let (s, f) = (src.clone(), file.clone());
                let job = self
                    .job
                    .insert(tokio::task::spawn_blocking(move || FileJob {
                        buf: Vec::new(),
                        result: splice_raw(s.as_fd(), f.as_fd(), SPLICE_CHUNK),
                        spliced: true,
                    }));
                let done = job.await.map_err(io::Error::other)?;
                self.job = None;
                match self.outcome(src, done)? {
                    Outcome::Moved(m) => return Ok(m),
                    Outcome::Retry => continue,
                    Outcome::SourceEmpty => match guard {
                        // Only a guard taken before the attempt is cleared, so a write that
                        // raced with us is not forgotten.
                        Some(mut g) => {
                            g.clear_ready();
                            continue;
                        }
                        None => return Ok(Moved::Empty),
                    },
                }
            }
            let r = self.read_chunk(src, wait_for_data).await;
            match r {
                Ok(0) => return Ok(Moved::Eof),
                Ok(n) => {
                    self.start = 0;
                    self.end = n;
                }
                Err(e) if !wait_for_data && would_block(&e) => return Ok(Moved::Empty),
                Err(e) => return Err(e),
            }
        }
    }

    /// Move one chunk from `src` to `sink`. With `wait_for_data` false it does not wait for
    /// the source (drain mode) and reports [`Moved::Empty`] instead.
    pub async fn step(
        &mut self,
        src: &Arc<PollFd>,
        sink: &Sink,
        wait_for_data: bool,
    ) -> io::Result<Moved> {
        if let Sink::File(f) = sink {
            return self.step_file(src, f, wait_for_data).await;
        }
        if self.start < self.end {
            let n = self.end - self.start;
            self.flush(sink).await?;
            return Ok(Moved::Bytes(n));
        }
        loop {
            if self.splice {
                let dst = match sink {
                    Sink::Poll(p, _) => p.as_fd(),
                    Sink::File(f) => f.as_fd(),
                };
                // Waiting for data (a guard taken before the attempt) or draining (none).
                let ready = match wait_for_data {
                    true => Some(src.fd.readable().await?),
                    false => None,
                };
                match splice_raw(src.as_fd(), dst, SPLICE_CHUNK) {
                    Ok(0) => return Ok(Moved::Eof),
                    Ok(n) => return Ok(Moved::Bytes(n)),
                    Err(e) if would_block(&e) => {
                        if pending_bytes(src.as_fd()) == 0 {
                            match ready {
                                // The source was empty after all (a stale wake-up): wait for
                                // it again. Only a guard taken before the attempt is cleared,
                                // so a write that raced with us is not forgotten.
                                Some(mut g) => g.clear_ready(),
                                None => return Ok(Moved::Empty),
                            }
                        } else if !writable_now(dst) {
                            // Data waits and the destination is full: wait for room.
                            if let Sink::Poll(p, _) = sink {
                                p.fd.writable().await?.clear_ready();
                            }
                        }
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.splice = false;
                        continue;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(Moved::Eof),
                    Err(e) => return Err(e),
                }
            }
            let r = self.read_chunk(src, wait_for_data).await;
            let n = match r {
                Ok(0) => return Ok(Moved::Eof),
                Ok(n) => n,
                Err(e) if !wait_for_data && would_block(&e) => return Ok(Moved::Empty),
                Err(e) => return Err(e),
            };
            self.start = 0;
            self.end = n;
            self.flush(sink).await?;
            return Ok(Moved::Bytes(n));
        }
    }
}

/// Enlarge a pipe's buffer (fewer wake-ups per megabyte); best effort.
pub fn grow_pipe(fd: BorrowedFd<'_>, bytes: i32) {
    // SAFETY: F_SETPIPE_SZ takes an integer; failure (limits, not a pipe) is harmless.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes);
    }
}
