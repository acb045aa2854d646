//! Plumbing every serving shim needs, whichever API it speaks: adopting the listening socket
//! containerd (or our own `start`) left on fd 3, the process-wide signal dispositions, the
//! runtime the daemon runs on, the reaper, turning SIGTERM/SIGINT into "stop serving", and
//! the serving itself with the admin service, fresh or adopted from a previous image (live
//! upgrade, see `startup::upgrade`).
//!
//! The daemons run on a single-threaded runtime: a shim's work is waiting, one thread keeps
//! memory small, and `PR_SET_PDEATHSIG` on runtime children fires when the *thread* that forked
//! them exits, so every child must be forked from one long-lived thread (see `reaper::spawner`).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener as StdListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use ttrpc::r#async::Service;

use super::upgrade::{self, AdoptError, Handover, Lost, Upgrader};
use crate::api::admin::AdminService;
use crate::api::server::{self, Control, Services};
use crate::engine::event::EventSink;
use crate::engine::{ApiProfile, Engine, RuncFactory};
use crate::events::queue::Queue;
use crate::events::Publisher;
use crate::reaper::{Reaper, Spawner};
use crate::supervise::Ended;

/// The descriptor on which the listening socket is inherited.
pub const LISTENER_FD: i32 = 3;

/// Why a serving shim could not start (or serve on): printed by the personalities after their
/// prefix (`containerd-shim: `, `io.containerd.runc.v2: `), so the texts stay as they were.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("no listening socket on fd {LISTENER_FD}: {0}")]
    NoListener(std::io::Error),
    #[error("fd {LISTENER_FD} is not a socket")]
    NotASocket,
    #[error("fd {LISTENER_FD}: set close-on-exec: {0}")]
    ListenerCloexec(nix::Error),
    #[error("start runtime: {0}")]
    Runtime(std::io::Error),
    #[error("install SIGCHLD handler: {0}")]
    Reaper(std::io::Error),
    #[error("{signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// Binding a socket file named on the command line.
    #[error("listen on {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    /// A hand-over document was announced but cannot be read: nothing to roll back to.
    #[error(transparent)]
    Handover(#[from] AdoptError),
    /// A live upgrade could neither adopt nor roll back (see [`Lost`]).
    #[error(transparent)]
    Lost(#[from] Lost),
}

/// Take ownership of the listening socket inherited on fd 3 (checked to be a socket, so an
/// unrelated descriptor is never adopted).
pub fn inherited_listener() -> Result<StdListener, StartupError> {
    // Only the number is looked at until it is known to be an open socket: a `BorrowedFd`
    // must never name a closed descriptor.
    let st = server::fstat_raw(LISTENER_FD).map_err(StartupError::NoListener)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(StartupError::NotASocket);
    }
    // SAFETY: fd 3 was checked to be an open socket, and nothing else in this process owns it
    // (it was inherited across exec and nothing has wrapped it yet).
    let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
    // An inherited descriptor is not close-on-exec; every runtime or publish child would keep
    // the listening socket open (a publish child may outlive the shim). Go's FileListener
    // likewise serves from a close-on-exec duplicate.
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(StartupError::ListenerCloexec)?;
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

/// Blocking threads the runtime may start. Everything that can block on the filesystem
/// (mounts, opening stdio targets, writing to a file sink) runs there, never on the serving
/// thread; each such job waits on its own caller's deadline, so a few threads stuck in a hung
/// filesystem cost only themselves. Idle ones end after [`HELPER_KEEP_ALIVE`].
const BLOCKING_THREADS: usize = 32;

/// How long an idle blocking thread waits for more work before it ends. tokio's default (10 s)
/// made a settled shim wake up once, 10 s after its last Create or exec, to end its helper
/// thread: the only CPU an idle shim used. One second keeps a thread across a burst of
/// requests and ends it before the shim is quiet (as with the trim, `startup::resident`).
const HELPER_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The daemon's runtime (single-threaded: see the module docs; blocking work goes to at most
/// [`BLOCKING_THREADS`] helper threads, which never fork).
pub fn runtime() -> Result<tokio::runtime::Runtime, StartupError> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(HELPER_KEEP_ALIVE)
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)
}

/// The one reaper and the spawner every child goes through. The reaper is started with
/// [`start_reaper`] once the core exists: an adopted core must claim its live pids before the
/// first sweep, and nothing is spawned before then.
pub fn reaper_and_spawner() -> (Reaper, Spawner) {
    let reaper = Reaper::new();
    let spawner = Spawner::new(reaper.clone());
    (reaper, spawner)
}

/// Install the SIGCHLD handler and sweep. Call inside the runtime, as the last step before
/// serving: after it, exits are collected, and (when adopting) a rollback could lose them.
pub fn start_reaper(reaper: &Reaper) -> Result<Ended, StartupError> {
    reaper.start().map_err(StartupError::Reaper)
}

/// Watch a critical task (see `crate::supervise`): if it ends and `expected` does not say why
/// (a live upgrade took the event queue over), the shim exits loudly. Serving on without
/// collecting, handling or publishing exits would leave containerd waiting for them forever;
/// a dead shim is something containerd cleans up after (`delete` reads the recorded exit).
pub fn supervise(
    task: &'static str,
    mut ended: Ended,
    expected: impl Fn() -> bool + Send + 'static,
) {
    tokio::spawn(async move {
        ended.wait().await;
        if expected() {
            return;
        }
        tracing::error!(
            task,
            "a critical task of the shim ended; exiting so that containerd cleans up after it"
        );
        std::process::exit(2);
    });
}

/// A listener's filesystem path, if it has one (an abstract socket does not), so the caller
/// can remove it at exit.
pub fn socket_path(listener: &StdListener) -> Option<PathBuf> {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
}

