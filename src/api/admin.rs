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
use crate::startup::upgrade::{Handover, UpgradeError, Upgrader, DEFAULT_QUIESCE, FORMATS};

/// Why the admin service is not offered on a listener: others than host root could reach it.
/// The text is the PERMISSION_DENIED message every Admin call gets there.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("socket address: {0}")]
    Address(std::io::Error),
    #[error(
        "the admin service is not served on an abstract socket: any process in the host's \
         network namespace can connect to one (restart the container to move it to a new \
         binary)"
    )]
    Abstract,
    #[error("{dir}: {source}")]
    Directory { dir: String, source: std::io::Error },
    #[error(
        "the admin service is not served on {socket}: its directory may be written by others \
         than root"
    )]
    OpenDirectory { socket: String },
}

pub struct AdminService {
    upgrader: Upgrader,
    /// `Err(why)` when the listener is one others than host root could reach.
    access: Result<(), AccessError>,
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
            ttrpc::Error::RpcStatus(ttrpc::get_status(Code::PERMISSION_DENIED, why.to_string()))
        })?;
        Ok(())
    }
}

/// Whether only host root can connect to `listener`: bound to a filesystem path (not an
/// abstract name) in a directory owned by root that nobody else may write to (or that is
/// sticky, so nobody else can replace root's entry). The server refuses peers of another uid.
pub fn only_root_reaches(listener: &std::os::unix::net::UnixListener) -> Result<(), AccessError> {
    use std::os::unix::fs::MetadataExt;
    let addr = listener.local_addr().map_err(AccessError::Address)?;
    let Some(path) = addr.as_pathname() else {
        return Err(AccessError::Abstract);
    };
    let dir = path.parent().unwrap_or(std::path::Path::new("/"));
    let md = std::fs::metadata(dir).map_err(|source| AccessError::Directory {
        dir: dir.display().to_string(),
        source,
    })?;
    let sticky = md.mode() & libc::S_ISVTX != 0;
    if md.uid() != 0 || (md.mode() & 0o022 != 0 && !sticky) {
        return Err(AccessError::OpenDirectory {
            socket: path.display().to_string(),
        });
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
        tracing::warn!(error = %refused, "upgrade refused");
        let e = UpgradeError::from(refused);
        Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
            e.code(),
            e.to_string(),
        )))
    }
}

/// The answer the adopting image gives to the `Upgrade` that asked for the hand-over: the
/// outcome, or why it was rolled back ([`UpgradeError::RolledBack`]: its own code, so the
/// client tells it from a refusal).
pub fn upgrade_reply(doc: &Handover, containers: usize) -> Response {
    if let Some(why) = &doc.rollback {
        let e = UpgradeError::RolledBack {
            target: doc.target.clone(),
            version: doc.written_by.clone(),
            why: why.clone(),
        };
        return Response {
            status: Some(ttrpc::get_status(e.code(), e.to_string())).into(),
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
