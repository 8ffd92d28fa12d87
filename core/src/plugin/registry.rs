//! Registering plugins and initialising them in dependency order.
//!
//! A plugin names the *types* it needs (`requires`); it is initialised after
//! every enabled plugin of those types. A failing plugin is recorded with its
//! error (introspection reports it) and the daemon goes on; plugins that
//! needed it fail in turn when they ask for it.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use super::set::{Instance, PluginEntry, PluginMeta, PluginSet};
use super::types::ALL;
use crate::error::{Error, Result};
use crate::shutdown::ShutdownSignal;

/// What an init function returns.
pub type InitFuture = Pin<Box<dyn Future<Output = Result<Instance>> + Send>>;

/// Builds a plugin's instance from its context.
pub type InitFn = Box<dyn FnOnce(InitContext) -> InitFuture + Send>;

/// A plugin the daemon may initialise.
pub struct Registration {
    /// Type URI (see [`super::types`]).
    pub plugin_type: &'static str,
    /// Id, unique within the type.
    pub id: &'static str,
    /// Types that must be initialised first ([`ALL`] for every other).
    pub requires: &'static [&'static str],
    /// The plugin's config section with every default filled in, so
    /// `berthd config default` can print it; `None` for no settings.
    pub default_config: Option<fn() -> toml::Table>,
    /// Builds the instance.
    pub init: InitFn,
}

impl Registration {
    /// The key of this plugin's config section: `<type>.<id>`.
    pub fn config_key(&self) -> String {
        format!("{}.{}", self.plugin_type, self.id)
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Registration({}.{})", self.plugin_type, self.id)
    }
}

/// Daemon-wide settings every plugin may need.
#[derive(Clone, Debug)]
pub struct DaemonContext {
    /// Persistent root (`--root`).
    pub root: PathBuf,
    /// Per-boot state directory (`--state`).
    pub state: PathBuf,
    /// The gRPC socket.
    pub grpc_address: PathBuf,
    /// The ttrpc socket shims call back on.
    pub ttrpc_address: PathBuf,
    /// Largest gRPC message a service accepts, in bytes.
    pub max_recv_message_size: usize,
    /// Largest gRPC message a service sends, in bytes.
    pub max_send_message_size: usize,
    /// Fires when the daemon starts shutting down.
    pub shutdown: ShutdownSignal,
    /// How the daemon reaches registries (`[registry]`).
    pub registry: crate::registry::RegistryConfig,
}

/// What a plugin's init function gets.
pub struct InitContext {
    /// Daemon-wide settings.
    pub daemon: DaemonContext,
    plugin_type: &'static str,
    id: &'static str,
    config: toml::Table,
    plugins: Arc<PluginSet>,
    meta: Arc<Mutex<PluginMeta>>,
}

impl InitContext {
    /// This plugin's settings, defaults overlaid with the config file.
    pub fn config<C: DeserializeOwned>(&self) -> Result<C> {
        toml::Value::Table(self.config.clone()).try_into().map_err(|e| {
            Error::invalid_argument(format!(
                "config section [plugins.\"{}.{}\"]: {e}",
                self.plugin_type, self.id
            ))
        })
    }

    /// The first working plugin of `plugin_type`.
    pub fn get<T: std::any::Any + Send + Sync>(&self, plugin_type: &str) -> Result<Arc<T>> {
        self.plugins.get(plugin_type)
    }

    /// A specific plugin.
    pub fn get_by_id<T: std::any::Any + Send + Sync>(&self, plugin_type: &str, id: &str) -> Result<Arc<T>> {
        self.plugins.get_by_id(plugin_type, id)
    }

    /// Every plugin initialised so far, and later ones as they come.
    pub fn plugins(&self) -> Arc<PluginSet> {
        Arc::clone(&self.plugins)
    }

