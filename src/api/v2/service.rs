//! `containerd.task.v2.Task` (also served as `containerd.task.v3.Task`) on the core. Every
//! method decodes into core types, makes one core call and encodes the answer; nothing else.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;
use ttrpc::r#async::TtrpcContext;

use crate::api::convert;
use crate::api::metrics;
use crate::api::status::to_ttrpc;
use crate::engine::types::{ExecSpec, ProcessRef};
use crate::engine::Engine;
use crate::protos::task::*;
use crate::protos::task_ttrpc::Task;
use crate::protos::Empty;

pub struct TaskService {
    core: Engine,
    /// Set to true to stop serving (Shutdown when the shim may exit).
    stop: watch::Sender<bool>,
}

impl TaskService {
    pub fn new(core: Engine, stop: watch::Sender<bool>) -> Arc<Self> {
        Arc::new(TaskService { core, stop })
    }
}

type R<T> = ttrpc::Result<T>;

fn ids(id: &str, exec_id: &str) -> R<(crate::engine::types::ContainerId, ProcessRef)> {
    let c = convert::container_id(id).map_err(to_ttrpc)?;
    let p = convert::process_ref(exec_id).map_err(to_ttrpc)?;
    Ok((c, p))
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> R<StateResponse> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        let s = self.core.state(&id, &p).map_err(to_ttrpc)?;
        Ok(convert::state_response!(StateResponse, s))
    }

    async fn create(&self, ctx: &TtrpcContext, req: CreateTaskRequest) -> R<CreateTaskResponse> {
        let options = convert::create_options(req.options.as_ref()).map_err(to_ttrpc)?;
        // The task API's bundle has a `work` directory for CRIU: the core's default.
        let spec =
            convert::create_spec!(req, options, None, convert::deadline(ctx)).map_err(to_ttrpc)?;
        let pid = self.core.create(spec).await.map_err(to_ttrpc)?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> R<StartResponse> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        let pid = self.core.start(&id, &p).await.map_err(to_ttrpc)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> R<DeleteResponse> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        let d = self.core.delete(&id, &p).await.map_err(to_ttrpc)?;
        Ok(convert::delete_response!(DeleteResponse, d))
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> R<PidsResponse> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        let pids = self.core.pids(&id).await.map_err(to_ttrpc)?;
        Ok(PidsResponse {
            processes: convert::process_infos(pids, convert::runc_v1_details),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> R<Empty> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        self.core.pause(&id).await.map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> R<Empty> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        self.core.resume(&id).await.map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> R<Empty> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        let spec = convert::checkpoint_spec(&req.path, req.options.as_ref()).map_err(to_ttrpc)?;
        self.core.checkpoint(&id, spec).await.map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> R<Empty> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        self.core
            .kill(&id, &p, req.signal, req.all)
            .await
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> R<Empty> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        let ProcessRef::Exec(exec_id) = p else {
            return Err(to_ttrpc(crate::engine::Error::invalid_argument(
                "exec id must not be empty",
            )));
        };
        let spec = ExecSpec {
            id,
            exec_id,
            stdio: convert::stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal),
            process: convert::json_payload(req.spec.as_ref(), b""),
        };
        self.core.exec(spec).await.map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> R<Empty> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        self.core
            .resize_pty(&id, &p, req.width, req.height)
            .await
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> R<Empty> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        self.core
            .close_io(&id, &p, req.stdin)
            .await
            .map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> R<Empty> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        let resources = convert::json_payload(req.resources.as_ref(), b"{}");
        self.core.update(&id, &resources).await.map_err(to_ttrpc)?;
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> R<WaitResponse> {
        let (id, p) = ids(&req.id, &req.exec_id)?;
        let e = self.core.wait(&id, &p).await.map_err(to_ttrpc)?;
        Ok(convert::wait_response!(WaitResponse, e))
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> R<StatsResponse> {
        let id = convert::container_id(&req.id).map_err(to_ttrpc)?;
        let stats = self.core.stats(&id, metrics::read).map_err(to_ttrpc)?;
        Ok(StatsResponse {
            stats: Some(metrics::to_any(&stats).map_err(to_ttrpc)?).into(),
            ..Default::default()
        })
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> R<ConnectResponse> {
        // Never fails: an unknown or malformed id just has no task pid.
        let task_pid = convert::container_id(&req.id)
            .map(|id| self.core.connect(&id).1)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: self.core.shim_pid(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> R<Empty> {
        if self.core.should_shutdown() {
            tracing::info!("shutdown requested and no container left; exiting");
            let _ = self.stop.send(true);
        }
        Ok(Empty::new())
    }
}
