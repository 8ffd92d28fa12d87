//! Leases and the resources they hold against garbage collection.
//!
//! A lease keeps content, ingests and snapshots alive while a client works
//! (an import, a pull, an unpack) until it is deleted or its
//! `containerd.io/gc.expire` time passes.

use std::collections::HashMap;
use std::time::SystemTime;

use berth_api::containerd::services::leases::v1::Lease;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::records::Records;
use super::{namespaces, store_error};
use crate::content::Digest;
use crate::error::{Error, Result};
use crate::{labels, timestamps};

/// (namespace, id) -> `containerd.services.leases.v1.Lease`.
pub(crate) const LEASES: Records<Lease> = Records::new("leases", "lease");

/// (namespace, lease id, resource type, resource id) -> ().
pub(crate) const RESOURCES: TableDefinition<'static, (&'static str, &'static str, &'static str, &'static str), ()> =
    TableDefinition::new("lease_resources");

/// Label holding a lease's expiry time (RFC 3339).
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// Label making a lease hold only the named objects, not what they reference.
pub const FLAT_LABEL: &str = "containerd.io/gc.flat";

/// Resource type of blobs (id: digest).
pub const CONTENT: &str = "content";

/// Resource type of ingests (id: ref).
pub const INGESTS: &str = "ingests";

/// Prefix of snapshot resource types: `snapshots/<snapshotter>` (id: key).
pub const SNAPSHOTS_PREFIX: &str = "snapshots/";

/// Longest lease id accepted. Lease ids are not identifiers: clients make
/// them from times and random bytes (`1700000000-aB_-`), so only length,
/// `/` and control characters are refused.
pub const MAX_ID_LENGTH: usize = 256;

fn not_found(id: &str) -> Error {
    Error::not_found(format!("lease {id:?}"))
}

/// Checks a lease id.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid_argument("lease id must not be empty"));
    }
    if id.len() > MAX_ID_LENGTH {
        return Err(Error::invalid_argument(format!(
            "lease id {:?}... is longer than the maximum of {MAX_ID_LENGTH} characters",
            id.chars().take(32).collect::<String>()
        )));
    }
    if id.contains('/') || id.chars().any(char::is_control) {
        return Err(Error::invalid_argument(format!(
            "lease id {id:?} must not contain '/' or control characters"
        )));
    }
    Ok(())
}

/// Checks a resource and returns its canonical id.
pub fn validate_resource(kind: &str, id: &str) -> Result<String> {
    match kind {
        CONTENT => Ok(Digest::parse(id)?.to_string()),
        INGESTS if !id.is_empty() => Ok(id.to_string()),
        _ if kind
            .strip_prefix(SNAPSHOTS_PREFIX)
            .is_some_and(|s| !s.is_empty() && !s.contains('/'))
            && !id.is_empty() =>
        {
            Ok(id.to_string())
        }
        INGESTS => Err(Error::invalid_argument("ingest resource id must not be empty")),
        _ if kind.starts_with(SNAPSHOTS_PREFIX) => Err(Error::invalid_argument(format!(
            "snapshot resource type {kind:?} must be snapshots/<snapshotter> with a key"
        ))),
        _ => Err(Error::not_implemented(format!(
            "resource type {kind:?} is not supported"
        ))),
    }
}

/// When a lease expires, if it says.
pub fn expires_at(lease: &Lease) -> Option<SystemTime> {
    lease
        .labels
        .get(EXPIRE_LABEL)
        .and_then(|v| timestamps::parse_rfc3339(v))
}

/// Whether a lease holds only the objects named in it.
pub fn is_flat(lease: &Lease) -> bool {
    lease.labels.contains_key(FLAT_LABEL)
}

/// Creates a lease; AlreadyExists when the id is taken.
pub fn create(txn: &WriteTransaction, namespace: &str, id: &str, labels: HashMap<String, String>) -> Result<Lease> {
    validate_id(id)?;
    labels::validate_all(&labels).map_err(|e| e.with_context(format!("lease {id:?}")))?;
    if let Some(value) = labels.get(EXPIRE_LABEL)
        && timestamps::parse_rfc3339(value).is_none()
    {
        return Err(Error::invalid_argument(format!(
            "lease {id:?}: label {EXPIRE_LABEL} {value:?} is not an RFC 3339 time"
        )));
    }
    namespaces::ensure(txn, namespace)?;
    {
        let table = txn.open_table(LEASES.def).map_err(store_error)?;
        if LEASES.get(&table, namespace, id)?.is_some() {
            return Err(Error::already_exists(format!("lease {id:?}")));
        }
    }
    let lease = Lease {
        id: id.to_string(),
        created_at: Some(timestamps::now()),
        labels: labels::without_empty(labels),
    };
    LEASES.put(txn, namespace, id, &lease)?;
    Ok(lease)
}

