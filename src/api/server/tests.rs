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
    let snap: ServerSnap = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
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
    assert!(
        matches!(e, HandoverError::StillRunning { running: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("1 request(s) still running"), "{e}");
    // Serving again: the running request answers, and new ones are read.
    client.write_all(&frame(3, "Slow", b"b")).await.unwrap();
    let mut got = vec![
        read_response(&mut client).await,
        read_response(&mut client).await,
    ];
    got.sort();
    assert_eq!(got, vec![(1, b"a".to_vec()), (3, b"b".to_vec())]);
}
