//! The plugins a daemon initialised, with what each one offers.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use berth_api::containerd::types::Platform;

use crate::error::{Error, Result};

/// What an initialised plugin is: the object its init returned.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// Facts a plugin reports about itself (introspection shows them).
#[derive(Clone, Debug, Default)]
pub struct PluginMeta {
    /// Platforms served (snapshotters report theirs).
    pub platforms: Vec<Platform>,
    /// Key/value facts, e.g. a snapshotter's root.
    pub exports: HashMap<String, String>,
    /// Optional features, e.g. `remap-ids`.
    pub capabilities: Vec<String>,
}

/// One registered plugin after initialisation.
pub struct PluginEntry {
    /// Type URI.
    pub plugin_type: &'static str,
    /// Id, unique within the type.
    pub id: &'static str,
    /// Types it was initialised after.
    pub requires: Vec<&'static str>,
    /// What it reported about itself.
    pub meta: PluginMeta,
    /// Its instance, or why its initialisation failed.
    pub instance: Result<Instance>,
}

impl std::fmt::Debug for PluginEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEntry")
            .field("type", &self.plugin_type)
            .field("id", &self.id)
            .field("requires", &self.requires)
            .field("meta", &self.meta)
            .field("error", &self.instance.as_ref().err())
            .finish()
    }
}

impl PluginEntry {
    /// The instance as `T`, if initialisation succeeded and the type fits.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<Arc<T>> {
        let instance = self.instance.as_ref().map_err(|e| {
            Error::failed_precondition(format!(
                "plugin {}.{} failed to initialise: {e}",
                self.plugin_type, self.id
            ))
        })?;
        Arc::clone(instance).downcast::<T>().map_err(|_| {
            Error::internal(format!(
                "plugin {}.{} is not a {}",
                self.plugin_type,
                self.id,
                std::any::type_name::<T>()
            ))
        })
    }
}

/// Every plugin initialised so far, in initialisation order. It grows while
/// the daemon starts, so a plugin holding it (introspection) sees all.
#[derive(Debug, Default)]
pub struct PluginSet {
    entries: RwLock<Vec<Arc<PluginEntry>>>,
}

impl PluginSet {
    pub(super) fn push(&self, entry: PluginEntry) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(entry));
    }

    /// Every plugin, in initialisation order.
    pub fn entries(&self) -> Vec<Arc<PluginEntry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every plugin of one type.
    pub fn of_type(&self, plugin_type: &str) -> Vec<Arc<PluginEntry>> {
        self.entries()
            .into_iter()
            .filter(|e| e.plugin_type == plugin_type)
            .collect()
    }

    /// The first working plugin of `plugin_type`, as `T`.
    pub fn get<T: Any + Send + Sync>(&self, plugin_type: &str) -> Result<Arc<T>> {
        let candidates = self.of_type(plugin_type);
        if candidates.is_empty() {
            return Err(Error::not_found(format!("no plugin of type {plugin_type}")));
        }
        let mut first_error = None;
        for entry in &candidates {
            match entry.get::<T>() {
                Ok(instance) => return Ok(instance),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| Error::not_found(format!("no plugin of type {plugin_type}"))))
    }

    /// The plugin `plugin_type`.`id`, as `T`.
    pub fn get_by_id<T: Any + Send + Sync>(&self, plugin_type: &str, id: &str) -> Result<Arc<T>> {
        self.of_type(plugin_type)
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| Error::not_found(format!("plugin {plugin_type}.{id}")))?
            .get()
    }
}
