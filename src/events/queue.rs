//! The ordered event queue both publishers deliver from.
//!
//! Concurrency: `push` (any task) encodes the event and appends it to a FIFO (bounded by
//! [`MAX_QUEUED`] for all but exits and deletes); one
//! delivery task per publisher takes events off in order and calls [`Receiver::done`] once an
//! event is settled (delivered or given up), so delivery order equals publish order. `pending`
//! counts events not yet settled, which is what [`Queue::flush`] waits on at shutdown.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, Notify};

use super::encode;
use crate::engine::event::Event;
use crate::protos::Any;
use crate::sync::lock;

/// Most events kept while containerd cannot take them (exits and deletes are never dropped).
pub const MAX_QUEUED: usize = 65_536;

/// One event ready for the wire.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Queued {
    pub topic: String,
    #[serde(with = "any_bytes")]
    pub event: Any,
    /// When it was published (the envelope timestamp of the ttrpc publisher).
    pub at: SystemTime,
}

struct Shared {
    pending: AtomicUsize,
    settled: Notify,
    /// Events ever queued and ever settled. Delivery is in queue order, so once `done` reached
    /// a value `queued` had, every event queued up to then is settled.
    queued: AtomicU64,
    done: AtomicU64,
    progress: Notify,
    /// A freeze waiting for the delivery task (see [`Queue::freeze`]).
    freeze: std::sync::Mutex<Option<oneshot::Sender<mpsc::UnboundedReceiver<Queued>>>>,
    freeze_asked: Notify,
    /// A freeze took the queue over (the delivery task then ends, as it should).
    handed_over: std::sync::atomic::AtomicBool,
    /// Ends with the delivery task's [`Receiver`] (see `crate::supervise`).
    delivery: crate::supervise::Ended,
}

/// `Any` as (type URL, bytes) for the hand-over file.
mod any_bytes {
    use crate::protos::Any;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(a: &Any, s: S) -> Result<S::Ok, S::Error> {
        (&a.type_url, &a.value).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Any, D::Error> {
        let (type_url, value) = <(String, Vec<u8>)>::deserialize(d)?;
        Ok(Any {
            type_url,
            value,
            ..Default::default()
        })
    }
}

/// The sending side, held by the publisher (and, for a live upgrade, the orchestration).
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<Queued>,
    shared: Arc<Shared>,
}

/// The delivering side, owned by the publisher's delivery task.
pub struct Receiver {
    rx: Option<mpsc::UnboundedReceiver<Queued>>,
    shared: Arc<Shared>,
    /// Dropped with the receiver, i.e. when the delivery task ends however it ends.
    _line: crate::supervise::Lifeline,
}

/// A frozen queue (live upgrade): the events not delivered yet, still in order. More may be
/// pushed until the last moment; [`FrozenQueue::take_all`] collects them all.
pub struct FrozenQueue {
    rx: mpsc::UnboundedReceiver<Queued>,
}

impl FrozenQueue {
    /// Everything queued so far, in order (synchronous: called right before `execve`).
    pub fn take_all(&mut self) -> Vec<Queued> {
        let mut v = Vec::new();
        while let Ok(q) = self.rx.try_recv() {
            v.push(q);
        }
        v
    }
}

