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

/// A running logger. Stopped with SIGTERM, then SIGKILL after a grace period.
pub struct Logger {
    child: Option<Child>,
}

/// How long a logger may take to get ready, and to stop after SIGTERM.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(12);
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
    /// The logger's pid while it is ours to stop.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Take over a logger started by a previous image of this shim (live upgrade).
    pub fn adopt(spawner: &Spawner, pid: u32) -> Logger {
        Logger {
            child: Some(spawner.adopt(pid)),
        }
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; always collects the exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        child.signal_if_running(nix::sys::signal::SIGTERM);
        let pid = nix::unistd::Pid::from_raw(child.pid as i32);
        let mut wait = std::pin::pin!(child.wait());
        if tokio::time::timeout(STOP_GRACE, &mut wait).await.is_err() {
            // Still not reaped after the grace period, so the pid is still the logger's.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            let _ = wait.await;
        }
    }
}
