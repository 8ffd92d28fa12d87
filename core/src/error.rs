//! The closed set of error kinds berth reports, and their gRPC codes.
//!
//! Clients branch on the code (an import does Create after Update answers
//! NotFound; unpack retries on AlreadyExists), so every error carries one
//! kind. Messages name the object and end with the kind's text, as
//! containerd's do: `namespace "n1": not found`; Go clients strip that
//! suffix when they turn the code back into an error.

use std::fmt;
use std::io;

use tonic::{Code, Status};

/// What went wrong, as a client needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed: a bad id, digest, filter, label or field.
    InvalidArgument,
    /// The named object does not exist.
    NotFound,
    /// An object with that name exists already.
    AlreadyExists,
    /// The object is in the wrong state for the request (e.g. not empty).
    FailedPrecondition,
    /// Try again later: the object is locked or the service is busy.
    Unavailable,
    /// The operation is not supported.
    NotImplemented,
    /// The caller gave up.
    Canceled,
    /// The operation ran out of time.
    DeadlineExceeded,
    /// An offset or size is past what exists (content writes).
    OutOfRange,
    /// Disk, memory or another limit is exhausted.
    ResourceExhausted,
    /// The caller may not do this.
    PermissionDenied,
    /// A failure of berth or the host (I/O, corruption) rather than of the request.
    Internal,
}

impl ErrorKind {
    /// The text that ends messages of this kind (containerd's wording).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid argument",
            Self::NotFound => "not found",
            Self::AlreadyExists => "already exists",
            Self::FailedPrecondition => "failed precondition",
            Self::Unavailable => "unavailable",
            Self::NotImplemented => "not implemented",
            Self::Canceled => "canceled",
            Self::DeadlineExceeded => "deadline exceeded",
            Self::OutOfRange => "out of range",
            Self::ResourceExhausted => "resource exhausted",
            Self::PermissionDenied => "permission denied",
            Self::Internal => "internal error",
        }
    }

    /// The gRPC (and ttrpc) status code for this kind.
    pub fn code(self) -> Code {
        match self {
            Self::InvalidArgument => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::AlreadyExists => Code::AlreadyExists,
            Self::FailedPrecondition => Code::FailedPrecondition,
            Self::Unavailable => Code::Unavailable,
            Self::NotImplemented => Code::Unimplemented,
            Self::Canceled => Code::Cancelled,
            Self::DeadlineExceeded => Code::DeadlineExceeded,
            Self::OutOfRange => Code::OutOfRange,
            Self::ResourceExhausted => Code::ResourceExhausted,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::Internal => Code::Unknown,
        }
    }

    /// The kind a status code stands for, as a client reads it back.
    pub fn from_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument => Self::InvalidArgument,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists => Self::AlreadyExists,
            Code::FailedPrecondition => Self::FailedPrecondition,
            Code::Unavailable => Self::Unavailable,
            Code::Unimplemented => Self::NotImplemented,
            Code::Cancelled => Self::Canceled,
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            Code::OutOfRange => Self::OutOfRange,
            Code::ResourceExhausted => Self::ResourceExhausted,
            Code::PermissionDenied => Self::PermissionDenied,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// An error with its kind and a message that names the object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    context: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == ErrorKind::Internal {
            // Host failures already say what failed; no suffix adds to that.
            f.write_str(&self.context)
        } else {
            write!(f, "{}: {}", self.context, self.kind)
        }
    }
}

/// Results of berth's own operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` about `context` (e.g. `namespace "n1"`).
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
        }
    }

    /// The request is malformed.
    pub fn invalid_argument(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, context)
    }

    /// The object does not exist.
    pub fn not_found(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, context)
    }

    /// The object exists already.
    pub fn already_exists(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, context)
    }

    /// The object is in the wrong state.
    pub fn failed_precondition(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, context)
    }

    /// Busy or locked; retry.
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, context)
    }

    /// Not supported.
    pub fn not_implemented(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotImplemented, context)
    }

    /// A host or internal failure.
    pub fn internal(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, context)
    }

    /// An I/O failure while doing `what`; a full disk is ResourceExhausted
    /// and a missing file NotFound, so callers can tell them apart.
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Self {
        use nix::errno::Errno;
        let errno = err.raw_os_error().map(Errno::from_raw);
        let kind = match errno {
            Some(Errno::ENOSPC | Errno::EDQUOT) => ErrorKind::ResourceExhausted,
            _ if err.kind() == io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ if err.kind() == io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Internal,
        };
        Self::new(kind, format!("{what}: {err}"))
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind's suffix.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Whether this is a NotFound error (the most common branch in callers).
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Puts more context in front of the message, keeping the kind.
    pub fn with_context(self, outer: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            context: format!("{outer}: {}", self.context),
        }
    }

    /// Reads an error back from a status a peer sent, stripping the kind's
    /// suffix from the message so it is not repeated.
    pub fn from_status(status: &Status) -> Self {
        let kind = ErrorKind::from_code(status.code());
        let message = status.message();
        let context = message
            .strip_suffix(kind.suffix())
            .and_then(|m| m.strip_suffix(": "))
            .unwrap_or(message);
        Self::new(kind, context)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(err.kind.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_end_with_the_kind() {
        let err = Error::not_found("namespace \"n1\"");
        assert_eq!(err.to_string(), "namespace \"n1\": not found");
        let status = Status::from(err);
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "namespace \"n1\": not found");
    }

    #[test]
    fn every_kind_round_trips_through_its_code() {
        use ErrorKind::*;
        for kind in [
            InvalidArgument,
            NotFound,
            AlreadyExists,
            FailedPrecondition,
            Unavailable,
            NotImplemented,
            Canceled,
            DeadlineExceeded,
            OutOfRange,
            ResourceExhausted,
            PermissionDenied,
            Internal,
        ] {
            assert_eq!(ErrorKind::from_code(kind.code()), kind, "{kind:?}");
        }
    }

    #[test]
    fn containerd_codes_match() {
        assert_eq!(ErrorKind::NotImplemented.code(), Code::Unimplemented);
        assert_eq!(ErrorKind::Internal.code(), Code::Unknown);
        assert_eq!(ErrorKind::FailedPrecondition.code(), Code::FailedPrecondition);
    }

    #[test]
    fn from_status_strips_the_suffix_once() {
        let status = Status::already_exists("image \"x\": already exists");
        let err = Error::from_status(&status);
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(err.context(), "image \"x\"");
        assert_eq!(err.to_string(), "image \"x\": already exists");
        let bare = Error::from_status(&Status::not_found("gone"));
        assert_eq!(bare.to_string(), "gone: not found");
    }

    #[test]
    fn io_errors_keep_their_meaning() {
        let full = io::Error::from_raw_os_error(28);
        assert_eq!(Error::io("writing blob", &full).kind(), ErrorKind::ResourceExhausted);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(Error::io("opening", &missing).kind(), ErrorKind::NotFound);
        let other = io::Error::other("boom");
        let err = Error::io("reading x", &other);
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.to_string(), "reading x: boom");
    }

    #[test]
    fn with_context_keeps_the_kind() {
        let err = Error::invalid_argument("label \"a\"").with_context("namespace \"n\"");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(err.to_string(), "namespace \"n\": label \"a\": invalid argument");
    }
}
