//! The ttrpc frame codec: the fixed header, decoding a request frame, encoding a response.
//! Pure functions, so the fuzzer (`crate::fuzz`) drives the very code the loop runs.

use super::*;

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

pub(super) fn status_response(code: Code, msg: impl Into<String>) -> Response {
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
