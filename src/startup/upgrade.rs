//! Live upgrade: a serving shim replaces its program image with a new shimgate binary and
//! keeps its pid, its children (containers, execs, loggers), its sockets and its state, so
//! containerd notices nothing but one slower answer.
//!
//! The old image ([`Upgrader::upgrade`], run by the `Admin.Upgrade` request):
//! 1. opens the target once and checks that file: a regular, executable file owned by root
//!    that nobody else can write, in directories nobody else can write to, outside every
//!    bundle this shim serves (a container's root can write there); then runs *that open
//!    file* (never the path again: no window to swap it) as `shimgate handover-formats`,
//!    which must answer with a format this image writes;
//! 2. quiesces the server (no new request is read; those running finish, `Wait`s stay parked);
//! 3. checks the core can be handed over (no create, start or restore half-way);
//! 4. freezes the event queue between two deliveries (bounded by the quiesce timeout);
//! 5. freezes every process's IO at a safe point, then takes the sockets back from the server;
//! 6. synchronously (no await, one thread: nothing can change any more) captures the core and
//!    the queued events, writes the [`Handover`] document into a memfd, clears close-on-exec on
//!    exactly the descriptors it names and `fexecve`s the target file opened in step 1 with
//!    the same argv (argv[0] still picks the personality) and `SHIMGATE_HANDOVER_FD` in the
//!    environment.
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
use crate::engine::handover::CoreSnap;
use crate::engine::Engine;
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
/// image serves), `fail-adoption` refuses to adopt (so the rollback runs). Only in builds with
/// the `test-faults` feature: the binary operators run has no such knob.
#[cfg(feature = "test-faults")]
pub const FAULT_ENV: &str = "SHIMGATE_UPGRADE_FAULT";
/// Default for how long running requests may take to finish.
pub const DEFAULT_QUIESCE: Duration = Duration::from_secs(10);

mod error;
pub use error::{AdoptError, ExecError, Lost, PreflightError, Refused, TargetError, UpgradeError};

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
pub fn take_handover() -> Option<Result<Handover, AdoptError>> {
    let value = std::env::var_os(HANDOVER_ENV)?;
    // SAFETY: the daemons call this first thing, before any thread (runtime, logging) exists,
    // so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(HANDOVER_ENV) };
    Some(read_document(&value))
}

fn read_document(value: &std::ffi::OsStr) -> Result<Handover, AdoptError> {
    let fd: RawFd = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or(AdoptError::NotADescriptor)?;
    // SAFETY: the previous image put the document on this descriptor for us alone; nothing in
    // this image has opened or wrapped it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut text))
        .map_err(AdoptError::Read)?;
    let doc: Handover = serde_json::from_slice(&text).map_err(AdoptError::Decode)?;
    Ok(doc)
}

impl Handover {
    /// Can this image adopt it? (The rollback path checks nothing: same binary.)
    pub fn check(&self, personality: &str) -> Result<(), AdoptError> {
        if !FORMATS.contains(&self.format) {
            return Err(AdoptError::Format(self.format));
        }
        if self.personality != personality {
            return Err(AdoptError::Personality {
                from: self.personality.clone(),
                personality: personality.to_string(),
            });
        }
        Ok(())
    }

    /// The new image could not adopt this: go back to the old binary, which answers the
    /// `Upgrade` with `why`. Returns only if even that fails (then the caller must exit; the
    /// containers live on without a shim).
    pub fn roll_back(mut self, why: AdoptError) -> Lost {
        if self.rollback.is_some() {
            return Lost::RollbackFailed(why);
        }
        tracing::error!(error = %why, "upgrade failed; returning to the previous binary");
        self.rollback = Some(why.to_string());
        let old = self.old_binary_fd;
        match exec_with(&self, Image::Fd(old)) {
            Ok(never) => match never {},
            Err(e) => Lost::Reexec(e),
        }
    }

    /// Apply the test builds' `SHIMGATE_UPGRADE_FAULT` (nothing in any other build).
    #[cfg(not(feature = "test-faults"))]
    pub fn injected_faults(&self) -> Result<(), AdoptError> {
        Ok(())
    }

