//! Generated protobuf messages and ttrpc services for every wire contract shimgate speaks.
//!
//! shimgate-protos, the bottom layer: it depends on nothing of shimgate's, and only the APIs
//! (the root package, which re-exports this crate as `shimgate::protos`) use it; the engine
//! crate must never. The schemas live in this crate's `protos/*.proto` (our own files; package,
//! message, field and service names match containerd's exactly because they are the wire
//! contract). `build.rs` turns each
//! `protos/<name>.proto` into the module `<name>` (messages) and, if it declares a service,
//! `<name>_ttrpc` (async client, server trait with a default for every method, and the
//! `create_<service>` registration function).
//!
//! | module | protobuf package | contents |
//! |---|---|---|
//! | [`mount`] | `containerd.types` | `Mount` |
//! | [`task_types`] | `containerd.v1.types` | `Status`, `ProcessInfo`, `Process` |
//! | [`introspection`] | `containerd.types` | `RuntimeInfo`, `RuntimeVersion` (`-info`, containerd 2.x) |
//! | [`task`], [`task_ttrpc`] | `containerd.task.v2` | service `Task` and its messages |
//! | [`events`] | `containerd.events` | `TaskCreate`, `TaskExit`, ... |
//! | [`ttrpc_events`], [`ttrpc_events_ttrpc`] | `containerd.services.events.ttrpc.v1` | service `Events` (`Forward`), `Envelope` |
//! | [`runc_options`] | `containerd.runc.v1` | `Options`, `CheckpointOptions`, `ProcessDetails` |
//! | [`cgroups_v1`], [`cgroups_v2`] | `io.containerd.cgroups.v1` / `.v2` | `Metrics` for `Stats` |
//! | [`shim_v1`], [`shim_v1_ttrpc`] | `containerd.runtime.linux.shim.v1` | service `Shim` (legacy v1 API) |
//! | [`runc_linux`] | `containerd.linux.runc` | `RuncOptions`, `CreateOptions`, `CheckpointOptions`, `ProcessDetails` |
//! | [`bootstrap`] | `containerd.runtime.bootstrap.v1` | `BootstrapParams`, `BootstrapResult` (containerd 2.3+) |
//!
//! `google.protobuf.{Any, Empty, Timestamp}` are the `protobuf` crate's well-known types
//! (re-exported here); `google.rpc.Status` comes from the `ttrpc` crate.
//!
//! **Type URL rule.** Every `Any` we *send* carries the bare full message name as its type URL
//! (`containerd.events.TaskExit`), never `type.googleapis.com/containerd.events.TaskExit`:
//! containerd 1.6 looks URLs up by exact string and rejects the prefixed form. Build outgoing
//! `Any`s with [`any_bare`], not `Any::pack`. When *reading* an `Any`, accept both forms with
//! [`type_url_is`].

use std::collections::HashMap;
use std::sync::Arc;

pub use protobuf::well_known_types::{any::Any, empty::Empty, timestamp::Timestamp};

pub mod time;

/// Everything `build.rs` generated, as sibling modules (the generated code refers to other
/// files as `super::<module>`). Lints are silenced here and only here.
#[allow(
    missing_docs,
    unreachable_pub,
    unused_imports,
    unused_qualifications,
    unused_results,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::cargo,
    rustdoc::all
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

pub use generated::{
    admin, admin_ttrpc, bootstrap, cgroups_v1, cgroups_v2, events, introspection, mount,
    runc_linux, runc_options, shim_v1, shim_v1_ttrpc, task, task_ttrpc, task_types, ttrpc_events,
    ttrpc_events_ttrpc,
};

