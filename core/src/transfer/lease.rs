//! The lease a transfer holds its content and snapshots under until the
//! image record holds them: with an expiry (for a daemon that dies during
//! the transfer), released when the transfer ends, and released too, with
//! its background work stopped, when the call is dropped half-way (its
//! client gave up), so GC may free what it held.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::error::Result;
use crate::metadata::{MetadataStore, leases};

/// How long a transfer's lease outlives a daemon that died during it.
const LEASE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One transfer's lease.
pub(crate) struct TransferLease {
    meta: MetadataStore,
    namespace: String,
    id: String,
    background: Mutex<Vec<tokio::task::AbortHandle>>,
    armed: bool,
}

impl TransferLease {
    /// Creates a lease named `transfer-<kind>-<nanos>` in `namespace`.
    pub(crate) async fn create(meta: &MetadataStore, namespace: &str, kind: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("transfer-{kind}-{nanos}");
        let expire = crate::timestamps::format_rfc3339(SystemTime::now() + LEASE_LIFETIME);
        let labels = HashMap::from([(leases::EXPIRE_LABEL.to_string(), expire)]);
        let (ns, lease) = (namespace.to_string(), id.clone());
        meta.write(move |txn| leases::create(txn, &ns, &lease, labels).map(|_| ()))
            .await?;
        Ok(Self {
            meta: meta.clone(),
            namespace: namespace.to_string(),
            id,
            background: Mutex::new(Vec::new()),
            armed: true,
        })
    }

    /// The lease's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Stops `task` too if the transfer is dropped before it ends.
    pub(crate) fn track(&self, task: tokio::task::AbortHandle) {
        self.background.lock().unwrap_or_else(|e| e.into_inner()).push(task);
    }

    /// Ends the lease now: what it held is GC's unless something else
    /// holds it.
    pub(crate) async fn release(mut self) {
        self.armed = false;
        let (ns, id) = (self.namespace.clone(), self.id.clone());
        if let Err(e) = self.meta.write(move |txn| leases::delete(txn, &ns, &id)).await {
            tracing::warn!(lease = self.id, error = %e, "releasing a transfer's lease failed; it expires by itself");
        }
    }
}

impl Drop for TransferLease {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for task in self.background.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
        let (meta, ns, id) = (self.meta.clone(), self.namespace.clone(), self.id.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = meta.write(move |txn| leases::delete(txn, &ns, &id)).await {
                    tracing::warn!(error = %e, "releasing a cancelled transfer's lease failed; it expires by itself");
                }
            });
        }
    }
}
