//! Runtime errors: which step failed, on which path or field, and the
//! errno, so a caller (go-runc, the shim, a person) can act on the message.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What went wrong, in the runtime's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The bundle, config or arguments are wrong.
    InvalidArgument,
    /// No such container.
    NotFound,
    /// A container with that id exists.
    AlreadyExists,
    /// The container is not in a state that allows the operation.
    FailedPrecondition,
    /// A system call or file operation failed.
    System,
    /// The process's own program could not be executed (the last step:
    /// everything else was set up). Shown as the process's own message,
    /// `exec PATH: reason`, as runc's init prints it.
    Exec,
}

/// An error with the step it happened in and what it concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct Error {
    /// The kind of failure.
    pub kind: Kind,
    /// What was being done, e.g. `mounting proc`.
    pub step: String,
    /// The path or spec field concerned, if any.
    pub subject: Option<String>,
    /// The errno, for system call failures.
    pub errno: Option<i32>,
    /// Further detail.
    pub detail: Option<String>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == Kind::Exec {
            let path = self.subject.as_deref().unwrap_or_default();
            let reason = self.errno.map(errno_text).unwrap_or_default();
            return write!(f, "exec {path}: {reason}");
        }
        f.write_str(&self.step)?;
        if let Some(subject) = &self.subject {
            write!(f, " {subject:?}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(errno) = self.errno {
            write!(f, ": {}", std::io::Error::from_raw_os_error(errno))?;
        }
        Ok(())
    }
}

/// The runtime's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn new(kind: Kind, step: impl Into<String>) -> Self {
        Self {
            kind,
            step: step.into(),
            subject: None,
            errno: None,
            detail: None,
        }
    }

    /// Bad input: `field` names the spec field or argument.
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(Kind::InvalidArgument, "invalid configuration");
        e.subject = Some(field.into());
        e.detail = Some(detail.into());
        e
    }

    /// No such container.
    pub fn not_found(id: &str) -> Self {
        let mut e = Self::new(Kind::NotFound, "container");
        e.subject = Some(id.to_string());
        e.detail = Some("does not exist".into());
        e
    }

    /// The container exists already.
    pub fn already_exists(id: &str) -> Self {
        let mut e = Self::new(Kind::AlreadyExists, "container");
        e.subject = Some(id.to_string());
        e.detail = Some("already exists".into());
        e
    }

    /// The container's state does not allow this.
    pub fn precondition(id: &str, detail: impl Into<String>) -> Self {
        let mut e = Self::new(Kind::FailedPrecondition, "container");
        e.subject = Some(id.to_string());
        e.detail = Some(detail.into());
        e
    }

    /// A failed system call or file operation during `step` on `subject`.
    pub fn sys(step: impl Into<String>, subject: impl AsRef<Path>, errno: i32) -> Self {
        let mut e = Self::new(Kind::System, step);
        e.subject = Some(subject.as_ref().display().to_string());
        e.errno = Some(errno);
        e
    }

    /// A failed I/O operation during `step` on `subject`.
    pub fn io(step: impl Into<String>, subject: impl AsRef<Path>, err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Self::sys(step, subject, errno),
            None => {
                let mut e = Self::new(Kind::System, step);
                e.subject = Some(subject.as_ref().display().to_string());
                e.detail = Some(err.to_string());
                e
            }
        }
    }

    /// A failure with no path, only an explanation.
    pub fn other(step: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = Self::new(Kind::System, step);
        e.detail = Some(detail.into());
        e
    }

    /// From a nix errno during `step` on `subject`.
    pub fn nix(step: impl Into<String>, subject: impl AsRef<Path>, errno: nix::errno::Errno) -> Self {
        Self::sys(step, subject, errno as i32)
    }

    /// The process's program `path` could not be executed.
    pub fn exec(path: impl AsRef<Path>, errno: nix::errno::Errno) -> Self {
        let mut e = Self::sys("exec", path, errno as i32);
        e.kind = Kind::Exec;
        e
    }

    /// The same error with more context in front of its step.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.step = format!("{context}: {}", self.step);
        self
    }
}

/// An errno as Go programs word it (`no such file or directory`): the C
/// library's text with a lowercase first letter.
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_exec_reads_as_the_process_own_message() {
        let e = Error::exec("/run.sh", nix::errno::Errno::ENOENT);
        assert_eq!(e.to_string(), "exec /run.sh: no such file or directory");
    }

    #[test]
    fn messages_name_the_step_the_subject_and_the_errno() {
        let e = Error::sys("mounting proc", "/proc", libc::EPERM);
        assert_eq!(
            e.to_string(),
            "mounting proc \"/proc\": Operation not permitted (os error 1)"
        );
        let e = Error::invalid("linux.namespaces[2].type", "unknown namespace type \"foo\"");
        assert_eq!(
            e.to_string(),
            "invalid configuration \"linux.namespaces[2].type\": unknown namespace type \"foo\""
        );
        let e = Error::not_found("web").context("kill");
        assert_eq!(e.to_string(), "kill: container \"web\": does not exist");
    }
}
