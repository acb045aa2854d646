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

/// What the server is doing; changed only through [`Control`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Not accepting, not reading: requests already running finish.
    Quiesced,
    /// Giving every socket back for a new image; never left.
    HandingOver,
}

/// How a request is treated across a hand-over: this table is the only place that knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Park {
    /// Runs to completion before a hand-over may start (counted by quiesce).
    No,
    /// May wait indefinitely; the new image runs it again on the same stream id.
    Replay,
    /// The `Upgrade` that asked for the hand-over: the new image answers it with the outcome.
    UpgradeReply,
}

fn parking(req: &Request) -> Park {
    match (req.service.as_str(), req.method.as_str()) {
        (ADMIN_SERVICE, "Upgrade") => Park::UpgradeReply,
        (_, "Wait") => Park::Replay,
        _ => Park::No,
    }
}

/// A parked request as the new image replays it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParkedRequest {
    pub stream_id: u32,
    pub flags: u8,
    /// The request envelope as it came off the wire.
    pub payload: Vec<u8>,
}

/// One connection as the new image adopts it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnSnap {
    /// The socket (same number in the new image: descriptors survive `execve`).
    pub fd: i32,
    /// Bytes read but not yet parsed (a partial frame, or frames read while quiesced).
    pub buffered: Vec<u8>,
    /// Payload bytes of a refused oversized frame still to be discarded.
    pub skip: u64,
    pub last_stream: u32,
    pub replay: Vec<ParkedRequest>,
    /// Stream ids of `Upgrade` requests to answer with the hand-over's outcome.
    pub upgrade_replies: Vec<u32>,
}

/// The whole server as the new image adopts it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSnap {
    pub listener: i32,
    pub conns: Vec<ConnSnap>,
}

/// What [`Control::hand_over`] returns: the snapshot, and the descriptors it names, kept open
/// until the `execve`.
pub struct HandedOver {
    pub snap: ServerSnap,
    fds: Vec<OwnedFd>,
}

impl HandedOver {
    /// Every descriptor that must survive the `execve`.
    pub fn fds(&self) -> Vec<i32> {
        self.fds.iter().map(|f| f.as_raw_fd()).collect()
    }
}

/// What the accept loop and the connections have given back so far.
#[derive(Default)]
struct Handed {
    listener: Option<OwnedFd>,
    conns: Vec<(OwnedFd, ConnSnap)>,
}

struct CtlInner {
    phase: watch::Sender<Phase>,
    /// Requests running that a hand-over must wait for ([`Park::No`]).
    busy: watch::Sender<usize>,
    /// The accept loop and connections that have not ended or handed over yet.
    live: watch::Sender<usize>,
    handed: Mutex<Handed>,
    connections: Arc<Semaphore>,
    /// Server-wide budgets (see the module docs).
    requests: Arc<Semaphore>,
    request_bytes: Arc<Semaphore>,
    parked_bytes: Arc<Semaphore>,
}

/// The handle through which the upgrade orchestration stops and hands over the server.
#[derive(Clone)]
pub struct Control {
    inner: Arc<CtlInner>,
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    pub fn new() -> Control {
        Control {
            inner: Arc::new(CtlInner {
                phase: watch::Sender::new(Phase::Serving),
                busy: watch::Sender::new(0),
                live: watch::Sender::new(0),
                handed: Mutex::new(Handed::default()),
                connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
                requests: Arc::new(Semaphore::new(MAX_IN_FLIGHT_TOTAL)),
                request_bytes: Arc::new(Semaphore::new(REQUEST_BYTES_TOTAL)),
                parked_bytes: Arc::new(Semaphore::new(PARKED_BYTES_TOTAL)),
            }),
        }
    }

    /// Stop accepting and reading, and wait (at most `limit`) until every request that is not
    /// parked has been answered. On timeout the server serves again and the error says how
    /// many were still running.
    pub async fn quiesce(&self, limit: Duration) -> Result<(), String> {
        if *self.inner.phase.borrow() != Phase::Serving {
            return Err("the server is already quiesced".into());
        }
        self.inner.phase.send_replace(Phase::Quiesced);
        let mut busy = self.inner.busy.subscribe();
        if tokio::time::timeout(limit, busy.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let n = *self.inner.busy.borrow();
            self.resume();
            return Err(format!(
                "{n} request(s) still running after {} ms",
                limit.as_millis()
            ));
        }
        Ok(())
    }

    /// Serve again after [`Control::quiesce`] (an abandoned upgrade).
    pub fn resume(&self) {
        self.inner.phase.send_if_modified(|p| {
            let was = *p == Phase::Quiesced;
            if was {
                *p = Phase::Serving;
            }
            was
        });
    }

