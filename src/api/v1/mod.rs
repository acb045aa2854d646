//! The legacy shim API personality (`containerd-shim`, runtime `io.containerd.runtime.v1.linux`
//! of containerd 1.x): containerd execs it directly (no `start`/`delete` actions), hands it the
//! listening socket on fd 3 and keeps it as its own child; the shim serves
//! `containerd.runtime.linux.shim.v1.Shim` for exactly one container until containerd SIGKILLs
//! it after `Delete` (or it gets SIGTERM/SIGINT). protocols.md section 5 has the contract.
//!
//! How this API differs from the task API is the [`profile`]: processes are named by one id
//! relative to the shim's only container, a call before `Create` is FAILED_PRECONDITION, and the
//! shim publishes only exits (containerd's v1 runtime publishes every other task event itself).

mod bootstrap;
mod daemon;
// Crate-visible for the request fuzzer's probe (`crate::fuzz::probe`).
pub(crate) mod options;
pub mod service;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::io::Write;

use crate::cli::{Personality, ShimV1Args};
use crate::engine::event::EventKind;
use crate::engine::{Addressing, ApiProfile, Kind, ShutdownPolicy};

pub use bootstrap::{listen_spec, ListenSpec};
pub use options::Settings;

/// containerd's name for the runtime this personality serves.
pub const RUNTIME_NAME: &str = crate::cli::LEGACY_RUNTIME;

/// How the legacy shim API differs from the task API, as data for the core.
pub fn profile() -> ApiProfile {
    ApiProfile {
        runtime_name: RUNTIME_NAME,
        // containerd's v1 runtime publishes create/start/exec-started/paused/resumed/delete/
        // checkpointed itself and reads OOMs from cgroups; a shim publishing them too would
        // duplicate them.
        publishes: &[EventKind::Exit],
        // There is no Shutdown RPC: containerd SIGKILLs the shim after Delete.
        shutdown: ShutdownPolicy::Always,
        missing_container: (Kind::FailedPrecondition, "container must be created"),
        missing_process: (Kind::NotFound, "process {id} does not exist"),
        addressing: Addressing::SoleContainer,
        // The runtime plugin keeps its bundles in a directory named after itself.
        bundle_dir: Some(RUNTIME_NAME),
    }
}

/// The `-v` text, laid out as containerd 1.7's `containerd-shim -v` prints it (the Go version
/// line says what we are instead).
pub fn version_text() -> String {
    format!(
        "containerd-shim\n  Version:  {}\n  Revision: {}\n  Go version: none (shimgate, Rust)\n\n",
        crate::VERSION,
        crate::REVISION
    )
}

/// Entry point of the `containerd-shim` personality. `args` excludes argv[0]. Returns the exit
/// code: 0 after serving, 2 for a command-line error (as Go's `flag`), 1 for any other failure
/// (printed as `containerd-shim: <error>`, the Go shim's form).
pub fn main(_argv0: OsString, args: Vec<String>) -> i32 {
    let parsed = match ShimV1Args::parse(&args) {
        Ok(a) => a,
        Err(e) => return crate::cli::report(Personality::ShimV1, &e),
    };
    if parsed.version {
        let mut out = std::io::stdout();
        let _ = out.write_all(version_text().as_bytes());
        let _ = out.flush();
        return 0;
    }
    match daemon::run(&parsed) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "shim failed");
            let _ = writeln!(std::io::stderr(), "containerd-shim: {e}");
            1
        }
    }
}
