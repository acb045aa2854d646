//! The live upgrade's failures, one type per stage (target check, preflight, adoption, exec)
//! and the outcomes an operator acts on differently: refused (nothing stopped), rolled back
//! (the old image serves on), lost (neither image could run the shim).

use std::os::fd::RawFd;

#[cfg(feature = "test-faults")]
use super::FAULT_ENV;
use super::{FORMAT, FORMATS, HANDOVER_ENV};

/// Why an upgrade did not happen, decided before the point of no return: nothing was handed
/// over and the old image serves on unchanged. The texts are what operators read after
/// "upgrade refused: " (tests look for parts of them).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("an upgrade is already in progress")]
    InProgress,
    #[error("cannot find the installed binary; name one")]
    NoInstalledBinary,
    /// The target may not become this shim (see [`TargetError`]).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The target did not answer with a format this image writes.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("open own binary: {0}")]
    OwnBinary(std::io::Error),
    #[error("requests did not finish: {0}")]
    Busy(crate::api::server::HandoverError),
    #[error("the shim is shutting down")]
    ShuttingDown,
    /// A create, start or restore is half-way (the engine says which).
    #[error(transparent)]
    NotQuiet(crate::engine::Error),
    #[error("the event queue is closed")]
    EventsClosed,
    #[error("an event could not be delivered to containerd within {ms} ms")]
    EventsStuck { ms: u128 },
}

/// How an `Upgrade` request ended when it did not end in the new image serving: the cases an
/// operator acts on differently. Only the first two are ever answered; the third is what the
/// client sees when no image answers at all.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Refused before anything stopped: the old image serves on, untouched.
    #[error("upgrade refused: {0}")]
    Refused(#[from] Refused),
    /// Past the point of no return the new binary could not be started or could not adopt
    /// the state; the old binary was executed again with the same state and serves on.
    #[error("upgrade to {target} failed, {version} serves on: {why}")]
    RolledBack {
        target: String,
        version: String,
        why: String,
    },
}

impl UpgradeError {
    /// The ttrpc code the `Admin.Upgrade` answer carries, so a client tells the cases apart
    /// without reading the text: a refusal is FAILED_PRECONDITION (pinned by tests/upgrade.rs),
    /// a rollback ABORTED (the attempt ran and was undone).
    pub fn code(&self) -> ttrpc::Code {
        match self {
            UpgradeError::Refused(_) => ttrpc::Code::FAILED_PRECONDITION,
            UpgradeError::RolledBack { .. } => ttrpc::Code::ABORTED,
        }
    }
}

/// Why a target may not become this shim (checked on the open file, see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("stat {path}: {source}")]
    Stat {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    #[error("{path} is not executable")]
    NotExecutable { path: String },
    #[error(
        "{path} is owned by uid {uid}, not root: a live upgrade only runs a binary that \
         nobody but root can have written"
    )]
    NotRoot { path: String, uid: u32 },
    #[error("{path} can be written by others than root (mode {mode:o})")]
    Writable { path: String, mode: u32 },
    #[error("{path}: directory {dir} can be written by others than root")]
    WritableDirectory { path: String, dir: String },
    #[error("{path} is inside the bundle {bundle} of a container this shim serves")]
    InBundle { path: String, bundle: String },
}

/// Why the target's answer to [`FORMATS_COMMAND`] rules it out.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("run {path}: {source}")]
    Run {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} did not answer")]
    NoAnswer { path: String },
    #[error("{path} cannot adopt a running shim (is it shimgate 0.2 or later?): {stderr}")]
    NotShimgate { path: String, stderr: String },
    #[error("{path} ({version}) adopts hand-over formats {formats:?}, this shim writes {FORMAT}")]
    Formats {
        path: String,
        version: String,
        formats: Vec<u32>,
    },
}

/// Why the new image cannot adopt a hand-over document (each is rolled back, see
/// [`Handover::roll_back`]), or why a document announced to it is unreadable.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("{HANDOVER_ENV}: not a descriptor number")]
    NotADescriptor,
    #[error("read hand-over document: {0}")]
    Read(std::io::Error),
    #[error("hand-over document: {0}")]
    Decode(serde_json::Error),
    #[error("hand-over format {0} is not one of {FORMATS:?}")]
    Format(u32),
    #[error("hand-over from {from} cannot be adopted as {personality}")]
    Personality { from: String, personality: String },
    #[error("hand-over: {owner} names descriptor {fd}")]
    Stdio { owner: String, fd: RawFd },
    #[error("hand-over: descriptor {fd} is named by {first} and by {owner}")]
    NamedTwice {
        fd: RawFd,
        first: String,
        owner: String,
    },
    #[error("hand-over descriptor {fd}: {source}")]
    NotOpen { fd: RawFd, source: std::io::Error },
    /// A process's IO named descriptors badly (checked by `io::IoSnap`, whose error is text).
    #[error("{0}")]
    ProcessIo(String),
    /// The server's part of the document (its sockets).
    #[error(transparent)]
    Server(#[from] crate::api::server::HandoverError),
    #[error("rebuild the shim's state: {0}")]
    Engine(crate::engine::Error),
    /// Injected by the tests' fault knob. Only in builds with `test-faults`: the knob's name
    /// must not appear in the binary operators run (tests/upgrade.rs looks for it).
    #[cfg(feature = "test-faults")]
    #[error("refused on purpose ({FAULT_ENV}={0})")]
    Injected(String),
}

/// Why executing a program with a hand-over document failed (the `execve` returned).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("encode hand-over: {0}")]
    Encode(serde_json::Error),
    #[error("memfd: {0}")]
    Memfd(nix::Error),
    #[error("write hand-over: {0}")]
    Write(std::io::Error),
    #[error("descriptor {fd}: {source}")]
    KeepOpen { fd: RawFd, source: std::io::Error },
    #[error("argument or environment holds a NUL byte")]
    Nul,
    #[error("program descriptor {fd}: {source}")]
    Program { fd: RawFd, source: std::io::Error },
    #[error("execve: {0}")]
    Exec(nix::Error),
}

/// The upgrade is lost: past the point of no return neither the new binary nor the old one
/// can run this shim's state. The caller exits; the containers live on without a shim, and
/// the operator's client sees its connection close without an answer.
#[derive(Debug, thiserror::Error)]
pub enum Lost {
    /// This image is already the rollback and could not adopt either.
    #[error("rollback failed too: {0}")]
    RollbackFailed(AdoptError),
    /// The old binary could not be executed again.
    #[error("cannot re-execute the previous binary: {0}")]
    Reexec(ExecError),
}