    /// Take every socket back (after [`Control::quiesce`]). There is no way back to serving
    /// in this image afterwards: the caller must `execve`.
    pub async fn hand_over(&self) -> HandedOver {
        self.inner.phase.send_replace(Phase::HandingOver);
        let mut live = self.inner.live.subscribe();
        let _ = live.wait_for(|n| *n == 0).await;
        let Handed { listener, conns } = std::mem::take(&mut *lock(&self.inner.handed));
        let mut fds = Vec::new();
        let mut snap = ServerSnap {
            listener: -1,
            conns: Vec::new(),
        };
        if let Some(l) = listener {
            snap.listener = l.as_raw_fd();
            fds.push(l);
        }
        for (fd, c) in conns {
            snap.conns.push(c);
            fds.push(fd);
        }
        HandedOver { snap, fds }
    }

    fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// A request that counts as running for as long as the returned value lives.
    #[cfg(test)]
    pub(crate) fn busy_for_test(&self) -> impl Drop {
        Count::new(&self.inner.busy)
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

/// Adopt the connections a previous image handed over (after [`adopt_listener`]; serve the
/// listener with [`serve`] afterwards). Every descriptor is checked before any is taken, so a
/// failure leaves them all open for a rollback. Each `Upgrade` that asked for the hand-over is
/// answered with `upgrade_reply` first; parked requests are replayed on their stream ids.
pub fn adopt_connections(
    conns: &[ConnSnap],
    services: &Services,
    ctl: &Control,
    stop: &watch::Receiver<bool>,
    upgrade_reply: &Response,
) -> Result<(), String> {
    if conns.len() > MAX_CONNECTIONS {
        return Err("hand-over: too many connections".into());
    }
    let mut fds = std::collections::HashSet::new();
    if let Some(c) = conns.iter().find(|c| !fds.insert(c.fd)) {
        return Err(format!("hand-over: descriptor {} named twice", c.fd));
    }
    let mut parked = Vec::new();
    for c in conns {
        check_socket(c.fd)?;
        for p in &c.replay {
            let request = Request::parse_from_bytes(&p.payload)
                .map_err(|e| format!("hand-over: parked request {}: {e}", p.stream_id))?;
            parked.push(request);
        }
    }
    let mut parked = parked.into_iter();
    for c in conns {
        let Ok(slot) = ctl.inner.connections.clone().try_acquire_owned() else {
            return Err("hand-over: too many connections".into());
        };
        let stream = adopt_stream(c.fd)?;
        let conn = Conn::new(stream, services.clone(), ctl.clone(), c.clone());
        for sid in &c.upgrade_replies {
            conn.send(*sid, upgrade_reply.clone());
        }
        for p in &c.replay {
            let Some(request) = parked.next() else { break };
            let header = MessageHeader {
                length: p.payload.len() as u32,
                stream_id: p.stream_id,
                type_: TYPE_REQUEST,
                flags: p.flags,
            };
            let hold = match conn.admit(Park::Replay, p.payload.len() + HEADER_LEN) {
                Admit::Now(hold) => hold,
                // Already accepted by the previous image: replayed even past the budget.
                Admit::Later(..) | Admit::Refuse(_) => None,
            };
            conn.dispatch(header, request, Park::Replay, p.payload.clone(), hold);
        }
        conn.spawn(stop.clone(), slot);
    }
    Ok(())
}

/// `fstat` of a descriptor *number* that may not be open (inherited or handed over): no
/// `BorrowedFd` is made for it, since one must only ever name an open descriptor.
pub(crate) fn fstat_raw(fd: i32) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we own and only reads the number `fd`;
    // a closed descriptor is an EBADF error, not undefined behaviour.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so it filled the whole structure.
    Ok(unsafe { st.assume_init() })
}

fn check_socket(fd: i32) -> Result<(), String> {
    let st = fstat_raw(fd).map_err(|e| format!("hand-over: descriptor {fd}: {e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(format!("hand-over: descriptor {fd} is not a socket"));
    }
    // SAFETY: fcntl(F_SETFD) on a number just checked to be open; nothing is borrowed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(format!(
            "hand-over: descriptor {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The descriptors a server snapshot names, checked: at most once each (the listener and the
/// connections are each taken into ownership once), none of them stdio.
pub fn checked_fds(snap: &ServerSnap) -> Result<Vec<i32>, String> {
    let mut seen = std::collections::HashSet::new();
    let named = std::iter::once(snap.listener)
        .filter(|fd| *fd >= 0)
        .chain(snap.conns.iter().map(|c| c.fd));
    for fd in named {
        if fd <= 2 || !seen.insert(fd) {
            return Err(format!(
                "hand-over: descriptor {fd} named twice or as stdio by the server"
            ));
        }
    }
    let mut v: Vec<i32> = seen.into_iter().collect();
    v.sort_unstable();
    Ok(v)
}

/// Take the listening socket a previous image handed over.
pub fn adopt_listener(snap: &ServerSnap) -> Result<std::os::unix::net::UnixListener, String> {
    let fd = snap.listener;
    if fd < 0 {
        return Err("hand-over: no listening socket".into());
    }
    checked_fds(snap)?;
    check_socket(fd)?;
    for c in &snap.conns {
        check_socket(c.fd)?;
    }
    // SAFETY: `fd` was handed over by the previous image for exactly this, checked to be an
    // open socket, and nothing else in this image owns it.
    Ok(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) })
}

fn adopt_stream(fd: i32) -> Result<UnixStream, String> {
    check_socket(fd)?;
    // SAFETY: as in `adopt_listener`: a handed-over, checked, unowned socket.
    let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    s.set_nonblocking(true)
        .map_err(|e| format!("hand-over: connection: {e}"))?;
    UnixStream::from_std(s).map_err(|e| format!("hand-over: connection: {e}"))
}

/// The fixed header of an inbound frame. The decoding steps of the connection loop are pure
/// functions ([`FrameHeader::parse`], [`FrameHeader::check_len`], [`decode_frame`]) so the
/// fuzzer (`crate::fuzz`) drives the very code the loop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length announced by the peer (not yet checked against [`MAX_MESSAGE`]).
    pub len: usize,
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
}