/// ttrpc service name of the shim v2 task API.
pub const TASK_V2_SERVICE: &str = "containerd.task.v2.Task";
/// ttrpc service name containerd 2.x may use for the same task API (identical messages).
pub const TASK_V3_SERVICE: &str = "containerd.task.v3.Task";
/// ttrpc service name of the legacy v1 shim API.
pub const SHIM_V1_SERVICE: &str = "containerd.runtime.linux.shim.v1.Shim";
/// ttrpc service name of shimgate's own control service (live upgrade, info).
pub const ADMIN_SERVICE: &str = "shimgate.admin.v1.Admin";
/// ttrpc service name of containerd's event intake (the shim is the client).
pub const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// A message that travels inside an `Any`, with its full protobuf name as a constant.
///
/// Why not `MessageFull::descriptor().full_name()`: rust-protobuf builds a message's
/// reflection descriptor on first use, for its whole `.proto` file and every import, and keeps
/// it for the life of the process: ~70 KiB of heap for the events file, ~30 KiB for the runc
/// options, and ~0.2 ms each, in every shim, only to learn a name that is fixed by the
/// protocol. The names are checked against the descriptors in the tests (`named_types_match_their_descriptors`).
pub trait Named: protobuf::Message {
    const FULL_NAME: &'static str;
}

macro_rules! named {
    ($($t:ty => $name:literal),* $(,)?) => {
        $(impl Named for $t {
            const FULL_NAME: &'static str = $name;
        })*
        /// Every [`Named`] type's constant beside its descriptor's name (for the tests).
        #[cfg(test)]
        fn named_types() -> Vec<(&'static str, String)> {
            use protobuf::MessageFull;
            vec![$((<$t as Named>::FULL_NAME, <$t>::descriptor().full_name().to_owned())),*]
        }
    };
}

named! {
    events::TaskCreate => "containerd.events.TaskCreate",
    events::TaskStart => "containerd.events.TaskStart",
    events::TaskDelete => "containerd.events.TaskDelete",
    events::TaskExit => "containerd.events.TaskExit",
    events::TaskOOM => "containerd.events.TaskOOM",
    events::TaskExecAdded => "containerd.events.TaskExecAdded",
    events::TaskExecStarted => "containerd.events.TaskExecStarted",
    events::TaskPaused => "containerd.events.TaskPaused",
    events::TaskResumed => "containerd.events.TaskResumed",
    runc_options::Options => "containerd.runc.v1.Options",
    runc_options::CheckpointOptions => "containerd.runc.v1.CheckpointOptions",
    runc_options::ProcessDetails => "containerd.runc.v1.ProcessDetails",
    runc_linux::RuncOptions => "containerd.linux.runc.RuncOptions",
    runc_linux::CreateOptions => "containerd.linux.runc.CreateOptions",
    runc_linux::CheckpointOptions => "containerd.linux.runc.CheckpointOptions",
    runc_linux::ProcessDetails => "containerd.linux.runc.ProcessDetails",
    cgroups_v1::Metrics => "io.containerd.cgroups.v1.Metrics",
    cgroups_v2::Metrics => "io.containerd.cgroups.v2.Metrics",
}

/// Packs `msg` into an `Any` whose type URL is the bare full message name
/// (e.g. `containerd.events.TaskExit`), as containerd expects from a shim.
pub fn any_bare<M: Named>(msg: &M) -> protobuf::Result<Any> {
    Ok(Any {
        type_url: M::FULL_NAME.to_owned(),
        value: msg.write_to_bytes()?,
        ..Any::default()
    })
}

/// Whether an incoming `Any` type URL names the message `full_name`, in either the bare form
/// (`containerd.runc.v1.Options`) or any prefixed form (`type.googleapis.com/containerd.runc.v1.Options`).
pub fn type_url_is(any_url: &str, full_name: &str) -> bool {
    if full_name.is_empty() {
        return false;
    }
    match any_url.strip_suffix(full_name) {
        Some("") => true,
        Some(prefix) => prefix.ends_with('/'),
        None => false,
    }
}

/// Registration map serving one `Task` implementation under both [`TASK_V2_SERVICE`] and
/// [`TASK_V3_SERVICE`]. The two APIs differ only in the package name, so the same handlers
/// decode both.
pub fn create_task_v2_and_v3(
    service: Arc<dyn task_ttrpc::Task + Send + Sync>,
) -> HashMap<String, ttrpc::r#async::Service> {
    let mut services = task_ttrpc::create_task(service.clone());
    if let Some(v3) = task_ttrpc::create_task(service).remove(TASK_V2_SERVICE) {
        services.insert(TASK_V3_SERVICE.to_owned(), v3);
    }
    services
}

#[cfg(test)]
mod tests;
