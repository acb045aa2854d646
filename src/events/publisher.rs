//! The shim v2 event publisher: a ttrpc client of containerd's `Events.Forward`.
//!
//! Concurrency: `publish` (any task) only pushes onto the ordered [`super::queue`]; one
//! forwarding task owns the client and the retry loop, so delivery order equals publish order.

use std::sync::Arc;
use std::time::Duration;

use super::queue::{self, Receiver};
use super::Publisher;
use crate::protos::time;
use crate::protos::ttrpc_events::{Envelope, ForwardRequest};
use crate::protos::ttrpc_events_ttrpc::EventsClient;

/// containerd's namespace header on ttrpc requests.
const NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";
/// Per-attempt deadline, as the Go shim uses.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Attempts for an event containerd answers with an error status.
const REFUSED_ATTEMPTS: u32 = 5;

/// Start forwarding events to `$TTRPC_ADDRESS`. `address` is a socket path (a `unix://`
/// prefix is accepted). Call inside the runtime.
pub fn start_ttrpc(address: &str, namespace: &str) -> Arc<Publisher> {
    let (queue, rx) = queue::queue();
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(address)
        .to_string();
    tokio::spawn(forward_loop(path, namespace.to_string(), rx));
    Arc::new(Publisher { queue })
}

async fn forward_loop(path: String, namespace: String, mut rx: Receiver) {
    let mut client: Option<EventsClient> = None;
    while let Some(q) = rx.next().await {
        let req = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(time::timestamp(q.at)).into(),
                namespace: namespace.clone(),
                topic: q.topic.clone(),
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
                            tracing::warn!(topic = %q.topic, error = %e, attempts, "cannot reach containerd to publish event; retrying");
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
                            tracing::error!(topic = %q.topic, code = st.code.value(), message = %st.message, "containerd refused event; dropped");
                            break;
                        }
                    }
                    Err(e) => {
                        if attempts == 1 || attempts % 20 == 0 {
                            tracing::warn!(topic = %q.topic, error = %e, attempts, "publishing event failed; retrying");
                        }
                        // Reconnect next time: the connection may be dead (containerd restart).
                        client = None;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        tracing::debug!(topic = %q.topic, "event published");
        rx.done();
    }
}
