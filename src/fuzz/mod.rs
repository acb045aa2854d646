//! Bodies of the fuzz targets, inside the crate so the coverage-guided fuzzers (`fuzz/`, run by
//! `scripts/fuzz.sh`) and the CI test over the seed corpus (`tests/fuzz_corpus.rs`) call the
//! same code. Not part of the shim's API; hidden from the docs.
//!
//! Each target takes arbitrary bytes, must never panic (a panic is the finding), and checks
//! properties stronger than "did not crash" where the code has them: see each function. Targets
//! may `unwrap`/`assert!`: here a panic is the report.
//!
//! | target | code under test |
//! |---|---|
//! | [`frames`] | `api::server` frame decoding: header, length limit, stream ids, `ttrpc.Request` |
//! | [`connection`] | `api::server::connection`, the real loop, over a socket pair |
//! | [`requests`] | generated payload decoding of every method + the adapters' translation |
//! | [`goflags`] | `cli::goflags::parse`, `ShimV2Args::parse`/`mode`, `ShimV1Args::parse` |
//! | [`stdin`] | `api::v2::bootstrap::decode_stdin` (options `Any` vs `BootstrapParams`) |
//! | [`stdio`] | `io::spec::StdioSpec::parse` |
//! | [`identifiers`] | `engine::types::validate_identifier` and the id types |

pub mod probe;

use std::time::Duration;

use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ttrpc::Code;

use crate::api::server::{
    self, decode_frame, encode_response, header_bytes, Frame, FrameHeader, HEADER_LEN, MAX_MESSAGE,
};
use crate::cli::goflags::{self as gf, FlagKind, FlagValue};
use crate::cli::{Personality, ShimV1Args, ShimV2Args};
use crate::engine::types::{validate_identifier, ContainerId, ExecId, MAX_ID_LEN};
use crate::io::spec::StdioSpec;

/// A fuzz target: bytes in, panic on a finding.
pub type Target = fn(&[u8]);

/// Every target by name; the name is the `fuzz/` binary and the seed directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", frames),
    ("connection", connection),
    ("requests", requests),
    ("goflags", goflags),
    ("stdin", stdin),
    ("stdio", stdio),
    ("identifiers", identifiers),
];

thread_local! {
    /// One runtime per thread, built once: building one per input would dominate the cost.
    /// Current-thread so a run is deterministic given the input.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("fuzz runtime");
    static SERVICES: server::Services = std::sync::Arc::new(probe::services());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(f))
}

/// One frame cut from a byte stream the way the connection loop reads it: the header, and the
/// payload if the header's length is acceptable and the bytes are there.
enum Cut<'a> {
    /// Length over the limit: the loop discards that many bytes (or stops at end of input).
    Oversized(FrameHeader),
    Complete(FrameHeader, &'a [u8]),
}

/// Cut `data` into frames as `api::server::connection` consumes its socket; a short tail
/// (header or payload cut off) ends the stream, as a peer closing mid-frame does.
fn cut_frames(mut data: &[u8]) -> Vec<Cut<'_>> {
    let mut out = Vec::new();
    while data.len() >= HEADER_LEN {
        let (h, rest) = data.split_at(HEADER_LEN);
        let hdr: [u8; HEADER_LEN] = h.try_into().expect("split at HEADER_LEN");
        let header = FrameHeader::parse(&hdr);
        if rest.len() < header.len {
            if header.check_len().is_err() {
                out.push(Cut::Oversized(header));
            }
            break;
        }
        let (payload, next) = rest.split_at(header.len);
        out.push(if header.check_len().is_err() {
            Cut::Oversized(header)
        } else {
            Cut::Complete(header, payload)
        });
        data = next;
    }
    out
}

/// A response frame must be what a ttrpc client can read: one header, type 2, no flags, a
/// payload under the limit that decodes as `ttrpc.Response`.
fn check_response_frames(mut out: &[u8]) -> Vec<(u32, ttrpc::Response)> {
    let mut got = Vec::new();
    while !out.is_empty() {
        assert!(out.len() >= HEADER_LEN, "truncated response header");
        let hdr: [u8; HEADER_LEN] = out[..HEADER_LEN].try_into().expect("header");
        let h = FrameHeader::parse(&hdr);
        assert_eq!((h.kind, h.flags), (2, 0), "response frame type/flags");
        assert!(h.len <= MAX_MESSAGE, "response over the limit");
        let body = &out[HEADER_LEN..];
        assert!(body.len() >= h.len, "truncated response payload");
        let resp = ttrpc::Response::parse_from_bytes(&body[..h.len]).expect("response decodes");
        got.push((h.stream_id, resp));
        out = &body[h.len..];
    }
    got
}

