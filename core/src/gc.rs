//! The garbage collector: when to collect, and removing the files.
//!
//! A pass sweeps the metadata ([`crate::metadata::gc`]) and then, holding
//! the content store's GC lock (commits hold it shared), deletes every blob
//! no namespace records and every ingest directory no record or writer
//! owns; holding the snapshotters' GC lock, it removes every backend
//! snapshot no namespace record refers to, children before parents. One
//! failing removal is logged and the pass goes on.
//!
//! Passes run after deletions ([`GarbageCollector::schedule`]), when the
//! next lease or ingest expires, once at startup, and on demand for calls
//! that promise the space is free when they return
//! ([`GarbageCollector::collect`], e.g. `Images.Delete` with `sync`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};

use crate::content::ContentStore;
use crate::error::{Error, Result};
use crate::metadata::{MetadataStore, content, gc as metadata_gc, snapshots};
use crate::plugin::{Instance, Registration, types};
use crate::shutdown::ShutdownSignal;
use crate::snapshots::{Snapshotter, Snapshotters};

/// Blob files deleted at once by a pass.
const UNLINK_WORKERS: usize = 4;

/// What one pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Blob records removed from namespaces.
    pub content_records: usize,
    /// Ingest records removed.
    pub ingest_records: usize,
    /// Expired leases removed.
    pub leases: usize,
    /// Blob files deleted.
    pub blob_files: usize,
    /// Ingest directories deleted.
    pub ingest_dirs: usize,
    /// Snapshot records removed from namespaces.
    pub snapshot_records: usize,
    /// Backend snapshots removed.
    pub backend_snapshots: usize,
}

type PassOutcome = (u64, std::result::Result<GcStats, Error>);

struct Inner {
    meta: MetadataStore,
    content: Arc<ContentStore>,
    snapshotters: Arc<Snapshotters>,
    requested: AtomicU64,
    wake: Notify,
    completed: watch::Sender<PassOutcome>,
}

/// Schedules and runs garbage collection. Cheap to clone.
#[derive(Clone)]
pub struct GarbageCollector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GarbageCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarbageCollector").finish()
    }
}

impl GarbageCollector {
    /// Starts the collector's task; it runs a first pass at once and stops
    /// when `shutdown` fires.
    pub fn start(
        meta: MetadataStore,
        content: Arc<ContentStore>,
        snapshotters: Arc<Snapshotters>,
        shutdown: ShutdownSignal,
    ) -> Self {
        let (completed, _) = watch::channel((0, Ok(GcStats::default())));
        let collector = Self {
            inner: Arc::new(Inner {
                meta,
                content,
                snapshotters,
                requested: AtomicU64::new(1),
                wake: Notify::new(),
                completed,
            }),
        };
        let runner = collector.clone();
        tokio::spawn(async move { runner.run(shutdown).await });
        collector.inner.wake.notify_one();
        collector
    }

    /// The snapshotters it collects from: services that create snapshots
    /// use this very set, so they share its lock with the collector.
    pub fn snapshotters(&self) -> &Arc<Snapshotters> {
        &self.inner.snapshotters
    }

    /// Asks for a pass soon; returns at once.
    pub fn schedule(&self) {
        self.inner.requested.fetch_add(1, Ordering::AcqRel);
        self.inner.wake.notify_one();
    }

    /// Runs a pass that starts after this call and waits for it to finish,
    /// files included.
    pub async fn collect(&self) -> Result<GcStats> {
        let target = self.inner.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut completed = self.inner.completed.subscribe();
        self.inner.wake.notify_one();
        let outcome = completed
            .wait_for(|(generation, _)| *generation >= target)
            .await
            .map_err(|_| Error::unavailable("garbage collector stopped"))?;
        outcome.1.clone()
    }

    async fn run(self, shutdown: ShutdownSignal) {
        let mut next_expiry: Option<SystemTime> = None;
        loop {
            let sleep = next_expiry.map(|at| {
                let wait = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
                tokio::time::sleep_until((Instant::now() + wait).into())
            });
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = async { if let Some(s) = sleep { s.await } else { std::future::pending().await } } => {}
                () = shutdown.fired() => return,
            }
            let generation = self.inner.requested.load(Ordering::Acquire);
            let started = Instant::now();
            let result = self.pass().await;
            match &result {
                Ok((stats, expiry)) => {
                    next_expiry = *expiry;
                    if *stats != GcStats::default() {
                        tracing::info!(?stats, elapsed = ?started.elapsed(), "garbage collected");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collection failed");
                    next_expiry = Some(SystemTime::now() + Duration::from_secs(10));
                }
            }
            let _previous = self
                .inner
                .completed
                .send_replace((generation, result.map(|(stats, _)| stats)));
        }
    }

    async fn pass(&self) -> Result<(GcStats, Option<SystemTime>)> {
        let sweep = self
            .inner
            .meta
            .write(|txn| metadata_gc::mark_and_sweep(txn, SystemTime::now()))
            .await?;
        for (ns, digest) in &sweep.removed_content {
            tracing::debug!(namespace = %ns, %digest, "content unreferenced");
        }
        let mut stats = GcStats {
            content_records: sweep.removed_content.len(),
            ingest_records: sweep.removed_ingests.len(),
            leases: sweep.removed_leases.len(),
            snapshot_records: sweep.removed_snapshots.len(),
            ..GcStats::default()
        };

        // Snapshots and content are independent: clean both at once.
        let (content_result, snapshot_result) = tokio::join!(self.clean_content(), self.clean_snapshots());
        (stats.blob_files, stats.ingest_dirs) = content_result?;
        stats.backend_snapshots = snapshot_result?;
        Ok((stats, sweep.next_expiry))
    }

