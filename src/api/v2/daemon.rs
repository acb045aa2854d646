//! The serving shim: inherits the listening socket as fd 3 from `start` (or binds `-socket`),
//! logs to the bundle's `log` FIFO, and serves the task API until `Shutdown` (when the
//! personality allows it) or SIGTERM/SIGINT.
//!
//! It runs on a single-threaded runtime: the shim's work is waiting, and one thread keeps
//! memory small and makes the spawn/`PR_SET_PDEATHSIG` rules simple (see `reaper::spawner`).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::stat::SFlag;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::service::TaskService;
use super::Flavor;
use crate::cli::ShimV2Args;
use crate::core::{Core, RuncFactory};
use crate::events::TtrpcPublisher;
use crate::reaper::{Reaper, Spawner};

/// How long queued events may take to drain at exit (the Go shim's figure).
const EVENT_DRAIN: Duration = Duration::from_secs(5);

/// Take ownership of the listening socket `start` left on fd 3 (checked to be a socket, so we
/// never adopt an unrelated descriptor).
fn inherited_listener() -> Result<StdListener, String> {
    // SAFETY: only borrowed for the fstat call; ownership is taken below once checked.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(3) };
    let st =
        nix::sys::stat::fstat(borrowed).map_err(|e| format!("no listening socket on fd 3: {e}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err("fd 3 is not a socket".into());
    }
    // SAFETY: fd 3 was checked to be an open socket, and nothing else in this process owns it
    // (it was inherited across exec and nothing has wrapped it yet).
    let fd = unsafe { OwnedFd::from_raw_fd(3) };
    Ok(StdListener::from(fd))
}

/// Send our stderr (fd 2) to the bundle's `log` FIFO, where containerd reads shim logs. The
/// FIFO is held open read-write by containerd, so a non-blocking open finds a reader; without
/// one we keep /dev/null and log nowhere rather than fail.
fn redirect_stderr_to_log_fifo() {
    let Ok(fd) = nix::fcntl::open(
        "log",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    // Writes should block briefly rather than drop lines when the FIFO is momentarily full.
    let _ = crate::io::fd::set_nonblocking(std::os::fd::AsFd::as_fd(&fd), false);
    // SAFETY: dup2 onto fd 2 replaces our stderr; `fd` stays valid until dropped below.
    unsafe {
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), 2);
    }
}

fn ignore_sigpipe() {
    // SAFETY: setting SIGPIPE's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

pub fn run(flavor: &Flavor, args: &ShimV2Args) -> Result<(), String> {
    // fd 3 first: the runtime and the log FIFO would otherwise take low descriptor numbers.
    let listener = match &args.socket {
        Some(path) => {
            let p = PathBuf::from(path.strip_prefix("unix://").unwrap_or(path));
            let _ = std::fs::remove_file(&p);
            StdListener::bind(&p).map_err(|e| format!("listen on {}: {e}", p.display()))?
        }
        None => inherited_listener()?,
    };
    let _ = crate::reaper::set_subreaper();
    ignore_sigpipe();
    redirect_stderr_to_log_fifo();
    crate::logging::init(
        std::io::stderr(),
        args.debug,
        &[
            ("runtime", flavor.runtime_name),
            ("namespace", &args.namespace),
        ],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start runtime: {e}"))?;
    let r = rt.block_on(serve(flavor, args, listener));
    if let Err(e) = &r {
        tracing::error!(error = %e, "shim failed");
    }
    // Tasks still running (copies of a container we no longer serve) end with the runtime.
    rt.shutdown_timeout(Duration::from_millis(100));
    r
}

async fn serve(flavor: &Flavor, args: &ShimV2Args, listener: StdListener) -> Result<(), String> {
    let reaper = Reaper::new();
    reaper
        .start()
        .map_err(|e| format!("install SIGCHLD handler: {e}"))?;
    let spawner = Spawner::new(reaper);

    let socket_path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let listener =
        tokio::net::UnixListener::from_std(listener).map_err(|e| format!("listener: {e}"))?;

    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| format!("{}.ttrpc", args.address));
    let publisher = TtrpcPublisher::start(&ttrpc_address, &args.namespace);

    let core = Core::new(
        flavor.profile(),
        &args.namespace,
        spawner.clone(),
        Arc::new(RuncFactory {
            spawner,
            namespace: args.namespace.clone(),
        }),
        publisher.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let services =
        crate::protos::create_task_v2_and_v3(TaskService::new(core.clone(), stop_tx.clone()));

    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let stop_on_signal = stop_tx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop_on_signal.send(true);
    });

    tracing::info!(id = %args.id, pid = std::process::id(), "shim serving");
    crate::api::server::serve(listener, Arc::new(services), stop_rx).await;

    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    if !publisher.flush(EVENT_DRAIN).await {
        tracing::warn!("events still queued at exit");
    }
    tracing::info!(containers = core.container_count(), "shim exiting");
    Ok(())
}
