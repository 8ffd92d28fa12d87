//! Reading a small JSON blob (an index, a manifest, a config) of a
//! namespace, bounded in size, off the runtime.

use std::io::Read;

use berth_api::containerd::types::Descriptor;

use crate::content::Digest;
use crate::content::namespaced::NamespacedContent;
use crate::error::{Error, Result};

/// The biggest index, manifest or config read.
pub(crate) const JSON_LIMIT: i64 = 20 << 20;

/// The blob `desc` names, parsed; errors say why without naming it (the
/// caller does).
pub(crate) async fn read_json_blob(
    content: &NamespacedContent,
    ns: &str,
    desc: &Descriptor,
) -> Result<serde_json::Value> {
    let digest = Digest::parse(&desc.digest)?;
    let (file, size) = content.open(ns, &digest).await?;
    if size > JSON_LIMIT {
        return Err(Error::invalid_argument(format!(
            "{size} bytes, over the {JSON_LIMIT} bytes allowed"
        )));
    }
    let bytes = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        file.take(JSON_LIMIT as u64)
            .read_to_end(&mut bytes)
            .map(|_| bytes)
            .map_err(|e| Error::io(format!("content {digest}"), &e))
    })
    .await
    .map_err(|e| Error::internal(format!("a blob read ended: {e}")))??;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid_argument(e.to_string()))
}
