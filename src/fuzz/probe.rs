//! Probe implementations of both generated service traits, for the request fuzz targets.
//!
//! A real adapter hands every decoded request to a [`crate::engine::Engine`], which touches the
//! filesystem (a fuzzed Create would read `<bundle>/config.json` and write `options.json` into
//! whatever directory the input names). The probes stop where the core would begin: each
//! method performs the adapter's translation of its request into core values (the same
//! `api::convert` and `api::v1::options` functions the adapters call, field for field as
//! `api::v2::service` and `api::v1::service` do) plus the pure stdio parsing the core does
//! first, and answers OK with an empty reply, or the clean error the translation produced.
//! What stays untested here (process-name resolution against a live container, the core's
//! own checks) needs a core with containers and is covered by the wire tests.
//!
//! The generated code in front of the probes is the real one: [`services`] registers them
//! with the same `create_*` functions the daemons use, so the fuzzers exercise the generated
//! payload decoding of every method.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use ttrpc::r#async::{Service, TtrpcContext};

use crate::api::convert;
use crate::api::status::to_ttrpc;
use crate::api::v1::options::{self as v1_options, Settings};
use crate::engine::types::{ExecSpec, ProcessRef, StdioRequest};
use crate::engine::Error;
use crate::io::spec::StdioSpec;
use crate::protos::{shim_v1, shim_v1_ttrpc, task, task_ttrpc, Empty};

type R<T> = ttrpc::Result<T>;

/// Every (service, method) the probe services answer, in a fixed order: the request target's
/// selector byte indexes this table, so its order is part of the seed corpus format (append,
/// never reorder). A test checks it against what the generated code registers.
pub const METHODS: &[(&str, &str)] = &[
    ("containerd.task.v2.Task", "State"),
    ("containerd.task.v2.Task", "Create"),
    ("containerd.task.v2.Task", "Start"),
    ("containerd.task.v2.Task", "Delete"),
    ("containerd.task.v2.Task", "Pids"),
    ("containerd.task.v2.Task", "Pause"),
    ("containerd.task.v2.Task", "Resume"),
    ("containerd.task.v2.Task", "Checkpoint"),
    ("containerd.task.v2.Task", "Kill"),
    ("containerd.task.v2.Task", "Exec"),
    ("containerd.task.v2.Task", "ResizePty"),
    ("containerd.task.v2.Task", "CloseIO"),
    ("containerd.task.v2.Task", "Update"),
    ("containerd.task.v2.Task", "Wait"),
    ("containerd.task.v2.Task", "Stats"),
    ("containerd.task.v2.Task", "Connect"),
    ("containerd.task.v2.Task", "Shutdown"),
    ("containerd.runtime.linux.shim.v1.Shim", "State"),
    ("containerd.runtime.linux.shim.v1.Shim", "Create"),
    ("containerd.runtime.linux.shim.v1.Shim", "Start"),
    ("containerd.runtime.linux.shim.v1.Shim", "Delete"),
    ("containerd.runtime.linux.shim.v1.Shim", "DeleteProcess"),
    ("containerd.runtime.linux.shim.v1.Shim", "ListPids"),
    ("containerd.runtime.linux.shim.v1.Shim", "Pause"),
    ("containerd.runtime.linux.shim.v1.Shim", "Resume"),
    ("containerd.runtime.linux.shim.v1.Shim", "Checkpoint"),
    ("containerd.runtime.linux.shim.v1.Shim", "Kill"),
    ("containerd.runtime.linux.shim.v1.Shim", "Exec"),
    ("containerd.runtime.linux.shim.v1.Shim", "ResizePty"),
    ("containerd.runtime.linux.shim.v1.Shim", "CloseIO"),
    ("containerd.runtime.linux.shim.v1.Shim", "ShimInfo"),
    ("containerd.runtime.linux.shim.v1.Shim", "Update"),
    ("containerd.runtime.linux.shim.v1.Shim", "Wait"),
    ("containerd.task.v3.Task", "State"),
    ("containerd.task.v3.Task", "Create"),
    ("containerd.task.v3.Task", "Start"),
    ("containerd.task.v3.Task", "Delete"),
    ("containerd.task.v3.Task", "Pids"),
    ("containerd.task.v3.Task", "Pause"),
    ("containerd.task.v3.Task", "Resume"),
    ("containerd.task.v3.Task", "Checkpoint"),
    ("containerd.task.v3.Task", "Kill"),
    ("containerd.task.v3.Task", "Exec"),
    ("containerd.task.v3.Task", "ResizePty"),
    ("containerd.task.v3.Task", "CloseIO"),
    ("containerd.task.v3.Task", "Update"),
    ("containerd.task.v3.Task", "Wait"),
    ("containerd.task.v3.Task", "Stats"),
    ("containerd.task.v3.Task", "Connect"),
    ("containerd.task.v3.Task", "Shutdown"),
];

