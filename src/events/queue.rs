//! The ordered event queue both publishers deliver from.
//!
//! Concurrency: `push` (any task) encodes the event and appends it to a FIFO (bounded by
//! [`MAX_QUEUED`] for all but exits and deletes); one
//! delivery task per publisher takes events off in order and calls [`Receiver::done`] once an
//! event is settled (delivered or given up), so delivery order equals publish order. `pending`
//! counts events not yet settled, which is what [`Queue::flush`] waits on at shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Notify};

use super::encode;
use crate::core::event::Event;
use crate::protos::Any;

/// Most events kept while containerd cannot take them (exits and deletes are never dropped).
pub const MAX_QUEUED: usize = 65_536;

/// One event ready for the wire.
pub struct Queued {
    pub topic: &'static str,
    pub event: Any,
    /// When it was published (the envelope timestamp of the ttrpc publisher).
    pub at: SystemTime,
}

struct Shared {
    pending: AtomicUsize,
    settled: Notify,
}

/// The sending side, held by the publisher.
pub struct Queue {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

/// The delivering side, owned by the publisher's delivery task.
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<Shared>,
}

/// A new queue and the receiver its delivery task drains.
pub fn queue() -> (Queue, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        pending: AtomicUsize::new(0),
        settled: Notify::new(),
    });
    (
        Queue {
            tx,
            shared: shared.clone(),
        },
        Receiver { rx, shared },
    )
}

impl Queue {
    /// Encode and enqueue; never blocks. An event that cannot be encoded or queued is logged.
    pub fn push(&self, ev: Event) {
        // Bounded: while containerd is unreachable events wait here; a flood of them must not
        // grow without limit. Exits and deletes are what containerd cannot reconstruct, so
        // they are always kept; anything else past the limit is dropped, loudly.
        let essential = matches!(ev, Event::Exit { .. } | Event::Delete { .. });
        if !essential && self.shared.pending.load(Ordering::SeqCst) >= MAX_QUEUED {
            tracing::error!(?ev, limit = MAX_QUEUED, "event queue full; event dropped");
            return;
        }
        match encode(&ev) {
            Ok((topic, event)) => {
                self.shared.pending.fetch_add(1, Ordering::SeqCst);
                let q = Queued {
                    topic,
                    event,
                    at: SystemTime::now(),
                };
                if self.tx.send(q).is_err() {
                    self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    tracing::error!(?ev, "event queue closed; event not published");
                }
            }
            Err(e) => tracing::error!(error = %e, ?ev, "cannot encode event"),
        }
    }

    /// Wait until every queued event is settled, at most `limit`. False if some were not.
    pub async fn flush(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let n = self.shared.settled.notified();
                if self.shared.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Receiver {
    /// The next event, in publish order; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// The event last taken is delivered or given up.
    pub fn done(&self) {
        if self.shared.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.settled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn flush_waits_for_done_and_order_is_kept() {
        let (q, mut rx) = queue();
        for pid in [1, 2, 3] {
            q.push(Event::Start {
                container_id: "c".into(),
                pid,
            });
        }
        assert!(!q.flush(Duration::from_millis(10)).await);
        let mut got = Vec::new();
        while got.len() < 3 {
            let e = rx.next().await.unwrap();
            got.push(e.event.value.clone());
            rx.done();
        }
        assert!(q.flush(Duration::from_millis(10)).await);
        let pids: Vec<u32> = got
            .iter()
            .map(|v| {
                <crate::protos::events::TaskStart as protobuf::Message>::parse_from_bytes(v)
                    .unwrap()
                    .pid
            })
            .collect();
        assert_eq!(pids, [1, 2, 3]);
    }
}
