//! Running a command (`ctr run -t`) under a pseudo-terminal, as an interactive user would.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{finish, spawn};

/// Run `cmd` on a new pty; type `input` once `READY` appears in the output. Returns the exit
/// code and everything the terminal showed.
pub fn pty_run(cmd: Command, input: &[u8]) -> (i32, Vec<u8>) {
    pty_run_limit(cmd, input, Duration::from_secs(30))
}

pub fn pty_run_limit(cmd: Command, input: &[u8], limit: Duration) -> (i32, Vec<u8>) {
    pty_run_with(cmd, input, limit, false)
}

/// As [`pty_run`]; with `raw` the outer terminal is raw too, so bytes pass unchanged both
/// inside the container's terminal (set raw there) and on the way to us.
pub fn pty_run_with(cmd: Command, input: &[u8], limit: Duration, raw: bool) -> (i32, Vec<u8>) {
    let pty = nix::pty::openpty(None, None).unwrap();
    if raw {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let mut t = tcgetattr(&pty.slave).unwrap();
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t).unwrap();
    }
    let child = spawn_on(cmd, pty.slave);
    let master = pty.master;
    let mfd = master.as_raw_fd();
    let mut out = Vec::new();
    let mut fed = input.is_empty();
    let deadline = Instant::now() + limit;
    // SAFETY: a dup of the master we own, wrapped for Read/Write.
    let mut f = unsafe { std::fs::File::from_raw_fd(libc::dup(mfd)) };
    let mut buf = vec![0u8; 65536];
    loop {
        if !fed && String::from_utf8_lossy(&out).contains("READY") {
            f.write_all(input).unwrap();
            fed = true;
        }
        let mut pfd = libc::pollfd {
            fd: mfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid fd.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n > 0 {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let (code, _) = finish(child, Duration::from_secs(10));
    (code, out)
}

/// Start `cmd` in a new session with `slave` as its controlling terminal and stdio.
fn spawn_on(mut cmd: Command, slave: OwnedFd) -> std::process::Child {
    let fd = slave.as_raw_fd();
    // SAFETY: in the child before exec: setsid and TIOCSCTTY on its own fds only.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(fd, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let dup = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
    cmd.stdin(dup(&slave))
        .stdout(dup(&slave))
        .stderr(dup(&slave));
    let child = spawn(&mut cmd);
    // The Command still holds the slave copies given to the child: drop them, or the master
    // never sees the end of the session.
    drop(cmd);
    drop(slave);
    child
}

/// An interactive session on a pty that stays open across steps of a test: type, wait for
/// output, type again, then collect the exit code.
pub struct PtySession {
    child: std::process::Child,
    master: std::fs::File,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl PtySession {
    pub fn start(cmd: Command) -> PtySession {
        let pty = nix::pty::openpty(None, None).unwrap();
        let child = spawn_on(cmd, pty.slave);
        let master = std::fs::File::from(pty.master);
        let mut rd = master.try_clone().unwrap();
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match rd.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        PtySession {
            child,
            master,
            out,
            reader: Some(reader),
        }
    }

    pub fn write(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
    }

    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Wait until the output contains `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Wait for the command to end; its exit code and everything it showed.
    pub fn finish(mut self, limit: Duration) -> (i32, String) {
        let (code, _) = finish(self.child, limit);
        drop(self.master);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let out = String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned();
        (code, out)
    }
}
