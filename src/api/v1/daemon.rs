//! The v1 shim process. containerd starts it as its own direct child (new process group, cwd =
//! bundle, listening socket on fd 3, stdout/stderr = pipes it copies into the work directory's
//! log FIFOs) and expects it to serve until it is SIGKILLed after `Delete`. So, unlike the task
//! API shim, there is no `start` helper, no daemonizing and no re-exec.
//!
//! Surviving containerd: when containerd dies the shim carries on. Its listener (fd 3) is its
//! own descriptor; a restarted containerd reconnects to the socket named in the bundle's
//! `address` file (which containerd wrote). The pipes on fds 1 and 2 lose their reader, so the
//! shim points those descriptors at the log FIFOs (held open read-write, see
//! `bootstrap::ShimLogs`) and ignores SIGPIPE. Nothing asks the kernel to signal the shim when
//! its parent dies.
//!
//! SIGTERM/SIGINT: stop serving, SIGKILL every process of the container, delete it, deliver the
//! events still queued (bounded), exit: what `containerd-shim` does.

use std::path::PathBuf;
use std::time::Duration;

use super::bootstrap::{self, ListenSpec};
use super::options::Settings;
use super::service::ShimService;
use crate::api::server;
use crate::cli::Personality;
use crate::cli::ShimV1Args;
use crate::engine::types::ProcessRef;
use crate::engine::{Engine, ProcessName};
use crate::events::{start_exec, PublishCommand, Retry};
use crate::startup::daemon;
use crate::startup::upgrade::{Handover, Lost};

/// Why the v1 shim could not start or serve: printed after `containerd-shim: `.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Startup(#[from] daemon::StartupError),
    #[error(transparent)]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("shim namespace cannot be empty")]
    EmptyNamespace,
    /// The namespace is not a containerd identifier (the engine's text).
    #[error(transparent)]
    Namespace(crate::engine::Error),
    #[error("getcwd: {0}")]
    Getcwd(std::io::Error),
}

impl From<Lost> for DaemonError {
    fn from(e: Lost) -> Self {
        DaemonError::Startup(e.into())
    }
}

/// How long queued events may take to go out at exit.
const EVENT_DRAIN: Duration = Duration::from_secs(5);
/// How long a SIGTERM waits for init to be reaped after `kill --all SIGKILL`.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn run(args: &ShimV1Args) -> Result<(), DaemonError> {
    // A live upgrade's new image: the listener and the rest are inherited.
    let from = daemon::handover(Personality::ShimV1.binary_name())?;
    // The log FIFOs first, as the Go shim: from here on, even a fatal error lands where
    // containerd reads shim output. Without -workdir (a hand-started shim) stderr is the log.
    let logs = match &args.workdir {
        Some(w) => {
            let logs = bootstrap::open_logs(w)?;
            bootstrap::redirect_stdio(&logs);
            Some(logs)
        }
        None => None,
    };
    if args.namespace.is_empty() {
        return Err(DaemonError::EmptyNamespace);
    }
    // The namespace becomes a directory of runc's root: only containerd's identifiers.
    crate::engine::types::validate_identifier("namespace", &args.namespace)
        .map_err(DaemonError::Namespace)?;
    // The runtime and the stop signals before the socket: whoever sees the socket may SIGTERM
    // us at once (the default action would leave the socket file behind).
    let rt = daemon::runtime()?;
    let signals = {
        let _in_runtime = rt.enter();
        daemon::StopSignals::install()?
    };
    let listen = bootstrap::listen_spec(args.socket.as_deref());
    let listener = match &from {
        Some(doc) => doc.or_roll_back(server::adopt_listener(&doc.server))?,
        None => bootstrap::listen(args)?,
    };
    let _ = crate::reaper::set_subreaper();
    daemon::ignore_sigpipe();

    let bundle = std::env::current_dir().map_err(DaemonError::Getcwd)?;
    let path = bundle.to_string_lossy().into_owned();
    // The Go shim's fields, less its own pid: ours would clash with events' `pid` fields.
    let fixed = [
        ("runtime", super::RUNTIME_NAME),
        ("namespace", args.namespace.as_str()),
        ("path", path.as_str()),
    ];
    match logs.as_ref().map(|l| l.stdout.try_clone()) {
        Some(Ok(fd)) => crate::logging::init(
            crate::logging::NonBlockingLog::new(std::fs::File::from(fd)),
            args.debug,
            &fixed,
        ),
        _ => crate::logging::init(std::io::stderr(), args.debug, &fixed),
    };
    tracing::debug!(socket = %bootstrap::display_socket(&listen), "serving api on unix socket");

    let r = rt.block_on(serve(args, listener, listen, from.as_ref(), signals));
    // Tasks still running (IO copies of a container we no longer serve) end with the runtime.
    rt.shutdown_timeout(Duration::from_millis(100));
    drop(logs);
    r
}

async fn serve(
    args: &ShimV1Args,
    listener: std::os::unix::net::UnixListener,
    listen: ListenSpec,
    from: Option<&Handover>,
    signals: daemon::StopSignals,
) -> Result<(), DaemonError> {
    let (reaper, spawner) = daemon::reaper_and_spawner();
    // Only a socket file we bound is ours to remove; containerd owns the inherited one.
    let our_socket: Option<PathBuf> =
        daemon::socket_path(&listener).filter(|_| matches!(listen, ListenSpec::Path(_)));

    let publisher = start_exec(
        spawner.clone(),
        PublishCommand {
            binary: args.containerd_binary.clone(),
            address: args.address.clone(),
            namespace: args.namespace.clone(),
        },
        Retry::default(),
    );
    let core = daemon::runc_core(
        super::profile(),
        &args.namespace,
        &spawner,
        &publisher,
        from,
    )?;
    let service = ShimService::new(core.clone(), Settings::from_args(args));
    let services = crate::protos::shim_v1_ttrpc::create_shim(service);

    let (_, stop_rx) = daemon::stop_channel(&core, signals);
    tracing::info!("shim serving");
    daemon::Serving {
        core: core.clone(),
        spawner,
        queue: publisher.queue().clone(),
        personality: Personality::ShimV1.binary_name(),
        services,
        stop: stop_rx,
    }
    .serve(&reaper, listener, from)
    .await?;

    terminate(&core).await;
    if let Some(p) = our_socket {
        let _ = std::fs::remove_file(p);
    }
    if !publisher.flush(EVENT_DRAIN).await {
        tracing::warn!("events still queued at exit");
    }
    tracing::info!("shim exiting");
    Ok(())
}

/// After SIGTERM/SIGINT: make sure nothing of the container outlives the shim.
async fn terminate(core: &Engine) {
    let Ok((id, init)) = core.resolve(ProcessName::Init) else {
        return;
    };
    if let Err(e) = core.kill(&id, &init, libc::SIGKILL as u32, true).await {
        tracing::debug!(id = %id, error = %e, "kill --all at shutdown");
    }
    // Delete needs init reaped (stopped); wait for that, but not forever.
    if tokio::time::timeout(KILL_WAIT, core.wait(&id, &ProcessRef::Init))
        .await
        .is_err()
    {
        tracing::warn!(id = %id, "init not reaped {}s after SIGKILL", KILL_WAIT.as_secs());
    }
    if let Err(e) = core.delete(&id, &init).await {
        tracing::warn!(id = %id, error = %e, "delete at shutdown");
    }
}
