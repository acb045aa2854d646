//! The shim v2 task API personalities (`containerd-shim-runc-v1`, `containerd-shim-runc-v2`):
//! the `start` and `delete` actions containerd runs, the serving daemon, and `-v`/`-info`.
//! The two personalities differ only in the [`Flavor`] data below.

pub mod bootstrap;
mod daemon;
mod delete;
pub mod service;
mod start;

use std::ffi::OsString;
use std::io::Write;

use crate::cli::{Mode, Personality, ShimV2Args};
use crate::engine::event::EventKind;
use crate::engine::ops::Addressing;
use crate::engine::{ApiProfile, Kind, ShutdownPolicy};

/// How one v2 personality behaves.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    pub personality: Personality,
    pub runtime_name: &'static str,
    /// Group containers per shim by annotation, and join a live group shim at `start`.
    pub groups: bool,
    /// `start` writes `shim.pid` in the bundle (runc.v1 does, runc.v2 does not).
    pub writes_shim_pid: bool,
    pub shutdown: ShutdownPolicy,
}

pub const RUNC_V1: Flavor = Flavor {
    personality: Personality::RuncV1,
    runtime_name: "io.containerd.runc.v1",
    groups: false,
    writes_shim_pid: true,
    shutdown: ShutdownPolicy::Always,
};

pub const RUNC_V2: Flavor = Flavor {
    personality: Personality::RuncV2,
    runtime_name: "io.containerd.runc.v2",
    groups: true,
    writes_shim_pid: false,
    shutdown: ShutdownPolicy::WhenEmpty,
};

/// Every task event: a v2 shim publishes them all itself.
const V2_EVENTS: &[EventKind] = &[
    EventKind::Create,
    EventKind::Start,
    EventKind::ExecAdded,
    EventKind::ExecStarted,
    EventKind::Exit,
    EventKind::Delete,
    EventKind::Paused,
    EventKind::Resumed,
    EventKind::Oom,
];

impl Flavor {
    pub fn profile(&self) -> ApiProfile {
        ApiProfile {
            runtime_name: self.runtime_name,
            publishes: V2_EVENTS,
            shutdown: self.shutdown,
            missing_container: (Kind::NotFound, "container not created"),
            missing_process: (Kind::NotFound, "process does not exist {id}"),
            addressing: Addressing::PerRequest,
            bundle_dir: Some("io.containerd.runtime.v2.task"),
        }
    }
}

/// Print a fatal error the way the Go shims do (`<runtime>: <error>`, no newline) and return
/// the exit code.
fn fail(flavor: &Flavor, msg: &str, code: i32) -> i32 {
    let mut e = std::io::stderr();
    let _ = write!(e, "{}: {msg}", flavor.runtime_name);
    let _ = e.flush();
    code
}

/// Entry point for both v2 personalities. `args` excludes argv[0].
pub fn main(flavor: &Flavor, argv0: OsString, args: Vec<String>) -> i32 {
    let parsed = match ShimV2Args::parse(&args) {
        Ok(a) => a,
        Err(e) => return crate::cli::report(flavor.personality, &e),
    };
    let mode = match parsed.mode() {
        Ok(m) => m,
        Err(e) => return fail(flavor, &e.to_string(), e.exit_code()),
    };
    match mode {
        Mode::Version => {
            print!("{}", crate::version_block(&argv0.to_string_lossy()));
            0
        }
        Mode::Info => match start::info(flavor) {
            Ok(bytes) => {
                let _ = std::io::stdout().write_all(&bytes);
                0
            }
            Err(e) => fail(flavor, &e.to_string(), 1),
        },
        Mode::Start => match start::start(flavor, &argv0, &parsed) {
            Ok(reply) => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&reply);
                let _ = out.flush();
                0
            }
            Err(e) => fail(flavor, &e.to_string(), 1),
        },
        Mode::Delete => match delete::delete(&parsed) {
            Ok(bytes) => {
                let mut out = std::io::stdout();
                let _ = out.write_all(&bytes);
                let _ = out.flush();
                0
            }
            Err(e) => fail(flavor, &e.to_string(), 1),
        },
        Mode::Daemon => match daemon::run(flavor, &parsed) {
            Ok(()) => 0,
            Err(e) => fail(flavor, &e.to_string(), 1),
        },
    }
}

#[cfg(test)]
fn _args_type_check(a: &ShimV2Args) -> &str {
    &a.namespace
}
