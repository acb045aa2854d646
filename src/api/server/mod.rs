//! Our ttrpc server: the connection loop in front of the generated service handlers.
//!
//! Why not the `ttrpc` crate's server: containerd depends on Go-server behaviour that crate
//! does not have: an unknown service must answer UNIMPLEMENTED (it answers INVALID_ARGUMENT),
//! only peers with our uid/gid may connect, an oversized frame must be answered
//! RESOURCE_EXHAUSTED without dropping the connection, and a request deadline must not cancel
//! a handler halfway through a runtime call (a half-done Create would leave state behind). A
//! live upgrade also needs what no off-the-shelf server offers: stop between two requests and
//! hand every socket, half-read frame and parked request to a new program image. We keep the
//! crate's codec, envelope types and generated handlers, and own only the loop.
//!
//! Concurrency: each connection has a reader (its task) and a writer task; each request runs
//! in its own task, so a blocking `Wait` does not hold up `State` on the same connection, and
//! responses go out in completion order.
//!
//! What a peer can make the shim hold is bounded ([`Hold`]): a request counts against its
//! connection's and the server's in-flight limits, and its bytes against the server's request
//! budget, from the moment it is read until its handler has *ended* (a handler outliving its
//! deadline keeps counting: `timeout_nano=1` cannot start unbounded background work) *and*
//! its answer is written to the socket (not merely queued). Answers waiting to be written
//! count against the connection's reply budget, so a peer that never reads stops being read
//! from instead of filling memory. Parked requests (`Wait`) have their own per-connection
//! count and server-wide byte budget; past them a `Wait` is refused with RESOURCE_EXHAUSTED
//! rather than held. When a budget is used up the connection's reader waits (back-pressure on
//! that socket only); other connections are served as long as the server-wide budgets last.
//!
//! Hand-over ([`Control`]): `quiesce` stops accepting and reading and waits until no request
//! but the parked kinds (`Wait`, which may run for the life of a process, and the `Upgrade`
//! asking for the hand-over) is running; `hand_over` then makes every connection finish its
//! queued writes and give back its socket, unparsed bytes and parked requests, and the accept
//! loop give back the listener. The new image replays parked `Wait`s on the same stream ids
//! ([`adopt_connections`]), so the caller sees one slow answer, never an error. Invariant that makes
//! this exact: a request's in-flight entry is removed in the same poll that queues its answer
//! (the reply budget is acquired first; the channel itself never waits), and the daemons run
//! on one thread, so a request is either answered on the wire or handed over, never both or
//! neither.
//!
//! Files: this one holds the limits and the accept loop ([`serve`]); `frame` the codec,
//! `conn` the connection loop and request dispatch, `handover` [`Control`] and the adoption
//! of handed-over descriptors.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use ttrpc::r#async::{Service, TtrpcContext};
use ttrpc::{Code, MessageHeader, Request, Response};

use crate::protos::ADMIN_SERVICE;
use crate::sync::lock;

