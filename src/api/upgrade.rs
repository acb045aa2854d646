//! Live upgrade: a serving shim replaces its program image with a new shimgate binary and
//! keeps its pid, its children (containers, execs, loggers), its sockets and its state, so
//! containerd notices nothing but one slower answer.
//!
//! The old image ([`Upgrader::upgrade`], run by the `Admin.Upgrade` request):
//! 1. checks the target answers `shimgate handover-formats` with a format this image writes;
//! 2. quiesces the server (no new request is read; those running finish, `Wait`s stay parked);
//! 3. checks the core can be handed over (no create, start or restore half-way);
//! 4. freezes the event queue between two deliveries (bounded by the quiesce timeout);
//! 5. freezes every process's IO at a safe point, then takes the sockets back from the server;
//! 6. synchronously (no await, one thread: nothing can change any more) captures the core and
//!    the queued events, writes the [`Handover`] document into a memfd, clears close-on-exec on
//!    exactly the descriptors it names and `execve`s the target with the same argv (argv[0]
//!    still picks the personality) and `SHIMGATE_HANDOVER_FD` in the environment.
//!
//! Steps 1-4 can be refused or time out; the shim then serves on as if nothing happened.
//! From step 5 on there is no way back inside this image: any failure, in the `execve` or in
//! the new image's adoption, re-executes the old binary (kept open as a descriptor, so a
//! replaced file on disk does not matter) with the same document marked as a rollback, and
//! that image answers the `Upgrade` with the reason. A rollback is never rolled back again.
//!
//! The new image ([`take_handover`], then the daemons' adoption path): reads and checks the
//! document, rebuilds the core before the reaper's first sweep (so exits during the hand-over
//! reach their owners), preloads the queued events before any new one, adopts the sockets,
//! replays parked `Wait`s and answers the `Upgrade` with timings.

use std::ffi::{CString, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::api::server::{Control, ServerSnap};
use crate::core::handover::CoreSnap;
use crate::core::Core;
use crate::events::queue::{Queue, Queued};
use crate::reaper::Spawner;

/// The environment variable naming the descriptor that holds the hand-over document.
pub const HANDOVER_ENV: &str = "SHIMGATE_HANDOVER_FD";
/// The document format this binary writes.
pub const FORMAT: u32 = 1;
/// Every document format this binary can adopt.
pub const FORMATS: &[u32] = &[1];
/// The operator tool's subcommand that answers which formats a binary adopts.
pub const FORMATS_COMMAND: &str = "handover-formats";
/// How long the target may take to answer [`FORMATS_COMMAND`].
const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(10);
/// Fault injection for the tests of the hand-over's hard cases, read by the new image only
/// (never on a rollback): `delay=<ms>` sleeps before adopting (so children exit while no
/// image serves), `fail-adoption` refuses to adopt (so the rollback runs).
pub const FAULT_ENV: &str = "SHIMGATE_UPGRADE_FAULT";
/// Default for how long running requests may take to finish.
pub const DEFAULT_QUIESCE: Duration = Duration::from_secs(10);

/// Everything a new image needs to carry on; written once by the old image, read once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handover {
    pub format: u32,
    /// Version of the image that wrote it.
    pub written_by: String,
    /// `containerd-shim`, `containerd-shim-runc-v1` or `containerd-shim-runc-v2`: the new
    /// image must run the same personality.
    pub personality: String,
    /// CLOCK_MONOTONIC when the server stopped taking requests (the same clock after
    /// `execve`), for the reported hand-over time.
    pub quiesced_at_ns: u64,
    /// The old program, open: what a rollback executes.
    pub old_binary_fd: RawFd,
    pub old_binary: String,
    /// The program asked for.
    pub target: String,
    /// Set when this document comes back to the old image: why the upgrade failed.
    pub rollback: Option<String>,
    pub server: ServerSnap,
    pub core: CoreSnap,
    pub events: Vec<Queued>,
}

/// What the operator tool's `handover-formats` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FormatsAnswer {
    pub version: String,
    pub formats: Vec<u32>,
}