/// **frames**: the inbound decoding steps of `api::server`, over a byte stream of frames.
///
/// Properties: the header decodes to what `header_bytes` would write; an oversized length is
/// refused (RESOURCE_EXHAUSTED) before any payload is read; a non-request frame is ignored
/// without using up a stream id; a request is accepted only with an odd, increasing stream id,
/// and then `last_stream` is that id; every refusal is INVALID_ARGUMENT on the frame's stream
/// and encodes to a well-formed response frame.
pub fn frames(data: &[u8]) {
    let mut last = 0u32;
    for cut in cut_frames(data) {
        match cut {
            Cut::Oversized(h) => {
                let e = h.check_len().expect_err("oversized");
                assert!(h.len > MAX_MESSAGE);
                assert_eq!(
                    (e.code, e.stream_id),
                    (Code::RESOURCE_EXHAUSTED, h.stream_id)
                );
                let frame = encode_response(e.stream_id, e.response());
                assert_eq!(check_response_frames(&frame).len(), 1);
            }
            Cut::Complete(h, payload) => {
                let written = header_bytes(h.len, h.stream_id, h.kind);
                assert_eq!(FrameHeader::parse(&written), FrameHeader { flags: 0, ..h });
                let before = last;
                match decode_frame(&h, payload, &mut last) {
                    Ok(Frame::Request { header, request }) => {
                        assert_eq!(h.kind, 1);
                        assert!(h.stream_id % 2 == 1 && h.stream_id > before);
                        assert_eq!(last, h.stream_id);
                        assert_eq!(header.length as usize, payload.len());
                        assert_eq!((header.stream_id, header.flags), (h.stream_id, h.flags));
                        // What is dispatched is what came in (no silent field loss).
                        let again = request.write_to_bytes().expect("re-encode");
                        let back = ttrpc::Request::parse_from_bytes(&again).expect("decode");
                        assert_eq!(back, request);
                    }
                    Ok(Frame::Ignored) => {
                        assert_ne!(h.kind, 1);
                        assert_eq!(last, before);
                    }
                    Err(e) => {
                        assert_eq!(h.kind, 1);
                        assert_eq!((e.code, e.stream_id), (Code::INVALID_ARGUMENT, h.stream_id));
                        assert!(!e.message.is_empty());
                        if h.stream_id % 2 == 0 || h.stream_id <= before {
                            assert_eq!(last, before, "a refused stream id was used up");
                        }
                        let frame = encode_response(e.stream_id, e.response());
                        assert_eq!(check_response_frames(&frame).len(), 1);
                    }
                }
            }
        }
    }
}

/// **connection**: the real connection loop (`api::server::connection`) with the probe
/// services behind it, fed `data` over a socket pair whose write side is then closed.
///
/// Properties: the loop ends once the peer has closed (within 10 s; no hang, no panic in any
/// of its tasks); everything it writes is a sequence of well-formed response frames; every
/// response answers a stream id of a complete frame that was sent, at most once per request;
/// a request never gets an OK status without having reached a known service and method.
pub fn connection(data: &[u8]) {
    let services = SERVICES.with(|s| s.clone());
    let out = block_on(async move {
        let (ours, theirs) = tokio::net::UnixStream::pair().expect("socketpair");
        // `stop` never fires: the loop must end on the peer's close alone.
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(server::connection(theirs, services, stop_rx));
        let (mut rd, mut wr) = ours.into_split();
        // Read concurrently: the loop may block writing responses while we still write.
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            rd.read_to_end(&mut out).await.map(|_| out)
        });
        // The server may stop reading (an oversized frame cut short): a write error is fine.
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
        drop(wr);
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            server.await.expect("connection task panicked");
            reader.await.expect("reader task panicked")
        })
        .await;
        done.expect("connection did not finish after the peer closed")
            .expect("read responses")
    });
    let responses = check_response_frames(&out);
    let mut sent = Vec::new();
    // Stream ids of requests naming a method the services have: the only ones that may be
    // answered OK.
    let mut routable = Vec::new();
    let services = SERVICES.with(|s| s.clone());
    for cut in cut_frames(data) {
        match cut {
            Cut::Oversized(h) => sent.push(h),
            Cut::Complete(h, payload) => {
                sent.push(h);
                let named = ttrpc::Request::parse_from_bytes(payload).ok().filter(|r| {
                    services
                        .get(&r.service)
                        .is_some_and(|s| s.methods.contains_key(&r.method))
                });
                if h.kind == 1 && named.is_some() {
                    routable.push(h.stream_id);
                }
            }
        }
    }
    for (stream_id, resp) in &responses {
        assert!(
            sent.iter().any(|h| h.stream_id == *stream_id),
            "response on stream {stream_id} that no frame opened"
        );
        let n_answered = responses.iter().filter(|(s, _)| s == stream_id).count();
        let n_sent = sent.iter().filter(|h| h.stream_id == *stream_id).count();
        assert!(
            n_answered <= n_sent,
            "stream {stream_id} answered more than asked"
        );
        if resp.status.code.value() == Code::OK as i32 {
            assert!(
                routable.contains(stream_id),
                "OK on stream {stream_id}, which named no known method"
            );
        }
    }
}

