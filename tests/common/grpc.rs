//! A minimal unary gRPC client over containerd's unix socket, for the one call ctr 1.6 cannot
//! make: `containerd.services.tasks.v1.Tasks/Update`.

use std::path::Path;

use bytes::Bytes;
use http::Request;

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Append a length-delimited field `num` holding `payload`.
pub fn field(num: u32, payload: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(num << 3 | 2), out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// `UpdateTaskRequest{container_id = 1, resources = 2 (Any of LinuxResources JSON)}`.
pub fn update_task_request(id: &str, resources_json: &str) -> Vec<u8> {
    let mut any = Vec::new();
    field(
        1,
        b"types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        &mut any,
    );
    field(2, resources_json.as_bytes(), &mut any);
    let mut out = Vec::new();
    field(1, id.as_bytes(), &mut out);
    field(2, &any, &mut out);
    out
}

/// `StartRequest{container_id = 1}` (containerd.services.tasks.v1).
pub fn start_task_request(id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    field(1, id.as_bytes(), &mut out);
    out
}

/// `CreateTaskRequest{container_id = 1, options = 9}` with no IO (containerd.services.tasks.v1);
/// `options_any` is an encoded `google.protobuf.Any`.
pub fn create_task_request(id: &str, options_any: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    field(1, id.as_bytes(), &mut out);
    field(9, options_any, &mut out);
    out
}

/// Call `method` with `payload`; returns (grpc-status, grpc-message).
pub fn unary(sock: &Path, namespace: &str, method: &str, payload: Vec<u8>) -> (i32, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let io = tokio::net::UnixStream::connect(sock).await.unwrap();
        let (mut client, conn) = h2::client::handshake(io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://localhost{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("containerd-namespace", namespace)
            .body(())
            .unwrap();
        let (resp, mut stream) = client.send_request(req, false).unwrap();
        let mut body = vec![0u8];
        body.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        body.extend_from_slice(&payload);
        stream.send_data(Bytes::from(body), true).unwrap();
        let resp = resp.await.unwrap();
        let mut status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let mut message = resp
            .headers()
            .get("grpc-message")
            .and_then(|v| v.to_str().ok().map(String::from))
            .unwrap_or_default();
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        if let Ok(Some(t)) = body.trailers().await {
            if let Some(s) = t
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
            {
                status = Some(s);
            }
            if let Some(m) = t.get("grpc-message").and_then(|v| v.to_str().ok()) {
                message = m.to_string();
            }
        }
        (status.unwrap_or(-1), message)
    })
}