    /// Reports what this plugin serves; introspection shows it.
    pub fn set_meta(&self, meta: PluginMeta) {
        *self.meta.lock().unwrap_or_else(|p| p.into_inner()) = meta;
    }
}

/// Plugins to initialise, in registration order.
#[derive(Default, Debug)]
pub struct Registry {
    registrations: Vec<Registration>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin. Registering the same type and id twice is a
    /// programming error, reported by [`Registry::initialise`].
    pub fn register(&mut self, registration: Registration) {
        self.registrations.push(registration);
    }

    /// Every registration's default config section, keyed `<type>.<id>`.
    pub fn default_configs(&self) -> toml::Table {
        self.registrations
            .iter()
            .filter_map(|r| {
                r.default_config
                    .map(|defaults| (r.config_key(), toml::Value::Table(defaults())))
            })
            .collect()
    }

    /// Initialises every plugin not in `disabled` (entries `<type>.<id>`),
    /// in dependency order, with `configs` (sections keyed `<type>.<id>`)
    /// overlaid on the defaults.
    pub async fn initialise(
        self,
        daemon: DaemonContext,
        configs: &toml::Table,
        disabled: &[String],
    ) -> Result<Arc<PluginSet>> {
        let enabled: Vec<Registration> = self
            .registrations
            .into_iter()
            .filter(|r| !disabled.contains(&r.config_key()))
            .collect();
        let order = order(&enabled)?;
        let mut slots: Vec<Option<Registration>> = enabled.into_iter().map(Some).collect();
        let set = Arc::new(PluginSet::default());
        for index in order {
            let registration = slots[index].take().expect("each plugin is ordered once");
            let key = registration.config_key();
            let mut config = registration.default_config.map(|f| f()).unwrap_or_default();
            if let Some(toml::Value::Table(user)) = configs.get(&key) {
                merge(&mut config, user);
            }
            let meta = Arc::new(Mutex::new(PluginMeta::default()));
            let context = InitContext {
                daemon: daemon.clone(),
                plugin_type: registration.plugin_type,
                id: registration.id,
                config,
                plugins: Arc::clone(&set),
                meta: Arc::clone(&meta),
            };
            tracing::debug!(plugin = %key, "initialising plugin");
            let instance = (registration.init)(context).await;
            if let Err(e) = &instance {
                tracing::warn!(plugin = %key, error = %e, "plugin failed to initialise");
            }
            let meta = meta.lock().unwrap_or_else(|p| p.into_inner()).clone();
            set.push(PluginEntry {
                plugin_type: registration.plugin_type,
                id: registration.id,
                requires: registration.requires.to_vec(),
                meta,
                instance,
            });
        }
        Ok(set)
    }
}

