//! The one way the shim starts a child process.
//!
//! `spawn` opens a reaper subscription *before* forking and claims the new pid right after, so
//! the child's exit reaches its caller even if it exits at once. The fork happens under the
//! reaper's spawn lock (see `reaper` docs). Children get `PR_SET_PDEATHSIG(SIGKILL)` when asked
//! (runc invocations), so a dying shim does not leave a runc behind.
//!
//! Concurrency invariant: `PR_SET_PDEATHSIG` fires when the *thread* that forked exits, so
//! callers must spawn from a long-lived thread; the shim's runtime is single-threaded and never
//! spawns from blocking-pool threads.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::{ExitWaiter, RawExit, Reaper};

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
}

impl Child {
    pub async fn wait(self) -> io::Result<RawExit> {
        self.exit.wait().await
    }

    /// Signal the child unless it has already been reaped (then its pid may be recycled).
    pub fn signal_if_running(&mut self, sig: nix::sys::signal::Signal) {
        if self.exit.try_exit().is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), sig);
        }
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
            // SAFETY: the closure runs in the forked child before exec and only calls prctl,
            // which is async-signal-safe; it touches no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
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
        };
        // Dropping std's handle neither waits nor kills; the reaper owns the exit.
        drop(std_child);
        Ok(child)
    }

    /// Run `cmd` to completion, feeding `input` on stdin and collecting stdout and stderr.
    /// When `deadline` passes the child is SIGKILLed; its exit is still collected (never
    /// abandoned), and `timed_out` is set. Output beyond `cap` bytes per stream is discarded so
    /// a flooding child cannot exhaust memory.
    pub async fn output(
        &self,
        mut cmd: Command,
        input: Option<Vec<u8>>,
        deadline: Option<Duration>,
        cap: usize,
    ) -> io::Result<Output> {
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = self.spawn(cmd, true)?;
        let pid = child.pid;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();

        let feed = async move {
            if let (Some(fd), Some(data)) = (stdin, input) {
                let mut tx = pipe::Sender::from_owned_fd(fd)?;
                // A child that exits without reading its input is not an error here; its
                // status tells.
                let _ = tx.write_all(&data).await;
            }
            Ok::<(), io::Error>(())
        };
        let collect = async move {
            let (a, b) = tokio::join!(read_capped(stdout, cap), read_capped(stderr, cap));
            Ok::<_, io::Error>((a?, b?))
        };
        let all = async { tokio::try_join!(feed, collect, async { child.wait().await }) };
        let mut all = std::pin::pin!(all);

        let mut timed_out = false;
        let res = match deadline {
            None => all.await,
            Some(d) => match tokio::time::timeout(d, &mut all).await {
                Ok(r) => r,
                Err(_) => {
                    timed_out = true;
                    // Our own child, not yet reaped (its claim is still pending), so the pid
                    // cannot have been recycled.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::SIGKILL,
                    );
                    all.await
                }
            },
        };
        let ((), (stdout, stderr), exit) = res?;
        Ok(Output {
            status: exit.status,
            stdout,
            stderr,
            timed_out,
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

async fn read_capped(fd: Option<OwnedFd>, cap: usize) -> io::Result<Vec<u8>> {
    let Some(fd) = fd else {
        return Ok(Vec::new());
    };
    let mut rx = pipe::Receiver::from_owned_fd(fd)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            return Ok(out);
        }
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&buf[..n.min(room)]);
    }
}
