//! Task events as the core produces them, and the sink they leave through. The `events`
//! module turns them into containerd's envelopes and delivers them in order; which of them a
//! personality publishes at all is decided by its [`super::ApiProfile`].

use std::path::PathBuf;
use std::time::SystemTime;

use super::types::{MountSpec, StdioRequest};

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Create {
        container_id: String,
        bundle: PathBuf,
        rootfs: Vec<MountSpec>,
        stdio: StdioRequest,
        checkpoint: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    /// `id` is the container id for init and the exec id for an exec (CRI tells them apart
    /// by it).
    Exit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Delete {
        container_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    Paused {
        container_id: String,
    },
    Resumed {
        container_id: String,
    },
    Oom {
        container_id: String,
    },
}

/// Which kinds of event there are, for profiles to list what they publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Create,
    Start,
    ExecAdded,
    ExecStarted,
    Exit,
    Delete,
    Paused,
    Resumed,
    Oom,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Create { .. } => EventKind::Create,
            Event::Start { .. } => EventKind::Start,
            Event::ExecAdded { .. } => EventKind::ExecAdded,
            Event::ExecStarted { .. } => EventKind::ExecStarted,
            Event::Exit { .. } => EventKind::Exit,
            Event::Delete { .. } => EventKind::Delete,
            Event::Paused { .. } => EventKind::Paused,
            Event::Resumed { .. } => EventKind::Resumed,
            Event::Oom { .. } => EventKind::Oom,
        }
    }
}

/// Where events go. `publish` only enqueues (it never blocks and never fails); delivery order
/// is enqueue order.
pub trait EventSink: Send + Sync {
    fn publish(&self, event: Event);

    /// Wait (at most `limit`) until every event published so far has left: delivered to
    /// containerd, or given up after its retries. False if the time ran out. A sink that
    /// delivers synchronously has nothing to wait for.
    fn delivered(
        &self,
        limit: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        let _ = limit;
        Box::pin(std::future::ready(true))
    }
}