/// Overlays `user` on `base`, merging nested tables key by key.
fn merge(base: &mut toml::Table, user: &toml::Table) {
    for (key, value) in user {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(user_inner)) => merge(inner, user_inner),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// A plugin's init error that means "not for this host": `ctr plugins ls`
/// shows such plugins as `skip` rather than `error`.
pub fn skip(reason: impl std::fmt::Display) -> Error {
    Error::failed_precondition(format!("{reason}: skip plugin"))
}

/// Indices of `plugins` in an order where every plugin follows the plugins
/// of the types it requires; among independent plugins, registration order.
fn order(plugins: &[Registration]) -> Result<Vec<usize>> {
    let mut seen = HashMap::new();
    for (i, p) in plugins.iter().enumerate() {
        if let Some(first) = seen.insert((p.plugin_type, p.id), i) {
            return Err(Error::internal(format!(
                "plugin {}.{} is registered twice (#{first} and #{i})",
                p.plugin_type, p.id
            )));
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(
        i: usize,
        plugins: &[Registration],
        marks: &mut [Mark],
        out: &mut Vec<usize>,
        path: &mut Vec<usize>,
    ) -> Result<()> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                let cycle: Vec<String> = path
                    .iter()
                    .chain(std::iter::once(&i))
                    .map(|&j| format!("{}.{}", plugins[j].plugin_type, plugins[j].id))
                    .collect();
                return Err(Error::internal(format!(
                    "plugin dependency cycle: {}",
                    cycle.join(" -> ")
                )));
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        path.push(i);
        let requires_all = plugins[i].requires.contains(&ALL);
        for (j, other) in plugins.iter().enumerate() {
            if j == i {
                continue;
            }
            let needed = if requires_all {
                !other.requires.contains(&ALL)
            } else {
                plugins[i].requires.contains(&other.plugin_type)
            };
            if needed {
                visit(j, plugins, marks, out, path)?;
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        out.push(i);
        Ok(())
    }

    let mut marks = vec![Mark::New; plugins.len()];
    let mut out = Vec::with_capacity(plugins.len());
    for i in 0..plugins.len() {
        visit(i, plugins, &mut marks, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::plugin::types;

    fn paths() -> DaemonContext {
        DaemonContext {
            root: "/nonexistent/root".into(),
            state: "/nonexistent/state".into(),
            grpc_address: "/nonexistent/sock".into(),
            ttrpc_address: "/nonexistent/sock.ttrpc".into(),
            max_recv_message_size: 16 << 20,
            max_send_message_size: 16 << 20,
            shutdown: ShutdownSignal::never(),
            registry: Default::default(),
        }
    }

    /// A plugin whose instance is a log of what it saw at init.
    fn plugin(
        plugin_type: &'static str,
        id: &'static str,
        requires: &'static [&'static str],
        log: Arc<Mutex<Vec<String>>>,
    ) -> Registration {
        Registration {
            plugin_type,
            id,
            requires,
            default_config: None,
            init: Box::new(move |_ctx| {
                Box::pin(async move {
                    log.lock().unwrap().push(format!("{plugin_type}.{id}"));
                    Ok(Arc::new(id.to_string()) as Instance)
                })
            }),
        }
    }

    #[tokio::test]
    async fn plugins_start_after_the_types_they_require() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::new();
        registry.register(plugin(types::GRPC, "introspection", &[ALL], Arc::clone(&log)));
        registry.register(plugin(
            types::GRPC,
            "namespaces",
            &[types::METADATA, types::EVENT],
            Arc::clone(&log),
        ));
        registry.register(plugin(types::METADATA, "redb", &[types::EVENT], Arc::clone(&log)));
        registry.register(plugin(types::EVENT, "exchange", &[], Arc::clone(&log)));
        let set = registry.initialise(paths(), &toml::Table::new(), &[]).await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "io.containerd.event.v1.exchange",
                "io.containerd.metadata.v1.redb",
                "io.containerd.grpc.v1.namespaces",
                "io.containerd.grpc.v1.introspection",
            ]
        );
        assert_eq!(set.entries().len(), 4);
        let redb: Arc<String> = set.get(types::METADATA).unwrap();
        assert_eq!(*redb, "redb");
    }

    #[tokio::test]
    async fn cycles_and_duplicates_are_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::new();
        registry.register(plugin(types::METADATA, "a", &[types::EVENT], Arc::clone(&log)));
        registry.register(plugin(types::EVENT, "b", &[types::METADATA], Arc::clone(&log)));
        let err = registry
            .initialise(paths(), &toml::Table::new(), &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("dependency cycle"), "{err}");

        let mut registry = Registry::new();
        registry.register(plugin(types::EVENT, "b", &[], Arc::clone(&log)));
        registry.register(plugin(types::EVENT, "b", &[], Arc::clone(&log)));
        let err = registry
            .initialise(paths(), &toml::Table::new(), &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("registered twice"), "{err}");
    }

    #[tokio::test]
    async fn init_errors_are_recorded_and_dependents_can_see_them() {
        let mut registry = Registry::new();
        registry.register(Registration {
            plugin_type: types::METADATA,
            id: "broken",
            requires: &[],
            default_config: None,
            init: Box::new(|_| Box::pin(async { Err(Error::internal("disk on fire")) })),
        });
        registry.register(Registration {
            plugin_type: types::GRPC,
            id: "user",
            requires: &[types::METADATA],
            default_config: None,
            init: Box::new(|ctx| {
                Box::pin(async move {
                    let store: Arc<String> = ctx.get(types::METADATA)?;
                    Ok(store as Instance)
                })
            }),
        });
        let set = registry.initialise(paths(), &toml::Table::new(), &[]).await.unwrap();
        let entries = set.entries();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].instance.as_ref().unwrap_err().to_string(), "disk on fire");
        let dependent = entries[1].instance.as_ref().unwrap_err();
        assert_eq!(dependent.kind(), ErrorKind::FailedPrecondition);
        assert!(dependent.to_string().contains("disk on fire"), "{dependent}");
    }

    #[tokio::test]
    async fn disabled_plugins_are_left_out() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::new();
        registry.register(plugin(types::EVENT, "exchange", &[], Arc::clone(&log)));
        registry.register(plugin(types::GRPC, "events", &[types::EVENT], Arc::clone(&log)));
        let set = registry
            .initialise(
                paths(),
                &toml::Table::new(),
                &["io.containerd.grpc.v1.events".to_string()],
            )
            .await
            .unwrap();
        assert_eq!(set.entries().len(), 1);
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Settings {
        size: u32,
        nested: Nested,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Nested {
        a: String,
        b: String,
    }

    #[tokio::test]
    async fn config_sections_overlay_defaults() {
        let mut registry = Registry::new();
        registry.register(Registration {
            plugin_type: types::EVENT,
            id: "exchange",
            requires: &[],
            default_config: Some(|| {
                toml::toml! {
                    size = 1
                    [nested]
                    a = "default"
                    b = "default"
                }
            }),
            init: Box::new(|ctx| {
                Box::pin(async move {
                    let settings: Settings = ctx.config()?;
                    Ok(Arc::new(settings) as Instance)
                })
            }),
        });
        let defaults = registry.default_configs();
        assert!(defaults.contains_key("io.containerd.event.v1.exchange"));
        let user: toml::Table = toml::from_str(
            r#"
            ["io.containerd.event.v1.exchange"]
            size = 7
            nested = { b = "user" }
            "#,
        )
        .unwrap();
        let set = registry.initialise(paths(), &user, &[]).await.unwrap();
        let settings: Arc<Settings> = set.get(types::EVENT).unwrap();
        assert_eq!(
            *settings,
            Settings {
                size: 7,
                nested: Nested {
                    a: "default".into(),
                    b: "user".into()
                }
            }
        );
    }

    #[tokio::test]
    async fn bad_config_is_an_init_error_naming_the_section() {
        let mut registry = Registry::new();
        registry.register(Registration {
            plugin_type: types::EVENT,
            id: "exchange",
            requires: &[],
            default_config: Some(|| toml::toml! { size = 1 }),
            init: Box::new(|ctx| {
                Box::pin(async move {
                    #[derive(serde::Deserialize)]
                    #[allow(dead_code)]
                    struct S {
                        size: u32,
                    }
                    let _: S = ctx.config()?;
                    Ok(Arc::new(()) as Instance)
                })
            }),
        });
        let user: toml::Table = toml::from_str("[\"io.containerd.event.v1.exchange\"]\nsize = \"big\"").unwrap();
        let set = registry.initialise(paths(), &user, &[]).await.unwrap();
        let err = set.entries()[0].instance.as_ref().unwrap_err().to_string();
        assert!(err.contains("io.containerd.event.v1.exchange"), "{err}");
    }

    #[test]
    fn skip_errors_read_as_skip() {
        assert!(skip("no btrfs here").to_string().contains("skip plugin"));
    }
}
