//! A minimal ttrpc client for tests that speak to a shim's socket directly: one call at a
//! time, frames written by hand, so a test sees exactly the status code and message the shim
//! returns (no client library in between).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use protobuf::Message;

pub struct RawClient {
    s: UnixStream,
    next: u32,
}

impl RawClient {
    /// Connect; every answer must come within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> RawClient {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        RawClient { s, next: 1 }
    }

    /// Call `service`/`method`; returns (status code, message, payload).
    pub fn call(
        &mut self,
        service: &str,
        method: &str,
        msg: &dyn protobuf::MessageDyn,
    ) -> (i32, String, Vec<u8>) {
        let req = ttrpc::Request {
            service: service.into(),
            method: method.into(),
            payload: msg.write_to_bytes_dyn().unwrap(),
            ..Default::default()
        };
        let body = req.write_to_bytes().unwrap();
        let id = self.next;
        self.next += 2;
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(&body);
        self.s.write_all(&frame).unwrap();
        let mut hdr = [0u8; 10];
        self.s.read_exact(&mut hdr).unwrap();
        assert_eq!(u32::from_be_bytes(hdr[4..8].try_into().unwrap()), id);
        let mut body = vec![0u8; u32::from_be_bytes(hdr[..4].try_into().unwrap()) as usize];
        self.s.read_exact(&mut body).unwrap();
        let r = ttrpc::Response::parse_from_bytes(&body).unwrap();
        let (code, message) = r
            .status
            .as_ref()
            .map(|s| (s.code.value(), s.message.clone()))
            .unwrap_or_default();
        (code, message, r.payload)
    }
}
