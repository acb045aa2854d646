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

    /// The same script as a std `Command` (forked) and as a [`Cmd`] (vfork-style): every
    /// behaviour of `output` must be the same for both.
    fn both(script: &str) -> [Program; 2] {
        let mut raw = Cmd::new("sh");
        raw.args(["-c", script]);
        [sh(script).into(), raw.into()]
    }

    #[test]
    fn output_collects_status_and_streams() {
        for p in both("read x; echo out-$x; echo err >&2; exit 3") {
            let o = block_on(spawner().output(p, Some(b"hi\n".to_vec()), None, 1 << 20)).unwrap();
            assert_eq!(
                (o.status, o.stdout.as_slice(), o.stderr.as_slice()),
                (3, &b"out-hi\n"[..], &b"err\n"[..])
            );
            assert!(!o.timed_out);
        }
    }

    #[test]
    fn deadline_kills_and_still_collects_exit() {
        for p in both("exec sleep 30") {
            let o = block_on(spawner().output(p, None, Some(Duration::from_millis(100)), 1024))
                .unwrap();
            assert!(o.timed_out);
            assert_eq!(o.status, 137);
        }
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_wedge_the_caller() {
        for p in both("echo early; sleep 30 & exit 0") {
            let t = std::time::Instant::now();
            let o = block_on(spawner().output(p, None, None, 1024)).unwrap();
            assert_eq!(o.status, 0);
            assert_eq!(o.stdout, b"early\n");
            assert!(t.elapsed() < Duration::from_secs(10));
        }
    }

    #[test]
    fn flood_is_capped() {
        for p in both("head -c 1000000 /dev/zero") {
            let o = block_on(spawner().output(p, None, None, 1000)).unwrap();
            assert_eq!((o.status, o.stdout.len()), (0, 1000));
        }
    }

    #[test]
    fn missing_binary_is_an_error_not_a_panic() {
        let progs: [Program; 4] = [
            Command::new("/nonexistent/shimgate-test").into(),
            Cmd::new("/nonexistent/shimgate-test").into(),
            Command::new("shimgate-no-such-program").into(),
            Cmd::new("shimgate-no-such-program").into(),
        ];
        for p in progs {
            let e = block_on(spawner().output(p, None, None, 10)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
        }
    }

    /// What a vfork-started child gets: its argv, the environment with the changes applied,
    /// the working directory, the descriptors given for 0..2 (and no other of ours), the
    /// default disposition of SIGPIPE and an empty signal mask, like a std child.
    #[test]
    fn a_raw_child_gets_what_was_asked_and_nothing_more() {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("out");
        let out = std::fs::File::create(&out_path).unwrap();
        let mut c = Cmd::new("sh");
        c.args([
            "-c",
            "echo \"$0|$1|${SHIMGATE_T_GONE-unset}|$SHIMGATE_T_SET|$(pwd)\"; \
             ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
             grep -E '^(SigBlk|SigIgn)' /proc/self/status",
            "zero",
            "arg 1",
        ])
        .env_remove("SHIMGATE_T_GONE")
        .env("SHIMGATE_T_SET", "v=1")
        .current_dir(dir.path())
        .stdout(ChildIo::Fd(OwnedFd::from(out)));
        std::env::set_var("SHIMGATE_T_GONE", "present");
        let st = block_on(async {
            let child = spawner().spawn_cmd(c).unwrap();
            child.wait().await.unwrap()
        });
        assert_eq!(st.status, 0);
        let text = std::fs::read_to_string(&out_path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(lines[0], format!("zero|arg 1|unset|v=1|{}", cwd.display()));
        // The same descriptors as a std child gets (0..2, what the test harness leaves
        // inheritable, the one `ls` opens).
        let std_fds = Command::new("sh")
            .args(["-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"])
            .output()
            .unwrap()
            .stdout;
        let count = |s: &str| s.split_whitespace().count();
        assert_eq!(
            count(lines[1]),
            count(&String::from_utf8_lossy(&std_fds)),
            "{text}"
        );
        assert_eq!(lines[2], "SigBlk:\t0000000000000000", "{text}");
        // The shell ignores nothing on its own; SIGPIPE (ignored by Rust) is back to default.
        let ign = u64::from_str_radix(lines[3].trim_start_matches("SigIgn:\t"), 16).unwrap();
        assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    }

    /// A program that exists but cannot be executed is an error too (execvp's EACCES).
    #[test]
    fn a_raw_child_that_cannot_exec_reports_why() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("not-executable");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        let e = block_on(spawner().output(Cmd::new(&f), None, None, 10)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    }

    /// Run one test of this binary again in a child process (with `role` in its environment)
    /// and return its exit code and output. What the shim does process-wide (a SIGCHLD loop
    /// reaping `waitpid(-1)`, becoming a subreaper) cannot run beside the other tests of this
    /// binary: it would steal their children.
    fn rerun(test: &str, role: &str) -> (i32, String) {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env("SHIMGATE_SPAWNER_TEST_ROLE", role)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn role() -> Option<String> {
        std::env::var("SHIMGATE_SPAWNER_TEST_ROLE").ok()
    }

    /// The production reaper (SIGCHLD + `waitpid(-1)`, which reaps every child, claimed or
    /// not) and children that exit before their pid is claimed: none of those exits is lost.
    /// (The polling reaper of the other tests only reaps claimed pids, so it cannot tell.)
    #[test]
    fn exit_before_claim_is_not_lost() {
        const TEST: &str = "reaper::spawner::tests::exit_before_claim_is_not_lost";
        if role().as_deref() == Some("reaper") {
            // Several workers: the SIGCHLD task may run while a spawn is between its fork and
            // its claim, which is the window the subscription covers.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let r = Reaper::new();
                let _loop = r.start().unwrap();
                let sp = Spawner::new(r);
                let all = async {
                    for i in 0..200u32 {
                        let [std, raw] = both(&format!("exit {}", i % 7));
                        let p = if i % 2 == 0 { std } else { raw };
                        let o = sp.output(p, None, None, 10).await.unwrap();
                        assert_eq!(o.status, i % 7);
                    }
                    // A storm: many at once, every exit routed to its own caller.
                    let many = (0..50u32).map(|i| {
                        let sp = sp.clone();
                        let [std, raw] = both(&format!("exit {i}"));
                        let p = if i % 2 == 0 { std } else { raw };
                        async move { (i, sp.output(p, None, None, 10).await) }
                    });
                    for (i, o) in futures_join_all(many).await {
                        assert_eq!(o.unwrap().status, i);
                    }
                };
                tokio::time::timeout(Duration::from_secs(30), all)
                    .await
                    .expect("an exit was lost (a caller waited for ever)");
            });
            println!("ROLE-DONE");
            return;
        }
        if role().is_some() {
            return;
        }
        let (code, out) = rerun(TEST, "reaper");
        assert!(code == 0 && out.contains("ROLE-DONE"), "{out}");
    }

    async fn futures_join_all<F>(fs: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let hs: Vec<_> = fs.map(tokio::spawn).collect();
        let mut v = Vec::new();
        for h in hs {
            v.push(h.await.unwrap());
        }
        v
    }

    /// The deadline and the child's exit become ready in the same turn of the runtime (the
    /// thread was busy when both happened): the exit wins. The call finished; its pid may
    /// already be someone else's, so it must not be SIGKILLed, and it is no timeout. (A paused
    /// clock makes the turn exact: the child is reaped while the task is not polled, then the
    /// clock jumps past the deadline, so both are ready at the next poll.)
    #[test]
    fn deadline_ready_together_with_the_exit_is_no_timeout() {
        for _ in 0..20 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .unwrap();
            let o = rt.block_on(async {
                let sp = spawner();
                let mut call = std::pin::pin!(sp.output(
                    Command::new("true"),
                    None,
                    Some(Duration::from_millis(100)),
                    10,
                ));
                // One poll: the child is spawned and its exit, pipes and deadline watched.
                std::future::poll_fn(|cx| {
                    assert!(std::future::Future::poll(call.as_mut(), cx).is_pending());
                    std::task::Poll::Ready(())
                })
                .await;
                // The child exits and the polling reaper delivers it, meanwhile.
                std::thread::sleep(Duration::from_millis(100));
                tokio::time::advance(Duration::from_millis(500)).await;
                call.await.unwrap()
            });
            assert_eq!((o.status, o.timed_out), (0, false));
        }
    }

    /// A shim that dies between forking a runtime call and the child's `PR_SET_PDEATHSIG`
    /// never sends the signal; the child must see it has been re-parented and not run on.
    /// Roles: the test starts `middle` (a subreaper, so the orphan comes to it), which starts
    /// `parent`; `parent` spawns `sleep 3` through the spawner with a slow pre-exec step and
    /// exits while the child is still in it.
    #[test]
    fn a_child_whose_parent_died_before_pdeathsig_does_not_run_on() {
        const TEST: &str =
            "reaper::spawner::tests::a_child_whose_parent_died_before_pdeathsig_does_not_run_on";
        match role().as_deref() {
            Some(p @ ("parent" | "raw-parent")) => {
                // The parent dies while the child sleeps in its pre-exec step.
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    // SAFETY: ends this helper process at once, as a SIGKILLed shim would.
                    unsafe { libc::_exit(0) };
                });
                if p == "raw-parent" {
                    let mut cmd = Cmd::new("sleep");
                    cmd.arg("3").pdeathsig(true);
                    cmd.delay_before_pdeathsig = Duration::from_millis(300);
                    let _ = Spawner::new(Reaper::new()).spawn_cmd(cmd);
                } else {
                    let mut cmd = Command::new("sleep");
                    cmd.arg("3");
                    // SAFETY: runs in the forked child before exec; only nanosleep via libc.
                    unsafe {
                        cmd.pre_exec(|| {
                            libc::usleep(300_000);
                            Ok(())
                        });
                    }
                    let _ = Spawner::new(Reaper::new()).spawn(cmd, true);
                }
                std::thread::sleep(Duration::from_secs(10));
            }
            Some(m @ ("middle" | "middle-raw")) => {
                crate::reaper::set_subreaper().unwrap();
                let started = std::time::Instant::now();
                let parent_role = if m == "middle" {
                    "parent"
                } else {
                    "raw-parent"
                };
                let mut parent = Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", TEST, "--test-threads=1"])
                    .env("SHIMGATE_SPAWNER_TEST_ROLE", parent_role)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                parent.wait().unwrap();
                // Then the orphan: how long it ran and how it ended.
                let mut status = 0;
                // SAFETY: waitpid on our children (the orphan is re-parented to us).
                let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
                println!(
                    "ORPHAN pid={pid} exited={} code={} after_ms={}",
                    libc::WIFEXITED(status),
                    libc::WEXITSTATUS(status),
                    started.elapsed().as_millis()
                );
            }
            Some(_) => {}
            None => {
                for middle in ["middle", "middle-raw"] {
                    let (code, out) = rerun(TEST, middle);
                    assert_eq!(code, 0, "{out}");
                    let line = out
                        .lines()
                        .find_map(|l| l.find("ORPHAN").map(|i| &l[i..]))
                        .unwrap_or("");
                    let ms: u64 = line
                        .rsplit("after_ms=")
                        .next()
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(u64::MAX);
                    // `sleep 3` running to completion takes 3 s; refusing to run takes ~0.3 s.
                    assert!(
                        ms < 2000 && !line.contains("exited=true code=0"),
                        "the orphaned child ran on: {line}\n{out}"
                    );
                }
            }
        }
    }
}