impl FrameHeader {
    pub fn parse(hdr: &[u8; HEADER_LEN]) -> FrameHeader {
        FrameHeader {
            len: u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize,
            stream_id: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
            kind: hdr[8],
            flags: hdr[9],
        }
    }

    /// An oversized frame is refused before its payload is read: the loop discards the
    /// payload unbuffered and answers with this error, keeping the connection (Go does too).
    pub fn check_len(&self) -> Result<(), FrameError> {
        if self.len > MAX_MESSAGE {
            return Err(FrameError {
                stream_id: self.stream_id,
                code: Code::RESOURCE_EXHAUSTED,
                message: format!(
                    "message length {} exceed maximum message size of {MAX_MESSAGE}",
                    self.len
                ),
            });
        }
        Ok(())
    }
}

/// A complete inbound frame the loop accepts.
#[derive(Debug)]
pub enum Frame {
    /// A unary request to dispatch.
    Request {
        header: MessageHeader,
        request: Request,
    },
    /// Data frames belong to streaming RPCs, which no shim API has; ignored like ttrpc 1.1
    /// ignores unknown types.
    Ignored,
}

/// A frame refused with a status answered on its stream; the connection stays up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub stream_id: u32,
    pub code: Code,
    pub message: String,
}

impl FrameError {
    pub fn response(&self) -> Response {
        status_response(self.code, self.message.clone())
    }
}

/// Decode a complete frame (header and its payload of `header.len` bytes) the way the
/// connection loop does, with the Go server's stream id rules. `last_stream` is the
/// connection's highest accepted stream id; it advances once a frame passes those rules, even
/// if its envelope then fails to decode (the id is used up either way).
pub fn decode_frame(
    header: &FrameHeader,
    payload: &[u8],
    last_stream: &mut u32,
) -> Result<Frame, FrameError> {
    let stream_id = header.stream_id;
    let refuse = |code: Code, message: String| FrameError {
        stream_id,
        code,
        message,
    };
    if header.kind != TYPE_REQUEST {
        return Ok(Frame::Ignored);
    }
    if stream_id % 2 == 0 {
        return Err(refuse(
            Code::INVALID_ARGUMENT,
            "StreamID must be odd for client initiated streams".into(),
        ));
    }
    if stream_id <= *last_stream {
        return Err(refuse(
            Code::INVALID_ARGUMENT,
            "StreamID cannot be re-used and must increment".into(),
        ));
    }
    *last_stream = stream_id;
    let request = Request::parse_from_bytes(payload).map_err(|e| {
        refuse(
            Code::INVALID_ARGUMENT,
            format!("invalid request envelope: {e}"),
        )
    })?;
    Ok(Frame::Request {
        header: MessageHeader {
            length: header.len as u32,
            stream_id,
            type_: header.kind,
            flags: header.flags,
        },
        request,
    })
}

/// The header of an outbound frame.
pub(crate) fn header_bytes(len: usize, stream_id: u32, kind: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&(len as u32).to_be_bytes());
    h[4..8].copy_from_slice(&stream_id.to_be_bytes());
    h[8] = kind;
    h
}

fn status_response(code: Code, msg: impl Into<String>) -> Response {
    Response {
        status: Some(ttrpc::get_status(code, msg.into())).into(),
        ..Default::default()
    }
}

