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
}

impl Child {
    pub async fn wait(self) -> io::Result<RawExit> {
        self.exit.wait().await
    }

    /// The exit, waiting at most `limit`; the child stays waitable when the time runs out.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<RawExit> {
        tokio::time::timeout(limit, self.exit.wait_mut())
            .await
            .ok()?
            .ok()
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

    /// Take over a child a previous image of this shim started (live upgrade): its exit now
    /// comes to the returned handle. Call before the reaper's first sweep in the new image,
    /// so an exit that happened during the hand-over is still routed here.
    pub fn adopt(&self, pid: u32) -> Child {
        let sub = self.reaper.subscribe();
        let exit = sub.claim(pid as i32);
        Child {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
            exit,
        }
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
                if let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) {
                    // A child that exits without reading its input is not an error here; its
                    // status tells.
                    let _ = tx.write_all(&data).await;
                }
            }
        };
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        let mut timed_out = false;
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
            let mut exit = std::pin::pin!(child.wait());
            let far = Duration::from_secs(365 * 24 * 3600);
            let kill_at = tokio::time::sleep(deadline.unwrap_or(far));
            let mut kill_at = std::pin::pin!(kill_at);
            // Once the child is gone, its output is what is already in the pipes; a
            // grandchild that keeps them open must not keep us waiting.
            let give_up = tokio::time::sleep(far);
            let mut give_up = std::pin::pin!(give_up);
            loop {
                tokio::select! {
                    r = &mut exit, if exit_res.is_none() => {
                        exit_res = Some(r);
                        give_up.as_mut().reset(tokio::time::Instant::now() + IO_AFTER_EXIT);
                    }
                    _ = &mut io, if !io_done => io_done = true,
                    _ = &mut kill_at, if !timed_out => {
                        timed_out = true;
                        // Our own child, not yet reaped (its claim is still pending), so the
                        // pid cannot have been recycled.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::SIGKILL,
                        );
                    }
                    _ = &mut give_up, if exit_res.is_some() => break,
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
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One reaper for the test binary, polling only claimed pids (it must not steal the
    /// children other tests wait for themselves).
    fn spawner() -> Spawner {
        static R: OnceLock<Reaper> = OnceLock::new();
        let r = R.get_or_init(|| {
            let r = Reaper::new();
            r.start_polling_thread(Duration::from_millis(5)).unwrap();
            r
        });
        Spawner::new(r.clone())
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn output_collects_status_and_streams() {
        let o = block_on(spawner().output(
            sh("read x; echo out-$x; echo err >&2; exit 3"),
            Some(b"hi\n".to_vec()),
            None,
            1 << 20,
        ))
        .unwrap();
        assert_eq!(
            (o.status, o.stdout.as_slice(), o.stderr.as_slice()),
            (3, &b"out-hi\n"[..], &b"err\n"[..])
        );
        assert!(!o.timed_out);
    }

    #[test]
    fn deadline_kills_and_still_collects_exit() {
        let o = block_on(spawner().output(
            sh("exec sleep 30"),
            None,
            Some(Duration::from_millis(100)),
            1024,
        ))
        .unwrap();
        assert!(o.timed_out);
        assert_eq!(o.status, 137);
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_wedge_the_caller() {
        let t = std::time::Instant::now();
        let o = block_on(spawner().output(sh("echo early; sleep 30 & exit 0"), None, None, 1024))
            .unwrap();
        assert_eq!(o.status, 0);
        assert_eq!(o.stdout, b"early\n");
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn flood_is_capped() {
        let o =
            block_on(spawner().output(sh("head -c 1000000 /dev/zero"), None, None, 1000)).unwrap();
        assert_eq!((o.status, o.stdout.len()), (0, 1000));
    }

    #[test]
    fn missing_binary_is_an_error_not_a_panic() {
        let e =
            block_on(spawner().output(Command::new("/nonexistent/shimgate-test"), None, None, 10))
                .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn exit_before_claim_is_not_lost() {
        // `true` exits long before the parent could claim it without the subscription.
        for _ in 0..20 {
            let o = block_on(spawner().output(Command::new("true"), None, None, 10)).unwrap();
            assert_eq!(o.status, 0);
        }
    }
}