    /// Apply [`FAULT_ENV`] (tests only; see there).
    #[cfg(feature = "test-faults")]
    pub fn injected_faults(&self) -> Result<(), AdoptError> {
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
                return Err(AdoptError::Injected(f.to_string()));
            }
        }
        Ok(())
    }

    /// A step of the adoption: its failure rolls back (and is returned only if that fails).
    pub fn or_roll_back<T, E: Into<AdoptError>>(&self, step: Result<T, E>) -> Result<T, Lost> {
        step.map_err(|e| self.clone().roll_back(e.into()))
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

    /// Before adopting anything: every descriptor named must be open, and named by one owner
    /// only (each process's IO, the listener, each connection, the old binary), so nothing is
    /// taken into ownership twice. A failure after the adoption has begun could not roll back
    /// cleanly, since adopted descriptors close with the objects that own them.
    pub fn check_fds(&self) -> Result<(), AdoptError> {
        let mut owners: std::collections::HashMap<RawFd, String> = Default::default();
        let mut claim = |fds: Vec<RawFd>, owner: String| -> Result<(), AdoptError> {
            for fd in fds {
                if fd <= 2 {
                    return Err(AdoptError::Stdio { owner, fd });
                }
                if let Some(first) = owners.insert(fd, owner.clone()) {
                    return Err(AdoptError::NamedTwice { fd, first, owner });
                }
            }
            Ok(())
        };
        for c in &self.core.containers {
            for p in std::iter::once(&c.init).chain(c.execs.iter()) {
                let who = match &p.exec_id {
                    Some(e) => format!("exec {e} of {}", c.id),
                    None => format!("container {}", c.id),
                };
                claim(p.io.checked_fds().map_err(AdoptError::ProcessIo)?, who)?;
            }
        }
        claim(
            crate::api::server::checked_fds(&self.server)?,
            "the server".into(),
        )?;
        claim(vec![self.old_binary_fd], "the old binary".into())?;
        for fd in owners.keys() {
            // A number only: nothing is borrowed before it is known to be open.
            crate::api::server::fstat_raw(*fd)
                .map_err(|source| AdoptError::NotOpen { fd: *fd, source })?;
        }
        Ok(())
    }

    /// Microseconds from quiesce to now.
    pub fn elapsed_micros(&self) -> u64 {
        monotonic_ns().saturating_sub(self.quiesced_at_ns) / 1000
    }
}

/// The program an `execve` replaces this image with: always an open file (the target checked
/// and run by the preflight, or the old binary for a rollback), never a path looked up again.
enum Image {
    Fd(RawFd),
}

fn cstring(b: &[u8]) -> Result<CString, ExecError> {
    CString::new(b).map_err(|_| ExecError::Nul)
}