/// Encode a response frame; a response too large for the wire becomes an error response
/// (Go would close the whole connection, failing every other call on it).
pub(crate) fn encode_response(stream_id: u32, resp: Response) -> Vec<u8> {
    let mut body = resp.write_to_bytes().unwrap_or_default();
    if body.len() > MAX_MESSAGE {
        let n = body.len();
        body = status_response(
            Code::RESOURCE_EXHAUSTED,
            format!("message length {n} exceed maximum message size of {MAX_MESSAGE}"),
        )
        .write_to_bytes()
        .unwrap_or_default();
    }
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    frame.extend_from_slice(&header_bytes(body.len(), stream_id, TYPE_RESPONSE));
    frame.extend_from_slice(&body);
    frame
}

/// What one request holds of the budgets (see the module docs); shared by its handler task
/// and its queued answer, released when both are done.
struct Hold {
    _permits: Vec<OwnedSemaphorePermit>,
}

/// What a connection's writer task is asked to do.
enum Out {
    /// A frame, the reply budget it takes until written, and its request's [`Hold`].
    Frame(Vec<u8>, Option<OwnedSemaphorePermit>, Option<Arc<Hold>>),
    /// Write everything queued before this, then give the write half back (hand-over).
    Finish(oneshot::Sender<OwnedWriteHalf>),
}

/// The sending side of a connection: frames queue only within the reply budget.
#[derive(Clone)]
struct Replies {
    tx: mpsc::UnboundedSender<Out>,
    budget: Arc<Semaphore>,
}

impl Replies {
    /// The reply budget for `frame` (waits while the peer is not reading).
    async fn room(&self, frame: &[u8]) -> Option<OwnedSemaphorePermit> {
        let n = frame.len().clamp(1, REPLY_BYTES) as u32;
        self.budget.clone().acquire_many_owned(n).await.ok()
    }

    /// Queue `frame` with its reply budget already taken.
    fn queue(&self, frame: Vec<u8>, room: Option<OwnedSemaphorePermit>, hold: Option<Arc<Hold>>) {
        let _ = self.tx.send(Out::Frame(frame, room, hold));
    }

    /// Queue an answer without waiting (only for the few frames that cannot wait: the
    /// hand-over's own answers); it still takes what is left of the budget.
    fn queue_now(&self, frame: Vec<u8>) {
        let n = frame.len().clamp(1, REPLY_BYTES) as u32;
        let room = self.budget.clone().try_acquire_many_owned(n).ok();
        self.queue(frame, room, None);
    }
}

/// Whether the budgets let a request in now.
enum Admit {
    Now(Option<Arc<Hold>>),
    /// Wait for this semaphore to have `n` permits, then parse the frame again.
    Later(Arc<Semaphore>, u32),
    /// Refuse it (parked requests past their budget).
    Refuse(String),
}

/// A request being served on a connection.
struct InFlight {
    park: Park,
    flags: u8,
    /// The envelope, kept for replay ([`Park::Replay`] only).
    payload: Vec<u8>,
    task: Option<AbortHandle>,
}

type InFlightMap = Arc<Mutex<HashMap<u32, InFlight>>>;

/// One connection's reading side and what its requests share.
struct Conn {
    services: Services,
    ctl: Control,
    rd: OwnedReadHalf,
    writer: tokio::task::JoinHandle<()>,
    replies: Replies,
    in_flight: InFlightMap,
    permits: Arc<Semaphore>,
    parked: Arc<Semaphore>,
    /// Read but not yet parsed.
    buf: Vec<u8>,
    /// Payload bytes of a refused oversized frame still to discard.
    skip: u64,
    last_stream: u32,
    live: Count,
}

/// What the parser found at the front of the buffer.
enum Next {
    /// A complete request, not yet consumed.
    Request {
        header: MessageHeader,
        request: Request,
        len: usize,
        last_stream: u32,
    },
    /// Consumed; nothing to dispatch.
    Consumed,
    /// Consumed; answer this (a refused frame).
    Answer(u32, Response),
    /// Need `n` more bytes at least.
    More(usize),
}

