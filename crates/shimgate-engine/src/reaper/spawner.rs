//! The one way the shim starts a child process.
//!
//! `spawn` opens a reaper subscription *before* forking and claims the new pid right after, so
//! the child's exit reaches its caller even if it exits at once. The fork happens under the
//! reaper's spawn lock (see `reaper` docs). Children get `PR_SET_PDEATHSIG(SIGKILL)` when asked
//! (runc invocations), so a dying shim does not leave a runc behind.
//!
//! Two kinds of program: a std `Command` (forked by std, or spawned through `posix_spawn` when
//! it has no `pre_exec` step), and a [`Cmd`], started vfork-style by `vfork` with the
//! parent-death signal and stdio set up by raw system calls in the child: what every runtime
//! call uses, since the `pre_exec` step the death signal needs would force std to `fork()`.
//!
//! Concurrency invariant: `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so
//! callers must spawn from a long-lived thread; the shim's runtime is single-threaded and never
//! spawns from blocking-pool threads. It also never fires for a parent that died before the
//! child asked for it, so the child checks afterwards that its parent is still the shim.
//!
//! Signalling a child: a pid is only ours while it has not been reaped. The reaper reaps and
//! delivers under the spawn lock, so "no exit delivered yet" checked *under that lock* means
//! "not reaped": [`Child::kill_unless_exited`] signals only then, and never a recycled pid.

use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::vfork::{self, ChildIo, Cmd};
use super::{ExitWaiter, RawExit, Reaper};

/// How long output is still collected after a child exited (grandchildren may hold the pipes).
const IO_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Starts children whose exits are never lost.
#[derive(Clone)]
pub struct Spawner {
    reaper: Reaper,
}

/// A spawned child. Its exit arrives through [`Child::wait`], never through `waitpid`.
pub struct Child {
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    exit: ExitWaiter,
    reaper: Reaper,
    /// A pidfd, for a child adopted from a previous image: its exit may have been reaped by
    /// that image (then no claim ever fires here), so the pidfd is what tells and what signals.
    pidfd: Option<OwnedFd>,
}

impl Child {
    pub async fn wait(self) -> io::Result<RawExit> {
        let mut me = self;
        me.wait_mut().await
    }

    /// Wait for the exit without giving up the child (cancel-safe).
    pub async fn wait_mut(&mut self) -> io::Result<RawExit> {
        self.exit.wait_mut().await
    }

    /// The exit, waiting at most `limit`; the child stays waitable when the time runs out.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<RawExit> {
        tokio::time::timeout(limit, self.exit.wait_mut())
            .await
            .ok()?
            .ok()
    }

    /// The exit if it has been delivered already.
    pub fn try_exit(&mut self) -> Option<RawExit> {
        self.exit.try_exit()
    }

    /// Send `sig` unless the child has already been reaped (see the module docs); its exit in
    /// that case. With a pidfd the signal goes through it and can never reach another process.
    pub fn kill_unless_exited(&mut self, sig: nix::sys::signal::Signal) -> Option<RawExit> {
        let reaper = self.reaper.clone();
        reaper.with_spawn_lock(|| {
            if let Some(e) = self.exit.try_exit() {
                return Some(e);
            }
            match &self.pidfd {
                Some(fd) => {
                    let _ = super::pidfd_signal(fd, sig as i32);
                }
                None => {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig);
                }
            }
            None
        })
    }

    /// A pidfd for this child while it has not been reaped (live upgrade hands it over, so the
    /// next image can tell this process from any later one with the same pid). `None` once it
    /// exited, or without kernel support.
    pub fn pidfd(&mut self) -> Option<OwnedFd> {
        if let Some(fd) = &self.pidfd {
            return fd.try_clone().ok();
        }
        let reaper = self.reaper.clone();
        reaper.with_spawn_lock(|| {
            if self.exit.try_exit().is_some() {
                return None;
            }
            super::pidfd_open(self.pid as i32)
        })
    }

    /// Whether the process is gone: its exit was delivered, or (adopted child) its pidfd says
    /// it ended, even if a previous image reaped it.
    pub fn has_exited(&mut self) -> bool {
        if self.exit.try_exit().is_some() {
            return true;
        }
        match &self.pidfd {
            Some(fd) => super::pidfd_ended(fd.as_fd()),
            None => false,
        }
    }

    /// Wait at most `limit` for the process to end: its exit delivered, or (adopted child) its
    /// pidfd readable. True if it ended. (An adopted child is looked at every few milliseconds:
    /// only a logger being stopped after a live upgrade takes this path.)
    pub async fn ended_within(&mut self, limit: Duration) -> bool {
        let Some(fd) = &self.pidfd else {
            return self.exited_within(limit).await.is_some();
        };
        let exit = &mut self.exit;
        let gone = async {
            while !super::pidfd_ended(fd.as_fd()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let ended = async {
            tokio::select! {
                _ = exit.wait_mut() => {}
                _ = gone => {}
            }
        };
        tokio::time::timeout(limit, ended).await.is_ok()
    }
}

/// What [`Spawner::output`] runs: a std `Command` (forked, may carry `pre_exec` steps) or a
/// [`Cmd`] (started vfork-style, see `vfork`).
pub enum Program {
    Std(Command),
    Raw(Cmd),
}

impl From<Command> for Program {
    fn from(c: Command) -> Self {
        Program::Std(c)
    }
}

impl From<Cmd> for Program {
    fn from(c: Cmd) -> Self {
        Program::Raw(c)
    }
}

/// What a finished child produced.
#[derive(Debug)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The deadline passed and the child was killed.
    pub timed_out: bool,
}