/// Write `doc` to a fresh memfd, make it and every descriptor it names survive `execve`, and
/// replace this image. Synchronous on purpose: see the module docs. Returns only on failure.
fn exec_with(doc: &Handover, image: Image) -> Result<std::convert::Infallible, ExecError> {
    let text = serde_json::to_vec(doc).map_err(ExecError::Encode)?;
    let memfd =
        nix::sys::memfd::memfd_create(c"shimgate-handover", nix::sys::memfd::MFdFlags::empty())
            .map_err(ExecError::Memfd)?;
    let mut file = std::fs::File::from(memfd);
    file.write_all(&text).map_err(ExecError::Write)?;
    let mut fds = doc.fds();
    fds.push(file.as_raw_fd());
    for fd in fds.iter().copied().filter(|fd| *fd > 2) {
        // SAFETY: fcntl(F_SETFD) on a descriptor number; nothing is borrowed, and a number
        // that is not open is an error (EBADF), not undefined behaviour.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(ExecError::KeepOpen {
                fd,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| cstring(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == HANDOVER_ENV {
            continue;
        }
        // A rollback must not meet the injected fault that caused it.
        #[cfg(feature = "test-faults")]
        if k == FAULT_ENV && doc.rollback.is_some() {
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
    let Image::Fd(fd) = image;
    crate::api::server::fstat_raw(fd).map_err(|source| ExecError::Program { fd, source })?;
    // SAFETY: `fd` was just checked to be open, and this image holds it (the target opened by
    // the upgrade, or the old binary handed over) for at least this call.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::unistd::fexecve(b, &argv, &env).map_err(ExecError::Exec)
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
    crate::search_path::which(name)
}

/// The program an upgrade moves to, opened once: what the preflight runs and what the shim
/// becomes are this very file, whatever happens to the path meanwhile.
struct Target {
    file: std::fs::File,
    /// Where it is (resolved through the open descriptor), for messages and the document.
    path: PathBuf,
}

/// Open `path` and check it may become this shim: see the module docs. `bundles` are the
/// bundles of the containers this shim serves.
fn open_target(path: &Path, bundles: &[PathBuf]) -> Result<Target, TargetError> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path).map_err(|source| TargetError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let md = file.metadata().map_err(|source| TargetError::Stat {
        path: path.display().to_string(),
        source,
    })?;
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .unwrap_or_else(|_| path.to_path_buf());
    let shown = || real.display().to_string();
    if !md.is_file() {
        return Err(TargetError::NotAFile { path: shown() });
    }
    if md.mode() & 0o111 == 0 {
        return Err(TargetError::NotExecutable { path: shown() });
    }
    if md.uid() != 0 {
        return Err(TargetError::NotRoot {
            path: shown(),
            uid: md.uid(),
        });
    }
    if md.mode() & 0o022 != 0 {
        return Err(TargetError::Writable {
            path: shown(),
            mode: md.mode() & 0o7777,
        });
    }
    for dir in real.ancestors().skip(1) {
        let d = std::fs::metadata(dir).map_err(|source| TargetError::Stat {
            path: dir.display().to_string(),
            source,
        })?;
        let sticky = d.mode() & libc::S_ISVTX != 0;
        if d.uid() != 0 || (d.mode() & 0o022 != 0 && !sticky) {
            return Err(TargetError::WritableDirectory {
                path: shown(),
                dir: dir.display().to_string(),
            });
        }
    }
    for b in bundles {
        let b = std::fs::canonicalize(b).unwrap_or_else(|_| b.clone());
        if real.starts_with(&b) {
            return Err(TargetError::InBundle {
                path: shown(),
                bundle: b.display().to_string(),
            });
        }
    }
    Ok(Target { file, path: real })
}

/// Runs upgrades for one serving shim. Shared by both APIs' daemons.
pub struct Upgrader {
    pub core: Engine,
    pub server: Control,
    pub events: Queue,
    pub spawner: Spawner,
    /// The personality's binary name (goes into the document).
    pub personality: &'static str,
    /// The daemon's stop flag: a shim shutting down is not upgraded.
    pub stop: watch::Receiver<bool>,
    running: AtomicBool,
}

/// "An upgrade is running", held for exactly as long as one is: the flag is lowered when this
/// guard goes, however the attempt ends (an answer, a panic, or its request task dropped).
struct Running<'a>(&'a AtomicBool);

impl<'a> Running<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Running<'a>> {
        (!flag.swap(true, Ordering::SeqCst)).then_some(Running(flag))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Resumes the server it holds when dropped (see [`Upgrader::upgrade`]'s attempt).
struct ResumeOnDrop<'a>(Option<&'a Control>);

impl Drop for ResumeOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(server) = self.0 {
            server.resume();
        }
    }
}

/// Alive from the point of no return to the `execve`, which never returns. Dropped only if
/// the upgrade task panicked or was cancelled in between: the server is handing over, the IO
/// and events are frozen, nothing can serve any more, so the shim ends loudly and containerd
/// cleans up after it (as after any dead shim).
struct PastNoReturn;

impl Drop for PastNoReturn {
    fn drop(&mut self) {
        tracing::error!("upgrade: interrupted past the point of no return; exiting");
        std::process::exit(2);
    }
}

impl Upgrader {
    pub fn new(
        core: Engine,
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
        let Some(_running) = Running::take(&self.running) else {
            return Refused::InProgress;
        };
        self.attempt(binary, quiesce).await
    }

