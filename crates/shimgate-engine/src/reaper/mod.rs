//! The one owner of `waitpid`, and the exit bus it feeds.
//!
//! A shim is a child subreaper: container processes (double-forked by runc) and everything the
//! shim spawns itself (runc, logging binaries, `containerd publish`) end up as its children. If
//! two places called `waitpid` they would steal each other's statuses, so exactly one task does:
//! on every SIGCHLD it calls `waitpid(-1, WNOHANG)` until nothing is left and routes each exit.
//!
//! Routing, and why no exit is lost:
//! * A *claim* says "the exit of pid P goes to this sink". A pid exits once, so a claim fires once.
//! * A pid is only known after the process exists, and it may exit before anyone claims it (a
//!   fast `runc` invocation, a container whose command exits at once). So whoever is about to
//!   create a process first opens a [`Subscription`]; while it is open, every exit nobody has
//!   claimed is also kept in it. Claiming through the subscription first looks there.
//! * An exit that is neither claimed nor inside any open subscription belongs to nobody we
//!   track (an orphan re-parented to us); it is reaped (so no zombie stays) and logged.
//!
//! Concurrency invariant: the router is one `std::sync::Mutex`, held only for map operations
//! and sink calls (sinks never block). The waitpid loop and every fork hold `spawn_lock`, so
//! std's own `waitpid` on a failed `exec` (inside `Command::spawn`) can never race ours.

mod spawner;
mod vfork;

pub use spawner::{Child, Output, Program, Spawner};
pub use vfork::{ChildIo, Cmd};

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::supervise::{lifeline, Ended};

/// One reaped child: its pid, the status containerd reports (exit code, or 128 + signal), and
/// when it was reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawExit {
    pub pid: i32,
    pub status: u32,
    pub at: SystemTime,
}

/// Where a claimed exit goes. Called with the router lock held: it must not block.
pub type ExitSink = Box<dyn FnOnce(RawExit) + Send>;

#[derive(Default)]
struct Router {
    next_sub: u64,
    /// Open subscriptions and the unclaimed exits they saw.
    subs: HashMap<u64, Vec<RawExit>>,
    claims: HashMap<i32, ExitSink>,
}

impl Router {
    fn route(&mut self, exit: RawExit) {
        if let Some(sink) = self.claims.remove(&exit.pid) {
            sink(exit);
            return;
        }
        if self.subs.is_empty() {
            tracing::debug!(
                pid = exit.pid,
                status = exit.status,
                "reaped unclaimed process"
            );
            return;
        }
        for buf in self.subs.values_mut() {
            buf.push(exit);
        }
    }
}

struct Inner {
    router: Mutex<Router>,
    /// Held by the waitpid loop and around every fork/exec (see the module docs).
    spawn_lock: Mutex<()>,
}

/// Handle on the reaper; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
}

/// Make this process a child subreaper, so orphaned descendants (container processes) are
/// re-parented to us and we can collect their exit statuses.
pub fn set_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and only flips a flag of the
    // calling process.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_open(2)`; `None` if the kernel lacks it or the process is gone.
pub(crate) fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Send `sig` through a pidfd (`pidfd_send_signal(2)`).
pub fn pidfd_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain syscall on a pidfd we own; no pointers (siginfo NULL).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process behind `pidfd` has ended (its pidfd is readable once it exited, reaped
/// or not).
pub fn pidfd_ended(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(pidfd, nix::poll::PollFlags::POLLIN)];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(n) if n > 0
    )
}

/// Exit status as containerd reports it.
pub fn status_of(ws: WaitStatus) -> Option<(i32, u32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the router lock cannot leave the maps half-updated in a way that
    // matters more than losing every future exit, so keep going with the data as it is.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Reaper {
    fn default() -> Self {
        Self::new()
    }
}

impl Reaper {
    pub fn new() -> Self {
        Reaper {
            inner: Arc::new(Inner {
                router: Mutex::new(Router::default()),
                spawn_lock: Mutex::new(()),
            }),
        }
    }

    /// Install the SIGCHLD handler and start the waitpid loop. Call once, inside the runtime,
    /// before anything is spawned. The loop is a critical task: the returned [`Ended`] tells
    /// when it stopped (it never does on its own), see `crate::supervise`.
    pub fn start(&self) -> io::Result<Ended> {
        let mut sigchld = signal(SignalKind::child())?;
        let me = self.clone();
        let (line, ended) = lifeline();
        // Children that exited before the handler existed are collected by the first sweep.
        me.reap_all();
        tokio::spawn(async move {
            let _line = line;
            while sigchld.recv().await.is_some() {
                if crate::supervise::fault("sigchld-loop-ends") {
                    return;
                }
                me.reap_all();
            }
        });
        Ok(ended)
    }

