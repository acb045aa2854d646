//! Command line of the shim v2 personalities (`containerd-shim-runc-v1`, `containerd-shim-runc-v2`).
//!
//! containerd runs these binaries as `<shim> -namespace … -address … -publish-binary … -id …
//! [-bundle …] [-debug] start|delete`, and the `start` helper re-runs the binary without an
//! action as the long-lived daemon (protocols.md 2.2). This module turns that argv into a typed
//! [`ShimV2Args`] and decides, like the Go `shim.run`, what the invocation asks for ([`Mode`]).

use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::goflags::{self, CliError, FlagDef, FlagKind, FlagValue};

/// Every flag any containerd version passes to a v2 shim or any Go v2 shim defines (1.6 → 2.3),
/// so that one binary accepts the command lines of all of them.
pub const FLAGS: &[FlagDef] = &[
    FlagDef {
        name: "namespace",
        kind: FlagKind::String,
        help: "containerd namespace of the task",
        default: None,
    },
    FlagDef {
        name: "id",
        kind: FlagKind::String,
        help: "task (container) id",
        default: None,
    },
    FlagDef {
        name: "address",
        kind: FlagKind::String,
        help: "containerd's grpc socket address",
        default: None,
    },
    FlagDef {
        name: "publish-binary",
        kind: FlagKind::String,
        help: "containerd binary, accepted for compatibility (events go over TTRPC_ADDRESS)",
        default: Some("containerd"),
    },
    FlagDef {
        name: "bundle",
        kind: FlagKind::String,
        help: "bundle directory when it is not the working directory",
        default: None,
    },
    FlagDef {
        name: "socket",
        kind: FlagKind::String,
        help: "serve on this socket instead of the one inherited as fd 3",
        default: None,
    },
    FlagDef {
        name: "debug",
        kind: FlagKind::Bool,
        help: "log at debug level",
        default: None,
    },
    FlagDef {
        name: "debug-socket",
        kind: FlagKind::String,
        help: "socket for debug endpoints (accepted, containerd 2.x)",
        default: None,
    },
    FlagDef {
        name: "v",
        kind: FlagKind::Bool,
        help: "print the version and exit",
        default: None,
    },
    FlagDef {
        name: "version",
        kind: FlagKind::Bool,
        help: "print the version and exit",
        default: None,
    },
    FlagDef {
        name: "info",
        kind: FlagKind::Bool,
        help: "read runtime options from stdin, print RuntimeInfo protobuf on stdout and exit",
        default: None,
    },
];

/// The positional word after the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `start`: launch (or join) the daemon and print its address.
    Start,
    /// `delete`: clean up after a dead shim and print a DeleteResponse.
    Delete,
    /// Any other word. Kept verbatim so the caller can report it; see [`ShimV2Args::mode`].
    Other(String),
}

impl Action {
    fn from_word(word: &str) -> Action {
        match word {
            "start" => Action::Start,
            "delete" => Action::Delete,
            other => Action::Other(other.to_owned()),
        }
    }

    /// The word as given on the command line.
    pub fn as_str(&self) -> &str {
        match self {
            Action::Start => "start",
            Action::Delete => "delete",
            Action::Other(s) => s,
        }
    }
}