/// A new queue and the receiver its delivery task drains.
pub fn queue() -> (Queue, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (line, delivery) = crate::supervise::lifeline();
    let shared = Arc::new(Shared {
        pending: AtomicUsize::new(0),
        settled: Notify::new(),
        queued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        progress: Notify::new(),
        freeze: std::sync::Mutex::new(None),
        freeze_asked: Notify::new(),
        handed_over: std::sync::atomic::AtomicBool::new(false),
        delivery,
    });
    (
        Queue {
            tx,
            shared: shared.clone(),
        },
        Receiver {
            rx: Some(rx),
            shared,
            _line: line,
        },
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
                    topic: topic.to_string(),
                    event,
                    at: SystemTime::now(),
                };
                if self.tx.send(q).is_err() {
                    self.shared.pending.fetch_sub(1, Ordering::SeqCst);
                    tracing::error!(?ev, "event queue closed; event not published");
                } else {
                    self.shared.queued.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => tracing::error!(error = %e, ?ev, "cannot encode event"),
        }
    }

    /// Put events carried over from a previous image first in line (live upgrade; call before
    /// anything else is pushed).
    pub fn preload(&self, events: Vec<Queued>) {
        for q in events {
            self.shared.pending.fetch_add(1, Ordering::SeqCst);
            if self.tx.send(q).is_err() {
                self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            } else {
                self.shared.queued.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Wait until every event queued before this call is settled (delivered or given up), at
    /// most `limit`. False if some were not.
    pub async fn delivered(&self, limit: Duration) -> bool {
        let target = self.shared.queued.load(Ordering::SeqCst);
        let wait = async {
            loop {
                let n = self.shared.progress.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.shared.done.load(Ordering::SeqCst) >= target {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Stop delivery between two events and take the queue over (live upgrade). The event
    /// being delivered is finished first (bounded by the publisher's own per-attempt
    /// deadline and retries), so nothing is delivered twice by the next image.
    pub async fn freeze(&self) -> Option<FrozenQueue> {
        let (tx, rx) = oneshot::channel();
        *lock(&self.shared.freeze) = Some(tx);
        self.shared.freeze_asked.notify_one();
        rx.await.ok().map(|rx| FrozenQueue { rx })
    }

    /// Watches the delivery task (it holds the [`Receiver`]).
    pub fn delivery_ended(&self) -> crate::supervise::Ended {
        self.shared.delivery.clone()
    }

    /// Whether a freeze took the queue over (so the delivery task ending was asked for).
    pub fn handed_over(&self) -> bool {
        self.shared.handed_over.load(Ordering::SeqCst)
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
    /// The next event, in publish order; `None` once every sender is gone, or when the queue
    /// was frozen (the delivery task then ends).
    pub async fn next(&mut self) -> Option<Queued> {
        loop {
            if crate::supervise::fault("event-delivery-ends") {
                return None;
            }
            let rx = self.rx.as_mut()?;
            tokio::select! {
                biased;
                _ = self.shared.freeze_asked.notified() => {
                    let reply = lock(&self.shared.freeze).take();
                    if let (Some(reply), Some(rx)) = (reply, self.rx.take()) {
                        // Set before the hand-over can be observed, so the delivery task's
                        // end is known to be asked for.
                        self.shared.handed_over.store(true, Ordering::SeqCst);
                        match reply.send(rx) {
                            Ok(()) => return None,
                            // The freeze was abandoned (an upgrade that gave up): carry on.
                            Err(rx) => {
                                self.shared.handed_over.store(false, Ordering::SeqCst);
                                self.rx = Some(rx);
                            }
                        }
                    }
                }
                q = rx.recv() => return q,
            }
        }
    }

    /// The event last taken is delivered or given up.
    pub fn done(&self) {
        self.shared.done.fetch_add(1, Ordering::SeqCst);
        self.shared.progress.notify_waiters();
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

#[cfg(test)]
mod delivered_tests {
    use super::*;

    #[tokio::test]
    async fn delivered_waits_for_what_was_queued_before_it_only() {
        let (q, mut rx) = queue();
        let exit = |pid| Event::Exit {
            container_id: "c".into(),
            id: "c".into(),
            pid,
            exit_status: 3,
            exited_at: SystemTime::now(),
        };
        q.push(exit(1));
        assert!(!q.delivered(Duration::from_millis(20)).await);
        let first = rx.next().await.unwrap();
        assert_eq!(first.topic, "/tasks/exit");
        rx.done();
        q.push(exit(2));
        // The first is settled, the second (queued before the call) is not.
        assert!(!q.delivered(Duration::from_millis(20)).await);
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.delivered(Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        // Queued after the waiter's barrier: not waited for.
        q.push(exit(3));
        rx.next().await.unwrap();
        rx.done();
        assert!(waiter.await.unwrap());
    }
}

#[cfg(test)]
mod freeze_tests {
    use super::*;

    #[tokio::test]
    async fn freeze_takes_over_undelivered_events_in_order() {
        let (q, mut rx) = queue();
        let delivered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let d2 = delivered.clone();
        let task = tokio::spawn(async move {
            while let Some(e) = rx.next().await {
                d2.lock().unwrap().push(e.topic.clone());
                rx.done();
                // Slow delivery: most events are still queued when the freeze comes.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        for pid in 0..10 {
            q.push(Event::Start {
                container_id: format!("c{pid}"),
                pid,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let mut frozen = q.freeze().await.unwrap();
        task.await.unwrap();
        // Pushed after the freeze: still collected, after the rest.
        q.push(Event::Oom {
            container_id: "late".into(),
        });
        let rest = frozen.take_all();
        let n_delivered = delivered.lock().unwrap().len();
        assert!((1..10).contains(&n_delivered));
        assert_eq!(n_delivered + rest.len(), 11);
        assert_eq!(rest.last().unwrap().topic, "/tasks/oom");
        // Through the hand-over file and into a new queue, first in line.
        let json = serde_json::to_string(&rest).unwrap();
        let back: Vec<Queued> = serde_json::from_str(&json).unwrap();
        let (q2, mut rx2) = queue();
        q2.preload(back);
        q2.push(Event::Oom {
            container_id: "new".into(),
        });
        let first = rx2.next().await.unwrap();
        assert_eq!(first.topic, "/tasks/start");
        assert_eq!(first.event.type_url, "containerd.events.TaskStart");
    }
}
