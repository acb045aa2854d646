//! `containerd.runtime.linux.shim.v1.Shim` on the core. Every method decodes the request into
//! core types (process names are resolved by the core under the profile's sole-container
//! addressing), makes one core operation, and encodes the answer; nothing else.

use std::sync::Arc;

use async_trait::async_trait;
use ttrpc::r#async::TtrpcContext;

use super::options::{self, Settings};
use crate::api::convert;
use crate::api::status::to_ttrpc;
use crate::engine::types::{ContainerId, ExecSpec, ProcessRef};
use crate::engine::{Engine, Error, Kind, ProcessName};
use crate::protos::shim_v1::*;
use crate::protos::shim_v1_ttrpc::Shim;
use crate::protos::Empty;

pub struct ShimService {
    core: Engine,
    settings: Settings,
}

impl ShimService {
    pub fn new(core: Engine, settings: Settings) -> Arc<Self> {
        Arc::new(ShimService { core, settings })
    }

    /// Decode a process name of this API into the core's address for it.
    fn named(&self, name: ProcessName<'_>) -> R<(ContainerId, ProcessRef)> {
        self.core.resolve(name).map_err(to_ttrpc)
    }
}

type R<T> = ttrpc::Result<T>;

/// The API's id of a process: the container id for init.
fn api_id(container: &ContainerId, p: &ProcessRef) -> String {
    p.exec_id()
        .map_or_else(|| container.to_string(), |e| e.to_string())
}

fn empty() -> R<Empty> {
    Ok(Empty::new())
}

#[async_trait]
impl Shim for ShimService {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> R<StateResponse> {
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        let st = self.core.state(&id, &p).map_err(to_ttrpc)?;
        Ok(convert::state_response!(StateResponse, st))
    }

    async fn create(&self, ctx: &TtrpcContext, req: CreateTaskRequest) -> R<CreateTaskResponse> {
        if self.settings.cgroup_v2 {
            return Err(to_ttrpc(Error::new(
                Kind::FailedPrecondition,
                options::CGROUP_V2_REFUSAL,
            )));
        }
        let opts = options::create_options(&req.runtime, req.options.as_ref(), &self.settings)
            .map_err(to_ttrpc)?;
        let spec = convert::create_spec!(
            req,
            opts,
            self.settings.work_dir.clone(),
            convert::deadline(ctx)
        )
        .map_err(to_ttrpc)?;
        Ok(CreateTaskResponse {
            pid: self.core.create(spec).await.map_err(to_ttrpc)?,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> R<StartResponse> {
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        let pid = self.core.start(&id, &p).await.map_err(to_ttrpc)?;
        Ok(StartResponse {
            id: api_id(&id, &p),
            pid,
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, _req: Empty) -> R<DeleteResponse> {
        let (id, init) = self.named(ProcessName::Init)?;
        let gone = self.core.delete(&id, &init).await.map_err(to_ttrpc)?;
        Ok(convert::delete_response!(DeleteResponse, gone))
    }

    async fn delete_process(
        &self,
        _ctx: &TtrpcContext,
        req: DeleteProcessRequest,
    ) -> R<DeleteResponse> {
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        if p == ProcessRef::Init {
            // The Go shim builds this status directly: no errdefs class suffix.
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "cannot delete init process with DeleteProcess",
            )));
        }
        let gone = self.core.delete(&id, &p).await.map_err(to_ttrpc)?;
        Ok(convert::delete_response!(DeleteResponse, gone))
    }

    async fn list_pids(&self, _ctx: &TtrpcContext, _req: ListPidsRequest) -> R<ListPidsResponse> {
        // The request's id is the container's; the shim only has the one.
        let (id, _) = self.named(ProcessName::Init)?;
        let pids = self.core.pids(&id).await.map_err(to_ttrpc)?;
        let processes = convert::process_infos(pids, |p| {
            let name = if p.init {
                Some(id.as_str())
            } else {
                p.exec_id.as_deref()
            };
            name.and_then(options::process_details)
        });
        Ok(ListPidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: Empty) -> R<Empty> {
        let (id, _) = self.named(ProcessName::Init)?;
        self.core.pause(&id).await.map_err(to_ttrpc)?;
        empty()
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: Empty) -> R<Empty> {
        let (id, _) = self.named(ProcessName::Init)?;
        self.core.resume(&id).await.map_err(to_ttrpc)?;
        empty()
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> R<Empty> {
        let (id, _) = self.named(ProcessName::Init)?;
        let spec = options::checkpoint_spec(&req.path, req.options.as_ref()).map_err(to_ttrpc)?;
        self.core.checkpoint(&id, spec).await.map_err(to_ttrpc)?;
        empty()
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> R<Empty> {
        // An empty id means init in this API.
        let name = match req.id.as_str() {
            "" => ProcessName::Init,
            id => ProcessName::Id(id),
        };
        let (id, p) = self.named(name)?;
        let kill = self.core.kill(&id, &p, req.signal, req.all);
        kill.await.map_err(to_ttrpc)?;
        empty()
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> R<Empty> {
        let (id, p) = self.named(ProcessName::NewExec(&req.id))?;
        let ProcessRef::Exec(exec_id) = p else {
            return Err(to_ttrpc(Error::already_exists(format!("id {}", req.id))));
        };
        let stdio = convert::stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let process = convert::json_payload(req.spec.as_ref(), b"");
        let spec = ExecSpec {
            id,
            exec_id,
            stdio,
            process,
        };
        self.core.exec(spec).await.map_err(to_ttrpc)?;
        empty()
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> R<Empty> {
        if req.id.is_empty() {
            return Err(to_ttrpc(Error::invalid_argument("id not provided")));
        }
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        let resize = self.core.resize_pty(&id, &p, req.width, req.height);
        resize.await.map_err(to_ttrpc)?;
        empty()
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> R<Empty> {
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        let close = self.core.close_io(&id, &p, req.stdin);
        close.await.map_err(to_ttrpc)?;
        empty()
    }

    async fn shim_info(&self, _ctx: &TtrpcContext, _req: Empty) -> R<ShimInfoResponse> {
        Ok(ShimInfoResponse {
            shim_pid: self.core.shim_pid(),
            ..Default::default()
        })
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> R<Empty> {
        let (id, _) = self.named(ProcessName::Init)?;
        let resources = convert::json_payload(req.resources.as_ref(), b"{}");
        self.core.update(&id, &resources).await.map_err(to_ttrpc)?;
        empty()
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> R<WaitResponse> {
        let (id, p) = self.named(ProcessName::Id(&req.id))?;
        let exit = self.core.wait(&id, &p).await.map_err(to_ttrpc)?;
        Ok(convert::wait_response!(WaitResponse, exit))
    }
}
