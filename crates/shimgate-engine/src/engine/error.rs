//! The core's error type. Every failure the engine reports carries a [`Kind`] that mirrors
//! containerd's `errdefs` classes, because containerd decides what to do from the class (a
//! NotFound on Kill means "already gone", an AlreadyExists on Exec is a user error, ...). The
//! API layer maps kinds to ttrpc codes in one table (`api::status`); nothing else in the crate
//! chooses a wire code.

use std::fmt;

/// Error classes, as containerd's errdefs knows them. `Unknown` is what the Go shims produce
/// for plain errors (state-machine refusals such as "cannot delete a running process"), and we
/// keep it for the same situations so containerd and its users see the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unimplemented,
    DeadlineExceeded,
    Unavailable,
    Unknown,
}

impl Kind {
    /// The suffix Go's errdefs appends to messages of this class. containerd strips a trailing
    /// `": <class>"` when it converts a status back, so messages read the same on both sides.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Kind::NotFound => Some("not found"),
            Kind::AlreadyExists => Some("already exists"),
            Kind::FailedPrecondition => Some("failed precondition"),
            Kind::InvalidArgument => Some("invalid argument"),
            Kind::Unimplemented => Some("not implemented"),
            Kind::Unavailable => Some("unavailable"),
            Kind::DeadlineExceeded => Some("context deadline exceeded"),
            Kind::Unknown => None,
        }
    }
}

/// An engine error: a class, the message an operator reads, and the chain of causes folded into
/// that message at construction (so the wire message is complete without walking `source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
    message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Kind::AlreadyExists, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(Kind::FailedPrecondition, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidArgument, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Kind::Unimplemented, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Kind::DeadlineExceeded, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(Kind::Unknown, message)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The bare message, without the class suffix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix context to the message, keeping the class (like Go's `fmt.Errorf("ctx: %w")`).
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    /// The message as a Go shim would put it on the wire: `<message>: <class>`.
    pub fn wire_message(&self) -> String {
        match self.kind.suffix() {
            Some(s) if !self.message.ends_with(s) => format!("{}: {s}", self.message),
            _ => self.message.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire_message())
    }
}

impl std::error::Error for Error {}

/// Fold any error and its whole `source()` chain into one message.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = e.source();
    }
    msg
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => Kind::NotFound,
            std::io::ErrorKind::AlreadyExists => Kind::AlreadyExists,
            std::io::ErrorKind::InvalidInput => Kind::InvalidArgument,
            std::io::ErrorKind::TimedOut => Kind::DeadlineExceeded,
            _ => Kind::Unknown,
        };
        Error::new(kind, chain(&e))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::from(std::io::Error::from(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to any fallible result, keeping or choosing the class.
pub trait ResultExt<T> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn ctx(self, ctx: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_message_appends_class_once() {
        let e = Error::not_found("process already finished");
        assert_eq!(e.wire_message(), "process already finished: not found");
        let e = Error::not_found("container not created: not found");
        assert_eq!(e.wire_message(), "container not created: not found");
        let e = Error::unknown("cannot delete a running process");
        assert_eq!(e.wire_message(), "cannot delete a running process");
    }

    #[test]
    fn context_keeps_kind() {
        let e = Error::already_exists("e1").context("id");
        assert_eq!(e.kind(), Kind::AlreadyExists);
        assert_eq!(e.to_string(), "id: e1: already exists");
    }

    #[test]
    fn io_errors_map_to_classes() {
        let e: Error = std::io::Error::from_raw_os_error(libc::ENOENT).into();
        assert_eq!(e.kind(), Kind::NotFound);
        let e: Error = std::io::Error::from_raw_os_error(libc::EIO).into();
        assert_eq!(e.kind(), Kind::Unknown);
    }
}
