//! The channel between the runtime and the container's init while the
//! container is being created: length-prefixed JSON messages over a Unix
//! socket pair.
//!
//! The runtime sends the init its configuration, learns the container's
//! pid, puts it in its cgroup and says go; the init builds the container
//! and answers `Created`, or an error naming the step that failed.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::net::UnixStream;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupMount;
use crate::error::{Error, Result};

/// Largest message accepted (a spec is a few kilobytes).
const MAX_MESSAGE: u32 = 16 << 20;

/// What the init needs to build the container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitConfig {
    /// Container id.
    pub id: String,
    /// The spec, as parsed from the bundle.
    pub spec: oci_spec::runtime::Spec,
    /// The bundle directory.
    pub bundle: std::path::PathBuf,
    /// The rootfs directory.
    pub rootfs: std::path::PathBuf,
    /// The container's state directory (where `exec.sock` goes).
    pub state_dir: std::path::PathBuf,
    /// runc's `--no-pivot`.
    pub no_pivot: bool,
    /// The container's cgroup filesystems.
    pub cgroups: Vec<CgroupMount>,
    /// How the init enters the (already created) cgroup.
    pub cgroup_entry: crate::cgroups::CgroupEntry,
    /// Whether to unshare a cgroup namespace (after joining the cgroup).
    pub cgroup_ns: bool,
    /// A new user namespace, and what to unshare once it is mapped.
    pub user_namespace: Option<UserNamespaceSetup>,
    /// File descriptors 3..3+n the process keeps (`--preserve-fds`).
    pub preserve_fds: i32,
    /// Whether the init reports its steps (`FromInit::Step`).
    pub debug: bool,
}

/// How the init makes a new user namespace and the namespaces it owns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserNamespaceSetup {
    /// The maps the runtime writes.
    pub mappings: crate::user_namespace::Mappings,
    /// The other namespaces to unshare once mapped (clone flag bits).
    pub unshare: i32,
    /// What to write to `/proc/self/timens_offsets` after that.
    pub time_offsets: Vec<u8>,
}

/// What the exec'd process needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecConfig {
    /// The process to run.
    pub process: oci_spec::runtime::Process,
    /// The container's mount namespace (entered after the re-exec), as a
    /// descriptor the runtime passed open: once in the container's user
    /// namespace, the process could no longer open it.
    pub mount_namespace_fd: i32,
    /// The container's user namespace, if it has one (joined last).
    pub user_namespace_fd: Option<i32>,
    /// How to enter the container's cgroup.
    pub cgroup_entry: crate::cgroups::CgroupEntry,
    /// Descriptors 3..3+n the process keeps (`--preserve-fds`).
    pub preserve_fds: i32,
    /// The container's seccomp profile, which exec'd processes get too.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// Whether the process reports its steps (`FromInit::Step`).
    pub debug: bool,
}

/// What a host-bind helper does (see `rootfs::HostBinds`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostBindConfig {
    /// The container's mount namespace (a descriptor the helper inherits).
    pub mount_namespace_fd: i32,
    /// The bind's source, as the host names it.
    pub source: std::path::PathBuf,
    /// Where it goes (made by the init, under the rootfs).
    pub dest: std::path::PathBuf,
    /// MS_BIND, maybe MS_REC.
    pub flags: u64,
}

/// Runtime → init.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToInit {
    /// The configuration (first message) of a new container.
    Config(Box<InitConfig>),
    /// Instead of a container: a process to run in an existing one.
    Exec(Box<ExecConfig>),
    /// The cgroup's limits are set (the init builds the container
    /// meanwhile and waits for this before reporting it created).
    Go,
    /// The runtime's prestart and createRuntime hooks ran.
    HooksDone,
    /// The user namespace's maps are written.
    UsersMapped,
    /// Instead of a container: bind a source into one's mount namespace
    /// with the host's credentials, then exit.
    HostBind(Box<HostBindConfig>),
    /// What a source the init could not reach leads to.
    SourceLookedUp(std::result::Result<Option<crate::syscalls::FileKind>, Error>),
    /// The source the init could not reach is bound (or why not).
    SourceBound(Option<Error>),
}