/// Hand a bound listener to the runtime; also returns its [`socket_path`].
pub fn serve_on(
    listener: StdListener,
) -> Result<(tokio::net::UnixListener, Option<PathBuf>), StartupError> {
    let path = socket_path(&listener);
    listener
        .set_nonblocking(true)
        .map_err(StartupError::Listener)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(StartupError::Listener)?;
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
pub fn stop_when_forgotten(core: Engine, stop: watch::Sender<bool>) {
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
/// SIGTERM and SIGINT caught from the moment this is made (inside the runtime's context):
/// made before the shim's socket exists, a signal sent as soon as the socket appears stops the
/// shim through its orderly exit (socket removed, events flushed) instead of the default
/// action killing it mid-start.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Install the handlers; needs the runtime's context (`Runtime::enter` or inside it).
    pub fn install() -> Result<Self, StartupError> {
        let failed = |signal| move |source| StartupError::Signal { signal, source };
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).map_err(failed("SIGTERM"))?,
            int: signal(SignalKind::interrupt()).map_err(failed("SIGINT"))?,
        })
    }
}

/// The shim's stop signal: raised by SIGTERM/SIGINT (caught since `signals` was made) and by
/// [`stop_when_forgotten`]; the sender also goes to whatever else may stop the shim (the task
/// API's Shutdown).
pub fn stop_channel(
    core: &Engine,
    signals: StopSignals,
) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    stop_when_forgotten(core.clone(), tx.clone());
    stop_on_signals(signals, tx.clone());
    (tx, rx)
}

fn stop_on_signals(mut signals: StopSignals, stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = signals.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = signals.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop.send(true);
    });
}

/// The engine of a serving shim: `profile`'s API over the runc CLI, events into `sink`
/// (whose queue is `queue`). Adopting, it is rebuilt from the hand-over, and the events the
/// previous image had not delivered are queued first, ahead of anything the rebuilt core
/// emits.
pub fn runc_core(
    profile: ApiProfile,
    namespace: &str,
    spawner: &Spawner,
    publisher: &Arc<Publisher>,
    from: Option<&Handover>,
) -> Result<Engine, Lost> {
    let (spawner, queue) = (spawner.clone(), publisher.queue());
    let sink: Arc<dyn EventSink> = publisher.clone();
    let factory = Arc::new(RuncFactory {
        spawner: spawner.clone(),
        namespace: namespace.to_string(),
        deadlines: crate::engine::runc::Deadlines::from_env(),
    });
    match from {
        None => Ok(Engine::new(profile, namespace, spawner, factory, sink)),
        Some(doc) => {
            queue.preload(doc.events.clone());
            doc.or_roll_back(
                Engine::thaw(&doc.core, profile, namespace, spawner, factory, sink)
                    .map_err(AdoptError::Engine),
            )
        }
    }
}

/// The hand-over this process was started with, checked for this personality: `Ok(None)` for
/// an ordinary start. A document that is announced but unusable is rolled back at once.
pub fn handover(personality: &str) -> Result<Option<Handover>, StartupError> {
    match upgrade::take_handover() {
        None => Ok(None),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(doc)) => {
            doc.or_roll_back(
                doc.check(personality)
                    .and_then(|()| doc.check_fds())
                    .and_then(|()| doc.injected_faults()),
            )?;
            Ok(Some(doc))
        }
    }
}

/// What the serving daemons share after their core exists: the admin service next to their
/// API, the reaper started, then either a fresh listener served or everything a previous image
/// handed over adopted (any failure before serving rolls back to the previous binary).
pub struct Serving {
    pub core: Engine,
    pub spawner: Spawner,
    pub queue: Queue,
    pub personality: &'static str,
    pub services: HashMap<String, Service>,
    pub stop: watch::Receiver<bool>,
}

impl Serving {
    pub async fn serve(
        self,
        reaper: &Reaper,
        listener: StdListener,
        from: Option<&Handover>,
    ) -> Result<(), StartupError> {
        let Serving {
            core,
            spawner,
            queue,
            personality,
            mut services,
            stop,
        } = self;
        let ctl = Control::new();
        let upgrader_queue = queue.clone();
        let upgrader = Upgrader::new(
            core.clone(),
            ctl.clone(),
            queue,
            spawner,
            personality,
            stop.clone(),
        );
        services.extend(crate::protos::admin_ttrpc::create_admin(AdminService::new(
            upgrader, &listener,
        )));
        let services: Services = Arc::new(services);
        let (listener, _) = serve_on(listener)?;
        if let Some(doc) = from {
            let reply = crate::api::admin::upgrade_reply(doc, core.container_count());
            doc.or_roll_back(server::adopt_connections(
                &doc.server.conns,
                &services,
                &ctl,
                &stop,
                &reply,
            ))?;
        }
        let reaping = start_reaper(reaper)?;
        supervise("SIGCHLD/waitpid loop", reaping, || false);
        supervise("exit dispatcher", core.dispatcher_ended(), || false);
        let events = upgrader_queue;
        supervise("event delivery", events.delivery_ended(), move || {
            events.handed_over()
        });
        if let Some(doc) = from {
            doc.release_old_binary();
            match &doc.rollback {
                None => tracing::info!(
                    from = %doc.written_by,
                    to = crate::VERSION,
                    handover_micros = doc.elapsed_micros(),
                    containers = core.container_count(),
                    "upgraded: serving with the state of the previous binary"
                ),
                Some(why) => tracing::warn!(
                    error = %why,
                    "upgrade rolled back: serving again with the previous binary"
                ),
            }
        }
        super::resident::trim_when_quiet(ctl.busy());
        server::serve(listener, services, ctl, stop).await;
        Ok(())
    }
}
