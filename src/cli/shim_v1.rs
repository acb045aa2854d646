//! Command line of the legacy shim v1 personality (`containerd-shim`).
//!
//! containerd's v1 runtime execs `containerd-shim -namespace … -workdir … -address …
//! -containerd-binary … [-criu-path …] [-runtime-root …] [-systemd-cgroup] [-debug]` with the
//! listening socket as fd 3 (protocols.md 5.1). This module turns that argv into a typed
//! [`ShimV1Args`], accepting the union of what containerd 1.3–1.7 pass and what the Go shims
//! of those versions define.

use std::path::PathBuf;

use serde::Serialize;

use super::goflags::{self, CliError, FlagDef, FlagKind, FlagValue};

/// Default `-runtime-root`, the Go shim's `process.RuncRoot`.
pub const DEFAULT_RUNTIME_ROOT: &str = "/run/containerd/runc";

/// Default `-containerd-binary`.
pub const DEFAULT_CONTAINERD_BINARY: &str = "containerd";

/// Flags of the v1 personality.
pub const FLAGS: &[FlagDef] = &[
    FlagDef {
        name: "debug",
        kind: FlagKind::Bool,
        help: "log at debug level",
        default: None,
    },
    FlagDef {
        name: "v",
        kind: FlagKind::Bool,
        help: "print the version and exit",
        default: None,
    },
    FlagDef {
        name: "namespace",
        kind: FlagKind::String,
        help: "containerd namespace of the container",
        default: None,
    },
    FlagDef {
        name: "socket",
        kind: FlagKind::String,
        help: "serve on this socket instead of fd 3 (no unix:// prefix = abstract socket)",
        default: None,
    },
    FlagDef {
        name: "address",
        kind: FlagKind::String,
        help: "containerd's grpc socket address",
        default: None,
    },
    FlagDef {
        name: "workdir",
        kind: FlagKind::String,
        help: "work directory holding shim.stdout.log/shim.stderr.log and checkpoint data",
        default: None,
    },
    FlagDef {
        name: "runtime-root",
        kind: FlagKind::String,
        help: "state root of the OCI runtime",
        default: Some(DEFAULT_RUNTIME_ROOT),
    },
    FlagDef {
        name: "criu",
        kind: FlagKind::String,
        help: "criu binary for checkpoint/restore",
        default: None,
    },
    // containerd 1.3–1.6 pass -criu-path although the Go shim only defines -criu
    // (protocols.md 5.7); accepting it fixes that long-standing start failure.
    FlagDef {
        name: "criu-path",
        kind: FlagKind::String,
        help: "alias of -criu",
        default: None,
    },
    FlagDef {
        name: "systemd-cgroup",
        kind: FlagKind::Bool,
        help: "tell the runtime to use the systemd cgroup driver",
        default: None,
    },
    FlagDef {
        name: "containerd-binary",
        kind: FlagKind::String,
        help: "containerd binary used to publish events (`containerd publish`)",
        default: Some(DEFAULT_CONTAINERD_BINARY),
    },
    FlagDef {
        name: "allow-abstract-socket",
        kind: FlagKind::Bool,
        help: "allow -socket to name an abstract unix socket (refused by default)",
        default: None,
    },
];

/// Typed v1 command line. Empty-means-unset strings are `Option`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShimV1Args {
    /// `-namespace`.
    pub namespace: String,
    /// `-workdir`.
    pub workdir: Option<PathBuf>,
    /// `-address`.
    pub address: String,
    /// `-containerd-binary` (default `containerd`).
    pub containerd_binary: String,
    /// `-runtime-root` (default `/run/containerd/runc`).
    pub runtime_root: PathBuf,
    /// `-criu` or `-criu-path`, whichever comes last.
    pub criu: Option<PathBuf>,
    /// `-systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `-socket`; `None` = serve on the inherited fd 3.
    pub socket: Option<String>,
    /// `-debug`.
    pub debug: bool,
    /// `-v` (containerd 1.7's shim; 1.6's has none, accepting it costs nothing).
    pub version: bool,
    /// `-allow-abstract-socket` (ours).
    pub allow_abstract_socket: bool,
    /// Positional arguments. The Go v1 shim never looks at them, so they are accepted and
    /// ignored rather than rejected.
    pub extra_args: Vec<String>,
}

impl Default for ShimV1Args {
    fn default() -> Self {
        ShimV1Args {
            namespace: String::new(),
            workdir: None,
            address: String::new(),
            containerd_binary: DEFAULT_CONTAINERD_BINARY.to_owned(),
            runtime_root: PathBuf::from(DEFAULT_RUNTIME_ROOT),
            criu: None,
            systemd_cgroup: false,
            socket: None,
            debug: false,
            version: false,
            allow_abstract_socket: false,
            extra_args: Vec::new(),
        }
    }
}

impl ShimV1Args {
    /// Parse the arguments after argv[0].
    pub fn parse<I, S>(args: I) -> Result<ShimV1Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = goflags::parse(FLAGS, args)?;
        let mut out = ShimV1Args::default();
        let path = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        for (name, value) in parsed.flags {
            match (name, value) {
                ("namespace", FlagValue::String(v)) => out.namespace = v,
                ("workdir", FlagValue::String(v)) => out.workdir = path(v),
                ("address", FlagValue::String(v)) => out.address = v,
                ("containerd-binary", FlagValue::String(v)) => out.containerd_binary = v,
                // Go keeps whatever was given, even "", as the runtime root.
                ("runtime-root", FlagValue::String(v)) => out.runtime_root = PathBuf::from(v),
                ("criu" | "criu-path", FlagValue::String(v)) => out.criu = path(v),
                ("socket", FlagValue::String(v)) => out.socket = (!v.is_empty()).then_some(v),
                ("systemd-cgroup", FlagValue::Bool(b)) => out.systemd_cgroup = b,
                ("debug", FlagValue::Bool(b)) => out.debug = b,
                ("v", FlagValue::Bool(b)) => out.version = b,
                ("allow-abstract-socket", FlagValue::Bool(b)) => out.allow_abstract_socket = b,
                // Table/match mismatches are caught by the unit tests; never abort on them.
                _ => {}
            }
        }
        out.extra_args = parsed.positional;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_in_the_table_is_applied() {
        for def in FLAGS {
            let arg = match def.kind {
                FlagKind::Bool => format!("-{}", def.name),
                FlagKind::String => format!("-{}=x", def.name),
            };
            let got = ShimV1Args::parse([arg.as_str()]).unwrap();
            assert_ne!(
                got,
                ShimV1Args::default(),
                "flag -{} had no effect",
                def.name
            );
        }
    }

    #[test]
    fn criu_alias_last_wins() {
        let got = ShimV1Args::parse(["-criu", "/a", "-criu-path", "/b"]).unwrap();
        assert_eq!(got.criu, Some(PathBuf::from("/b")));
        let got = ShimV1Args::parse(["-criu-path=/b", "--criu=/a"]).unwrap();
        assert_eq!(got.criu, Some(PathBuf::from("/a")));
    }
}