/// Init → runtime.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromInit {
    /// The container's init pid, as the runtime's pid namespace sees it.
    Pid(i32),
    /// The new user namespace is made: write its maps, then answer
    /// UsersMapped.
    MapUsers,
    /// The mounts are made (pivot_root not yet): run the prestart and
    /// createRuntime hooks, then answer HooksDone.
    RunHooks,
    /// The container is built and waits for start.
    Created,
    /// The process loaded a seccomp filter with notify rules: this is its
    /// listener's descriptor number; hand it to the agent, then answer
    /// (see `seccomp_agent`).
    SeccompListener(i32),
    /// Building failed.
    Failed(Error),
    /// One step done, for the runtime's debug report (sent only when the
    /// configuration asked for it).
    Step(String),
    /// A bind source the user namespace's root may not reach: look it up
    /// with the host's credentials; answer SourceLookedUp.
    LookUpSource(std::path::PathBuf),
    /// Bind it (`dest` is made): answer SourceBound.
    BindSource {
        /// As the host names it.
        source: std::path::PathBuf,
        /// Under the rootfs.
        dest: std::path::PathBuf,
        /// MS_BIND, maybe MS_REC.
        flags: u64,
    },
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
}

impl Channel {
    /// A connected pair (both ends close on exec).
    pub fn pair() -> Result<(Self, Self)> {
        let (a, b) = UnixStream::pair().map_err(|e| Error::io("creating the sync channel", "socketpair", &e))?;
        Ok((Self { stream: a }, Self { stream: b }))
    }

    /// The end inherited as `fd` by an init process.
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self {
            stream: UnixStream::from(fd),
        }
    }

    /// The underlying connection (for the one-byte seccomp answer).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// The raw descriptor (to pass to a child).
    pub fn raw_fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<()> {
        let body = serde_json::to_vec(message).map_err(|e| Error::other("encoding a sync message", e.to_string()))?;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .map_err(|e| Error::io("sending a sync message", "sync channel", &e))
    }

    /// Receives the init's next message, passing the steps it reports
    /// before it to `debug`; None when the init closed the channel.
    pub fn recv_from_init(&mut self, debug: Option<fn(&str)>) -> Result<Option<FromInit>> {
        loop {
            match self.recv::<FromInit>()? {
                Some(FromInit::Step(step)) => {
                    if let Some(debug) = debug {
                        debug(&step);
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// Reports a step to the runtime when `debug` is set; a failure to
    /// report is no failure of the step.
    pub fn step(&mut self, debug: bool, message: impl FnOnce() -> String) {
        if debug {
            let _ = self.send(&FromInit::Step(message()));
        }
    }

    /// Receives one message; None when the other side closed.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io("receiving a sync message", "sync channel", &e)),
        }
        let length = u32::from_le_bytes(length);
        if length > MAX_MESSAGE {
            return Err(Error::other(
                "receiving a sync message",
                format!("{length} bytes is too large"),
            ));
        }
        let mut body = vec![0u8; length as usize];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| Error::io("receiving a sync message", "sync channel", &e))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::other("decoding a sync message", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_and_eof_is_none() {
        let (mut a, mut b) = Channel::pair().unwrap();
        a.send(&FromInit::Pid(42)).unwrap();
        a.send(&FromInit::Failed(Error::invalid("process.args", "empty")))
            .unwrap();
        drop(a);
        assert!(matches!(b.recv::<FromInit>().unwrap(), Some(FromInit::Pid(42))));
        match b.recv::<FromInit>().unwrap() {
            Some(FromInit::Failed(e)) => assert_eq!(e.subject.as_deref(), Some("process.args")),
            other => panic!("{other:?}"),
        }
        assert!(b.recv::<FromInit>().unwrap().is_none());
    }

    #[test]
    fn steps_go_to_the_debug_report_and_are_skipped_by_the_protocol() {
        use std::sync::Mutex;
        static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let (mut a, mut b) = Channel::pair().unwrap();
        a.step(true, || "one".into());
        a.step(false, || unreachable!("a step is only made when debugging"));
        a.step(true, || "two".into());
        a.send(&FromInit::Created).unwrap();
        drop(a);
        let report: fn(&str) = |step| SEEN.lock().unwrap().push(step.to_string());
        assert!(matches!(
            b.recv_from_init(Some(report)).unwrap(),
            Some(FromInit::Created)
        ));
        assert_eq!(*SEEN.lock().unwrap(), ["one", "two"]);
        assert!(b.recv_from_init(None).unwrap().is_none());
    }
}