    async fn attempt(&self, binary: &str, quiesce: Duration) -> Refused {
        let asked = if binary.is_empty() {
            match default_target() {
                Some(p) => p,
                None => return Refused::NoInstalledBinary,
            }
        } else {
            PathBuf::from(binary)
        };
        let bundles: Vec<PathBuf> = self
            .core
            .container_ids()
            .iter()
            .filter_map(|id| {
                self.core
                    .state(id, &crate::engine::types::ProcessRef::Init)
                    .ok()
            })
            .map(|st| st.bundle)
            .collect();
        let target = match open_target(&asked, &bundles) {
            Ok(t) => t,
            Err(e) => return e.into(),
        };
        let version = match self.preflight(&target).await {
            Ok(v) => v,
            Err(e) => return e.into(),
        };
        // No early `can_hand_over` here: a create or start running now finishes while the
        // server quiesces, so only the check after quiescing tells.
        // The old binary, open now: the file may be replaced on disk at any moment.
        let old_binary = match std::fs::File::open("/proc/self/exe") {
            Ok(f) => OwnedFd::from(f),
            Err(e) => return Refused::OwnBinary(e),
        };
        let old_path = std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        tracing::info!(target = %target.path.display(), version = %version, "upgrade: quiescing");
        let quiesced_at_ns = monotonic_ns();
        // Serving again however this attempt ends before the point of no return (a refusal,
        // a panic, the request task dropped): a server left quiesced would answer nobody.
        let mut quiesced = ResumeOnDrop(Some(&self.server));
        if let Err(e) = self.server.quiesce(quiesce).await {
            return Refused::Busy(e);
        }
        if *self.stop.borrow() {
            self.server.resume();
            return Refused::ShuttingDown;
        }
        if let Err(e) = self.core.can_hand_over() {
            self.server.resume();
            return Refused::NotQuiet(e);
        }
        let mut queue = match tokio::time::timeout(quiesce, self.events.freeze()).await {
            Ok(Some(q)) => q,
            Ok(None) => {
                self.server.resume();
                return Refused::EventsClosed;
            }
            Err(_) => {
                self.server.resume();
                return Refused::EventsStuck {
                    ms: quiesce.as_millis(),
                };
            }
        };
        // The point of no return: from here on the only ways out are the new image or the
        // old binary executed afresh (or, should this task die half-way, the shim's end).
        quiesced.0 = None;
        let _past = PastNoReturn;
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
            target: target.path.display().to_string(),
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
        let why = match exec_with(&doc, Image::Fd(target.file.as_raw_fd())) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        tracing::error!(error = %why, "upgrade: the new binary could not be started");
        doc.rollback = Some(format!("start {}: {why}", target.path.display()));
        let why = match exec_with(&doc, Image::Fd(old_binary.as_raw_fd())) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        // Nothing left to run this shim's state: its containers carry on without a shim.
        tracing::error!(error = %why, "upgrade: cannot re-execute the previous binary; exiting");
        std::process::exit(1);
    }

    /// Ask the target which formats it adopts; its version for the log. The open file is what
    /// runs (through `/proc/self/fd`, i.e. `fexecve`), never its path again.
    async fn preflight(&self, target: &Target) -> Result<String, PreflightError> {
        use std::os::unix::process::CommandExt;
        let fd = target.file.as_raw_fd();
        let mut cmd = std::process::Command::new(format!("/proc/self/fd/{fd}"));
        cmd.arg0("shimgate").arg(FORMATS_COMMAND);
        // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and touches
        // only the child's copy of the descriptor (open: the parent holds it). Clearing
        // close-on-exec lets an interpreter (`#!`) reopen the file through the same path.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let shown = || target.path.display().to_string();
        let out = self
            .spawner
            .output(cmd, None, Some(PREFLIGHT_DEADLINE), 64 << 10)
            .await
            .map_err(|source| PreflightError::Run {
                path: shown(),
                source,
            })?;
        if out.timed_out {
            return Err(PreflightError::NoAnswer { path: shown() });
        }
        let answer: FormatsAnswer =
            serde_json::from_slice(&out.stdout).map_err(|_| PreflightError::NotShimgate {
                path: shown(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })?;
        if !answer.formats.contains(&FORMAT) {
            return Err(PreflightError::Formats {
                path: shown(),
                version: answer.version,
                formats: answer.formats,
            });
        }
        Ok(answer.version)
    }
}

#[cfg(test)]
mod tests;
