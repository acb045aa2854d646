//! The serving shim: inherits the listening socket as fd 3 from `start` (or binds `-socket`),
//! logs to the bundle's `log` FIFO, and serves the task API until `Shutdown` (when the
//! personality allows it) or SIGTERM/SIGINT. The plumbing shared with the legacy API's daemon
//! (fd 3, signals, runtime, reaper) is in `startup::daemon`.

use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;
use std::time::Duration;

use super::service::TaskService;
use super::Flavor;
use crate::api::server;
use crate::cli::ShimV2Args;
use crate::events::start_ttrpc;
use crate::startup::daemon;
use crate::startup::upgrade::Handover;

/// How long queued events may take to drain at exit (the Go shim's figure).
const EVENT_DRAIN: Duration = Duration::from_secs(5);

/// Send our stderr (fd 2) to the bundle's `log` FIFO, where containerd reads shim logs. The
/// FIFO is held open read-write by containerd, so a non-blocking open finds a reader; without
/// one we keep /dev/null and log nowhere rather than fail. It stays non-blocking: when
/// containerd stops reading, lines are dropped and counted (`logging::NonBlockingLog`)
/// instead of blocking the serving thread.
fn redirect_stderr_to_log_fifo() {
    let Ok(fd) = nix::fcntl::open(
        "log",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    // SAFETY: dup2 onto fd 2 replaces our stderr; `fd` stays valid until dropped below.
    unsafe {
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), 2);
    }
}

/// Make fd 2 non-blocking if it is the log FIFO (a terminal of a hand-started shim is left
/// alone: its flags are shared with whoever else writes to it).
fn log_fifo_nonblocking() {
    // SAFETY: fstat and fcntl on descriptor 2 by number: no memory but the local `stat` is
    // involved, and a closed descriptor only makes them fail with EBADF.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            let flags = libc::fcntl(2, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(2, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
    }
}

pub fn run(flavor: &Flavor, args: &ShimV2Args) -> Result<(), daemon::StartupError> {
    // A live upgrade's new image: the listener, the log descriptor (fd 2) and everything else
    // are inherited from the previous image.
    let from = daemon::handover(flavor.personality.binary_name())?;
    // fd 3 first: the runtime and the log FIFO would otherwise take low descriptor numbers.
    let listener = match (&from, &args.socket) {
        (Some(doc), _) => doc.or_roll_back(server::adopt_listener(&doc.server))?,
        (None, Some(path)) => {
            let p = PathBuf::from(path.strip_prefix("unix://").unwrap_or(path));
            let _ = std::fs::remove_file(&p);
            StdListener::bind(&p).map_err(|source| daemon::StartupError::Bind {
                path: p.display().to_string(),
                source,
            })?
        }
        (None, None) => daemon::inherited_listener()?,
    };
    // The stop signals as early as the runtime allows (after fd 3 is ours): a SIGTERM while
    // starting up then still ends in the orderly exit.
    let rt = daemon::runtime()?;
    let signals = {
        let _in_runtime = rt.enter();
        daemon::StopSignals::install()?
    };
    let _ = crate::reaper::set_subreaper();
    daemon::ignore_sigpipe();
    if from.is_none() {
        redirect_stderr_to_log_fifo();
    } else {
        // Adopted from a previous image, which may have left it blocking.
        log_fifo_nonblocking();
    }
    crate::logging::init(
        crate::logging::NonBlockingLog::new(std::io::stderr()),
        args.debug,
        &[
            ("runtime", flavor.runtime_name),
            ("namespace", &args.namespace),
        ],
    );
    let r = rt.block_on(serve(flavor, args, listener, from.as_ref(), signals));
    if let Err(e) = &r {
        tracing::error!(error = %e, "shim failed");
    }
    // Tasks still running (copies of a container we no longer serve) end with the runtime.
    rt.shutdown_timeout(Duration::from_millis(100));
    r
}

async fn serve(
    flavor: &Flavor,
    args: &ShimV2Args,
    listener: StdListener,
    from: Option<&Handover>,
    signals: daemon::StopSignals,
) -> Result<(), daemon::StartupError> {
    let (reaper, spawner) = daemon::reaper_and_spawner();
    let socket_path = daemon::socket_path(&listener);

    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| format!("{}.ttrpc", args.address));
    let publisher = start_ttrpc(&ttrpc_address, &args.namespace);

    let core = daemon::runc_core(
        flavor.profile(),
        &args.namespace,
        &spawner,
        &publisher,
        from,
    )?;
    let (stop_tx, stop_rx) = daemon::stop_channel(&core, signals);
    let services = crate::protos::create_task_v2_and_v3(TaskService::new(core.clone(), stop_tx));

    tracing::info!(id = %args.id, pid = std::process::id(), "shim serving");
    daemon::Serving {
        core: core.clone(),
        spawner,
        queue: publisher.queue().clone(),
        personality: flavor.personality.binary_name(),
        services,
        stop: stop_rx,
    }
    .serve(&reaper, listener, from)
    .await?;

    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    if !publisher.flush(EVENT_DRAIN).await {
        tracing::warn!("events still queued at exit");
    }
    tracing::info!(containers = core.container_count(), "shim exiting");
    Ok(())
}
