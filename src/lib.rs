//! shimgate: one containerd shim binary with three wire personalities (shim v1, runc.v1,
//! runc.v2) over one runc-driving core. `main.rs` only picks the personality from argv[0] and
//! calls [`run`]; everything else lives in the modules below (see README's architecture
//! section).
//!
//! This is the top of the workspace: the APIs, the operator tool and startup. The wire types
//! come from the shimgate-protos crate and the wire-free engine, stdio and reaper from
//! shimgate-engine; both are re-exported below under the module names they had when they lived
//! here, so `crate::engine::...` and `shimgate::protos::...` paths keep working.

pub mod admin;
pub mod api;
pub mod cli;
pub mod compat;
pub mod events;
/// Fuzz target bodies, shared by `fuzz/` and `tests/fuzz_corpus.rs`; not an API, and only in
/// builds with the `fuzz` feature (never in the binary operators run).
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
pub mod logging;
pub mod search_path;
pub mod startup;

pub use shimgate_engine::{engine, io, reaper, supervise};
pub use shimgate_protos as protos;
// Only the poison-tolerant `lock`, for the modules here; not part of shimgate's API.
use shimgate_engine::sync;

use std::ffi::OsString;

use cli::Personality;

/// This build's version.
pub const VERSION: &str = env!("SHIMGATE_VERSION");
/// The source revision, when the build knew it.
pub const REVISION: &str = match option_env!("SHIMGATE_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Embedded in every build so `shimgate doctor` and `shimgate install` can tell a shimgate
/// executable (and its version) from a Go shim by reading the file, without running it.
/// The operator tool's file inspection (`admin::inspect`) uses it at run time, which keeps it
/// in every build.
pub const BINARY_MARKER: &str = concat!("shimgate-binary-marker/", env!("SHIMGATE_VERSION"), "/");

/// The `-v` text, in the layout the Go shims print (containerd does not parse it).
pub fn version_block(argv0: &str) -> String {
    format!("{argv0}:\n  Version:  {VERSION}\n  Revision: {REVISION}\n  Implementation: shimgate (Rust)\n\n")
}

/// Run the personality `argv[0]` names; returns the process exit code.
pub fn run(argv: Vec<OsString>) -> i32 {
    let mut it = argv.into_iter();
    let argv0 = it.next().unwrap_or_default();
    // Non-UTF-8 arguments cannot be containerd's; treat them lossily so flag errors show them.
    let args: Vec<String> = it.map(|a| a.to_string_lossy().into_owned()).collect();
    match Personality::from_argv0(&argv0) {
        Some(Personality::RuncV2) => api::v2::main(&api::v2::RUNC_V2, argv0, args),
        Some(Personality::RuncV1) => api::v2::main(&api::v2::RUNC_V1, argv0, args),
        Some(Personality::ShimV1) => api::v1::main(argv0, args),
        Some(Personality::Admin) => admin::main(args),
        None => {
            eprintln!(
                "shimgate: unknown program name {:?}; install as containerd-shim, containerd-shim-runc-v1, containerd-shim-runc-v2 or shimgate",
                argv0.to_string_lossy()
            );
            2
        }
    }
}
