//! The shim v2 event publisher: a ttrpc client of containerd's `Events.Forward`.
//!
//! Concurrency: `publish` (any task) only pushes onto an unbounded FIFO; one forwarding task
//! owns the client and the retry loop, so delivery order equals publish order. `pending`
//! counts events not yet acknowledged, which is what `flush` waits on at shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use super::encode;
use crate::core::event::{Event, EventSink};
use crate::protos::ttrpc_events::{Envelope, ForwardRequest};
use crate::protos::ttrpc_events_ttrpc::EventsClient;
use crate::protos::{time, Any};

/// containerd's namespace header on ttrpc requests.
const NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";
/// Per-attempt deadline, as the Go shim uses.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Attempts for an event containerd answers with an error status.
const REFUSED_ATTEMPTS: u32 = 5;

struct Queued {
    topic: &'static str,
    event: Any,
    at: std::time::SystemTime,
}

struct Shared {
    pending: AtomicUsize,
    drained: Notify,
}

/// Forwards events to `$TTRPC_ADDRESS`.
pub struct TtrpcPublisher {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

impl TtrpcPublisher {
    /// Start the forwarding task. `address` is a socket path (a `unix://` prefix is accepted).
    pub fn start(address: &str, namespace: &str) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            pending: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let path = address
            .strip_prefix("unix://")
            .unwrap_or(address)
            .to_string();
        tokio::spawn(forward_loop(
            path,
            namespace.to_string(),
            rx,
            shared.clone(),
        ));
        Arc::new(TtrpcPublisher { tx, shared })
    }

    /// Wait until every queued event was delivered, at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let n = self.shared.drained.notified();
                if self.shared.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl EventSink for TtrpcPublisher {
    fn publish(&self, ev: Event) {
        match encode(&ev) {
            Ok((topic, event)) => {
                self.shared.pending.fetch_add(1, Ordering::SeqCst);
                let q = Queued {
                    topic,
                    event,
                    at: std::time::SystemTime::now(),
                };
                if self.tx.send(q).is_err() {
                    self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    tracing::error!(?ev, "event queue closed; event not published");
                }
            }
            Err(e) => tracing::error!(error = %e, ?ev, "cannot encode event"),
        }
    }
}

async fn forward_loop(
    path: String,
    namespace: String,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(q) = rx.recv().await {
        let req = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(time::timestamp(q.at)).into(),
                namespace: namespace.clone(),
                topic: q.topic.to_string(),
                event: Some(q.event).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let mut backoff = BACKOFF_START;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            if client.is_none() {
                match ttrpc::r#async::Client::connect(&format!("unix://{path}")).await {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => {
                        if attempts == 1 || attempts % 20 == 0 {
                            tracing::warn!(topic = q.topic, error = %e, attempts, "cannot reach containerd to publish event; retrying");
                        }
                    }
                }
            }
            if let Some(c) = &client {
                let mut ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
                ctx.add(NAMESPACE_HEADER.to_string(), namespace.clone());
                match c.forward(ctx, &req).await {
                    Ok(_) => break,
                    Err(ttrpc::Error::RpcStatus(st)) => {
                        // containerd answered but refused the event. That does not heal by
                        // waiting forever; give it a few tries (it may be restarting), then
                        // report loudly and move on so later events are not held back.
                        if attempts >= REFUSED_ATTEMPTS {
                            tracing::error!(topic = q.topic, code = st.code.value(), message = %st.message, "containerd refused event; dropped");
                            break;
                        }
                    }
                    Err(e) => {
                        if attempts == 1 || attempts % 20 == 0 {
                            tracing::warn!(topic = q.topic, error = %e, attempts, "publishing event failed; retrying");
                        }
                        // Reconnect next time: the connection may be dead (containerd restart).
                        client = None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        tracing::debug!(topic = q.topic, "event published");
        if shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            shared.drained.notify_waiters();
        }
    }
}