/// The answer to print for [`FORMATS_COMMAND`].
pub fn formats_answer() -> String {
    serde_json::to_string(&FormatsAnswer {
        version: crate::VERSION.to_string(),
        formats: FORMATS.to_vec(),
    })
    .unwrap_or_default()
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The hand-over document this process was started with, if any. The variable is removed
/// (children must not see it) and the descriptor closed. `Err` only when a document was
/// announced but is unreadable: then there is nothing to roll back to either.
pub fn take_handover() -> Option<Result<Handover, String>> {
    let value = std::env::var_os(HANDOVER_ENV)?;
    // SAFETY: the daemons call this first thing, before any thread (runtime, logging) exists,
    // so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(HANDOVER_ENV) };
    Some(read_document(&value))
}

fn read_document(value: &std::ffi::OsStr) -> Result<Handover, String> {
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{HANDOVER_ENV}: not a descriptor number"))?;
    // SAFETY: the previous image put the document on this descriptor for us alone; nothing in
    // this image has opened or wrapped it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut text))
        .map_err(|e| format!("read hand-over document: {e}"))?;
    let doc: Handover =
        serde_json::from_slice(&text).map_err(|e| format!("hand-over document: {e}"))?;
    Ok(doc)
}

impl Handover {
    /// Can this image adopt it? (The rollback path checks nothing: same binary.)
    pub fn check(&self, personality: &str) -> Result<(), String> {
        if !FORMATS.contains(&self.format) {
            return Err(format!(
                "hand-over format {} is not one of {FORMATS:?}",
                self.format
            ));
        }
        if self.personality != personality {
            return Err(format!(
                "hand-over from {} cannot be adopted as {personality}",
                self.personality
            ));
        }
        Ok(())
    }

    /// The new image could not adopt this: go back to the old binary, which answers the
    /// `Upgrade` with `why`. Returns only if even that fails (then the caller must exit; the
    /// containers live on without a shim).
    pub fn roll_back(mut self, why: String) -> String {
        if self.rollback.is_some() {
            return format!("rollback failed too: {why}");
        }
        tracing::error!(error = %why, "upgrade failed; returning to the previous binary");
        self.rollback = Some(why);
        let old = self.old_binary_fd;
        match exec_with(&self, Image::Fd(old)) {
            Ok(never) => match never {},
            Err(e) => format!("cannot re-execute the previous binary: {e}"),
        }
    }

    /// Apply [`FAULT_ENV`] (tests only; see there).
    pub fn injected_faults(&self) -> Result<(), String> {
        if self.rollback.is_some() {
            return Ok(());
        }
        let Ok(faults) = std::env::var(FAULT_ENV) else {
            return Ok(());
        };
        for f in faults.split(',').map(str::trim) {
            if let Some(ms) = f.strip_prefix("delay=").and_then(|v| v.parse::<u64>().ok()) {
                std::thread::sleep(Duration::from_millis(ms));
            } else if f == "fail-adoption" {
                return Err(format!("refused on purpose ({FAULT_ENV}={f})"));
            }
        }
        Ok(())
    }

    /// A step of the adoption: its failure rolls back (and is returned only if that fails).
    pub fn or_roll_back<T>(&self, step: Result<T, String>) -> Result<T, String> {
        step.map_err(|e| self.clone().roll_back(e))
    }

    /// Close the old binary's descriptor (a successful adoption no longer needs it).
    pub fn release_old_binary(&self) {
        if self.old_binary_fd > 2 {
            // SAFETY: the descriptor was handed over for this image alone and nothing else
            // wraps it; it is closed exactly once, here.
            drop(unsafe { OwnedFd::from_raw_fd(self.old_binary_fd) });
        }
    }

    /// Every descriptor the document names.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut v = self.core.fds();
        v.extend(self.server.fds());
        v.push(self.old_binary_fd);
        v
    }

    /// Before adopting anything: every descriptor named must be open (a failure after the
    /// adoption has begun could not roll back cleanly, since adopted descriptors close with
    /// the objects that own them).
    pub fn check_fds(&self) -> Result<(), String> {
        for fd in self.fds() {
            // SAFETY: borrowed for F_GETFD only.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::fcntl::fcntl(b, nix::fcntl::FcntlArg::F_GETFD)
                .map_err(|e| format!("hand-over descriptor {fd}: {e}"))?;
        }
        Ok(())
    }

    /// Microseconds from quiesce to now.
    pub fn elapsed_micros(&self) -> u64 {
        monotonic_ns().saturating_sub(self.quiesced_at_ns) / 1000
    }
}