    async fn clean_content(&self) -> Result<(usize, usize)> {
        let _exclusive = self.inner.content.gc_lock().write().await;
        let live = self.inner.meta.read(content::all_live).await?;
        let store = Arc::clone(&self.inner.content);
        tokio::task::spawn_blocking(move || remove_unreferenced(&store, &live))
            .await
            .map_err(|e| Error::internal(format!("garbage collection task failed: {e}")))?
    }

    async fn clean_snapshots(&self) -> Result<usize> {
        let _exclusive = self.inner.snapshotters.gc_lock().write().await;
        let live = self.inner.meta.read(snapshots::live_backend_keys).await?;
        let mut tasks = Vec::new();
        for (name, backend) in self.inner.snapshotters.all() {
            let keep = live.get(name).cloned().unwrap_or_default();
            let (name, backend) = (name.to_string(), Arc::clone(backend));
            tasks.push(tokio::task::spawn_blocking(move || {
                remove_unreferenced_snapshots(&name, backend.as_ref(), &keep)
            }));
        }
        let mut removed = 0;
        for task in tasks {
            removed += task
                .await
                .map_err(|e| Error::internal(format!("garbage collection task failed: {e}")))?;
        }
        Ok(removed)
    }
}

/// Removes a backend's snapshots that no record keeps, children first, then
/// lets the backend clean up what no snapshot owns.
fn remove_unreferenced_snapshots(name: &str, backend: &dyn Snapshotter, keep: &HashSet<String>) -> usize {
    let infos = match backend.walk() {
        Ok(infos) => infos,
        Err(e) => {
            tracing::warn!(snapshotter = name, error = %e, "cannot list snapshots for garbage collection");
            return 0;
        }
    };
    let parent_of: std::collections::HashMap<&str, &str> =
        infos.iter().map(|i| (i.name.as_str(), i.parent.as_str())).collect();
    fn depth<'a>(parent_of: &std::collections::HashMap<&'a str, &'a str>, mut key: &'a str) -> usize {
        let mut depth = 0usize;
        while let Some(parent) = parent_of.get(key).filter(|p| !p.is_empty()) {
            depth += 1;
            key = parent;
        }
        depth
    }
    let mut garbage: Vec<(usize, &str)> = infos
        .iter()
        .filter(|i| !keep.contains(&i.name))
        .map(|i| (depth(&parent_of, &i.name), i.name.as_str()))
        .collect();
    garbage.sort_by_key(|g| std::cmp::Reverse(g.0));
    let mut removed = 0;
    for (_, key) in garbage {
        match backend.remove(key) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(snapshotter = name, key, error = %e, "cannot remove unreferenced snapshot"),
        }
    }
    if let Err(e) = backend.cleanup() {
        tracing::warn!(snapshotter = name, error = %e, "snapshotter cleanup failed");
    }
    removed
}

/// Deletes blob files and ingest directories nothing refers to; returns how
/// many of each went.
fn remove_unreferenced(store: &ContentStore, live: &content::Live) -> Result<(usize, usize)> {
    let garbage: Vec<_> = store
        .blobs()?
        .into_iter()
        .filter(|digest| !live.digests.contains(&digest.to_string()))
        .collect();
    // Freeing a large file's extents dominates (tens of milliseconds per
    // 100 MiB on ext4), and the filesystem overlaps several unlinks, so
    // blobs go a few at a time. All are gone before the pass returns.
    let blobs = AtomicU64::new(0);
    let workers = garbage.len().clamp(1, UNLINK_WORKERS);
    std::thread::scope(|scope| {
        for chunk in garbage.chunks(garbage.len().div_ceil(workers).max(1)) {
            let blobs = &blobs;
            scope.spawn(move || {
                for digest in chunk {
                    match store.delete_blob(digest) {
                        Ok(true) => {
                            blobs.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "cannot remove unreferenced blob")
                        }
                    }
                }
            });
        }
    });
    let blobs = usize::try_from(blobs.into_inner()).unwrap_or(usize::MAX);
    let mut dirs = 0;
    let keep: &HashSet<String> = &live.ingest_keys;
    for (dir, key) in store.ingests()? {
        let owned = key.as_deref().is_some_and(|k| keep.contains(k) || store.is_locked(k));
        if owned {
            continue;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => dirs += 1,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove stale ingest")
            }
        }
    }
    Ok((blobs, dirs))
}

/// The collector as a plugin: `io.containerd.gc.v1.scheduler`.
pub fn registration() -> Registration {
    Registration {
        plugin_type: types::GC,
        id: "scheduler",
        requires: &[types::METADATA, types::CONTENT, types::SNAPSHOTTER],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let content: Arc<ContentStore> = ctx.get(types::CONTENT)?;
                let snapshotters = Arc::new(Snapshotters::from_plugins(&ctx.plugins()));
                if let Err(e) = crate::startup_repair::repair(&meta, &snapshotters).await {
                    // Serving matters more: what stays is what a crash left, no worse.
                    tracing::warn!(error = %e, "repairing what the previous daemon left half done failed");
                }
                let collector =
                    GarbageCollector::start((*meta).clone(), content, snapshotters, ctx.daemon.shutdown.clone());
                Ok(Arc::new(collector) as Instance)
            })
        }),
    }
}
