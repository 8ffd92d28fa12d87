//! Garbage collection of metadata: mark what is reachable from the roots,
//! remove the rest, in one write transaction so nothing created meanwhile
//! can be mistaken for garbage.
//!
//! Roots (containerd's rules): images (their target and label references),
//! containers (their snapshot and label references), leases that have not
//! expired (every resource they hold), ingests no lease holds until their
//! expiry, and any blob or snapshot labelled `containerd.io/gc.root`
//! (`ctr snapshot prepare` and `commit` set it). References:
//! `containerd.io/gc.ref.content[.<suffix>|/<suffix>]` labels name blobs,
//! `containerd.io/gc.ref.snapshot.<snapshotter>[/...]` labels name snapshots;
//! a lease labelled `containerd.io/gc.flat` holds its objects but not what
//! they reference.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use redb::WriteTransaction;

use super::{containers, content, images, leases, snapshots, store_error};
use crate::content::Digest;
use crate::error::Result;
use crate::timestamps;

const GC_ROOT: &str = "containerd.io/gc.root";
const CONTENT_REF: &str = "containerd.io/gc.ref.content";
const SNAPSHOT_REF: &str = "containerd.io/gc.ref.snapshot.";

/// Something garbage collection keeps or removes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A blob in a namespace.
    Content {
        /// Its namespace.
        namespace: String,
        /// Its digest.
        digest: String,
    },
    /// An ingest in a namespace.
    Ingest {
        /// Its namespace.
        namespace: String,
        /// The client's ref.
        reference: String,
    },
    /// A snapshot of a snapshotter in a namespace.
    Snapshot {
        /// Its namespace.
        namespace: String,
        /// The snapshotter holding it.
        snapshotter: String,
        /// Its key.
        key: String,
    },
}

/// What a pass kept and removed.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// Snapshot records removed, as (namespace, snapshotter, key).
    pub removed_snapshots: Vec<(String, String, String)>,
    /// Blob records removed, as (namespace, digest).
    pub removed_content: Vec<(String, String)>,
    /// Ingest records removed, as (namespace, ref).
    pub removed_ingests: Vec<(String, String)>,
    /// Expired leases removed, as (namespace, id).
    pub removed_leases: Vec<(String, String)>,
    /// The soonest time a lease or ingest expires: the next pass is due then.
    pub next_expiry: Option<SystemTime>,
}

/// Calls `push` for every object a label map references.
fn label_refs(namespace: &str, labels: &HashMap<String, String>, push: &mut impl FnMut(Node)) {
    for (key, value) in labels {
        if let Some(rest) = key.strip_prefix(CONTENT_REF)
            && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('/'))
        {
            // Invalid digests reference nothing.
            if let Ok(digest) = Digest::parse(value) {
                push(Node::Content {
                    namespace: namespace.to_string(),
                    digest: digest.to_string(),
                });
            }
        } else if let Some(rest) = key.strip_prefix(SNAPSHOT_REF) {
            let snapshotter = rest.split('/').next().unwrap_or_default();
            if !snapshotter.is_empty() && !value.is_empty() {
                push(Node::Snapshot {
                    namespace: namespace.to_string(),
                    snapshotter: snapshotter.to_string(),
                    key: value.clone(),
                });
            }
        }
    }
}

