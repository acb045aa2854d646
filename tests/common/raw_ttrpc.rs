//! A raw ttrpc client for tests that speak to a shim's socket directly: frames written by hand
//! (any kind, one request at a time), so a test sees exactly the status code and message the
//! shim returns, with no client library in between.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use protobuf::Message;

/// A raw ttrpc client: one request at a time, odd increasing stream ids.
pub struct Raw {
    s: UnixStream,
    next: u32,
}

pub struct Reply {
    pub code: i32,
    pub message: String,
    pub payload: Vec<u8>,
}

impl Raw {
    /// Connect; every answer must come within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Raw {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        Raw { s, next: 1 }
    }

    /// Speak over a stream connected some other way (an abstract socket, say).
    pub fn over(s: UnixStream, timeout: Duration) -> Raw {
        s.set_read_timeout(Some(timeout)).unwrap();
        Raw { s, next: 1 }
    }

    pub fn frame(&mut self, payload: &[u8], kind: u8) -> u32 {
        let id = self.next;
        self.next += 2;
        let mut h = Vec::with_capacity(10 + payload.len());
        h.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.push(kind);
        h.push(0);
        h.extend_from_slice(payload);
        self.s.write_all(&h).unwrap();
        id
    }

    pub fn read_reply(&mut self, want_stream: u32) -> Reply {
        let mut hdr = [0u8; 10];
        self.s.read_exact(&mut hdr).unwrap();
        let len = u32::from_be_bytes(hdr[0..4].try_into().unwrap()) as usize;
        let stream = u32::from_be_bytes(hdr[4..8].try_into().unwrap());
        assert_eq!(stream, want_stream);
        assert_eq!(hdr[8], 2, "response type");
        let mut body = vec![0u8; len];
        self.s.read_exact(&mut body).unwrap();
        let r = ttrpc::Response::parse_from_bytes(&body).unwrap();
        let (code, message) = r
            .status
            .as_ref()
            .map(|s| (s.code.value(), s.message.clone()))
            .unwrap_or((0, String::new()));
        Reply {
            code,
            message,
            payload: r.payload,
        }
    }

    pub fn call(&mut self, service: &str, method: &str, msg: &dyn protobuf::MessageDyn) -> Reply {
        let req = ttrpc::Request {
            service: service.into(),
            method: method.into(),
            payload: msg.write_to_bytes_dyn().unwrap(),
            ..Default::default()
        };
        let id = self.frame(&req.write_to_bytes().unwrap(), 1);
        self.read_reply(id)
    }

    pub fn task(&mut self, method: &str, msg: &dyn protobuf::MessageDyn) -> Reply {
        self.call("containerd.task.v2.Task", method, msg)
    }
}