    /// Collect every exited child (SIGCHLD coalesces, so always loop until none is left).
    pub fn reap_all(&self) {
        loop {
            // Reap and deliver under one hold of the spawn lock: while it is held, no pid is
            // "reaped but not yet delivered", which is what makes `claim_with_pidfd` safe.
            let _g = lock(&self.inner.spawn_lock);
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    return;
                }
                Ok(ws) => {
                    if let Some((pid, status)) = status_of(ws) {
                        self.deliver(RawExit {
                            pid,
                            status,
                            at: SystemTime::now(),
                        });
                    }
                }
            }
        }
    }

    /// Reap from a dedicated thread that polls only the pids someone has claimed, instead of
    /// the SIGCHLD task calling `waitpid(-1)`. For test programs: it never collects a child it
    /// was not asked about, so it can share a process with code that waits for its own
    /// children, and it works across several async runtimes. The shim never uses it.
    #[doc(hidden)]
    pub fn start_polling_thread(&self, every: std::time::Duration) -> io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("reaper-poll".into())
            .spawn(move || loop {
                me.reap_claimed();
                std::thread::sleep(every);
            })?;
        Ok(())
    }

    fn reap_claimed(&self) {
        let pids: Vec<i32> = lock(&self.inner.router).claims.keys().copied().collect();
        for pid in pids {
            let _g = lock(&self.inner.spawn_lock);
            if let Ok(ws) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                if let Some((pid, status)) = status_of(ws) {
                    self.deliver(RawExit {
                        pid,
                        status,
                        at: SystemTime::now(),
                    });
                }
            }
        }
    }

    /// Route one exit. Public so tests of the core can drive synthetic exits through the same
    /// path as real ones.
    pub fn deliver(&self, exit: RawExit) {
        lock(&self.inner.router).route(exit);
    }

    /// Open a subscription: from now until it is dropped, unclaimed exits are kept for it.
    pub fn subscribe(&self) -> Subscription {
        let mut r = lock(&self.inner.router);
        let id = r.next_sub;
        r.next_sub += 1;
        r.subs.insert(id, Vec::new());
        Subscription {
            reaper: self.clone(),
            id,
        }
    }

    /// Run `f` (a fork) with the waitpid loop held off; see the module docs.
    pub(crate) fn with_spawn_lock<T>(&self, f: impl FnOnce() -> T) -> T {
        let _g = lock(&self.inner.spawn_lock);
        f()
    }

    #[cfg(test)]
    fn open_subscriptions(&self) -> usize {
        lock(&self.inner.router).subs.len()
    }
}

/// A window in which no exit can slip past: see the module docs.
pub struct Subscription {
    reaper: Reaper,
    id: u64,
}

impl Subscription {
    /// Send the exit of `pid` to `sink`: at once if it already happened inside this window,
    /// otherwise when it is reaped.
    pub fn claim_with(&self, pid: i32, sink: ExitSink) {
        let mut r = lock(&self.reaper.inner.router);
        let seen = r
            .subs
            .get_mut(&self.id)
            .and_then(|buf| buf.iter().position(|e| e.pid == pid).map(|i| buf.remove(i)));
        match seen {
            Some(exit) => sink(exit),
            None => {
                r.claims.insert(pid, sink);
            }
        }
    }

    /// Like [`Subscription::claim_with`], and when the process has not been reaped yet also
    /// return a pidfd for it: a handle that can signal exactly this process and never a later
    /// one that recycled its pid. `None` when it already exited or the kernel has no pidfds.
    pub fn claim_with_pidfd(&self, pid: i32, sink: ExitSink) -> Option<OwnedFd> {
        // Spawn lock first (the waitpid loop's order): while held, a reaped pid is always
        // already delivered, so "not in this window" means "not reaped".
        let _g = lock(&self.reaper.inner.spawn_lock);
        let mut r = lock(&self.reaper.inner.router);
        let seen = r
            .subs
            .get_mut(&self.id)
            .and_then(|buf| buf.iter().position(|e| e.pid == pid).map(|i| buf.remove(i)));
        if let Some(exit) = seen {
            sink(exit);
            return None;
        }
        r.claims.insert(pid, sink);
        pidfd_open(pid)
    }

