//! What a crash leaves half done, undone at startup before anything is
//! served (the garbage collector's first pass then frees the files):
//!
//! - **Ingests.** An ingest belongs to a `Content.Write` stream, and every
//!   stream died with the previous daemon; its unsynced tail may not have
//!   survived either. Every ingest record is dropped; a client that tries
//!   again finds no ingest for its ref and writes from the start.
//! - **Interrupted unpacks.** Active snapshots whose key carries the unpack
//!   prefix (`extract-`, containerd's convention: an unpacker prepares a
//!   fresh `extract-<unique> <chain id>` key for every layer it applies and
//!   never resumes one) hold half-applied layers. Their records are dropped.
//! - **Dangling records.** A crash between a backend commit and the
//!   metadata write that records it leaves an active record whose backend
//!   snapshot is gone (committed under the new name, which no record names,
//!   so the collector removes it). Such records are dropped when nothing is
//!   based on them; the client's Commit failed, and it prepares again.
//!
//! Lease entries naming a dropped record are removed with it.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::metadata::{MetadataStore, content, leases, namespaces, snapshots};
use crate::snapshots::{Kind, Snapshotters};

/// The prefix of the keys unpackers prepare layers under.
pub const UNPACK_KEY_PREFIX: &str = "extract-";

/// What a repair dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairStats {
    /// Ingest records.
    pub ingests: usize,
    /// Active snapshots of interrupted unpacks.
    pub unpacks: usize,
    /// Snapshot records whose backend snapshot was gone.
    pub dangling: usize,
}

/// A snapshot record to drop, and why.
struct Doomed {
    namespace: String,
    snapshotter: String,
    key: String,
    dangling: bool,
}

/// Finds and drops the records a crash left half done (see the module
/// documentation). Runs before the daemon serves and before the first
/// garbage collection.
pub async fn repair(meta: &MetadataStore, snapshotters: &Snapshotters) -> Result<RepairStats> {
    let mut backend_keys: HashMap<String, HashSet<String>> = HashMap::new();
    for (name, backend) in snapshotters.all() {
        let backend = std::sync::Arc::clone(backend);
        let infos = tokio::task::spawn_blocking(move || backend.walk())
            .await
            .map_err(|e| crate::Error::internal(format!("listing snapshots failed: {e}")))??;
        backend_keys.insert(name.to_string(), infos.into_iter().map(|i| i.name).collect());
    }

    let (doomed, ingests) = meta
        .read(move |txn| {
            let mut doomed = Vec::new();
            let mut ingests = Vec::new();
            for (namespace, _) in namespaces::list(txn)? {
                for (reference, _) in content::list_ingests(txn, &namespace)? {
                    ingests.push((namespace.clone(), reference));
                }
                for (snapshotter, keys) in &backend_keys {
                    for (key, record) in snapshots::list(txn, &namespace, snapshotter)? {
                        let dangling = !keys.contains(&record.backend_key);
                        let unpack = key.starts_with(UNPACK_KEY_PREFIX)
                            && Kind::from_proto(record.kind).is_ok_and(|k| k == Kind::Active);
                        if dangling || unpack {
                            doomed.push(Doomed {
                                namespace: namespace.clone(),
                                snapshotter: snapshotter.clone(),
                                key,
                                dangling,
                            });
                        }
                    }
                }
            }
            Ok((doomed, ingests))
        })
        .await?;
    if doomed.is_empty() && ingests.is_empty() {
        return Ok(RepairStats::default());
    }

    let stats = meta
        .write(move |txn| {
            let mut stats = RepairStats::default();
            // (namespace, lease type, id) of every dropped record.
            let mut released: HashSet<(String, String, String)> = HashSet::new();
            for (namespace, reference) in ingests {
                if content::remove_ingest(txn, &namespace, &reference)?.is_some() {
                    stats.ingests += 1;
                    released.insert((namespace, leases::INGESTS.to_string(), reference));
                }
            }
            for doomed in doomed {
                let (ns, sn, key) = (&doomed.namespace, &doomed.snapshotter, &doomed.key);
                let children = snapshots::children(txn, ns, sn, key)?;
                if !children.is_empty() {
                    tracing::error!(
                        namespace = %ns, snapshotter = %sn, key = %key, ?children,
                        "snapshot record without its backend snapshot has children; kept"
                    );
                    continue;
                }
                snapshots::remove(txn, ns, sn, key)?;
                if doomed.dangling {
                    stats.dangling += 1;
                } else {
                    stats.unpacks += 1;
                }
                released.insert((ns.clone(), format!("{}{sn}", leases::SNAPSHOTS_PREFIX), key.clone()));
            }
            for (ns, lease, kind, id) in leases::all_resources(txn)? {
                if released.contains(&(ns.clone(), kind.clone(), id.clone())) {
                    leases::delete_resource(txn, &ns, &lease, &kind, &id)?;
                }
            }
            Ok(stats)
        })
        .await?;
    tracing::info!(
        ingests = stats.ingests,
        interrupted_unpacks = stats.unpacks,
        dangling_snapshots = stats.dangling,
        "dropped what the previous daemon left half done"
    );
    Ok(stats)
}
