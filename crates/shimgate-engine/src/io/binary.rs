//! `binary://` stdio: a logging binary reads the container's stdout and stderr itself.
//! Contract (as containerd documents it): argv = `[path, k1, v1, k2, v2, ...]` from the URI
//! query; environment is only `CONTAINER_ID` and `CONTAINER_NAMESPACE`; fd 3 = stdout read end,
//! fd 4 = stderr read end, fd 5 = write end of a "ready" pipe the logger closes (or writes a
//! byte to) once it is ready. The container is started only after that.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::reaper::{Child, Spawner};

use super::fd::{pipe, PollFd};

/// A running logger. Stopped with SIGTERM, then SIGKILL after a grace period; never signalled
/// once reaped (its pid may belong to another process by then), and never waited for without
/// bound.
pub struct Logger {
    child: Option<Child>,
}

/// How long a logger may take to get ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(12);
/// How long a SIGKILLed logger may take to be gone before we stop waiting for it.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long to look for an exit behind an end of file on the ready pipe.
const EARLY_EXIT_GRACE: Duration = Duration::from_millis(200);

/// Start the logger. Returns it and the write ends the container gets for stdout and stderr.
pub async fn start(
    spawner: &Spawner,
    path: &Path,
    args: &[(String, String)],
    id: &str,
    namespace: &str,
) -> io::Result<(Logger, OwnedFd, OwnedFd)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;

    let mut cmd = Command::new(path);
    for (k, v) in args {
        cmd.arg(k).arg(v);
    }
    cmd.env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let srcs: [RawFd; 3] = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: runs in the forked child before exec; uses only fcntl/dup2, which are
    // async-signal-safe, on fds that are open in the child (inherited from us).
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above 5 so placing one cannot clobber another.
            let mut high = [0; 3];
            for (i, fd) in srcs.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the target, so 3, 4, 5 survive exec.
                if libc::dup2(*h, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = spawner.spawn(cmd, false)?;
    // Our copies of the logger's ends: the logger holds its own now.
    drop(out_r);
    drop(err_r);
    drop(ready_w);

    // Ready = one byte or end of file on the ready pipe.
    let mut child = child;
    let ready = PollFd::new(ready_r)?;
    let mut b = [0u8; 1];
    let n = match tokio::time::timeout(READY_TIMEOUT, ready.read(&mut b)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            Logger { child: Some(child) }.stop().await;
            return Err(e);
        }
        Err(_) => {
            Logger { child: Some(child) }.stop().await;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "logging binary {} did not signal readiness within {}s",
                    path.display(),
                    READY_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    if n == 0 {
        // End of file: either the logger closed fd 5 to say "ready", or it died. A logger that
        // failed must not leave the container writing into nothing: report it. (One that
        // exited 0 at once, like `/bin/true`, is accepted, as the Go shim does.)
        if let Some(exit) = child.exited_within(EARLY_EXIT_GRACE).await {
            if exit.status != 0 {
                return Err(io::Error::other(format!(
                    "logging binary {} exited with status {} before it was ready",
                    path.display(),
                    exit.status
                )));
            }
            return Ok((Logger { child: None }, out_w, err_w));
        }
    }
    Ok((Logger { child: Some(child) }, out_w, err_w))
}

impl Logger {
    /// What a live upgrade hands over: the logger's pid and a pidfd for it, if it is still
    /// running. A logger that already exited is not handed over: the next image must not
    /// stop (signal, wait for) whatever process has its pid by then.
    pub fn handover(&mut self) -> Option<(u32, OwnedFd)> {
        let child = self.child.as_mut()?;
        let pidfd = child.pidfd()?;
        Some((child.pid, pidfd))
    }

    /// Take over a logger started by a previous image of this shim (live upgrade), by the
    /// pidfd it handed over.
    pub fn adopt(spawner: &Spawner, pid: u32, pidfd: OwnedFd) -> Logger {
        Logger {
            child: Some(spawner.adopt(pid, pidfd)),
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL and wait a little more; collects
    /// the exit when it comes, gives up (logged) on a process that does not go away.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.has_exited() {
            return;
        }
        if child
            .kill_unless_exited(nix::sys::signal::SIGTERM)
            .is_some()
        {
            return;
        }
        if child.ended_within(STOP_GRACE).await {
            return;
        }
        if child
            .kill_unless_exited(nix::sys::signal::SIGKILL)
            .is_some()
        {
            return;
        }
        if !child.ended_within(KILL_WAIT).await {
            tracing::warn!(
                pid = child.pid,
                "logging binary still there {}s after SIGKILL; no longer waiting for it",
                KILL_WAIT.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reaper::Reaper;
    use std::os::unix::fs::PermissionsExt;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn spawner() -> Spawner {
        let r = Reaper::new();
        r.start_polling_thread(Duration::from_millis(5)).unwrap();
        Spawner::new(r)
    }

    /// A spawner whose reaper reaps nothing (the adopted processes here are the test's own
    /// children, waited for by the test).
    fn idle_spawner() -> Spawner {
        Spawner::new(Reaper::new())
    }

    /// A logger that exited on its own (after it was ready) is not handed over to the next
    /// image: its pid may belong to another process by then.
    #[test]
    fn a_logger_that_exited_is_not_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logger");
        std::fs::write(&path, "#!/bin/sh\nexec 5>&-\nsleep 0.3\nexit 0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        rt().block_on(async {
            let sp = spawner();
            let (mut live, _o, _e) = start(&sp, &path, &[], "c", "ns").await.unwrap();
            assert!(live.handover().is_some(), "a running logger is handed over");
            let (mut gone, _o, _e) = start(&sp, &path, &[], "c", "ns").await.unwrap();
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(gone.handover().is_none(), "an exited logger is not");
            live.stop().await;
        });
    }

    /// A logger adopted from a previous image that is gone by the time it is stopped (that
    /// image reaped it during the hand-over): stopping it signals nobody and returns at once
    /// instead of waiting for an exit that will never be delivered.
    #[test]
    fn stopping_an_adopted_logger_that_is_gone_is_prompt() {
        let mut other = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = other.id();
        let pidfd = crate::reaper::pidfd_open(pid as i32).unwrap();
        other.wait().unwrap(); // reaped by someone else: the pid is free for reuse
        rt().block_on(async {
            let mut l = Logger::adopt(&idle_spawner(), pid, pidfd);
            let t = std::time::Instant::now();
            tokio::time::timeout(Duration::from_secs(3), l.stop())
                .await
                .expect("stop waited for an exit that cannot come");
            assert!(t.elapsed() < Duration::from_secs(1));
        });
    }

    /// A running adopted logger is stopped through its pidfd: SIGTERM, and it is gone.
    #[test]
    fn an_adopted_running_logger_is_stopped() {
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = other.id();
        let pidfd = crate::reaper::pidfd_open(pid as i32).unwrap();
        let waiter = std::thread::spawn(move || other.wait().unwrap());
        rt().block_on(async {
            let mut l = Logger::adopt(&idle_spawner(), pid, pidfd);
            tokio::time::timeout(Duration::from_secs(5), l.stop())
                .await
                .unwrap();
        });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(waiter.join().unwrap().signal(), Some(libc::SIGTERM));
    }
}
