//! What `start` learns before it can serve: the options on stdin (a plain `Any`, or
//! containerd 2.3+'s `BootstrapParams`), the group a container belongs to, and the socket
//! address containerd will dial.

use std::path::{Path, PathBuf};

use protobuf::{CodedInputStream, Message};
use sha2::{Digest, Sha256};

use crate::protos::bootstrap::BootstrapParams;
use crate::protos::runc_options::Options;
use crate::protos::{type_url_is, Any};

/// Where the Go shims put sockets unless containerd 2.3+ says otherwise.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// What stdin of `start` told us.
#[derive(Debug, Default)]
pub struct StartInput {
    pub options: Option<Options>,
    /// The options exactly as received, for `-info` to echo.
    pub options_any: Option<Any>,
    /// containerd 2.3+ only.
    pub bootstrap: Option<BootstrapParams>,
}

impl StartInput {
    pub fn socket_dir(&self) -> PathBuf {
        self.bootstrap
            .as_ref()
            .and_then(|b| b.socket_dir.clone())
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET_DIR), PathBuf::from)
    }
}

/// The top-level field numbers of a protobuf message, or None if it is not one.
fn field_numbers(b: &[u8]) -> Option<Vec<u32>> {
    let mut is = CodedInputStream::from_bytes(b);
    let mut out = Vec::new();
    while !is.eof().ok()? {
        let tag = is.read_raw_varint32().ok()?;
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 0 {
            return None;
        }
        match wire {
            0 => {
                is.read_raw_varint64().ok()?;
            }
            1 => {
                is.read_fixed64().ok()?;
            }
            2 => {
                let n = is.read_raw_varint32().ok()?;
                is.skip_raw_bytes(n).ok()?;
            }
            5 => {
                is.read_fixed32().ok()?;
            }
            _ => return None,
        }
        out.push(field);
    }
    Some(out)
}

/// Why `start`'s stdin or a bundle's `config.json` cannot be read (`start` then fails with
/// this text after the runtime's name).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("runtime options on stdin are not a protobuf message")]
    NotProtobuf,
    #[error("decode bootstrap parameters: {0}")]
    BootstrapParams(protobuf::Error),
    #[error("decode runtime options: {0}")]
    RuntimeOptions(protobuf::Error),
    #[error("decode {RUNC_OPTIONS}: {0}")]
    RuncOptions(protobuf::Error),
    #[error("parse config.json: {0}")]
    Config(serde_json::Error),
}

fn runc_options(any: &Any) -> Result<Option<Options>, BootstrapError> {
    if !type_url_is(&any.type_url, RUNC_OPTIONS) {
        return Ok(None);
    }
    Options::parse_from_bytes(&any.value)
        .map(Some)
        .map_err(BootstrapError::RuncOptions)
}

/// Decode `start`'s stdin. containerd <= 2.2 sends the runtime options as an `Any` (fields 1
/// and 2 only) or nothing; 2.3+ sends `BootstrapParams`, which always carries fields 4-7. So
/// any field number of 3 or more means BootstrapParams (protocols.md 2.7).
pub fn decode_stdin(b: &[u8]) -> Result<StartInput, BootstrapError> {
    if b.is_empty() {
        return Ok(StartInput::default());
    }
    let fields = field_numbers(b).ok_or(BootstrapError::NotProtobuf)?;
    if fields.iter().any(|f| *f >= 3) {
        let params =
            BootstrapParams::parse_from_bytes(b).map_err(BootstrapError::BootstrapParams)?;
        let mut input = StartInput::default();
        for ext in &params.extensions {
            if let Some(any) = ext.value.as_ref() {
                if let Some(o) = runc_options(any)? {
                    input.options = Some(o);
                    input.options_any = Some(any.clone());
                }
            }
        }
        input.bootstrap = Some(params);
        return Ok(input);
    }
    let any = Any::parse_from_bytes(b).map_err(BootstrapError::RuntimeOptions)?;
    Ok(StartInput {
        options: runc_options(&any)?,
        options_any: Some(any),
        bootstrap: None,
    })
}

/// Go's `path.Clean` for absolute or relative slash paths.
pub fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(l) if *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// The socket containerd expects for (address, namespace, group): `unix://<dir>/<hex sha256 of
/// filepath.Join(address, ns, group)>`.
pub fn socket_address(
    socket_dir: &Path,
    containerd_address: &str,
    ns: &str,
    group: &str,
) -> String {
    let joined = go_clean(&format!("{containerd_address}/{ns}/{group}"));
    let digest = Sha256::digest(joined.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}/{hex}", socket_dir.display())
}

