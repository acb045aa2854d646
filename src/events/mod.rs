//! Engine events on the wire: topic + `Any` of containerd's event messages, and the
//! [`Publisher`] that delivers them in order, by one of two delivery tasks:
//! [`publisher::start_ttrpc`] forwards to containerd's ttrpc event service (`TTRPC_ADDRESS`,
//! the task API shims), [`exec_publisher::start_exec`] runs `containerd publish` per event
//! (the legacy `containerd-shim`).
//!
//! Delivery: one [`queue`] per publisher, one delivery task. An event that fails is retried in
//! place with capped backoff, never re-queued, so a containerd restart delays events but does
//! not reorder them.

pub mod exec_publisher;
pub mod publisher;
pub mod queue;

pub use exec_publisher::{start_exec, PublishCommand, Retry};
pub use publisher::start_ttrpc;

/// Where the engine's events go: the ordered queue a delivery task takes them from. The same
/// for both APIs; only the delivery task differs.
pub struct Publisher {
    queue: queue::Queue,
}

impl Publisher {
    /// The ordered queue (live upgrade freezes and preloads it).
    pub fn queue(&self) -> &queue::Queue {
        &self.queue
    }

    /// Wait until every queued event was delivered or given up, at most `limit`.
    pub async fn flush(&self, limit: std::time::Duration) -> bool {
        self.queue.flush(limit).await
    }
}

impl crate::engine::event::EventSink for Publisher {
    fn publish(&self, ev: Event) {
        self.queue.push(ev);
    }

    fn delivered(
        &self,
        limit: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(self.queue.delivered(limit))
    }
}

use crate::engine::event::Event;
use crate::protos::{any_bare, events as pb, mount::Mount, time, Any, Named};

/// The topic and payload containerd expects for an event.
pub fn encode(ev: &Event) -> protobuf::Result<(&'static str, Any)> {
    fn pack(topic: &'static str, m: &impl Named) -> protobuf::Result<(&'static str, Any)> {
        Ok((topic, any_bare(m)?))
    }
    match ev {
        Event::Create {
            container_id,
            bundle,
            rootfs,
            stdio,
            checkpoint,
            pid,
        } => pack(
            "/tasks/create",
            &pb::TaskCreate {
                container_id: container_id.clone(),
                bundle: bundle.to_string_lossy().into_owned(),
                rootfs: rootfs
                    .iter()
                    .map(|m| Mount {
                        type_: m.kind.clone(),
                        source: m.source.clone(),
                        target: m.target.clone(),
                        options: m.options.clone(),
                        ..Default::default()
                    })
                    .collect(),
                io: Some(pb::TaskIO {
                    stdin: stdio.stdin.clone(),
                    stdout: stdio.stdout.clone(),
                    stderr: stdio.stderr.clone(),
                    terminal: stdio.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: checkpoint.clone(),
                pid: *pid,
                ..Default::default()
            },
        ),
        Event::Start { container_id, pid } => pack(
            "/tasks/start",
            &pb::TaskStart {
                container_id: container_id.clone(),
                pid: *pid,
                ..Default::default()
            },
        ),
        Event::ExecAdded {
            container_id,
            exec_id,
        } => pack(
            "/tasks/exec-added",
            &pb::TaskExecAdded {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
                ..Default::default()
            },
        ),
        Event::ExecStarted {
            container_id,
            exec_id,
            pid,
        } => pack(
            "/tasks/exec-started",
            &pb::TaskExecStarted {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
                pid: *pid,
                ..Default::default()
            },
        ),
        Event::Exit {
            container_id,
            id,
            pid,
            exit_status,
            exited_at,
        } => pack(
            "/tasks/exit",
            &pb::TaskExit {
                container_id: container_id.clone(),
                id: id.clone(),
                pid: *pid,
                exit_status: *exit_status,
                exited_at: Some(time::timestamp(*exited_at)).into(),
                ..Default::default()
            },
        ),
        Event::Delete {
            container_id,
            pid,
            exit_status,
            exited_at,
        } => pack(
            "/tasks/delete",
            &pb::TaskDelete {
                container_id: container_id.clone(),
                pid: *pid,
                exit_status: *exit_status,
                exited_at: Some(time::timestamp_or_zero(*exited_at)).into(),
                ..Default::default()
            },
        ),
        Event::Paused { container_id } => pack(
            "/tasks/paused",
            &pb::TaskPaused {
                container_id: container_id.clone(),
                ..Default::default()
            },
        ),
        Event::Resumed { container_id } => pack(
            "/tasks/resumed",
            &pb::TaskResumed {
                container_id: container_id.clone(),
                ..Default::default()
            },
        ),
        Event::Oom { container_id } => pack(
            "/tasks/oom",
            &pb::TaskOOM {
                container_id: container_id.clone(),
                ..Default::default()
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn exit_event_matches_go_shape() {
        let (topic, any) = encode(&Event::Exit {
            container_id: "spec-v2a".into(),
            id: "e1".into(),
            pid: 15715,
            exit_status: 143,
            exited_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        })
        .unwrap();
        assert_eq!(topic, "/tasks/exit");
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let m = pb::TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(
            (m.container_id.as_str(), m.id.as_str(), m.pid, m.exit_status),
            ("spec-v2a", "e1", 15715, 143)
        );
        assert_eq!(m.exited_at.seconds, 1_700_000_000);
    }

    #[test]
    fn delete_of_never_exited_task_carries_go_zero_time() {
        let (_, any) = encode(&Event::Delete {
            container_id: "c".into(),
            pid: 0,
            exit_status: 0,
            exited_at: None,
        })
        .unwrap();
        let m = pb::TaskDelete::parse_from_bytes(&any.value).unwrap();
        assert_eq!(m.exited_at.seconds, time::GO_ZERO_SECONDS);
        assert!(m.id.is_empty());
    }

    #[test]
    fn every_event_has_a_containerd_topic() {
        let c = || "c".to_string();
        let all = [
            Event::Start {
                container_id: c(),
                pid: 1,
            },
            Event::ExecAdded {
                container_id: c(),
                exec_id: "e".into(),
            },
            Event::ExecStarted {
                container_id: c(),
                exec_id: "e".into(),
                pid: 2,
            },
            Event::Paused { container_id: c() },
            Event::Resumed { container_id: c() },
            Event::Oom { container_id: c() },
        ];
        let topics: Vec<_> = all.iter().map(|e| encode(e).unwrap().0).collect();
        assert_eq!(
            topics,
            [
                "/tasks/start",
                "/tasks/exec-added",
                "/tasks/exec-started",
                "/tasks/paused",
                "/tasks/resumed",
                "/tasks/oom"
            ]
        );
    }
}
