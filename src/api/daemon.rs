//! Plumbing every serving shim needs, whichever API it speaks: adopting the listening socket
//! containerd (or our own `start`) left on fd 3, the process-wide signal dispositions, the
//! runtime the daemon runs on, the reaper, and turning SIGTERM/SIGINT into "stop serving".
//!
//! The daemons run on a single-threaded runtime: a shim's work is waiting, one thread keeps
//! memory small, and `PR_SET_PDEATHSIG` on runtime children fires when the *thread* that forked
//! them exits, so every child must be forked from one long-lived thread (see `reaper::spawner`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::SFlag;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::core::event::EventSink;
use crate::core::{ApiProfile, Core, RuncFactory};
use crate::reaper::{Reaper, Spawner};

/// The descriptor on which the listening socket is inherited.
pub const LISTENER_FD: i32 = 3;

/// Take ownership of the listening socket inherited on fd 3 (checked to be a socket, so an
/// unrelated descriptor is never adopted).
pub fn inherited_listener() -> Result<StdListener, String> {
    // SAFETY: only borrowed for the fstat call; ownership is taken below once checked.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTENER_FD) };
    let st = nix::sys::stat::fstat(borrowed)
        .map_err(|e| format!("no listening socket on fd {LISTENER_FD}: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(format!("fd {LISTENER_FD} is not a socket"));
    }
    // An inherited descriptor is not close-on-exec; every runtime or publish child would keep
    // the listening socket open (a publish child may outlive the shim). Go's FileListener
    // likewise serves from a close-on-exec duplicate.
    nix::fcntl::fcntl(
        borrowed,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("fd {LISTENER_FD}: set close-on-exec: {e}"))?;
    // SAFETY: fd 3 was checked to be an open socket, and nothing else in this process owns it
    // (it was inherited across exec and nothing has wrapped it yet).
    let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    Ok(StdListener::from(fd))
}

/// Writes to a pipe or FIFO whose reader is gone (containerd restarting) must fail with EPIPE
/// instead of killing the shim.
pub fn ignore_sigpipe() {
    // SAFETY: setting SIGPIPE's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The daemon's runtime (single-threaded: see the module docs).
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start runtime: {e}"))
}

/// Start the one reaper (before anything is spawned) and the spawner every child goes through.
/// Call inside the runtime.
pub fn spawner() -> Result<Spawner, String> {
    let reaper = Reaper::new();
    reaper
        .start()
        .map_err(|e| format!("install SIGCHLD handler: {e}"))?;
    Ok(Spawner::new(reaper))
}

/// Hand a bound listener to the runtime; also returns its filesystem path, if it has one (an
/// inherited or abstract socket may not), so the caller can remove it at exit.
pub fn serve_on(
    listener: StdListener,
) -> Result<(tokio::net::UnixListener, Option<PathBuf>), String> {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;
    Ok((listener, path))
}

/// How long a serving shim may hold no container before it concludes that containerd forgot
/// it (default 10 minutes; `SHIMGATE_IDLE_EXIT_SECS` overrides).
pub fn idle_exit_after() -> Duration {
    std::env::var("SHIMGATE_IDLE_EXIT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(Duration::from_secs(600), Duration::from_secs)
}

/// End the shim once it has served nothing for [`idle_exit_after`]: containerd died between
/// a Delete and the Shutdown that should have followed (or between `start` and the first
/// Create), so nobody will ever stop it otherwise. Leaving its socket then lets containerd's
/// own cleanup of a vanished shim remove what is left.
pub fn stop_when_forgotten(core: Core, stop: watch::Sender<bool>) {
    let after = idle_exit_after();
    tokio::spawn(async move {
        core.idle_for(after).await;
        tracing::warn!(
            idle_secs = after.as_secs(),
            "no container for a long time and no shutdown request: exiting"
        );
        let _ = stop.send(true);
    });
}

/// Turn the first SIGTERM or SIGINT into `stop = true`. Call inside the runtime.
pub fn stop_on_signals(stop: watch::Sender<bool>) -> Result<(), String> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
    });
    Ok(())
}

/// The engine of a serving shim: `profile`'s API over the runc CLI, events into `sink`.
pub fn runc_core(
    profile: ApiProfile,
    namespace: &str,
    spawner: Spawner,
    sink: Arc<dyn EventSink>,
) -> Core {
    let factory = Arc::new(RuncFactory {
        spawner: spawner.clone(),
        namespace: namespace.to_string(),
        deadlines: crate::core::runc::Deadlines::from_env(),
    });
    Core::new(profile, namespace, spawner, factory, sink)
}