/// runc.v2 grouping: the first present of these OCI annotations names the group.
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The group id of the container whose `config.json` this is (its own id when ungrouped).
pub fn group_id(config_json: &[u8], id: &str) -> Result<String, BootstrapError> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: Option<std::collections::HashMap<String, String>>,
    }
    let spec: Spec = serde_json::from_slice(config_json).map_err(BootstrapError::Config)?;
    let ann = spec.annotations.unwrap_or_default();
    for key in GROUP_ANNOTATIONS {
        if let Some(g) = ann.get(key) {
            return Ok(g.clone());
        }
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protos::bootstrap::Extension;

    #[test]
    fn plain_any_from_containerd_16() {
        // Observed: `0a 1a "containerd.runc.v1.Options"` with an empty value.
        let mut b = vec![0x0a, 0x1a];
        b.extend_from_slice(b"containerd.runc.v1.Options");
        let i = decode_stdin(&b).unwrap();
        assert!(i.bootstrap.is_none());
        assert_eq!(i.options.as_ref().unwrap(), &Options::default());
        assert_eq!(i.socket_dir(), PathBuf::from(DEFAULT_SOCKET_DIR));
    }

    #[test]
    fn options_with_binary_and_root() {
        let o = Options {
            binary_name: "/usr/sbin/runc".into(),
            root: "/run/spec-runc".into(),
            ..Default::default()
        };
        let any = crate::protos::any_bare(&o).unwrap();
        let i = decode_stdin(&any.write_to_bytes().unwrap()).unwrap();
        assert_eq!(i.options.unwrap().binary_name, "/usr/sbin/runc");
    }

    #[test]
    fn bootstrap_params_from_containerd_23() {
        let o = Options {
            root: "/r".into(),
            ..Default::default()
        };
        let p = BootstrapParams {
            instance_id: "abc".into(),
            namespace: "k8s.io".into(),
            containerd_version: "2.3.0".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            extensions: vec![Extension {
                value: Some(crate::protos::any_bare(&o).unwrap()).into(),
                ..Default::default()
            }],
            socket_dir: Some("/var/run/shims".into()),
            ..Default::default()
        };
        let i = decode_stdin(&p.write_to_bytes().unwrap()).unwrap();
        assert_eq!(i.options.as_ref().unwrap().root, "/r");
        assert_eq!(i.socket_dir(), PathBuf::from("/var/run/shims"));
        assert_eq!(i.bootstrap.unwrap().namespace, "k8s.io");
    }

    #[test]
    fn empty_and_garbage_stdin() {
        assert!(decode_stdin(b"").unwrap().options.is_none());
        assert!(decode_stdin(b"unix:///x").is_err());
        // An Any with another type is accepted but carries no runc options.
        let any = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            ..Default::default()
        };
        assert!(decode_stdin(&any.write_to_bytes().unwrap())
            .unwrap()
            .options
            .is_none());
    }

    #[test]
    fn socket_address_matches_observed_hash_rule() {
        let a = socket_address(
            Path::new("/run/containerd/s"),
            "/run/containerd/containerd.sock",
            "default",
            "x",
        );
        let expect = Sha256::digest(b"/run/containerd/containerd.sock/default/x");
        let hex: String = expect.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(a, format!("unix:///run/containerd/s/{hex}"));
        // filepath.Join cleans: duplicate and trailing slashes collapse.
        assert_eq!(
            socket_address(
                Path::new("/s"),
                "/run//containerd/containerd.sock/",
                "default",
                "x"
            ),
            socket_address(
                Path::new("/s"),
                "/run/containerd/containerd.sock",
                "default",
                "x"
            )
        );
        assert_eq!(a.len(), "unix://".len() + "/run/containerd/s/".len() + 64);
    }

    #[test]
    fn go_clean_cases() {
        for (i, o) in [
            ("/a//b/./c/..", "/a/b"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("", "."),
            ("/", "/"),
        ] {
            assert_eq!(go_clean(i), o, "{i}");
        }
    }

    #[test]
    fn grouping_prefers_runc_group_then_sandbox() {
        let both = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb","io.containerd.runc.v2.group":"g"}}"#;
        assert_eq!(group_id(both, "c").unwrap(), "g");
        let sb = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"sb"}}"#;
        assert_eq!(group_id(sb, "c").unwrap(), "sb");
        assert_eq!(group_id(b"{}", "c").unwrap(), "c");
        assert!(group_id(b"nope", "c").is_err());
    }
}
