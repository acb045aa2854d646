//! `shimgate.admin.v1.Admin`, served next to the containerd API on a shimgate shim's socket
//! (both APIs): what this shim is (`Info`), and live upgrade (`Upgrade`). Only the operator
//! tool calls it; containerd never does, and an unknown service to containerd's clients is
//! simply never asked for.
//!
//! Who can reach it: `Upgrade` makes the shim run a program as host root, so the service
//! answers only where nobody but host root can connect: a socket bound to a path (whose
//! directory nobody else may write to), with the server's peer-credential check (same uid as
//! the shim) on every connection. On an abstract socket (`containerd-shim
//! -allow-abstract-socket`) any process in the host's network namespace can connect, root
//! in a host-network container included, so there every Admin call is refused
//! (PERMISSION_DENIED) and such a shim keeps its binary until its container restarts.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protobuf::Message;
use ttrpc::r#async::TtrpcContext;
use ttrpc::{Code, Response};

use crate::protos::admin::*;
use crate::protos::admin_ttrpc::Admin;
use crate::startup::upgrade::{Handover, Upgrader, DEFAULT_QUIESCE, FORMATS};

pub struct AdminService {
    upgrader: Upgrader,
    /// `Err(why)` when the listener is one others than host root could reach.
    access: Result<(), String>,
}

impl AdminService {
    /// The service for a shim serving on `listener` (see the module docs for who may call it).
    pub fn new(upgrader: Upgrader, listener: &std::os::unix::net::UnixListener) -> Arc<Self> {
        let access = only_root_reaches(listener);
        if let Err(why) = &access {
            tracing::info!(reason = %why, "admin service (live upgrade) not offered on this socket");
        }
        Arc::new(AdminService { upgrader, access })
    }

    fn allowed(&self) -> ttrpc::Result<()> {
        self.access.as_ref().map_err(|why| {
            ttrpc::Error::RpcStatus(ttrpc::get_status(Code::PERMISSION_DENIED, why.clone()))
        })?;
        Ok(())
    }
}

/// Whether only host root can connect to `listener`: bound to a filesystem path (not an
/// abstract name) in a directory owned by root that nobody else may write to (or that is
/// sticky, so nobody else can replace root's entry). The server refuses peers of another uid.
pub fn only_root_reaches(listener: &std::os::unix::net::UnixListener) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("socket address: {e}"))?;
    let Some(path) = addr.as_pathname() else {
        return Err(
            "the admin service is not served on an abstract socket: any process in the host's \
             network namespace can connect to one (restart the container to move it to a new \
             binary)"
                .into(),
        );
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    let md = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let sticky = md.mode() & libc::S_ISVTX != 0;
    if md.uid() != 0 || (md.mode() & 0o022 != 0 && !sticky) {
        return Err(format!(
            "the admin service is not served on {}: its directory may be written by others \
             than root",
            path.display()
        ));
    }
    Ok(())
}

fn info(u: &Upgrader) -> InfoResponse {
    InfoResponse {
        version: crate::VERSION.to_string(),
        revision: crate::REVISION.to_string(),
        pid: std::process::id(),
        personality: u.personality.to_string(),
        containers: u
            .core
            .container_ids()
            .into_iter()
            .map(|c| c.to_string())
            .collect(),
        handover_formats: FORMATS.to_vec(),
        binary: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ..Default::default()
    }
}

#[async_trait]
impl Admin for AdminService {
    async fn info(&self, _ctx: &TtrpcContext, _req: InfoRequest) -> ttrpc::Result<InfoResponse> {
        self.allowed()?;
        Ok(info(&self.upgrader))
    }

    async fn upgrade(
        &self,
        _ctx: &TtrpcContext,
        req: UpgradeRequest,
    ) -> ttrpc::Result<UpgradeResponse> {
        self.allowed()?;
        let quiesce = match req.quiesce_timeout_ms {
            0 => DEFAULT_QUIESCE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let refused = self.upgrader.upgrade(&req.binary, quiesce).await;
        tracing::warn!(error = %refused.0, "upgrade refused");
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
            Code::FAILED_PRECONDITION,
            format!("upgrade refused: {}", refused.0),
        )))
    }
}

/// The answer the adopting image gives to the `Upgrade` that asked for the hand-over: the
/// outcome, or why it was rolled back.
pub fn upgrade_reply(doc: &Handover, containers: usize) -> Response {
    if let Some(why) = &doc.rollback {
        return Response {
            status: Some(ttrpc::get_status(
                Code::FAILED_PRECONDITION,
                format!(
                    "upgrade to {} failed, {} serves on: {why}",
                    doc.target, doc.written_by
                ),
            ))
            .into(),
            ..Default::default()
        };
    }
    let body = UpgradeResponse {
        old_version: doc.written_by.clone(),
        new_version: crate::VERSION.to_string(),
        pid: std::process::id(),
        handover_micros: doc.elapsed_micros(),
        containers: containers as u32,
        ..Default::default()
    };
    Response {
        status: Some(ttrpc::get_status(Code::OK, String::new())).into(),
        payload: body.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}