impl Conn {
    fn new(stream: UnixStream, services: Services, ctl: Control, from: ConnSnap) -> Conn {
        let (rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let writer = tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                match out {
                    // The budgets this frame and its request hold go only once it is written.
                    Out::Frame(frame, _room, _hold) => {
                        if wr.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                    Out::Finish(back) => {
                        let _ = wr.flush().await;
                        let _ = back.send(wr);
                        return;
                    }
                }
            }
        });
        let live = Count::new(&ctl.inner.live);
        Conn {
            services,
            ctl,
            rd,
            writer,
            replies: Replies {
                tx,
                budget: Arc::new(Semaphore::new(REPLY_BYTES)),
            },
            in_flight: Arc::new(Mutex::new(HashMap::new())),
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            parked: Arc::new(Semaphore::new(MAX_PARKED)),
            buf: from.buffered,
            skip: from.skip,
            last_stream: from.last_stream,
            live,
        }
    }

    fn spawn(self, stop: watch::Receiver<bool>, slot: OwnedSemaphorePermit) {
        tokio::spawn(async move {
            self.run(stop).await;
            drop(slot);
        });
    }

    /// Queue an answer now (the hand-over's answers to adopted requests).
    fn send(&self, stream_id: u32, resp: Response) {
        self.replies.queue_now(encode_response(stream_id, resp));
    }

    /// Take what a request of kind `park` with a `len`-byte frame holds (see [`Admit`]).
    fn admit(&self, park: Park, len: usize) -> Admit {
        let len = len.max(1);
        let ctl = &self.ctl.inner;
        let mut permits = Vec::new();
        let mut take = |sem: &Arc<Semaphore>, n: usize| -> Option<Admit> {
            let n = n.min(u32::MAX as usize) as u32;
            match sem.clone().try_acquire_many_owned(n) {
                Ok(p) => {
                    permits.push(p);
                    None
                }
                Err(_) => Some(Admit::Later(sem.clone(), n)),
            }
        };
        match park {
            Park::UpgradeReply => return Admit::Now(None),
            Park::No => {
                for (sem, n) in [
                    (&self.permits, 1),
                    (&ctl.requests, 1),
                    (&ctl.request_bytes, len),
                ] {
                    if let Some(wait) = take(sem, n) {
                        return wait;
                    }
                }
            }
            Park::Replay => {
                if len > MAX_PARKED_REQUEST {
                    return Admit::Refuse(format!(
                        "a waiting request may not exceed {} KiB",
                        MAX_PARKED_REQUEST >> 10
                    ));
                }
                for (sem, n) in [(&self.parked, 1), (&ctl.parked_bytes, 3 * len)] {
                    if take(sem, n).is_some() {
                        return Admit::Refuse(format!(
                            "too many waiting requests ({MAX_PARKED} per connection, \
                             {} MiB in all)",
                            PARKED_BYTES_TOTAL >> 20
                        ));
                    }
                }
            }
        }
        Admit::Now(Some(Arc::new(Hold { _permits: permits })))
    }

    /// Parse (without consuming a request) what is at the front of the buffer.
    fn next(&mut self) -> Next {
        if self.skip > 0 {
            let n = (self.skip as usize).min(self.buf.len());
            self.buf.drain(..n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Next::More(READ_CHUNK);
            }
        }
        let Some(hdr) = self.buf.first_chunk::<HEADER_LEN>() else {
            return Next::More(HEADER_LEN - self.buf.len());
        };
        let frame = FrameHeader::parse(hdr);
        if let Err(refused) = frame.check_len() {
            // Answer now and discard the payload as it arrives, keeping the connection.
            self.buf.drain(..HEADER_LEN);
            self.skip = frame.len as u64;
            return Next::Answer(refused.stream_id, refused.response());
        }
        let total = HEADER_LEN + frame.len;
        if self.buf.len() < total {
            return Next::More(total - self.buf.len());
        }
        let mut last_stream = self.last_stream;
        match decode_frame(&frame, &self.buf[HEADER_LEN..total], &mut last_stream) {
            Ok(Frame::Request { header, request }) => Next::Request {
                header,
                request,
                len: total,
                last_stream,
            },
            Ok(Frame::Ignored) => {
                tracing::debug!(
                    kind = frame.kind,
                    stream_id = frame.stream_id,
                    "ignoring non-request frame"
                );
                self.last_stream = last_stream;
                self.buf.drain(..total);
                Next::Consumed
            }
            Err(refused) => {
                self.last_stream = last_stream;
                self.buf.drain(..total);
                Next::Answer(refused.stream_id, refused.response())
            }
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut phase = self.ctl.phase();
        loop {
            let now = *phase.borrow_and_update();
            match now {
                Phase::HandingOver => {
                    self.hand_over().await;
                    return;
                }
                Phase::Quiesced => {
                    tokio::select! {
                        _ = phase.changed() => continue,
                        _ = stop.changed() => break,
                    }
                }
                Phase::Serving => {}
            }
            let want = match self.next() {
                Next::Consumed => continue,
                Next::Answer(stream_id, resp) => {
                    // A refused frame's answer waits for reply budget like any other: a peer
                    // that sends garbage and never reads must not grow the queue either.
                    let frame = encode_response(stream_id, resp);
                    let room = tokio::select! {
                        r = self.replies.room(&frame) => r,
                        _ = stop.changed() => break,
                    };
                    self.replies.queue(frame, room, None);
                    continue;
                }
                Next::Request {
                    header,
                    request,
                    len,
                    last_stream,
                } => {
                    let park = parking(&request);
                    let hold = match self.admit(park, len) {
                        Admit::Now(hold) => hold,
                        Admit::Later(sem, n) => {
                            // Back-pressure: leave the frame in the buffer until the budget
                            // has room again (or the server is stopped or handed over).
                            tokio::select! {
                                _ = sem.acquire_many(n) => {}
                                _ = phase.changed() => {}
                                _ = stop.changed() => break,
                            }
                            continue;
                        }
                        Admit::Refuse(why) => {
                            self.last_stream = last_stream;
                            self.buf.drain(..len);
                            let frame = encode_response(
                                header.stream_id,
                                status_response(Code::RESOURCE_EXHAUSTED, why),
                            );
                            let room = tokio::select! {
                                r = self.replies.room(&frame) => r,
                                _ = stop.changed() => break,
                            };
                            self.replies.queue(frame, room, None);
                            continue;
                        }
                    };
                    let payload = if park == Park::Replay {
                        self.buf[HEADER_LEN..len].to_vec()
                    } else {
                        Vec::new()
                    };
                    self.last_stream = last_stream;
                    self.buf.drain(..len);
                    self.dispatch(header, request, park, payload, hold);
                    continue;
                }
                Next::More(n) => n,
            };
            if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
                self.buf = Vec::new(); // a large frame's buffer is not kept around
            }
            self.buf
                .reserve(want.clamp(READ_CHUNK, MAX_MESSAGE + HEADER_LEN));
            tokio::select! {
                r = self.rd.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => break, // peer closed (or reset): nothing to answer
                    Ok(_) => {}
                },
                _ = phase.changed() => {}
                _ = stop.changed() => break,
            }
        }
        // Let responses already queued go out; the writer ends when every sender is gone.
        let Conn {
            replies, writer, ..
        } = self;
        drop(replies);
        let _ = writer.await;
    }

    /// Run one request in its own task; the in-flight entry lives until its answer is queued,
    /// `hold` until its handler ended and its answer was written.
    fn dispatch(
        &self,
        header: MessageHeader,
        request: Request,
        park: Park,
        payload: Vec<u8>,
        hold: Option<Arc<Hold>>,
    ) {
        let stream_id = header.stream_id;
        let flags = header.flags;
        lock(&self.in_flight).insert(
            stream_id,
            InFlight {
                park,
                flags,
                payload,
                task: None,
            },
        );
        let busy = (park == Park::No).then(|| Count::new(&self.ctl.inner.busy));
        let (services, replies, in_flight) = (
            self.services.clone(),
            self.replies.clone(),
            self.in_flight.clone(),
        );
        let task = tokio::spawn(async move {
            let (resp, busy) = dispatch(&services, header, request, busy, hold.clone()).await;
            let frame = encode_response(stream_id, resp);
            let room = replies.room(&frame).await;
            // Same poll: the entry goes and the answer is queued (see the module docs).
            lock(&in_flight).remove(&stream_id);
            replies.queue(frame, room, hold);
            drop(busy);
        });
        if let Some(e) = lock(&self.in_flight).get_mut(&stream_id) {
            e.task = Some(task.abort_handle());
        }
    }

    /// Give this connection back for a new image: stop parked requests (their answers will
    /// come from the new image), flush queued answers, return the socket.
    async fn hand_over(self) {
        let Conn {
            rd,
            writer,
            replies,
            in_flight,
            buf,
            skip,
            last_stream,
            live,
            ctl,
            ..
        } = self;
        let mut snap = ConnSnap {
            fd: -1,
            buffered: buf,
            skip,
            last_stream,
            replay: Vec::new(),
            upgrade_replies: Vec::new(),
        };
        let entries: Vec<(u32, InFlight)> = lock(&in_flight).drain().collect();
        for (stream_id, e) in entries {
            if let Some(t) = &e.task {
                t.abort();
            }
            match e.park {
                Park::Replay => snap.replay.push(ParkedRequest {
                    stream_id,
                    flags: e.flags,
                    payload: e.payload,
                }),
                Park::UpgradeReply => snap.upgrade_replies.push(stream_id),
                Park::No => {
                    tracing::error!(stream_id, "hand-over: a request was still running");
                }
            }
        }
        snap.replay.sort_by_key(|p| p.stream_id);
        let (back_tx, back_rx) = oneshot::channel();
        let _ = replies.tx.send(Out::Finish(back_tx));
        drop(replies);
        let wr = match tokio::time::timeout(HANDOVER_FLUSH, back_rx).await {
            Ok(wr) => wr.ok(),
            Err(_) => {
                tracing::warn!(
                    "hand-over: a peer did not read its answers for {}s; its connection is \
                     closed instead of handed over",
                    HANDOVER_FLUSH.as_secs()
                );
                writer.abort();
                None
            }
        };
        let _ = writer.await;
        let Some(wr) = wr else {
            // The writer failed: the peer is gone, and so is everything it waited for.
            tracing::debug!("hand-over: connection already broken; dropped");
            drop(live);
            return;
        };
        let stream = match rd.reunite(wr) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "hand-over: connection halves");
                drop(live);
                return;
            }
        };
        match stream.into_std() {
            Ok(s) => {
                let fd = OwnedFd::from(s);
                snap.fd = fd.as_raw_fd();
                lock(&ctl.inner.handed).conns.push((fd, snap));
            }
            Err(e) => tracing::error!(error = %e, "hand-over: connection"),
        }
        drop(live);
    }
}