/// One lease.
pub fn get(txn: &ReadTransaction, namespace: &str, id: &str) -> Result<Option<Lease>> {
    let table = txn.open_table(LEASES.def).map_err(store_error)?;
    LEASES.get(&table, namespace, id)
}

/// Every lease of a namespace.
pub fn list(txn: &ReadTransaction, namespace: &str) -> Result<Vec<Lease>> {
    let table = txn.open_table(LEASES.def).map_err(store_error)?;
    Ok(LEASES.list(&table, namespace)?.into_iter().map(|(_, l)| l).collect())
}

pub(crate) fn exists(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<bool> {
    let table = txn.open_table(LEASES.def).map_err(store_error)?;
    Ok(LEASES.get(&table, namespace, id)?.is_some())
}

/// Deletes a lease and its resource list (not the resources themselves).
pub fn delete(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<()> {
    LEASES.remove(txn, namespace, id)?.ok_or_else(|| not_found(id))?;
    remove_all_resources(txn, namespace, id)
}

pub(crate) fn remove_all_resources(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<()> {
    let mut table = txn.open_table(RESOURCES).map_err(store_error)?;
    let keys: Vec<(String, String)> = table
        .range((namespace, id, "", "")..)
        .map_err(store_error)?
        .map_while(|entry| {
            let entry = entry.ok()?;
            let (ns, lease, kind, rid) = entry.0.value();
            (ns == namespace && lease == id).then(|| (kind.to_string(), rid.to_string()))
        })
        .collect();
    for (kind, rid) in keys {
        table
            .remove((namespace, id, kind.as_str(), rid.as_str()))
            .map_err(store_error)?;
    }
    Ok(())
}

/// Adds a resource to a lease; NotFound when the lease does not exist.
pub fn add_resource(txn: &WriteTransaction, namespace: &str, id: &str, kind: &str, resource: &str) -> Result<()> {
    let resource = validate_resource(kind, resource)?;
    if !exists(txn, namespace, id)? {
        return Err(not_found(id));
    }
    let mut table = txn.open_table(RESOURCES).map_err(store_error)?;
    table
        .insert((namespace, id, kind, resource.as_str()), ())
        .map_err(store_error)?;
    Ok(())
}

/// Removes a resource from a lease; NotFound when the lease does not exist.
pub fn delete_resource(txn: &WriteTransaction, namespace: &str, id: &str, kind: &str, resource: &str) -> Result<()> {
    let resource = validate_resource(kind, resource)?;
    if !exists(txn, namespace, id)? {
        return Err(not_found(id));
    }
    let mut table = txn.open_table(RESOURCES).map_err(store_error)?;
    table
        .remove((namespace, id, kind, resource.as_str()))
        .map_err(store_error)?;
    Ok(())
}

/// A lease's resources as (type, id); NotFound when the lease does not exist.
pub fn list_resources(txn: &ReadTransaction, namespace: &str, id: &str) -> Result<Vec<(String, String)>> {
    if get(txn, namespace, id)?.is_none() {
        return Err(not_found(id));
    }
    let table = txn.open_table(RESOURCES).map_err(store_error)?;
    resources_in(&table, namespace, id)
}

fn resources_in(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    namespace: &str,
    id: &str,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in table.range((namespace, id, "", "")..).map_err(store_error)? {
        let entry = entry.map_err(store_error)?;
        let (ns, lease, kind, rid) = entry.0.value();
        if ns != namespace || lease != id {
            break;
        }
        out.push((kind.to_string(), rid.to_string()));
    }
    Ok(out)
}

/// Every (namespace, lease, type, id) row, for garbage collection.
pub(crate) fn all_resources(txn: &WriteTransaction) -> Result<Vec<(String, String, String, String)>> {
    let table = txn.open_table(RESOURCES).map_err(store_error)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(store_error)? {
        let entry = entry.map_err(store_error)?;
        let (ns, lease, kind, rid) = entry.0.value();
        out.push((ns.to_string(), lease.to_string(), kind.to_string(), rid.to_string()));
    }
    Ok(out)
}

/// Adds a resource to the lease a request carries, if it carries one: what
/// the `containerd-lease` header does for everything a request creates.
pub fn hold(txn: &WriteTransaction, namespace: &str, lease: Option<&str>, kind: &str, resource: &str) -> Result<()> {
    match lease {
        Some(id) => add_resource(txn, namespace, id, kind, resource).map_err(|e| {
            if e.is_not_found() {
                Error::not_found(format!("lease {id:?} of this request"))
            } else {
                e
            }
        }),
        None => Ok(()),
    }
}

/// Takes a resource off the request's lease, if it carries one.
pub fn release(txn: &WriteTransaction, namespace: &str, lease: Option<&str>, kind: &str, resource: &str) -> Result<()> {
    match lease {
        Some(id) if exists(txn, namespace, id)? => delete_resource(txn, namespace, id, kind, resource),
        _ => Ok(()),
    }
}