/// The probe services registered as the daemons register the real ones: the task API under
/// v2 and v3, the legacy shim API under its name. One map holds all three, which no daemon
/// does, so a single target reaches every method.
pub fn services() -> HashMap<String, Service> {
    let mut map = crate::protos::create_task_v2_and_v3(Arc::new(TaskProbe));
    map.extend(shim_v1_ttrpc::create_shim(Arc::new(ShimProbe)));
    map
}

/// Stdio strings are parsed by the core before anything is opened; a request that passes the
/// adapter must either parse or be refused cleanly.
fn stdio_check(s: &StdioRequest) -> R<()> {
    StdioSpec::parse(&s.stdin, &s.stdout, &s.stderr)
        .map(|_| ())
        .map_err(|e| to_ttrpc(Error::invalid_argument(e.to_string())))
}

/// `api::v2::service::ids`: container id and process reference of a task API request.
fn ids(id: &str, exec_id: &str) -> R<(crate::engine::types::ContainerId, ProcessRef)> {
    let c = convert::container_id(id).map_err(to_ttrpc)?;
    let p = convert::process_ref(exec_id).map_err(to_ttrpc)?;
    Ok((c, p))
}

fn container(id: &str) -> R<()> {
    convert::container_id(id).map(|_| ()).map_err(to_ttrpc)
}

/// The task API probe (`containerd.task.v2.Task` and `.v3`).
struct TaskProbe;

#[async_trait]
impl task_ttrpc::Task for TaskProbe {
    async fn state(&self, _: &TtrpcContext, r: task::StateRequest) -> R<task::StateResponse> {
        ids(&r.id, &r.exec_id)?;
        Ok(Default::default())
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        r: task::CreateTaskRequest,
    ) -> R<task::CreateTaskResponse> {
        let options = convert::create_options(r.options.as_ref()).map_err(to_ttrpc)?;
        let spec = convert::create_spec!(r, options, None, None).map_err(to_ttrpc)?;
        // The core persists the options as options.json: they must always encode.
        assert!(serde_json::to_vec(&spec.options).is_ok());
        assert_eq!(spec.rootfs.len(), r.rootfs.len());
        stdio_check(&spec.stdio)?;
        Ok(Default::default())
    }

    async fn start(&self, _: &TtrpcContext, r: task::StartRequest) -> R<task::StartResponse> {
        ids(&r.id, &r.exec_id)?;
        Ok(Default::default())
    }

    async fn delete(&self, _: &TtrpcContext, r: task::DeleteRequest) -> R<task::DeleteResponse> {
        ids(&r.id, &r.exec_id)?;
        Ok(Default::default())
    }

    async fn pids(&self, _: &TtrpcContext, r: task::PidsRequest) -> R<task::PidsResponse> {
        container(&r.id)?;
        Ok(Default::default())
    }

