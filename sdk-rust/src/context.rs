//! [`Context`]: what a handler knows besides its request: the configuration the broker pushed,
//! who the broker is, and the trace the call belongs to.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::de::DeserializeOwned;

use crate::error::Error;

type Typed = Arc<dyn Any + Send + Sync>;

/// What the latest `Describe` told the plugin. Replaced whole by every `Describe`, so a handler
/// never sees a mix of two configurations.
pub(crate) struct Pushed {
    /// The plugin's `config:` section as JSON (an empty object until the first `Describe`).
    pub(crate) config: Arc<serde_json::Value>,
    /// Typed views of `config`, deserialized once per `Describe` and per type.
    pub(crate) typed: HashMap<TypeId, Typed>,
    pub(crate) plugin_alias: String,
    pub(crate) broker_version: String,
    pub(crate) broker_instance_id: String,
    pub(crate) generation: u64,
}

impl Default for Pushed {
    fn default() -> Self {
        Pushed {
            // Before the first Describe the configuration is empty, as when the broker's YAML
            // has no `config:` section, so types whose fields all have defaults still work.
            config: Arc::new(serde_json::Value::Object(serde_json::Map::new())),
            typed: HashMap::new(),
            plugin_alias: String::new(),
            broker_version: String::new(),
            broker_instance_id: String::new(),
            generation: 0,
        }
    }
}

/// State shared by every call of one plugin server.
#[derive(Default)]
pub(crate) struct Shared {
    /// A std lock: held only to clone `Arc`s out or swap them in, never across an `.await`.
    pub(crate) pushed: RwLock<Arc<Pushed>>,
}

impl Shared {
    pub(crate) fn current(&self) -> Arc<Pushed> {
        Arc::clone(&self.pushed.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn replace(&self, pushed: Pushed) {
        *self.pushed.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pushed);
    }
}

/// Deserializes a configuration, saying where in it a value did not fit.
pub(crate) fn deserialize_config<T: DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|err| Error::Config {
        path: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// Passed to every handler call: the plugin's configuration and the call's trace.
///
/// Cheap to clone. The configuration is the one of the latest `Describe` at the time the call
/// started.
#[derive(Clone)]
pub struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pushed: Arc<Pushed>,
    pub(crate) traceparent: Option<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("plugin_alias", &self.pushed.plugin_alias)
            .field("config_generation", &self.pushed.generation)
            .field("traceparent", &self.traceparent)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, traceparent: Option<String>) -> Self {
        let pushed = shared.current();
        Context {
            shared,
            pushed,
            traceparent,
        }
    }

    /// The plugin's configuration (its `config:` section in the broker's YAML), deserialized into
    /// `T`.
    ///
    /// Deserialized once per `Describe` and per type, then shared: calling it on every request is
    /// cheap. Declare the type with [`Plugin::config`](crate::Plugin::config) to have the broker's
    /// `Describe` rejected (and the broker fail to start with the message) when the configuration
    /// does not fit, instead of finding out at the first request.
    pub fn config<T>(&self) -> Result<Arc<T>, Error>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        if let Some(typed) = self.pushed.typed.get(&TypeId::of::<T>())
            && let Ok(config) = Arc::clone(typed).downcast::<T>()
        {
            return Ok(config);
        }
        let config = Arc::new(deserialize_config::<T>(&self.pushed.config)?);
        // Remember it, unless a newer Describe replaced the configuration meanwhile.
        let mut current = self
            .shared
            .pushed
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&current.config, &self.pushed.config) {
            let mut pushed = Pushed {
                config: Arc::clone(&current.config),
                typed: current.typed.clone(),
                plugin_alias: current.plugin_alias.clone(),
                broker_version: current.broker_version.clone(),
                broker_instance_id: current.broker_instance_id.clone(),
                generation: current.generation,
            };
            pushed
                .typed
                .insert(TypeId::of::<T>(), Arc::clone(&config) as Typed);
            *current = Arc::new(pushed);
        }
        Ok(config)
    }

    /// The configuration as raw JSON (an empty object until the broker's first `Describe`).
    pub fn raw_config(&self) -> &serde_json::Value {
        &self.pushed.config
    }

    /// The alias the broker's configuration gives this plugin (empty before the first `Describe`).
    pub fn plugin_alias(&self) -> &str {
        &self.pushed.plugin_alias
    }

    /// The broker's version.
    pub fn broker_version(&self) -> &str {
        &self.pushed.broker_version
    }

    /// Identifies the broker process; event sequence numbers restart when it changes.
    pub fn broker_instance_id(&self) -> &str {
        &self.pushed.broker_instance_id
    }

    /// How many times the broker has pushed configuration (1 at start, +1 per reload; 0 before
    /// the first `Describe` or from a broker that does not count).
    pub fn config_generation(&self) -> u64 {
        self.pushed.generation
    }

    /// The W3C `traceparent` of the broker span this call (or event) belongs to, if tracing is on.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The trace id out of [`traceparent`](Self::traceparent) (32 hex digits), for logs.
    pub fn trace_id(&self) -> Option<&str> {
        trace_id(self.traceparent.as_deref()?)
    }
}

/// The trace id of a W3C `traceparent` (`version-traceid-parentid-flags`).
pub(crate) fn trace_id(traceparent: &str) -> Option<&str> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Cfg {
        users: Vec<User>,
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct User {
        name: String,
    }

    fn with_config(value: serde_json::Value) -> Context {
        let shared = Arc::new(Shared::default());
        shared.replace(Pushed {
            config: Arc::new(value),
            generation: 1,
            ..Pushed::default()
        });
        Context::new(shared, None)
    }

    #[test]
    fn config_is_typed_cached_and_errors_say_where() {
        let ctx = with_config(serde_json::json!({"users": [{"name": "alice"}]}));
        let first = ctx.config::<Cfg>().unwrap();
        assert_eq!(first.users[0].name, "alice");
        // A later call (and a later Context) shares the same deserialized value.
        let again = Context::new(Arc::clone(&ctx.shared), None)
            .config::<Cfg>()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));

        let bad = with_config(serde_json::json!({"users": [{"nom": "alice"}]}));
        match bad.config::<Cfg>() {
            Err(Error::Config { path, message }) => {
                assert_eq!(path, "users[0]");
                assert!(message.contains("missing field `name`"), "{message}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn before_any_describe_the_config_is_an_empty_object() {
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Optional {
            limit: u32,
        }
        let ctx = Context::new(Arc::new(Shared::default()), None);
        assert_eq!(ctx.raw_config(), &serde_json::json!({}));
        assert_eq!(ctx.config::<Optional>().unwrap().limit, 0);
        assert_eq!(ctx.config_generation(), 0);
    }

    #[test]
    fn trace_ids_are_parsed_from_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("garbage"), None);
    }
}
