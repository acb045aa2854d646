//! shimgate: one containerd shim binary with three wire personalities (shim v1, runc.v1,
//! runc.v2) over one runc-driving core. `main.rs` only picks the personality from argv[0] and
//! calls [`run`]; everything else lives in the modules below (see README's architecture
//! section).

pub mod admin;
pub mod api;
pub mod cli;
pub mod compat;
pub mod engine;
pub mod events;
/// Fuzz target bodies, shared by `fuzz/` and `tests/fuzz_corpus.rs`; not an API, and only in
/// builds with the `fuzz` feature (never in the binary operators run).
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
pub mod io;
pub mod logging;
pub mod protos;
pub mod reaper;
pub mod search_path;
pub mod startup;
pub mod supervise;
mod sync;

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