/// Serve one accepted connection until the peer closes it or `stop` turns true, outside any
/// accept loop. Crate-visible so the fuzzer can run it over a socket pair.
pub(crate) async fn connection(
    stream: UnixStream,
    services: Services,
    stop: watch::Receiver<bool>,
) {
    let conn = Conn::new(stream, services, Control::new(), ConnSnap::default());
    conn.run(stop).await;
}

/// Run one request and return its answer, and the request's busy count once it is really
/// done (a handler outliving its deadline keeps counting until it ends).
async fn dispatch(
    services: &Services,
    header: MessageHeader,
    req: Request,
    busy: Option<Count>,
    hold: Option<Arc<Hold>>,
) -> (Response, Option<Count>) {
    let Some(service) = services.get(&req.service) else {
        return (
            status_response(Code::UNIMPLEMENTED, format!("service {}", req.service)),
            busy,
        );
    };
    let Some(method) = service.methods.get(&req.method) else {
        return (
            status_response(Code::UNIMPLEMENTED, format!("method {}", req.method)),
            busy,
        );
    };
    let mut metadata: HashMap<String, Vec<String>> = HashMap::new();
    for kv in &req.metadata {
        metadata
            .entry(kv.key.to_lowercase())
            .or_default()
            .push(kv.value.clone());
    }
    let timeout = (req.timeout_nano > 0).then(|| Duration::from_nanos(req.timeout_nano as u64));
    let ctx = TtrpcContext {
        mh: header,
        metadata,
        timeout_nano: req.timeout_nano,
        connection_data: Arc::new(ttrpc::ConnectionData),
    };
    let path = format!("/{}/{}", req.service, req.method);
    // The handler runs to completion in its own task even if the caller's deadline passes:
    // core operations must never stop half-way.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let service_name = req.service.clone();
    let method_name = req.method.clone();
    let services = services.clone();
    tokio::spawn(async move {
        let Some(m) = services
            .get(&service_name)
            .and_then(|s| s.methods.get(&method_name))
        else {
            return;
        };
        let r = m.handler(ctx, req).await;
        // Nobody waits any more (deadline passed): the count and the budgets end here, with
        // the work.
        let _ = done_tx.send((r, busy));
        drop(hold);
    });
    let _ = method;
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, done_rx).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(method = %path, "deadline passed; the operation continues in the background");
                return (
                    status_response(
                        Code::DEADLINE_EXCEEDED,
                        format!("{path}: context deadline exceeded"),
                    ),
                    None,
                );
            }
        },
        None => done_rx.await,
    };
    match result {
        Ok((Ok(resp), busy)) => (resp, busy),
        Ok((Err(ttrpc::Error::RpcStatus(s)), busy)) => (
            Response {
                status: Some(s).into(),
                ..Default::default()
            },
            busy,
        ),
        // The generated code reports an undecodable payload (or an unencodable reply) as a
        // plain error; Go's server calls that INTERNAL.
        Ok((Err(e), busy)) => (status_response(Code::INTERNAL, format!("ttrpc: {e}")), busy),
        Err(_) => (
            status_response(
                Code::INTERNAL,
                format!("{path}: handler ended without a reply"),
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The hand-over inside one process: a server is quiesced and handed over, and a second
    //! one adopts its descriptors, as the next image would after `execve`.

    use super::*;
    use async_trait::async_trait;
    use tokio::io::AsyncReadExt;
    use ttrpc::r#async::MethodHandler;

    /// `Slow`: answers its payload after 50 ms. `Wait`: answers `tag` once released.
    struct Slow;
    struct Waits {
        tag: &'static str,
        release: Arc<tokio::sync::Notify>,
        held: bool,
    }

    fn ok(payload: Vec<u8>) -> Response {
        Response {
            status: Some(ttrpc::get_status(Code::OK, String::new())).into(),
            payload,
            ..Default::default()
        }
    }

    #[async_trait]
    impl MethodHandler for Slow {
        async fn handler(&self, _ctx: TtrpcContext, req: Request) -> ttrpc::Result<Response> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(ok(req.payload))
        }
    }

    #[async_trait]
    impl MethodHandler for Waits {
        async fn handler(&self, _ctx: TtrpcContext, _req: Request) -> ttrpc::Result<Response> {
            if self.held {
                self.release.notified().await;
            }
            Ok(ok(self.tag.as_bytes().to_vec()))
        }
    }

    fn services(wait: Waits) -> Services {
        let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
        methods.insert("Slow".into(), Box::new(Slow));
        methods.insert("Wait".into(), Box::new(wait));
        let mut m = HashMap::new();
        m.insert(
            "test.Svc".to_string(),
            Service {
                methods,
                streams: HashMap::new(),
            },
        );
        Arc::new(m)
    }

    fn frame(stream_id: u32, method: &str, payload: &[u8]) -> Vec<u8> {
        let body = Request {
            service: "test.Svc".into(),
            method: method.into(),
            payload: payload.to_vec(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let mut f = header_bytes(body.len(), stream_id, TYPE_REQUEST).to_vec();
        f.extend_from_slice(&body);
        f
    }

    async fn read_response(s: &mut UnixStream) -> (u32, Vec<u8>) {
        let mut hdr = [0u8; HEADER_LEN];
        s.read_exact(&mut hdr).await.unwrap();
        let h = FrameHeader::parse(&hdr);
        let mut body = vec![0u8; h.len];
        s.read_exact(&mut body).await.unwrap();
        let r = Response::parse_from_bytes(&body).unwrap();
        assert_eq!(r.status.code(), Code::OK, "{:?}", r.status);
        (h.stream_id, r.payload)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn handed_over_server_loses_no_request_and_no_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let old = Control::new();
        let (_stop_tx, stop) = watch::channel(false);
        let release = Arc::new(tokio::sync::Notify::new());
        let svc = services(Waits {
            tag: "old",
            release: release.clone(),
            held: true,
        });
        tokio::spawn(serve(listener, svc, old.clone(), stop.clone()));

        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(&frame(1, "Wait", b"")).await.unwrap();
        client.write_all(&frame(3, "Slow", b"three")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Quiesce waits for Slow; Wait stays parked.
        old.quiesce(Duration::from_secs(5)).await.unwrap();
        // Half a frame arrives while quiesced: it must be handed over as it is.
        let five = frame(5, "Slow", b"five");
        client.write_all(&five[..7]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let handed = old.hand_over().await;
        assert_eq!(read_response(&mut client).await, (3, b"three".to_vec()));
        let snap = handed.snap.clone();
        assert_eq!(snap.conns.len(), 1);
        assert_eq!(snap.conns[0].last_stream, 3);
        assert_eq!(snap.conns[0].replay.len(), 1);
        assert_eq!(snap.conns[0].replay[0].stream_id, 1);
        // The old Wait can no longer answer.
        release.notify_waiters();

        // The "new image": adopt everything (the old owners are forgotten, as by execve).
        let snap: ServerSnap =
            serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        std::mem::forget(handed);
        let new = Control::new();
        let svc = services(Waits {
            tag: "new",
            release: Arc::new(tokio::sync::Notify::new()),
            held: false,
        });
        let l = adopt_listener(&snap).unwrap();
        l.set_nonblocking(true).unwrap();
        let l = UnixListener::from_std(l).unwrap();
        adopt_connections(&snap.conns, &svc, &new, &stop, &ok(Vec::new())).unwrap();
        tokio::spawn(serve(l, svc, new, stop));

        client.write_all(&five[7..]).await.unwrap();
        let mut got = vec![
            read_response(&mut client).await,
            read_response(&mut client).await,
        ];
        got.sort();
        assert_eq!(got, vec![(1, b"new".to_vec()), (5, b"five".to_vec())]);
        // Stream ids keep their rule across the hand-over; new connections are served.
        client.write_all(&frame(7, "Slow", b"seven")).await.unwrap();
        assert_eq!(read_response(&mut client).await, (7, b"seven".to_vec()));
        let mut other = UnixStream::connect(&path).await.unwrap();
        other.write_all(&frame(1, "Slow", b"x")).await.unwrap();
        assert_eq!(read_response(&mut other).await, (1, b"x".to_vec()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn quiesce_times_out_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let ctl = Control::new();
        let (_stop_tx, stop) = watch::channel(false);
        let svc = services(Waits {
            tag: "w",
            release: Arc::new(tokio::sync::Notify::new()),
            held: true,
        });
        tokio::spawn(serve(listener, svc, ctl.clone(), stop));
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(&frame(1, "Slow", b"a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let e = ctl.quiesce(Duration::from_millis(5)).await.unwrap_err();
        assert!(e.contains("1 request(s) still running"), "{e}");
        // Serving again: the running request answers, and new ones are read.
        client.write_all(&frame(3, "Slow", b"b")).await.unwrap();
        let mut got = vec![
            read_response(&mut client).await,
            read_response(&mut client).await,
        ];
        got.sort();
        assert_eq!(got, vec![(1, b"a".to_vec()), (3, b"b".to_vec())]);
    }
}