/// Codes a translation may refuse a request with: every one is a caller error.
const CLEAN_CODES: [Code; 4] = [
    Code::INVALID_ARGUMENT,
    Code::NOT_FOUND,
    Code::ALREADY_EXISTS,
    Code::FAILED_PRECONDITION,
];

/// **requests**: `data[0]` picks a method from [`probe::METHODS`], the rest is its payload,
/// handed to the generated handler exactly as the server's dispatch does.
///
/// Properties: an undecodable payload is the generated code's `Unpack request error` (which
/// the server answers INTERNAL, as Go does) and nothing else; a decodable one reaches the
/// probe, whose translation into core values yields OK or a caller-error status with a
/// message; the reply always encodes into a well-formed response frame.
pub fn requests(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let (service, method) = probe::METHODS[usize::from(sel) % probe::METHODS.len()];
    let services = SERVICES.with(|s| s.clone());
    let handler = services
        .get(service)
        .and_then(|s| s.methods.get(method))
        .expect("every table entry is registered");
    let req = ttrpc::Request {
        service: service.to_string(),
        method: method.to_string(),
        payload: payload.to_vec(),
        ..Default::default()
    };
    let ctx = ttrpc::r#async::TtrpcContext {
        mh: ttrpc::MessageHeader {
            length: payload.len() as u32,
            stream_id: 1,
            type_: 1,
            flags: 0,
        },
        metadata: Default::default(),
        timeout_nano: 0,
        connection_data: std::sync::Arc::new(ttrpc::ConnectionData),
    };
    match block_on(handler.handler(ctx, req)) {
        Ok(resp) => {
            let code = resp.status.code.value();
            if code != Code::OK as i32 {
                assert!(
                    CLEAN_CODES.iter().any(|c| *c as i32 == code),
                    "{service}/{method}: unexpected code {code}: {}",
                    resp.status.message
                );
                assert!(!resp.status.message.is_empty());
            }
            let frame = encode_response(1, resp);
            assert_eq!(check_response_frames(&frame).len(), 1);
        }
        Err(ttrpc::Error::Others(m)) if m.starts_with("Unpack request error") => {}
        Err(e) => panic!("{service}/{method}: unclean error {e:?}"),
    }
}

/// Argv (after argv[0]) from fuzz bytes: NUL separates words, as in a real argv (no word can
/// contain one); non-UTF-8 is made lossy, as `shimgate::run` does.
pub fn argv_of(data: &[u8]) -> Vec<String> {
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect()
}

/// **goflags**: the Go `flag` replica with both personalities' tables, and the typed layers.
///
/// Properties: accepted flags are defined in the table; the positional words are a suffix of
/// the input; re-rendering the result in canonical form (`-name=value`, then `--`, then the
/// positional words) parses back to the same result; errors carry Go's exit codes (0, 1, 2);
/// `ShimV2Args::parse`/`ShimV1Args::parse` fail exactly when the table parse fails.
pub fn goflags(data: &[u8]) {
    let args = argv_of(data);
    for personality in [Personality::RuncV2, Personality::ShimV1] {
        let defs = personality.flags().expect("shim personality");
        match gf::parse(defs, &args) {
            Ok(p) => {
                for (name, value) in &p.flags {
                    let def = defs.iter().find(|d| d.name == *name).expect("defined");
                    let kind_ok = matches!(
                        (def.kind, value),
                        (FlagKind::Bool, FlagValue::Bool(_))
                            | (FlagKind::String, FlagValue::String(_))
                    );
                    assert!(kind_ok, "-{name} got a value of the wrong kind");
                }
                assert!(p.positional.len() <= args.len());
                assert_eq!(p.positional[..], args[args.len() - p.positional.len()..]);
                let mut canonical: Vec<String> = p
                    .flags
                    .iter()
                    .map(|(name, v)| match v {
                        FlagValue::Bool(b) => format!("-{name}={b}"),
                        FlagValue::String(s) => format!("-{name}={s}"),
                    })
                    .collect();
                canonical.push("--".into());
                canonical.extend(p.positional.iter().cloned());
                assert_eq!(gf::parse(defs, &canonical).as_ref(), Ok(&p));
            }
            Err(e) => {
                assert!(matches!(e.exit_code(), 0..=2));
                assert!(!e.to_string().is_empty());
            }
        }
    }
    let table_v2 = gf::parse(crate::cli::shim_v2::FLAGS, &args);
    match ShimV2Args::parse(&args) {
        Ok(a) => {
            assert!(table_v2.is_ok());
            match a.mode() {
                Ok(_) => assert!(a.version || a.info || !a.namespace.is_empty()),
                Err(e) => assert_eq!(e.exit_code(), 1),
            }
        }
        Err(e) => assert_eq!(table_v2, Err(e)),
    }
    let table_v1 = gf::parse(crate::cli::shim_v1::FLAGS, &args);
    match ShimV1Args::parse(&args) {
        Ok(a) => assert_eq!(Ok(a.extra_args), table_v1.map(|p| p.positional)),
        Err(e) => assert_eq!(table_v1, Err(e)),
    }
}

