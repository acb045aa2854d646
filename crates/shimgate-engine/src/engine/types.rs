//! Plain data the core works with: validated identifiers, what a Create or Exec asks for, the
//! runtime options, exits and process status. These are the only shapes the API adapters hand
//! to the core; they are deliberately free of protobuf.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
pub use super::mount::MountSpec;

/// Longest identifier containerd accepts (`identifiers.Validate`).
pub const MAX_ID_LEN: usize = 76;

/// Check an identifier the way containerd does before it ever reaches a shim:
/// `[A-Za-z0-9]+` runs joined by single `.`, `_` or `-`, at most 76 bytes. Container and exec
/// ids become file and socket names, so anything else (`/`, `..`, NUL, control characters) is
/// refused here, before the filesystem is touched.
pub fn validate_identifier(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid_argument(format!("{what} must not be empty")));
    }
    if s.len() > MAX_ID_LEN {
        return Err(Error::invalid_argument(format!(
            "{what} {:?}... longer than {MAX_ID_LEN} characters",
            &s[..s.char_indices().nth(16).map_or(s.len(), |(i, _)| i)]
        )));
    }
    let mut prev_sep = true; // a separator may not start the identifier
    for c in s.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if sep {
            if prev_sep {
                return Err(Error::invalid_argument(format!(
                    "{what} {s:?} must match [A-Za-z0-9]+([._-][A-Za-z0-9]+)*"
                )));
            }
        } else if !c.is_ascii_alphanumeric() {
            return Err(Error::invalid_argument(format!(
                "{what} {:?} contains the character {c:?}; allowed are [A-Za-z0-9._-]",
                s.escape_debug().to_string()
            )));
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(Error::invalid_argument(format!(
            "{what} {s:?} must not end with a separator"
        )));
    }
    Ok(())
}

macro_rules! identifier {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A validated ", $what, ".")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                validate_identifier($what, &s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(ContainerId, "container id");
identifier!(ExecId, "exec id");

/// Which process of a container an operation addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProcessRef {
    Init,
    Exec(ExecId),
}

impl ProcessRef {
    pub fn exec_id(&self) -> Option<&ExecId> {
        match self {
            ProcessRef::Init => None,
            ProcessRef::Exec(e) => Some(e),
        }
    }
}

/// The stdio strings of a Create or Exec, exactly as containerd sent them. `io::StdioSpec`
/// parses them once into something typed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StdioRequest {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The runtime options of a container (`containerd.runc.v1.Options`, or what the v1 runtime
/// turns into flags). Serialised as `options.json` the way the Go shim writes it (snake_case,
/// zero values omitted) so either shim can clean up after the other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuncOptions {
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_pivot_root: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_new_keyring: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shim_cgroup: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub io_uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub io_gid: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub binary_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criu_path: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub systemd_cgroup: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criu_image_path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub criu_work_path: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Default runc state root; the namespace is appended.
pub const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

impl RuncOptions {
    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            "runc"
        } else {
            &self.binary_name
        }
    }
    pub fn root_base(&self) -> &str {
        if self.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            &self.root
        }
    }
}

/// Everything `Create` needs.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub id: ContainerId,
    pub bundle: PathBuf,
    pub rootfs: Vec<MountSpec>,
    pub stdio: StdioRequest,
    pub checkpoint: Option<PathBuf>,
    pub parent_checkpoint: Option<PathBuf>,
    pub options: RuncOptions,
    /// Where the container's large temporary data goes (CRIU's work directory during a
    /// checkpoint, and the default one for a restore). `None`: `<bundle>/work`, which the task
    /// API's bundle provides; the legacy shim API names a separate directory (`-workdir`).
    pub work_dir: Option<PathBuf>,
    /// The caller's deadline (the request's `timeout_nano`). A Create still running then
    /// stops at its next safe point and undoes what it made: the caller has been told it
    /// failed and will not come back for this container.
    pub deadline: Option<std::time::Instant>,
}

/// Everything `Exec` needs. `process` is the OCI `Process` JSON as containerd sent it; the core
/// only rewrites `terminal`, so fields it does not know survive untouched.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub id: ContainerId,
    pub exec_id: ExecId,
    pub stdio: StdioRequest,
    pub process: Vec<u8>,
}

/// How a process ended: the status containerd reports (exit code, or 128+signal) and when the
/// shim reaped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    pub at: SystemTime,
}

/// Process status as containerd's `Status` enum knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// A process's externally visible state (for `State`).
#[derive(Debug, Clone)]
pub struct ProcessState {
    /// Container id for init, exec id for an exec (what the Go shims put in `id`).
    pub id: String,
    pub bundle: PathBuf,
    pub pid: u32,
    pub status: Status,
    pub stdio: StdioRequest,
    pub exit: Option<Exit>,
}

/// One entry of `Pids`: a pid and, when it is one of our processes, which one (the exec id
/// of an exec; `init` for the container's init). APIs label them differently on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidInfo {
    pub pid: u32,
    pub exec_id: Option<String>,
    pub init: bool,
}

/// Checkpoint request, decoded from whichever options message the API carries.
#[derive(Debug, Clone, Default)]
pub struct CheckpointSpec {
    pub image_path: PathBuf,
    pub work_path: Option<PathBuf>,
    pub parent_path: Option<PathBuf>,
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    pub terminal: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    pub cgroups_mode: String,
}

/// `Delete`'s answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Deleted {
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_containerd_rules() {
        for ok in [
            "a",
            "abc-def",
            "a.b_c-d",
            "0123456789abcdef",
            &"x".repeat(76),
        ] {
            assert!(validate_identifier("id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a--b",
            "a/b",
            "..",
            "a\0b",
            "a\nb",
            "ä",
            " a",
            &"x".repeat(77),
        ] {
            let e = validate_identifier("id", bad).unwrap_err();
            assert_eq!(
                e.kind(),
                super::super::error::Kind::InvalidArgument,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_json_matches_go_shape() {
        let o = RuncOptions::default();
        assert_eq!(serde_json::to_string(&o).unwrap(), "{}");
        let o = RuncOptions {
            binary_name: "/usr/sbin/runc".into(),
            root: "/run/spec-runc".into(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&o).unwrap(),
            r#"{"binary_name":"/usr/sbin/runc","root":"/run/spec-runc"}"#
        );
        let back: RuncOptions = serde_json::from_str(r#"{"root":"/x","unknown":1}"#).unwrap();
        assert_eq!(back.root, "/x");
        assert_eq!(back.binary(), "runc");
    }
}