impl Spawner {
    pub fn new(reaper: Reaper) -> Self {
        Spawner { reaper }
    }

    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// Spawn `cmd`. Stdio that the caller set to `Stdio::piped()` is returned as owned fds.
    pub fn spawn(&self, mut cmd: Command, pdeathsig: bool) -> io::Result<Child> {
        if pdeathsig {
            let parent = std::process::id() as libc::pid_t;
            // SAFETY: the closure runs in the forked child before exec and only calls prctl
            // and getppid, which are async-signal-safe; it reads one copied integer and
            // allocates nothing (the error is built from a raw errno).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // A shim that died between the fork and the prctl never sends the signal:
                    // the child has been re-parented already. It must not run on unowned.
                    if libc::getppid() != parent {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
        }
        let sub = self.reaper.subscribe();
        let mut std_child = self.reaper.with_spawn_lock(|| cmd.spawn())?;
        let pid = std_child.id();
        let exit = sub.claim(pid as i32);
        drop(sub);
        let child = Child {
            pid,
            stdin: std_child.stdin.take().map(OwnedFd::from),
            stdout: std_child.stdout.take().map(OwnedFd::from),
            stderr: std_child.stderr.take().map(OwnedFd::from),
            exit,
            reaper: self.reaper.clone(),
            pidfd: None,
        };
        // Dropping std's handle neither waits nor kills; the reaper owns the exit.
        drop(std_child);
        Ok(child)
    }

    /// Spawn `cmd` vfork-style (no copy of the shim's address space; see `vfork`), with the
    /// same guarantees as [`Spawner::spawn`]: subscribed before the child exists, its exit
    /// claimed for the returned handle, the clone under the spawn lock. Stdio set to
    /// [`ChildIo::Piped`] is returned as owned fds.
    pub fn spawn_cmd(&self, cmd: Cmd) -> io::Result<Child> {
        let sub = self.reaper.subscribe();
        let started = self.reaper.with_spawn_lock(|| vfork::spawn(cmd))?;
        let exit = sub.claim(started.pid as i32);
        drop(sub);
        let [stdin, stdout, stderr] = started.stdio;
        Ok(Child {
            pid: started.pid,
            stdin,
            stdout,
            stderr,
            exit,
            reaper: self.reaper.clone(),
            pidfd: None,
        })
    }

    /// Take over a child a previous image of this shim started (live upgrade), named by the
    /// pidfd that image handed over: its exit now comes to the returned handle if it is still
    /// to be reaped, and the pidfd tells (and is the only way to signal) it otherwise. Call
    /// before the reaper's first sweep in the new image, so an exit that happened during the
    /// hand-over is still routed here.
    pub fn adopt(&self, pid: u32, pidfd: OwnedFd) -> Child {
        let sub = self.reaper.subscribe();
        let exit = sub.claim(pid as i32);
        Child {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
            exit,
            reaper: self.reaper.clone(),
            pidfd: Some(pidfd),
        }
    }

    /// Run `cmd` to completion, feeding `input` on stdin and collecting stdout and stderr.
    /// When `deadline` passes the child is SIGKILLed; its exit is still collected (never
    /// abandoned), and `timed_out` is set. Output beyond `cap` bytes per stream is discarded so
    /// a flooding child cannot exhaust memory.
    /// The child gets the parent-death signal either way.
    pub async fn output(
        &self,
        cmd: impl Into<Program>,
        input: Option<Vec<u8>>,
        deadline: Option<Duration>,
        cap: usize,
    ) -> io::Result<Output> {
        let mut child = match cmd.into() {
            Program::Std(mut cmd) => {
                cmd.stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                self.spawn(cmd, true)?
            }
            Program::Raw(mut cmd) => {
                cmd.stdin(if input.is_some() {
                    ChildIo::Piped
                } else {
                    ChildIo::Null
                });
                cmd.stdout(ChildIo::Piped)
                    .stderr(ChildIo::Piped)
                    .pdeathsig(true);
                self.spawn_cmd(cmd)?
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let feed = async move {
            if let (Some(fd), Some(data)) = (stdin, input) {
                if let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) {
                    // A child that exits without reading its input is not an error here; its
                    // status tells.
                    let _ = tx.write_all(&data).await;
                }
            }
        };
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let mut killed = false;
        let mut exit_res = None;
        {
            let io = async {
                tokio::join!(
                    feed,
                    read_into(stdout, cap, &mut out_buf),
                    read_into(stderr, cap, &mut err_buf)
                )
            };
            let mut io = std::pin::pin!(io);
            let mut io_done = false;
            let far = Duration::from_secs(365 * 24 * 3600);
            let kill_at = tokio::time::sleep(deadline.unwrap_or(far));
            let mut kill_at = std::pin::pin!(kill_at);
            // Once the child is gone, its output is what is already in the pipes; a
            // grandchild that keeps them open must not keep us waiting.
            let give_up = tokio::time::sleep(far);
            let mut give_up = std::pin::pin!(give_up);
            loop {
                let mut deadline_passed = false;
                tokio::select! {
                    r = child.wait_mut(), if exit_res.is_none() => {
                        exit_res = Some(r);
                        give_up.as_mut().reset(tokio::time::Instant::now() + IO_AFTER_EXIT);
                    }
                    _ = &mut io, if !io_done => io_done = true,
                    _ = &mut kill_at, if !killed && exit_res.is_none() => deadline_passed = true,
                    _ = &mut give_up, if exit_res.is_some() => break,
                }
                if deadline_passed {
                    // The exit and the deadline can be ready in the same turn: an exit already
                    // delivered wins (the call finished in time, and its pid may be recycled).
                    killed = true;
                    if let Some(e) = child.kill_unless_exited(nix::sys::signal::SIGKILL) {
                        exit_res = Some(Ok(e));
                        killed = false;
                        give_up
                            .as_mut()
                            .reset(tokio::time::Instant::now() + IO_AFTER_EXIT);
                    }
                }
                if io_done && exit_res.is_some() {
                    break;
                }
            }
        }
        let exit = match exit_res {
            Some(r) => r?,
            None => return Err(io::Error::other("child exit not collected")),
        };
        Ok(Output {
            status: exit.status,
            stdout: out_buf,
            stderr: err_buf,
            // Only our SIGKILL makes a timeout: a child that finished on its own just before
            // the signal landed (not yet reaped) reports its own status.
            timed_out: killed && exit.status == 128 + libc::SIGKILL as u32,
        })
    }

    /// Blocking variant of [`Spawner::output`] for the short-lived `start`/`delete` actions,
    /// which run before any async runtime exists. No deadline: those actions are themselves
    /// bounded by containerd's timeouts.
    pub fn output_blocking(&self, mut cmd: Command) -> io::Result<Output> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let sub = self.reaper.subscribe();
        let mut c = self.reaper.with_spawn_lock(|| cmd.spawn())?;
        let pid = c.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        sub.claim_with(
            pid,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        drop(sub);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut so = c.stdout.take();
        let mut se = c.stderr.take();
        // stderr is read on a helper thread so neither pipe can fill up and stall the child.
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(s) = se.as_mut() {
                let _ = s.read_to_end(&mut v);
            }
            v
        });
        if let Some(s) = so.as_mut() {
            s.read_to_end(&mut out)?;
        }
        if let Ok(v) = err_thread.join() {
            err = v;
        }
        drop(c);
        // No SIGCHLD loop runs in these short-lived modes: reap synchronously until ours shows.
        loop {
            if let Ok(e) = rx.try_recv() {
                return Ok(Output {
                    status: e.status,
                    stdout: out,
                    stderr: err,
                    timed_out: false,
                });
            }
            let ws = self
                .reaper
                .with_spawn_lock(|| nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), None));
            match ws {
                Ok(ws) => {
                    if let Some((p, status)) = super::status_of(ws) {
                        self.reaper.deliver(RawExit {
                            pid: p,
                            status,
                            at: std::time::SystemTime::now(),
                        });
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io::Error::from(e)),
            }
        }
    }
}

async fn read_into(fd: Option<OwnedFd>, cap: usize, out: &mut Vec<u8>) {
    let Some(fd) = fd else { return };
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut buf = [0u8; 8192];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
