//! The garbage collector: when to collect, and removing the files.
//!
//! A pass sweeps the metadata ([`crate::metadata::gc`]) and then, holding
//! the content store's GC lock (commits hold it shared), deletes every blob
//! no namespace records and every ingest directory no record or writer
//! owns. One failing removal is logged and the pass goes on.
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
use crate::metadata::{MetadataStore, content, gc as metadata_gc};
use crate::plugin::{Instance, Registration, types};
use crate::shutdown::ShutdownSignal;

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
}

type PassOutcome = (u64, std::result::Result<GcStats, Error>);

struct Inner {
    meta: MetadataStore,
    content: Arc<ContentStore>,
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
        shutdown: ShutdownSignal,
    ) -> Self {
        let (completed, _) = watch::channel((0, Ok(GcStats::default())));
        let collector = Self {
            inner: Arc::new(Inner {
                meta,
                content,
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
                let wait = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
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
            ..GcStats::default()
        };

        let _exclusive = self.inner.content.gc_lock().write().await;
        let live = self.inner.meta.read(content::all_live).await?;
        let store = Arc::clone(&self.inner.content);
        let (blob_files, ingest_dirs) =
            tokio::task::spawn_blocking(move || remove_unreferenced(&store, &live))
                .await
                .map_err(|e| Error::internal(format!("garbage collection task failed: {e}")))??;
        stats.blob_files = blob_files;
        stats.ingest_dirs = ingest_dirs;
        Ok((stats, sweep.next_expiry))
    }
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
        let owned = key
            .as_deref()
            .is_some_and(|k| keep.contains(k) || store.is_locked(k));
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
        requires: &[types::METADATA, types::CONTENT],
        default_config: None,
        init: Box::new(|ctx| {
            Box::pin(async move {
                let meta: Arc<MetadataStore> = ctx.get(types::METADATA)?;
                let content: Arc<ContentStore> = ctx.get(types::CONTENT)?;
                let collector =
                    GarbageCollector::start((*meta).clone(), content, ctx.daemon.shutdown.clone());
                Ok(Arc::new(collector) as Instance)
            })
        }),
    }
}