/// **stdin**: what `start` reads on stdin (nothing, an options `Any`, or `BootstrapParams`).
///
/// Properties: no panic; options come with the `Any` they were read from; a plain `Any`
/// result is exactly the protobuf decoding of the input; `socket_dir()` is always a path.
pub fn stdin(data: &[u8]) {
    let Ok(input) = crate::api::v2::bootstrap::decode_stdin(data) else {
        return;
    };
    if input.options.is_some() {
        assert!(input.options_any.is_some());
    }
    if input.bootstrap.is_none() {
        if let Some(any) = &input.options_any {
            let direct = crate::protos::Any::parse_from_bytes(data).expect("decoded once");
            assert_eq!(&direct, any);
        }
    }
    assert!(!input.socket_dir().as_os_str().is_empty());
}

/// **stdio**: `StdioSpec::parse` on (stdin, stdout, stderr) cut from the input at `\n`.
///
/// Properties: all-empty is `Null` and nothing else is; a URI always yields an absolute path;
/// `file://` sends stdout and stderr to the same file; stdin is passed through untouched; a
/// refusal only happens for a stdout with a scheme.
pub fn stdio(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (i, o, e) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let all_empty = i.is_empty() && o.is_empty() && e.is_empty();
    match StdioSpec::parse(i, o, e) {
        Ok(StdioSpec::Null) => assert!(all_empty),
        Ok(spec) => {
            assert!(!all_empty);
            let want_stdin = (!i.is_empty()).then(|| std::path::PathBuf::from(i));
            assert_eq!(spec.stdin(), want_stdin.as_ref());
            match &spec {
                StdioSpec::Binary { path, .. } => {
                    assert!(o.starts_with("binary://") && path.is_absolute());
                }
                StdioSpec::Paths {
                    stdout,
                    stderr,
                    create_file: true,
                    ..
                } => {
                    assert!(o.starts_with("file://"));
                    assert!(stdout.as_ref().is_some_and(|p| p.is_absolute()));
                    assert_eq!(stdout, stderr);
                }
                StdioSpec::Paths { stdout, .. } => {
                    if o.starts_with("fifo://") {
                        assert!(stdout.as_ref().is_some_and(|p| p.is_absolute()));
                    }
                }
                StdioSpec::Null => unreachable!(),
            }
        }
        Err(err) => {
            assert!(o.contains("://"), "refused without a scheme: {err}");
            assert!(!err.to_string().is_empty());
        }
    }
}

/// An independent statement of containerd's identifier rule, to compare against.
fn reference_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.split(['.', '_', '-'])
            .all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// **identifiers**: container and exec id validation.
///
/// Properties: agrees with an independent statement of the rule; an accepted id is safe as a
/// file name (ASCII, no `/`, no NUL, not `.` or `..`, at most 76 bytes); both id types agree
/// with the validator; a refusal is INVALID_ARGUMENT with a message.
pub fn identifiers(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let r = validate_identifier("container id", &s);
    assert_eq!(r.is_ok(), reference_identifier(&s), "{s:?}: {r:?}");
    match r {
        Ok(()) => {
            assert!(s.is_ascii() && s.len() <= MAX_ID_LEN);
            assert!(!s.contains('/') && !s.contains('\0') && s != "." && s != "..");
        }
        Err(e) => {
            assert_eq!(e.kind(), crate::engine::Kind::InvalidArgument);
            assert!(!e.to_string().is_empty());
        }
    }
    assert_eq!(
        ContainerId::new(s.as_ref()).is_ok(),
        reference_identifier(&s)
    );
    assert_eq!(ExecId::new(s.as_ref()).is_ok(), reference_identifier(&s));
}
