//! The one mapping from core errors to ttrpc statuses, for both APIs. Messages carry Go's
//! `": <class>"` suffix (containerd strips it when converting back), so an operator reads the
//! same text as with the Go shims.

use ttrpc::{Code, Status};

use crate::engine::{Error, Kind};

pub fn code_of(kind: Kind) -> Code {
    match kind {
        Kind::NotFound => Code::NOT_FOUND,
        Kind::AlreadyExists => Code::ALREADY_EXISTS,
        Kind::FailedPrecondition => Code::FAILED_PRECONDITION,
        Kind::InvalidArgument => Code::INVALID_ARGUMENT,
        Kind::Unimplemented => Code::UNIMPLEMENTED,
        Kind::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        Kind::Unavailable => Code::UNAVAILABLE,
        Kind::Unknown => Code::UNKNOWN,
    }
}

pub fn status(e: &Error) -> Status {
    ttrpc::get_status(code_of(e.kind()), e.wire_message())
}

/// A core error as the error type generated service traits return.
pub fn to_ttrpc(e: Error) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(status(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (
                Error::not_found("container not created"),
                Code::NOT_FOUND,
                "container not created: not found",
            ),
            (
                Error::already_exists("id e1"),
                Code::ALREADY_EXISTS,
                "id e1: already exists",
            ),
            (
                Error::failed_precondition("container must be created"),
                Code::FAILED_PRECONDITION,
                "container must be created: failed precondition",
            ),
            (
                Error::unknown("cannot delete a running process"),
                Code::UNKNOWN,
                "cannot delete a running process",
            ),
            (
                Error::invalid_argument("bad id"),
                Code::INVALID_ARGUMENT,
                "bad id: invalid argument",
            ),
            (
                Error::unimplemented("no"),
                Code::UNIMPLEMENTED,
                "no: not implemented",
            ),
            (
                Error::deadline_exceeded("slow"),
                Code::DEADLINE_EXCEEDED,
                "slow: context deadline exceeded",
            ),
        ];
        for (e, code, msg) in cases {
            let s = status(&e);
            assert_eq!(s.code.value(), code as i32, "{e}");
            assert_eq!(s.message, msg);
        }
    }
}