enum Image<'a> {
    Path(&'a Path),
    Fd(RawFd),
}

fn cstring(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "argument or environment holds a NUL byte".to_string())
}

/// Write `doc` to a fresh memfd, make it and every descriptor it names survive `execve`, and
/// replace this image. Synchronous on purpose: see the module docs. Returns only on failure.
fn exec_with(doc: &Handover, image: Image<'_>) -> Result<std::convert::Infallible, String> {
    let text = serde_json::to_vec(doc).map_err(|e| format!("encode hand-over: {e}"))?;
    let memfd =
        nix::sys::memfd::memfd_create(c"shimgate-handover", nix::sys::memfd::MFdFlags::empty())
            .map_err(|e| format!("memfd: {e}"))?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(&text)
        .map_err(|e| format!("write hand-over: {e}"))?;
    let mut fds = doc.fds();
    fds.push(file.as_raw_fd());
    for fd in fds.iter().copied().filter(|fd| *fd > 2) {
        // SAFETY: borrowed only for this fcntl; every number here is a descriptor this image
        // holds open (frozen IO, sockets, the document, the old binary).
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(
            b,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|e| format!("descriptor {fd}: {e}"))?;
    }
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        // A rollback must not meet the injected fault that caused it.
        if k == HANDOVER_ENV || (k == FAULT_ENV && doc.rollback.is_some()) {
            continue;
        }
        let mut kv: OsString = k;
        kv.push("=");
        kv.push(v);
        env.push(cstring(kv.as_bytes())?);
    }
    env.push(cstring(
        format!("{HANDOVER_ENV}={}", file.as_raw_fd()).as_bytes(),
    )?);
    let r = match image {
        Image::Path(p) => {
            let path = cstring(p.as_os_str().as_bytes())?;
            nix::unistd::execve(&path, &argv, &env)
        }
        Image::Fd(fd) => {
            // SAFETY: borrowed for the call only; the old binary's descriptor stays open.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::fexecve(b, &argv, &env)
        }
    };
    r.map_err(|e| format!("execve: {e}"))
}

impl ServerSnap {
    fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener)
            .chain(self.conns.iter().map(|c| c.fd))
            .filter(|fd| *fd >= 0)
            .collect()
    }
}

/// Where a default upgrade finds the new binary: the name this shim was started as, looked up
/// the way containerd looked it up (the v1 shim is started by bare name from `$PATH`).
fn default_target() -> Option<PathBuf> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    if argv0.as_os_str().as_bytes().contains(&b'/') {
        return Some(argv0);
    }
    let name = argv0.to_str()?;
    crate::admin::which(name)
}

/// Runs upgrades for one serving shim. Shared by both APIs' daemons.
pub struct Upgrader {
    pub core: Core,
    pub server: Control,
    pub events: Queue,
    pub spawner: Spawner,
    /// The personality's binary name (goes into the document).
    pub personality: &'static str,
    /// The daemon's stop flag: a shim shutting down is not upgraded.
    pub stop: watch::Receiver<bool>,
    running: AtomicBool,
}

/// Why an upgrade did not happen (the shim serves on unchanged).
#[derive(Debug)]
pub struct Refused(pub String);

impl Upgrader {
    pub fn new(
        core: Core,
        server: Control,
        events: Queue,
        spawner: Spawner,
        personality: &'static str,
        stop: watch::Receiver<bool>,
    ) -> Upgrader {
        Upgrader {
            core,
            server,
            events,
            spawner,
            personality,
            stop,
            running: AtomicBool::new(false),
        }
    }

    /// Upgrade to `binary` (empty: the installed binary of this shim's name). Returns only
    /// when the upgrade was refused before the point of no return; success (and a rollback)
    /// is answered by the next image.
    pub async fn upgrade(&self, binary: &str, quiesce: Duration) -> Refused {
        if self.running.swap(true, Ordering::SeqCst) {
            return Refused("an upgrade is already in progress".into());
        }
        let r = self.attempt(binary, quiesce).await;
        self.running.store(false, Ordering::SeqCst);
        r
    }