    /// Claim `pid` and get its exit as a future.
    pub fn claim(&self, pid: i32) -> ExitWaiter {
        let (tx, rx) = oneshot::channel();
        self.claim_with(
            pid,
            Box::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        ExitWaiter {
            pid,
            rx,
            done: None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.reaper.inner.router).subs.remove(&self.id);
    }
}

/// The future exit of one claimed pid.
pub struct ExitWaiter {
    pid: i32,
    rx: oneshot::Receiver<RawExit>,
    /// The exit once taken out of `rx` (a oneshot yields its value once).
    done: Option<RawExit>,
}

impl ExitWaiter {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The exit, if it has already been reaped (its pid may then already belong to someone
    /// else: never signal a pid for which this returns `Some`).
    pub fn try_exit(&mut self) -> Option<RawExit> {
        if self.done.is_none() {
            self.done = self.rx.try_recv().ok();
        }
        self.done
    }

    /// Wait for the exit without giving up the waiter (so a caller can bound the wait with a
    /// timeout and keep waiting later).
    pub async fn wait_mut(&mut self) -> io::Result<RawExit> {
        if let Some(e) = self.done {
            return Ok(e);
        }
        let e = (&mut self.rx).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("reaper stopped before pid {} exited", self.pid),
            )
        })?;
        self.done = Some(e);
        Ok(e)
    }

    /// Wait for the exit. The sender only disappears if the reaper itself is gone (shim
    /// shutting down); that is reported as an error rather than invented as a status.
    pub async fn wait(mut self) -> io::Result<RawExit> {
        self.wait_mut().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(pid: i32, status: u32) -> RawExit {
        RawExit {
            pid,
            status,
            at: SystemTime::now(),
        }
    }

    #[tokio::test]
    async fn exit_before_claim_is_kept_by_subscription() {
        let r = Reaper::new();
        let sub = r.subscribe();
        r.deliver(ex(42, 3)); // the process exits before we learn its pid
        let w = sub.claim(42);
        assert_eq!(w.wait().await.unwrap().status, 3);
    }

    #[tokio::test]
    async fn exit_after_claim_goes_to_claimer_only() {
        let r = Reaper::new();
        let sub = r.subscribe();
        let w = sub.claim(7);
        let other = r.subscribe();
        r.deliver(ex(7, 137));
        assert_eq!(w.wait().await.unwrap().status, 137);
        // A claimed exit is not also copied into other windows.
        let w2 = other.claim(7);
        drop(other);
        drop(sub);
        r.deliver(ex(9, 0));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), w2.wait())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn unclaimed_exit_outside_windows_is_dropped_and_windows_close() {
        let r = Reaper::new();
        r.deliver(ex(1234, 0));
        {
            let _s = r.subscribe();
            assert_eq!(r.open_subscriptions(), 1);
        }
        assert_eq!(r.open_subscriptions(), 0);
        // Every concurrently open window sees an unclaimed exit.
        let a = r.subscribe();
        let b = r.subscribe();
        r.deliver(ex(55, 1));
        assert_eq!(a.claim(55).wait().await.unwrap().status, 1);
        assert_eq!(b.claim(55).wait().await.unwrap().status, 1);
    }

    #[tokio::test]
    async fn an_exit_seen_by_try_exit_is_still_returned_by_wait() {
        let r = Reaper::new();
        let sub = r.subscribe();
        let mut w = sub.claim(77);
        assert!(w.try_exit().is_none());
        r.deliver(ex(77, 9));
        assert_eq!(w.try_exit().unwrap().status, 9);
        assert_eq!(w.try_exit().unwrap().status, 9);
        assert_eq!(w.wait_mut().await.unwrap().status, 9);
        assert_eq!(w.wait().await.unwrap().status, 9);
    }

    #[test]
    fn signal_deaths_are_128_plus_signal() {
        let p = Pid::from_raw(10);
        assert_eq!(
            status_of(WaitStatus::Signaled(p, nix::sys::signal::SIGKILL, false)),
            Some((10, 137))
        );
        assert_eq!(status_of(WaitStatus::Exited(p, 42)), Some((10, 42)));
        assert_eq!(status_of(WaitStatus::StillAlive), None);
    }
}
