//! The hand-over of a live upgrade: [`Control`] (quiesce, then give back every socket,
//! unparsed byte and parked request), the snapshot types the next image receives, and the
//! adoption of those descriptors in the new image (checked before any is taken).

use super::*;

/// Why the server cannot quiesce, or why the sockets a previous image handed over cannot be
/// adopted (then the new image rolls back). The texts are the ones operators read in a
/// refusal or a rollback.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("the server is already quiesced")]
    AlreadyQuiesced,
    #[error("{running} request(s) still running after {ms} ms")]
    StillRunning { running: usize, ms: u128 },
    #[error("hand-over: too many connections")]
    TooManyConnections,
    #[error("hand-over: descriptor {fd} named twice")]
    ConnectionTwice { fd: i32 },
    #[error("hand-over: descriptor {fd} named twice or as stdio by the server")]
    BadDescriptor { fd: i32 },
    #[error("hand-over: parked request {stream_id}: {source}")]
    ParkedRequest {
        stream_id: u32,
        source: protobuf::Error,
    },
    #[error("hand-over: descriptor {fd}: {source}")]
    Descriptor { fd: i32, source: std::io::Error },
    #[error("hand-over: descriptor {fd} is not a socket")]
    NotASocket { fd: i32 },
    #[error("hand-over: no listening socket")]
    NoListener,
    #[error("hand-over: connection: {0}")]
    Connection(std::io::Error),
}

/// What the server is doing; changed only through [`Control`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Not accepting, not reading: requests already running finish.
    Quiesced,
    /// Giving every socket back for a new image; never left.
    HandingOver,
}

/// How a request is treated across a hand-over: this table is the only place that knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Park {
    /// Runs to completion before a hand-over may start (counted by quiesce).
    No,
    /// May wait indefinitely; the new image runs it again on the same stream id.
    Replay,
    /// The `Upgrade` that asked for the hand-over: the new image answers it with the outcome.
    UpgradeReply,
}

pub(super) fn parking(req: &Request) -> Park {
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
    pub(super) fds: Vec<OwnedFd>,
}

impl HandedOver {
    /// Every descriptor that must survive the `execve`.
    pub fn fds(&self) -> Vec<i32> {
        self.fds.iter().map(|f| f.as_raw_fd()).collect()
    }
}

/// What the accept loop and the connections have given back so far.
#[derive(Default)]
pub(super) struct Handed {
    pub(super) listener: Option<OwnedFd>,
    pub(super) conns: Vec<(OwnedFd, ConnSnap)>,
}

pub(super) struct CtlInner {
    pub(super) phase: watch::Sender<Phase>,
    /// Requests running that a hand-over must wait for ([`Park::No`]).
    pub(super) busy: watch::Sender<usize>,
    /// The accept loop and connections that have not ended or handed over yet.
    pub(super) live: watch::Sender<usize>,
    pub(super) handed: Mutex<Handed>,
    pub(super) connections: Arc<Semaphore>,
    /// Server-wide budgets (see the module docs).
    pub(super) requests: Arc<Semaphore>,
    pub(super) request_bytes: Arc<Semaphore>,
    pub(super) parked_bytes: Arc<Semaphore>,
}

/// The handle through which the upgrade orchestration stops and hands over the server.
#[derive(Clone)]
pub struct Control {
    pub(super) inner: Arc<CtlInner>,
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
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
    pub async fn quiesce(&self, limit: Duration) -> Result<(), HandoverError> {
        if *self.inner.phase.borrow() != Phase::Serving {
            return Err(HandoverError::AlreadyQuiesced);
        }
        self.inner.phase.send_replace(Phase::Quiesced);
        let mut busy = self.inner.busy.subscribe();
        if tokio::time::timeout(limit, busy.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let n = *self.inner.busy.borrow();
            self.resume();
            return Err(HandoverError::StillRunning {
                running: n,
                ms: limit.as_millis(),
            });
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

    /// The count of running requests that are not parked (changes with every request that
    /// starts or ends): what tells the shim it is quiet (`startup::resident`).
    pub fn busy(&self) -> watch::Receiver<usize> {
        self.inner.busy.subscribe()
    }

    pub(super) fn phase(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// A request that counts as running for as long as the returned value lives.
    #[cfg(test)]
    pub(crate) fn busy_for_test(&self) -> impl Drop {
        Count::new(&self.inner.busy)
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
) -> Result<(), HandoverError> {
    if conns.len() > MAX_CONNECTIONS {
        return Err(HandoverError::TooManyConnections);
    }
    let mut fds = std::collections::HashSet::new();
    if let Some(c) = conns.iter().find(|c| !fds.insert(c.fd)) {
        return Err(HandoverError::ConnectionTwice { fd: c.fd });
    }
    let mut parked = Vec::new();
    for c in conns {
        check_socket(c.fd)?;
        for p in &c.replay {
            let request = Request::parse_from_bytes(&p.payload).map_err(|source| {
                HandoverError::ParkedRequest {
                    stream_id: p.stream_id,
                    source,
                }
            })?;
            parked.push(request);
        }
    }
    let mut parked = parked.into_iter();
    for c in conns {
        let Ok(slot) = ctl.inner.connections.clone().try_acquire_owned() else {
            return Err(HandoverError::TooManyConnections);
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

pub(super) fn check_socket(fd: i32) -> Result<(), HandoverError> {
    let st = fstat_raw(fd).map_err(|source| HandoverError::Descriptor { fd, source })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(HandoverError::NotASocket { fd });
    }
    // SAFETY: fcntl(F_SETFD) on a number just checked to be open; nothing is borrowed.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(HandoverError::Descriptor {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The descriptors a server snapshot names, checked: at most once each (the listener and the
/// connections are each taken into ownership once), none of them stdio.
pub fn checked_fds(snap: &ServerSnap) -> Result<Vec<i32>, HandoverError> {
    let mut seen = std::collections::HashSet::new();
    let named = std::iter::once(snap.listener)
        .filter(|fd| *fd >= 0)
        .chain(snap.conns.iter().map(|c| c.fd));
    for fd in named {
        if fd <= 2 || !seen.insert(fd) {
            return Err(HandoverError::BadDescriptor { fd });
        }
    }
    let mut v: Vec<i32> = seen.into_iter().collect();
    v.sort_unstable();
    Ok(v)
}

/// Take the listening socket a previous image handed over.
pub fn adopt_listener(
    snap: &ServerSnap,
) -> Result<std::os::unix::net::UnixListener, HandoverError> {
    let fd = snap.listener;
    if fd < 0 {
        return Err(HandoverError::NoListener);
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

pub(super) fn adopt_stream(fd: i32) -> Result<UnixStream, HandoverError> {
    check_socket(fd)?;
    // SAFETY: as in `adopt_listener`: a handed-over, checked, unowned socket.
    let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    s.set_nonblocking(true).map_err(HandoverError::Connection)?;
    UnixStream::from_std(s).map_err(HandoverError::Connection)
}