    async fn attempt(&self, binary: &str, quiesce: Duration) -> Refused {
        let target = if binary.is_empty() {
            match default_target() {
                Some(p) => p,
                None => return Refused("cannot find the installed binary; name one".into()),
            }
        } else {
            PathBuf::from(binary)
        };
        let version = match self.preflight(&target).await {
            Ok(v) => v,
            Err(e) => return Refused(e),
        };
        // No early `can_hand_over` here: a create or start running now finishes while the
        // server quiesces, so only the check after quiescing tells.
        // The old binary, open now: the file may be replaced on disk at any moment.
        let old_binary = match std::fs::File::open("/proc/self/exe") {
            Ok(f) => OwnedFd::from(f),
            Err(e) => return Refused(format!("open own binary: {e}")),
        };
        let old_path = std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tracing::info!(target = %target.display(), version = %version, "upgrade: quiescing");
        let quiesced_at_ns = monotonic_ns();
        if let Err(e) = self.server.quiesce(quiesce).await {
            return Refused(format!("requests did not finish: {e}"));
        }
        if *self.stop.borrow() {
            self.server.resume();
            return Refused("the shim is shutting down".into());
        }
        if let Err(e) = self.core.can_hand_over() {
            self.server.resume();
            return Refused(e.to_string());
        }
        let mut queue = match tokio::time::timeout(quiesce, self.events.freeze()).await {
            Ok(Some(q)) => q,
            Ok(None) => {
                self.server.resume();
                return Refused("the event queue is closed".into());
            }
            Err(_) => {
                self.server.resume();
                return Refused(format!(
                    "an event could not be delivered to containerd within {} ms",
                    quiesce.as_millis()
                ));
            }
        };
        // The point of no return: from here on the only ways out are the new image or the
        // old binary executed afresh.
        let io = self.core.freeze_io().await;
        let server = self.server.hand_over().await;
        // Synchronous from here to execve.
        let mut doc = Handover {
            format: FORMAT,
            written_by: crate::VERSION.to_string(),
            personality: self.personality.to_string(),
            quiesced_at_ns,
            old_binary_fd: old_binary.as_raw_fd(),
            old_binary: old_path,
            target: target.display().to_string(),
            rollback: None,
            server: server.snap.clone(),
            core: self.core.capture(&io),
            events: queue.take_all(),
        };
        tracing::info!(
            containers = doc.core.containers.len(),
            connections = doc.server.conns.len(),
            events = doc.events.len(),
            "upgrade: handing over"
        );
        let why = match exec_with(&doc, Image::Path(&target)) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        tracing::error!(error = %why, "upgrade: the new binary could not be started");
        doc.rollback = Some(format!("start {}: {why}", target.display()));
        let why = match exec_with(&doc, Image::Fd(old_binary.as_raw_fd())) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        // Nothing left to run this shim's state: its containers carry on without a shim.
        tracing::error!(error = %why, "upgrade: cannot re-execute the previous binary; exiting");
        std::process::exit(1);
    }

    /// Ask the target which formats it adopts; its version for the log.
    async fn preflight(&self, target: &Path) -> Result<String, String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(target);
        cmd.arg0("shimgate").arg(FORMATS_COMMAND);
        let out = self
            .spawner
            .output(cmd, None, Some(PREFLIGHT_DEADLINE), 64 << 10)
            .await
            .map_err(|e| format!("run {}: {e}", target.display()))?;
        if out.timed_out {
            return Err(format!("{} did not answer", target.display()));
        }
        let answer: FormatsAnswer = serde_json::from_slice(&out.stdout).map_err(|_| {
            format!(
                "{} cannot adopt a running shim (is it shimgate 0.2 or later?): {}",
                target.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if !answer.formats.contains(&FORMAT) {
            return Err(format!(
                "{} ({}) adopts hand-over formats {:?}, this shim writes {FORMAT}",
                target.display(),
                answer.version,
                answer.formats
            ));
        }
        Ok(answer.version)
    }
}
