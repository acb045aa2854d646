//! Our ttrpc server: the connection loop in front of the generated service handlers.
//!
//! Why not the `ttrpc` crate's server: containerd depends on Go-server behaviour that crate
//! does not have: an unknown service must answer UNIMPLEMENTED (it answers INVALID_ARGUMENT),
//! only peers with our uid/gid may connect, an oversized frame must be answered
//! RESOURCE_EXHAUSTED without dropping the connection, and a request deadline must not cancel
//! a handler halfway through a runtime call (a half-done Create would leave state behind). We
//! keep the crate's codec, envelope types and generated handlers, and own only the loop.
//!
//! Concurrency: each connection has a reader (this task) and a writer task; each request runs
//! in its own task, so a blocking `Wait` does not hold up `State` on the same connection, and
//! responses go out in completion order. In-flight requests per connection are bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, Semaphore};
use ttrpc::r#async::{Service, TtrpcContext};
use ttrpc::{Code, MessageHeader, Request, Response};

/// Largest frame payload ttrpc allows.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Size of the fixed frame header (length, stream id, type, flags).
pub const HEADER_LEN: usize = 10;
const TYPE_REQUEST: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
/// Requests a single connection may have in flight; more wait (back-pressure on the socket)
/// instead of queueing without bound. `Wait` is not counted: containerd keeps one open per
/// live process for as long as it lives (a container with a thousand execs has a thousand),
/// and each costs only a parked task.
const MAX_IN_FLIGHT: usize = 256;
/// Connections served at once. containerd opens one per task (plus short-lived ones); beyond
/// this a new connection is closed at once, so idle or abandoned sockets cannot exhaust the
/// shim's descriptors.
const MAX_CONNECTIONS: usize = 4096;

pub type Services = Arc<HashMap<String, Service>>;

/// Serve `listener` until `stop` turns true. Existing connections are closed when it does.
pub async fn serve(listener: UnixListener, services: Services, mut stop: watch::Receiver<bool>) {
    let (me_uid, me_gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
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
                    let Ok(slot) = open.clone().try_acquire_owned() else {
                        tracing::warn!(limit = MAX_CONNECTIONS, "too many connections; closing a new one");
                        continue;
                    };
                    let (services, stop) = (services.clone(), stop.clone());
                    tokio::spawn(async move {
                        connection(stream, services, stop).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // EMFILE and friends: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => {
                if *stop.borrow() { return; }
            }
        }
    }
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

/// Serve one accepted connection until the peer closes it or `stop` turns true. Crate-visible
/// so the fuzzer can run it over a socket pair.
pub(crate) async fn connection(
    stream: UnixStream,
    services: Services,
    mut stop: watch::Receiver<bool>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut last_stream = 0u32;
    loop {
        let mut hdr = [0u8; HEADER_LEN];
        let read = tokio::select! {
            r = rd.read_exact(&mut hdr) => r,
            _ = stop.changed() => break,
        };
        if read.is_err() {
            break; // peer closed (or reset): nothing to answer
        }
        let frame = FrameHeader::parse(&hdr);
        if let Err(refused) = frame.check_len() {
            // Skip the payload without buffering it, answer, and keep the connection.
            let mut left = frame.len as u64;
            let mut sink = tokio::io::sink();
            match tokio::io::copy(&mut (&mut rd).take(left), &mut sink).await {
                Ok(n) => left -= n,
                Err(_) => break,
            }
            if left > 0 {
                break;
            }
            if tx
                .send(encode_response(refused.stream_id, refused.response()))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let mut payload = vec![0u8; frame.len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let (header, req) = match decode_frame(&frame, &payload, &mut last_stream) {
            Ok(Frame::Request { header, request }) => (header, request),
            Ok(Frame::Ignored) => {
                tracing::debug!(
                    kind = frame.kind,
                    stream_id = frame.stream_id,
                    "ignoring non-request frame"
                );
                continue;
            }
            Err(refused) => {
                let _ = tx
                    .send(encode_response(refused.stream_id, refused.response()))
                    .await;
                continue;
            }
        };
        let stream_id = header.stream_id;
        let permit = if req.method == "Wait" {
            None
        } else {
            match in_flight.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => break,
            }
        };
        let services = services.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let resp = dispatch(&services, header, req).await;
            let _ = tx.send(encode_response(stream_id, resp)).await;
            drop(permit);
        });
    }
    drop(tx);
    // Let responses already queued go out; the writer ends when every sender is gone.
    let _ = writer.await;
}

async fn dispatch(services: &Services, header: MessageHeader, req: Request) -> Response {
    let Some(service) = services.get(&req.service) else {
        return status_response(Code::UNIMPLEMENTED, format!("service {}", req.service));
    };
    let Some(method) = service.methods.get(&req.method) else {
        return status_response(Code::UNIMPLEMENTED, format!("method {}", req.method));
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
        let _ = done_tx.send(r);
    });
    let _ = method;
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, done_rx).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(method = %path, "deadline passed; the operation continues in the background");
                return status_response(
                    Code::DEADLINE_EXCEEDED,
                    format!("{path}: context deadline exceeded"),
                );
            }
        },
        None => done_rx.await,
    };
    match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(ttrpc::Error::RpcStatus(s))) => Response {
            status: Some(s).into(),
            ..Default::default()
        },
        // The generated code reports an undecodable payload (or an unencodable reply) as a
        // plain error; Go's server calls that INTERNAL.
        Ok(Err(e)) => status_response(Code::INTERNAL, format!("ttrpc: {e}")),
        Err(_) => status_response(
            Code::INTERNAL,
            format!("{path}: handler ended without a reply"),
        ),
    }
}