/// Marks from the roots and removes unreachable blob, ingest and snapshot
/// records and expired leases. A snapshot keeps its parent chain.
pub fn mark_and_sweep(txn: &WriteTransaction, now: SystemTime) -> Result<Sweep> {
    let mut sweep = Sweep::default();
    let note_expiry = |sweep: &mut Sweep, at: SystemTime| {
        sweep.next_expiry = Some(sweep.next_expiry.map_or(at, |t| t.min(at)));
    };

    // What exists.
    let blobs = {
        let table = txn.open_table(content::BLOBS.def).map_err(store_error)?;
        content::BLOBS.all(&table)?
    };
    let blob_labels: HashMap<(String, String), HashMap<String, String>> = blobs
        .iter()
        .map(|(ns, digest, info)| ((ns.clone(), digest.clone()), info.labels.clone()))
        .collect();
    let ingests = {
        let table = txn.open_table(content::INGESTS.def).map_err(store_error)?;
        content::INGESTS.all(&table)?
    };
    let ingest_expected: HashMap<(String, String), String> = ingests
        .iter()
        .filter(|(_, _, r)| !r.expected.is_empty())
        .map(|(ns, reference, r)| ((ns.clone(), reference.clone()), r.expected.clone()))
        .collect();
    let snapshot_records = snapshots::all(txn)?;
    let snapshot_by_key: HashMap<(String, String, String), &berth_api::berth::metadata::v1::SnapshotRecord> =
        snapshot_records
            .iter()
            .map(|(ns, sn, key, record)| ((ns.clone(), sn.clone(), key.clone()), record))
            .collect();
    let all_leases = {
        let table = txn.open_table(leases::LEASES.def).map_err(store_error)?;
        leases::LEASES.all(&table)?
    };

    // Roots, each with whether its references are followed.
    let mut stack: Vec<(Node, bool)> = Vec::new();
    let mut live_leases = HashSet::new();
    let mut flat_leases = HashSet::new();
    for (ns, id, lease) in &all_leases {
        if let Some(expiry) = leases::expires_at(lease) {
            if expiry <= now {
                continue;
            }
            note_expiry(&mut sweep, expiry);
        }
        live_leases.insert((ns.clone(), id.clone()));
        if leases::is_flat(lease) {
            flat_leases.insert((ns.clone(), id.clone()));
        }
    }
    for (ns, lease, kind, id) in leases::all_resources(txn)? {
        let key = (ns.clone(), lease);
        if !live_leases.contains(&key) {
            continue;
        }
        let follow = !flat_leases.contains(&key);
        let node = match kind.as_str() {
            leases::CONTENT => Node::Content {
                namespace: ns,
                digest: id,
            },
            leases::INGESTS => Node::Ingest {
                namespace: ns,
                reference: id,
            },
            other => match other.strip_prefix(leases::SNAPSHOTS_PREFIX) {
                Some(snapshotter) => Node::Snapshot {
                    namespace: ns,
                    snapshotter: snapshotter.to_string(),
                    key: id,
                },
                None => continue,
            },
        };
        stack.push((node, follow));
    }
    {
        let table = txn.open_table(images::IMAGES.def).map_err(store_error)?;
        for (ns, _, image) in images::IMAGES.all(&table)? {
            if let Some(target) = &image.target {
                stack.push((
                    Node::Content {
                        namespace: ns.clone(),
                        digest: target.digest.clone(),
                    },
                    true,
                ));
            }
            label_refs(&ns, &image.labels, &mut |n| stack.push((n, true)));
        }
    }
    for (ns, reference, record) in &ingests {
        if let Some(expire) = &record.expire_at {
            let at = timestamps::to_system_time(expire);
            if at > now {
                note_expiry(&mut sweep, at);
                stack.push((
                    Node::Ingest {
                        namespace: ns.clone(),
                        reference: reference.clone(),
                    },
                    true,
                ));
            }
        }
    }
    for (ns, digest, info) in &blobs {
        if info.labels.contains_key(GC_ROOT) {
            stack.push((
                Node::Content {
                    namespace: ns.clone(),
                    digest: digest.clone(),
                },
                true,
            ));
        }
    }
    for (ns, snapshotter, key, record) in &snapshot_records {
        if record.labels.contains_key(GC_ROOT) {
            stack.push((
                Node::Snapshot {
                    namespace: ns.clone(),
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                },
                true,
            ));
        }
    }
    {
        let table = txn.open_table(containers::CONTAINERS.def).map_err(store_error)?;
        for (ns, _, container) in containers::CONTAINERS.all(&table)? {
            if !container.snapshotter.is_empty() && !container.snapshot_key.is_empty() {
                stack.push((
                    Node::Snapshot {
                        namespace: ns.clone(),
                        snapshotter: container.snapshotter.clone(),
                        key: container.snapshot_key.clone(),
                    },
                    true,
                ));
            }
            label_refs(&ns, &container.labels, &mut |n| stack.push((n, true)));
        }
    }

    // Mark.
    let mut live: HashSet<Node> = HashSet::new();
    let mut followed: HashSet<Node> = HashSet::new();
    let mut parents_pushed: HashSet<Node> = HashSet::new();
    while let Some((node, follow)) = stack.pop() {
        live.insert(node.clone());
        // A snapshot needs its parents however it is held, flat or not.
        if let Node::Snapshot {
            namespace,
            snapshotter,
            key,
        } = &node
            && parents_pushed.insert(node.clone())
            && let Some(record) = snapshot_by_key.get(&(namespace.clone(), snapshotter.clone(), key.clone()))
            && !record.parent.is_empty()
        {
            stack.push((
                Node::Snapshot {
                    namespace: namespace.clone(),
                    snapshotter: snapshotter.clone(),
                    key: record.parent.clone(),
                },
                follow,
            ));
        }
        if !follow || !followed.insert(node.clone()) {
            continue;
        }
        match &node {
            Node::Content { namespace, digest } => {
                if let Some(labels) = blob_labels.get(&(namespace.clone(), digest.clone())) {
                    label_refs(namespace, labels, &mut |n| stack.push((n, true)));
                }
            }
            Node::Ingest { namespace, reference } => {
                if let Some(expected) = ingest_expected.get(&(namespace.clone(), reference.clone())) {
                    stack.push((
                        Node::Content {
                            namespace: namespace.clone(),
                            digest: expected.clone(),
                        },
                        true,
                    ));
                }
            }
            Node::Snapshot {
                namespace,
                snapshotter,
                key,
            } => {
                if let Some(record) = snapshot_by_key.get(&(namespace.clone(), snapshotter.clone(), key.clone())) {
                    label_refs(namespace, &record.labels, &mut |n| stack.push((n, true)));
                }
            }
        }
    }

    // Sweep.
    for (ns, digest, _) in blobs {
        let node = Node::Content {
            namespace: ns.clone(),
            digest: digest.clone(),
        };
        if !live.contains(&node) {
            content::BLOBS.remove(txn, &ns, &digest)?;
            sweep.removed_content.push((ns, digest));
        }
    }
    for (ns, reference, _) in ingests {
        let node = Node::Ingest {
            namespace: ns.clone(),
            reference: reference.clone(),
        };
        if !live.contains(&node) {
            content::INGESTS.remove(txn, &ns, &reference)?;
            sweep.removed_ingests.push((ns, reference));
        }
    }
    for (ns, id, _) in all_leases {
        if !live_leases.contains(&(ns.clone(), id.clone())) {
            leases::LEASES.remove(txn, &ns, &id)?;
            leases::remove_all_resources(txn, &ns, &id)?;
            sweep.removed_leases.push((ns, id));
        }
    }
    for (ns, sn, key, _) in &snapshot_records {
        let node = Node::Snapshot {
            namespace: ns.clone(),
            snapshotter: sn.clone(),
            key: key.clone(),
        };
        if !live.contains(&node) {
            snapshots::remove(txn, ns, sn, key)?;
            sweep.removed_snapshots.push((ns.clone(), sn.clone(), key.clone()));
        }
    }
    Ok(sweep)
}
