//! Tables of protobuf records keyed by (namespace, name): what images,
//! containers, content, ingests and leases have in common.

use std::marker::PhantomData;

use prost::Message;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::store_error;
use crate::error::{Error, Result};

/// The redb definition of a (namespace, name) -> record table.
pub(crate) type RecordTableDef = TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;

/// A table of `M` records; `kind` names the object in errors.
pub(crate) struct Records<M> {
    pub(crate) def: RecordTableDef,
    pub(crate) kind: &'static str,
    _record: PhantomData<fn() -> M>,
}

impl<M: Message + Default> Records<M> {
    pub(crate) const fn new(name: &'static str, kind: &'static str) -> Self {
        Self {
            def: TableDefinition::new(name),
            kind,
            _record: PhantomData,
        }
    }

    fn decode(&self, namespace: &str, key: &str, bytes: &[u8]) -> Result<M> {
        M::decode(bytes).map_err(|e| {
            Error::internal(format!(
                "{} {key:?} in namespace {namespace:?}: corrupt metadata record: {e}",
                self.kind
            ))
        })
    }

    /// One record, if present.
    pub(crate) fn get(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        namespace: &str,
        key: &str,
    ) -> Result<Option<M>> {
        let value = table.get((namespace, key)).map_err(store_error)?;
        value.map(|v| self.decode(namespace, key, v.value())).transpose()
    }

    /// Every record of a namespace, in key order.
    pub(crate) fn list(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        namespace: &str,
    ) -> Result<Vec<(String, M)>> {
        let mut out = Vec::new();
        for entry in table.range((namespace, "")..).map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let (ns, name) = key.value();
            if ns != namespace {
                break;
            }
            out.push((name.to_string(), self.decode(ns, name, value.value())?));
        }
        Ok(out)
    }

    /// Every record of every namespace.
    pub(crate) fn all(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ) -> Result<Vec<(String, String, M)>> {
        let mut out = Vec::new();
        for entry in table.iter().map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let (ns, name) = key.value();
            out.push((ns.to_string(), name.to_string(), self.decode(ns, name, value.value())?));
        }
        Ok(out)
    }

    /// Whether a namespace holds any record.
    pub(crate) fn any_in(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
        namespace: &str,
    ) -> Result<bool> {
        let mut range = table.range((namespace, "")..).map_err(store_error)?;
        Ok(match range.next() {
            Some(entry) => entry.map_err(store_error)?.0.value().0 == namespace,
            None => false,
        })
    }

    /// Stores a record, replacing any previous one.
    pub(crate) fn put(&self, txn: &WriteTransaction, namespace: &str, key: &str, record: &M) -> Result<()> {
        let mut table = txn.open_table(self.def).map_err(store_error)?;
        table
            .insert((namespace, key), record.encode_to_vec().as_slice())
            .map_err(store_error)?;
        Ok(())
    }

    /// Removes a record; returns it when it was there.
    pub(crate) fn remove(&self, txn: &WriteTransaction, namespace: &str, key: &str) -> Result<Option<M>> {
        let mut table = txn.open_table(self.def).map_err(store_error)?;
        let removed = table.remove((namespace, key)).map_err(store_error)?;
        removed.map(|v| self.decode(namespace, key, v.value())).transpose()
    }

    /// Removes every record of a namespace.
    pub(crate) fn remove_namespace(&self, txn: &WriteTransaction, namespace: &str) -> Result<()> {
        let mut table = txn.open_table(self.def).map_err(store_error)?;
        let keys: Vec<String> = self.list(&table, namespace)?.into_iter().map(|(key, _)| key).collect();
        for key in keys {
            table.remove((namespace, key.as_str())).map_err(store_error)?;
        }
        Ok(())
    }
}