/// Largest frame payload ttrpc allows.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Size of the fixed frame header (length, stream id, type, flags).
pub const HEADER_LEN: usize = 10;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// Requests a single connection may have in flight; more wait (back-pressure on the socket)
/// instead of queueing without bound. Parked kinds (`Wait`) are not counted here: containerd
/// keeps one open per live process for as long as it lives (a container with a thousand execs
/// has a thousand); they have [`MAX_PARKED`]. Most requests start a runtime process, and a
/// burst of them is forked from the one serving thread: 64 keeps such a burst (say, requests
/// whose 1 ns deadline passed at once while their runtime calls go on) well under the time
/// within which other containers must still be answered.
const MAX_IN_FLIGHT: usize = 64;
/// Requests (not parked) in flight over all connections.
const MAX_IN_FLIGHT_TOTAL: usize = 512;
/// Bytes of requests (not parked) in flight over all connections: what their handlers hold.
/// Larger than any one frame, so every request fits.
const REQUEST_BYTES_TOTAL: usize = 64 << 20;
/// Parked requests (`Wait`) a single connection may have.
const MAX_PARKED: usize = 65_536;
/// Bytes of parked requests over all connections, each counted three times (the envelope
/// kept for a hand-over, the envelope its handler holds and the request decoded from it).
/// A containerd `Wait` is a few hundred bytes: this is tens of thousands of them.
const PARKED_BYTES_TOTAL: usize = 32 << 20;
/// Largest parked request (what containerd sends is far smaller).
const MAX_PARKED_REQUEST: usize = 64 << 10;
/// Bytes of answers queued on one connection but not yet written (its peer is slow or does
/// not read at all). Larger than any one frame.
const REPLY_BYTES: usize = 8 << 20;
/// How long a hand-over waits for a connection's queued answers to be written; a peer that
/// does not read for that long loses its connection instead of stalling the upgrade.
const HANDOVER_FLUSH: Duration = Duration::from_secs(5);
/// Connections served at once. containerd opens one per task (plus short-lived ones); beyond
/// this a new connection is closed at once, so idle or abandoned sockets cannot exhaust the
/// shim's descriptors.
const MAX_CONNECTIONS: usize = 4096;
/// Read granularity of a connection's buffer.
const READ_CHUNK: usize = 16 << 10;

pub type Services = Arc<HashMap<String, Service>>;

/// Counts one running request or live connection while it exists.
struct Count {
    of: watch::Sender<usize>,
}

impl Count {
    fn new(of: &watch::Sender<usize>) -> Count {
        of.send_modify(|n| *n += 1);
        Count { of: of.clone() }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.of.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Serve `listener` until `stop` turns true. Existing connections are closed when it does.
/// After a hand-over this never returns (the image is about to be replaced, and the caller's
/// teardown, such as killing containers, must not run).
pub async fn serve(
    listener: UnixListener,
    services: Services,
    ctl: Control,
    mut stop: watch::Receiver<bool>,
) {
    let live = Count::new(&ctl.inner.live);
    let (me_uid, me_gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let mut phase = ctl.phase();
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::HandingOver => {
                match listener.into_std() {
                    Ok(l) => lock(&ctl.inner.handed).listener = Some(OwnedFd::from(l)),
                    Err(e) => tracing::error!(error = %e, "hand-over: listener"),
                }
                drop(live);
                std::future::pending::<()>().await;
                return;
            }
            Phase::Quiesced => {
                tokio::select! {
                    _ = phase.changed() => continue,
                    _ = stop.changed() => return,
                }
            }
            Phase::Serving => {}
        }
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    match stream.peer_cred() {
                        Ok(c) if c.uid() == me_uid && c.gid() == me_gid => {}
                        Ok(c) => {
                            tracing::warn!(uid = c.uid(), gid = c.gid(), "refused connection from another user");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "refused connection without peer credentials");
                            continue;
                        }
                    }
                    let Ok(slot) = ctl.inner.connections.clone().try_acquire_owned() else {
                        tracing::warn!(limit = MAX_CONNECTIONS, "too many connections; closing a new one");
                        continue;
                    };
                    Conn::new(stream, services.clone(), ctl.clone(), ConnSnap::default())
                        .spawn(stop.clone(), slot);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // EMFILE and friends: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = phase.changed() => {}
            _ = stop.changed() => return,
        }
    }
}

mod conn;
mod frame;
mod handover;

#[cfg(feature = "fuzz")]
pub(crate) use conn::connection;
use conn::*;
pub(crate) use frame::encode_response;
#[cfg(feature = "fuzz")]
pub(crate) use frame::header_bytes;
use frame::*;
pub use frame::{decode_frame, Frame, FrameError, FrameHeader};
pub(crate) use handover::fstat_raw;
use handover::*;
pub use handover::{
    adopt_connections, adopt_listener, checked_fds, ConnSnap, Control, HandedOver, HandoverError,
    ParkedRequest, ServerSnap,
};

#[cfg(test)]
mod tests;