    async fn pause(&self, _: &TtrpcContext, r: task::PauseRequest) -> R<Empty> {
        container(&r.id)?;
        Ok(Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, r: task::ResumeRequest) -> R<Empty> {
        container(&r.id)?;
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _: &TtrpcContext, r: task::CheckpointTaskRequest) -> R<Empty> {
        container(&r.id)?;
        convert::checkpoint_spec(&r.path, r.options.as_ref()).map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, r: task::KillRequest) -> R<Empty> {
        ids(&r.id, &r.exec_id)?;
        Ok(Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, r: task::ExecProcessRequest) -> R<Empty> {
        let (id, p) = ids(&r.id, &r.exec_id)?;
        let ProcessRef::Exec(exec_id) = p else {
            return Err(to_ttrpc(Error::invalid_argument(
                "exec id must not be empty",
            )));
        };
        let spec = ExecSpec {
            id,
            exec_id,
            stdio: convert::stdio(&r.stdin, &r.stdout, &r.stderr, r.terminal),
            process: convert::json_payload(r.spec.as_ref(), b""),
        };
        stdio_check(&spec.stdio)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, r: task::ResizePtyRequest) -> R<Empty> {
        ids(&r.id, &r.exec_id)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, r: task::CloseIORequest) -> R<Empty> {
        ids(&r.id, &r.exec_id)?;
        Ok(Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, r: task::UpdateTaskRequest) -> R<Empty> {
        container(&r.id)?;
        let _resources = convert::json_payload(r.resources.as_ref(), b"{}");
        Ok(Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, r: task::WaitRequest) -> R<task::WaitResponse> {
        ids(&r.id, &r.exec_id)?;
        Ok(Default::default())
    }

    async fn stats(&self, _: &TtrpcContext, r: task::StatsRequest) -> R<task::StatsResponse> {
        container(&r.id)?;
        Ok(Default::default())
    }

    async fn connect(&self, _: &TtrpcContext, r: task::ConnectRequest) -> R<task::ConnectResponse> {
        // The adapter never fails Connect: a malformed id just has no task pid.
        let _ = convert::container_id(&r.id);
        Ok(Default::default())
    }

    async fn shutdown(&self, _: &TtrpcContext, _r: task::ShutdownRequest) -> R<Empty> {
        Ok(Empty::new())
    }
}

/// The legacy shim API probe (`containerd.runtime.linux.shim.v1.Shim`). Most of its requests
/// carry only a process name, which the core resolves; the translation worth probing is in
/// Create, Checkpoint, Exec and ResizePty.
struct ShimProbe;

#[async_trait]
impl shim_v1_ttrpc::Shim for ShimProbe {
    async fn state(
        &self,
        _: &TtrpcContext,
        _r: shim_v1::StateRequest,
    ) -> R<shim_v1::StateResponse> {
        Ok(Default::default())
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        r: shim_v1::CreateTaskRequest,
    ) -> R<shim_v1::CreateTaskResponse> {
        let settings = Settings::default();
        let opts = v1_options::create_options(&r.runtime, r.options.as_ref(), &settings)
            .map_err(to_ttrpc)?;
        let spec =
            convert::create_spec!(r, opts, settings.work_dir.clone(), None).map_err(to_ttrpc)?;
        assert!(serde_json::to_vec(&spec.options).is_ok());
        assert_eq!(spec.options.binary_name, r.runtime);
        stdio_check(&spec.stdio)?;
        Ok(Default::default())
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        _r: shim_v1::StartRequest,
    ) -> R<shim_v1::StartResponse> {
        Ok(Default::default())
    }

    async fn delete(&self, _: &TtrpcContext, _r: Empty) -> R<shim_v1::DeleteResponse> {
        Ok(Default::default())
    }

    async fn delete_process(
        &self,
        _: &TtrpcContext,
        _r: shim_v1::DeleteProcessRequest,
    ) -> R<shim_v1::DeleteResponse> {
        Ok(Default::default())
    }

    async fn list_pids(
        &self,
        _: &TtrpcContext,
        _r: shim_v1::ListPidsRequest,
    ) -> R<shim_v1::ListPidsResponse> {
        Ok(Default::default())
    }

    async fn pause(&self, _: &TtrpcContext, _r: Empty) -> R<Empty> {
        Ok(Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, _r: Empty) -> R<Empty> {
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _: &TtrpcContext, r: shim_v1::CheckpointTaskRequest) -> R<Empty> {
        v1_options::checkpoint_spec(&r.path, r.options.as_ref()).map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn kill(&self, _: &TtrpcContext, _r: shim_v1::KillRequest) -> R<Empty> {
        Ok(Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, r: shim_v1::ExecProcessRequest) -> R<Empty> {
        let stdio = convert::stdio(&r.stdin, &r.stdout, &r.stderr, r.terminal);
        let _process = convert::json_payload(r.spec.as_ref(), b"");
        stdio_check(&stdio)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, r: shim_v1::ResizePtyRequest) -> R<Empty> {
        if r.id.is_empty() {
            return Err(to_ttrpc(Error::invalid_argument("id not provided")));
        }
        Ok(Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, _r: shim_v1::CloseIORequest) -> R<Empty> {
        Ok(Empty::new())
    }

    async fn shim_info(&self, _: &TtrpcContext, _r: Empty) -> R<shim_v1::ShimInfoResponse> {
        Ok(Default::default())
    }

    async fn update(&self, _: &TtrpcContext, r: shim_v1::UpdateTaskRequest) -> R<Empty> {
        let _resources = convert::json_payload(r.resources.as_ref(), b"{}");
        Ok(Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, _r: shim_v1::WaitRequest) -> R<shim_v1::WaitResponse> {
        Ok(Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selector table lists exactly what the generated code registers: a method added to a
    /// proto must be added here (at the end) to be fuzzed.
    #[test]
    fn methods_table_matches_generated_services() {
        let mut registered: Vec<(String, String)> = services()
            .iter()
            .flat_map(|(s, svc)| svc.methods.keys().map(move |m| (s.clone(), m.clone())))
            .collect();
        registered.sort();
        let mut table: Vec<(String, String)> = METHODS
            .iter()
            .map(|(s, m)| (s.to_string(), m.to_string()))
            .collect();
        table.sort();
        assert_eq!(table, registered);
    }
}