// Serialised as the plain word so fixtures and debug logs read like the command line.
impl Serialize for Action {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What a v2 invocation asks for, in the precedence the Go shim applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-v` / `-version`.
    Version,
    /// `-info`.
    Info,
    /// `start` action.
    Start,
    /// `delete` action.
    Delete,
    /// No action: serve the task API.
    Daemon,
}

/// Typed v2 command line. Strings that Go treats as "unset" when empty are `Option`s here, so
/// nothing downstream has to know that `""` means "absent".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShimV2Args {
    /// `-namespace`; empty when not given (rejected by [`ShimV2Args::mode`]).
    pub namespace: String,
    /// `-id`.
    pub id: String,
    /// `-address`: containerd's grpc socket path.
    pub address: String,
    /// `-publish-binary` (default `containerd`).
    pub publish_binary: String,
    /// `-bundle`; `None` means "the working directory".
    pub bundle: Option<PathBuf>,
    /// `-socket`.
    pub socket: Option<String>,
    /// `-debug`.
    pub debug: bool,
    /// `-debug-socket`.
    pub debug_socket: Option<String>,
    /// `-v` or `-version`.
    pub version: bool,
    /// `-info`.
    pub info: bool,
    /// First positional argument.
    pub action: Option<Action>,
    /// Positional arguments after the action; Go ignores them, and so do we.
    pub extra_args: Vec<String>,
}

impl Default for ShimV2Args {
    fn default() -> Self {
        ShimV2Args {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: "containerd".to_owned(),
            bundle: None,
            socket: None,
            debug: false,
            debug_socket: None,
            version: false,
            info: false,
            action: None,
            extra_args: Vec::new(),
        }
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl ShimV2Args {
    /// Parse the arguments after argv[0].
    pub fn parse<I, S>(args: I) -> Result<ShimV2Args, CliError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let parsed = goflags::parse(FLAGS, args)?;
        let mut out = ShimV2Args::default();
        for (name, value) in parsed.flags {
            match (name, value) {
                ("namespace", FlagValue::String(v)) => out.namespace = v,
                ("id", FlagValue::String(v)) => out.id = v,
                ("address", FlagValue::String(v)) => out.address = v,
                ("publish-binary", FlagValue::String(v)) => out.publish_binary = v,
                ("bundle", FlagValue::String(v)) => out.bundle = non_empty(v).map(PathBuf::from),
                ("socket", FlagValue::String(v)) => out.socket = non_empty(v),
                ("debug-socket", FlagValue::String(v)) => out.debug_socket = non_empty(v),
                ("debug", FlagValue::Bool(b)) => out.debug = b,
                ("v" | "version", FlagValue::Bool(b)) => out.version = b,
                ("info", FlagValue::Bool(b)) => out.info = b,
                // The table and this match are kept in step by the unit tests; a mismatch is a
                // programming error that must not abort the shim, so it is ignored.
                _ => {}
            }
        }
        let mut positional = parsed.positional.into_iter();
        out.action = positional.next().map(|w| Action::from_word(&w));
        out.extra_args = positional.collect();
        Ok(out)
    }

    /// Decide what to do, in Go's order: version, then info, then the namespace check, then
    /// the action.
    ///
    /// Deliberate deviation: the Go shims (1.6–2.3) run the daemon for any action word other
    /// than `start`/`delete`. containerd never passes another word, and the typical way to get
    /// one is a mistyped boolean (`-debug true`), after which a daemon serving on an inherited
    /// fd 3 would be a confusing outcome; we answer [`CliError::UnknownAction`] instead.
    pub fn mode(&self) -> Result<Mode, CliError> {
        if self.version {
            return Ok(Mode::Version);
        }
        if self.info {
            return Ok(Mode::Info);
        }
        if self.namespace.is_empty() {
            return Err(CliError::EmptyNamespace);
        }
        match &self.action {
            None => Ok(Mode::Daemon),
            Some(Action::Start) => Ok(Mode::Start),
            Some(Action::Delete) => Ok(Mode::Delete),
            Some(Action::Other(w)) => Err(CliError::UnknownAction(w.clone())),
        }
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
            let got = ShimV2Args::parse([arg.as_str()]).unwrap();
            assert_ne!(
                got,
                ShimV2Args::default(),
                "flag -{} had no effect",
                def.name
            );
        }
    }

    #[test]
    fn modes() {
        let m = |a: &[&str]| ShimV2Args::parse(a).unwrap().mode();
        assert_eq!(m(&["-v"]), Ok(Mode::Version));
        assert_eq!(m(&["-info"]), Ok(Mode::Info));
        assert_eq!(m(&["start"]), Err(CliError::EmptyNamespace));
        assert_eq!(m(&["-namespace", "n", "start"]), Ok(Mode::Start));
        assert_eq!(m(&["-namespace", "n", "delete"]), Ok(Mode::Delete));
        assert_eq!(m(&["-namespace", "n"]), Ok(Mode::Daemon));
        assert_eq!(
            m(&["-namespace", "n", "-debug", "true"]),
            Err(CliError::UnknownAction("true".into()))
        );
    }
}
