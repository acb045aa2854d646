//! `shimgate.admin.v1.Admin`, served next to the containerd API on every shimgate shim's
//! socket (both APIs): what this shim is (`Info`), and live upgrade (`Upgrade`). Only the
//! operator tool calls it; containerd never does, and an unknown service to containerd's
//! clients is simply never asked for.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protobuf::Message;
use ttrpc::r#async::TtrpcContext;
use ttrpc::{Code, Response};

use super::upgrade::{Handover, Upgrader, DEFAULT_QUIESCE, FORMATS};
use crate::protos::admin::*;
use crate::protos::admin_ttrpc::Admin;

pub struct AdminService {
    upgrader: Upgrader,
}

impl AdminService {
    pub fn new(upgrader: Upgrader) -> Arc<Self> {
        Arc::new(AdminService { upgrader })
    }
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
        Ok(info(&self.upgrader))
    }

    async fn upgrade(
        &self,
        _ctx: &TtrpcContext,
        req: UpgradeRequest,
    ) -> ttrpc::Result<UpgradeResponse> {
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
