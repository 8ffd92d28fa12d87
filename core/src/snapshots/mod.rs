//! Snapshots: copy-on-write filesystems for image layers and containers.
//!
//! A [`Snapshotter`] backend (overlayfs, native, a proxy) manages snapshots
//! by its own keys. [`namespaced::NamespacedSnapshots`] is what the
//! Snapshots service serves: per-namespace names, parents and labels over
//! backend keys `<namespace>/<sequence>/<key>`, leases, and garbage
//! collection of backend snapshots no namespace refers to.
//!
//! Backends are synchronous (they are filesystem work); callers run them on
//! blocking threads.

pub mod namespaced;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::keyed_lock::KeyedLocks;
use crate::mount::Mount;
use crate::plugin::{PluginSet, types};

/// What a snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Read-only view of a committed parent.
    View,
    /// Writable, not yet committed.
    Active,
    /// Immutable; may be a parent.
    Committed,
}

impl Kind {
    /// The `containerd.services.snapshots.v1.Kind` number.
    pub fn to_proto(self) -> i32 {
        match self {
            Self::View => 1,
            Self::Active => 2,
            Self::Committed => 3,
        }
    }

    /// Reads a `Kind` number; unknown values are an internal error (only
    /// berth writes them).
    pub fn from_proto(value: i32) -> Result<Self> {
        match value {
            1 => Ok(Self::View),
            2 => Ok(Self::Active),
            3 => Ok(Self::Committed),
            other => Err(Error::internal(format!("snapshot kind {other} is unknown"))),
        }
    }

    /// The name filters use: `view`, `active` or `committed`.
    pub fn filter_name(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Active => "active",
            Self::Committed => "committed",
        }
    }
}

/// One snapshot as a backend or a namespace describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// The key (or name, once committed).
    pub name: String,
    /// The parent's key; empty for none.
    pub parent: String,
    /// What it is.
    pub kind: Kind,
    /// Labels.
    pub labels: HashMap<String, String>,
    /// When it was made.
    pub created: SystemTime,
    /// When it last changed.
    pub updated: SystemTime,
}

/// Disk use of one snapshot (its own layer, not its parents').
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes.
    pub size: i64,
    /// Inodes.
    pub inodes: i64,
}

/// Label prefix of labels snapshotters keep (the rest stay in berth's records).
pub const INHERITED_LABEL_PREFIX: &str = "containerd.io/snapshot/";

/// Label a client sets on a snapshot it is unpacking to name the committed
/// snapshot it will become; remote snapshotters use it.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// The labels a backend is given: only those it may act on.
pub fn inherited_labels(labels: &HashMap<String, String>) -> HashMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| k.starts_with(INHERITED_LABEL_PREFIX) || k.as_str() == SNAPSHOT_REF_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A snapshotter backend. Semantics every implementation keeps (the
/// conformance suite in berth-snapshotters checks them):
/// Prepare/View of an existing key is AlreadyExists; a missing parent is
/// NotFound; a parent that is not committed is InvalidArgument; Commit of a
/// snapshot that is not active is FailedPrecondition, and to an existing
/// name AlreadyExists; Remove of a snapshot with children is
/// FailedPrecondition.
pub trait Snapshotter: Send + Sync + 'static {
    /// One snapshot.
    fn stat(&self, key: &str) -> Result<Info>;
    /// Replaces a snapshot's labels.
    fn update_labels(&self, key: &str, labels: HashMap<String, String>) -> Result<Info>;
    /// Disk use of a snapshot's own layer.
    fn usage(&self, key: &str) -> Result<Usage>;
    /// The mounts that present the snapshot.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// A writable snapshot on top of `parent` (empty for none).
    fn prepare(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>>;
    /// A read-only view of `parent`.
    fn view(&self, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>>;
    /// Makes the active snapshot `key` the committed snapshot `name`. Data
    /// written to it is on disk (synced) before this returns.
    fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()>;
    /// Removes a snapshot and its data.
    fn remove(&self, key: &str) -> Result<()>;
    /// Every snapshot.
    fn walk(&self) -> Result<Vec<Info>>;
    /// Removes data no snapshot owns (left by a crash).
    fn cleanup(&self) -> Result<()>;
    /// Stops serving: later calls fail with Unavailable. The daemon closes
    /// every snapshotter once requests have drained at shutdown.
    fn close(&self) -> Result<()>;
}

/// The snapshotters berthd loaded, by name (plugin id).
#[derive(Default)]
pub struct Snapshotters {
    by_name: BTreeMap<String, Arc<dyn Snapshotter>>,
    gc_lock: tokio::sync::RwLock<()>,
    name_locks: KeyedLocks,
}

impl std::fmt::Debug for Snapshotters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

/// The instance a snapshotter plugin returns.
pub struct SnapshotterPlugin(pub Arc<dyn Snapshotter>);

impl std::fmt::Debug for SnapshotterPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotterPlugin")
    }
}

impl Snapshotters {
    /// Every snapshotter plugin that initialised.
    pub fn from_plugins(plugins: &PluginSet) -> Self {
        let by_name = plugins
            .of_type(types::SNAPSHOTTER)
            .into_iter()
            .filter_map(|entry| {
                let plugin = entry.get::<SnapshotterPlugin>().ok()?;
                Some((entry.id.to_string(), Arc::clone(&plugin.0)))
            })
            .collect();
        Self {
            by_name,
            ..Self::default()
        }
    }

    /// A set with the given backends (tests and tools).
    pub fn with(backends: impl IntoIterator<Item = (String, Arc<dyn Snapshotter>)>) -> Self {
        Self {
            by_name: backends.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Locks on snapshot names: an operation holds the names it changes
    /// while its backend works outside metadata transactions.
    pub fn name_locks(&self) -> &KeyedLocks {
        &self.name_locks
    }

    /// Creating and committing snapshots hold this for reading; garbage
    /// collection holds it for writing while it removes backend snapshots,
    /// so it never removes one whose record is about to be written.
    pub fn gc_lock(&self) -> &tokio::sync::RwLock<()> {
        &self.gc_lock
    }

    /// The snapshotter called `name`; InvalidArgument when none is loaded.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Snapshotter>> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::invalid_argument(format!("snapshotter not loaded: {name:?}")))
    }

    /// Every (name, snapshotter).
    pub fn all(&self) -> impl Iterator<Item = (&str, &Arc<dyn Snapshotter>)> {
        self.by_name.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshot_labels_are_inherited() {
        let labels: HashMap<String, String> = [
            ("containerd.io/snapshot/remote", "1"),
            ("containerd.io/snapshot.ref", "sha256:x"),
            ("containerd.io/gc.root", "1"),
            ("team", "web"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let inherited = inherited_labels(&labels);
        assert_eq!(inherited.len(), 2);
        assert!(inherited.contains_key("containerd.io/snapshot.ref"));
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [Kind::View, Kind::Active, Kind::Committed] {
            assert_eq!(Kind::from_proto(kind.to_proto()).unwrap(), kind);
        }
        assert!(Kind::from_proto(0).is_err());
    }

    #[test]
    fn unknown_snapshotters_are_invalid_argument() {
        let err = Snapshotters::default().get("zfs").err().unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        assert_eq!(err.to_string(), "snapshotter not loaded: \"zfs\": invalid argument");
    }
}
