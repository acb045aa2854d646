//! The connection loop: one reader per connection, a writer task, one task per request,
//! bounded by the budgets described in the module docs of `server`.

use super::*;

/// What one request holds of the budgets (see the module docs); shared by its handler task
/// and its queued answer, released when both are done.
pub(super) struct Hold {
    pub(super) _permits: Vec<OwnedSemaphorePermit>,
}

/// What a connection's writer task is asked to do.
pub(super) enum Out {
    /// A frame, the reply budget it takes until written, and its request's [`Hold`].
    Frame(Vec<u8>, Option<OwnedSemaphorePermit>, Option<Arc<Hold>>),
    /// Write everything queued before this, then give the write half back (hand-over).
    Finish(oneshot::Sender<OwnedWriteHalf>),
}

/// The sending side of a connection: frames queue only within the reply budget.
#[derive(Clone)]
pub(super) struct Replies {
    pub(super) tx: mpsc::UnboundedSender<Out>,
    pub(super) budget: Arc<Semaphore>,
}

impl Replies {
    /// The reply budget for `frame` (waits while the peer is not reading).
    pub(super) async fn room(&self, frame: &[u8]) -> Option<OwnedSemaphorePermit> {
        let n = frame.len().clamp(1, REPLY_BYTES) as u32;
        self.budget.clone().acquire_many_owned(n).await.ok()
    }

    /// Queue `frame` with its reply budget already taken.
    pub(super) fn queue(
        &self,
        frame: Vec<u8>,
        room: Option<OwnedSemaphorePermit>,
        hold: Option<Arc<Hold>>,
    ) {
        let _ = self.tx.send(Out::Frame(frame, room, hold));
    }

    /// Queue an answer without waiting (only for the few frames that cannot wait: the
    /// hand-over's own answers); it still takes what is left of the budget.
    pub(super) fn queue_now(&self, frame: Vec<u8>) {
        let n = frame.len().clamp(1, REPLY_BYTES) as u32;
        let room = self.budget.clone().try_acquire_many_owned(n).ok();
        self.queue(frame, room, None);
    }
}

/// Whether the budgets let a request in now.
pub(super) enum Admit {
    Now(Option<Arc<Hold>>),
    /// Wait for this semaphore to have `n` permits, then parse the frame again.
    Later(Arc<Semaphore>, u32),
    /// Refuse it (parked requests past their budget).
    Refuse(String),
}

/// A request being served on a connection.
pub(super) struct InFlight {
    pub(super) park: Park,
    pub(super) flags: u8,
    /// The envelope, kept for replay ([`Park::Replay`] only).
    pub(super) payload: Vec<u8>,
    pub(super) task: Option<AbortHandle>,
}

pub(super) type InFlightMap = Arc<Mutex<HashMap<u32, InFlight>>>;

/// One connection's reading side and what its requests share.
pub(super) struct Conn {
    pub(super) services: Services,
    pub(super) ctl: Control,
    pub(super) rd: OwnedReadHalf,
    pub(super) writer: tokio::task::JoinHandle<()>,
    pub(super) replies: Replies,
    pub(super) in_flight: InFlightMap,
    pub(super) permits: Arc<Semaphore>,
    pub(super) parked: Arc<Semaphore>,
    /// Read but not yet parsed.
    pub(super) buf: Vec<u8>,
    /// Payload bytes of a refused oversized frame still to discard.
    pub(super) skip: u64,
    pub(super) last_stream: u32,
    pub(super) live: Count,
}

/// What the parser found at the front of the buffer.
pub(super) enum Next {
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
    pub(super) fn new(
        stream: UnixStream,
        services: Services,
        ctl: Control,
        from: ConnSnap,
    ) -> Conn {
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

    pub(super) fn spawn(self, stop: watch::Receiver<bool>, slot: OwnedSemaphorePermit) {
        tokio::spawn(async move {
            self.run(stop).await;
            drop(slot);
        });
    }

    /// Queue an answer now (the hand-over's answers to adopted requests).
    pub(super) fn send(&self, stream_id: u32, resp: Response) {
        self.replies.queue_now(encode_response(stream_id, resp));
    }

    /// Take what a request of kind `park` with a `len`-byte frame holds (see [`Admit`]).
    pub(super) fn admit(&self, park: Park, len: usize) -> Admit {
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
    pub(super) fn next(&mut self) -> Next {
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

    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
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
    pub(super) fn dispatch(
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
    pub(super) async fn hand_over(self) {
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
#[cfg(feature = "fuzz")]
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
pub(super) async fn dispatch(
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
