//! The state every connection shares: configuration, router, sessions, counters and
//! the plugin host. Below the server, the admin listener, metrics and `$SYS`, which all
//! read it; it knows none of them.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::config::Config;
use crate::plugins::PluginHost;
use crate::router::Router;
use crate::session::Registry;
use crate::stats::Stats;
use crate::storage::ops::Restored;
use crate::storage::writer::Store;
use crate::transport::Certificates;

/// State shared by every connection.
pub struct Broker {
    /// The configuration served.
    pub config: Config,
    /// Subscriptions, retained messages, fan-out.
    pub router: Arc<Router>,
    /// Sessions by client id.
    pub registry: Registry,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Plugins and the auth and topic-check chains.
    pub plugins: Arc<PluginHost>,
    /// Where `config` came from (its file and the command line's overrides), which a
    /// reload reads again; `None` for the embedded default. `config` stays the
    /// start-up configuration: the plugin sections in force are the plugin host's.
    pub config_source: Option<crate::config::overrides::ConfigSource>,
    /// One reload at a time, from reading the file to the end: a SIGHUP and a
    /// `tandem reload` arriving together must not apply the older file last.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// The TLS listeners' certificates, read again on a reload.
    pub certificates: Certificates,
    /// One permit per connection still in the handshake (`mqtt.max_handshakes`).
    handshakes: Arc<Semaphore>,
    /// The store, when `storage.path` is set.
    pub store: Option<Arc<Store>>,
    /// Set once the store's contents are restored (at once without a store):
    /// `/readyz` answers 503 until then.
    pub restored: OnceLock<Restored>,
}

impl Broker {
    /// A broker with empty state for `config`, consulting `plugins`, writing to `store`
    /// if given (restore its contents with [`storage::restore`](crate::storage::restore)).
    pub fn new(config: Config, plugins: PluginHost, store: Option<Arc<Store>>) -> Self {
        let stats = Arc::new(Stats::default());
        let retained = crate::router::retained::Bounds {
            max_messages: config.mqtt.max_retained_messages,
            max_bytes: config.mqtt.max_retained_bytes,
        };
        let router = Arc::new(Router::new(stats.clone(), retained).with_store(store.clone()));
        let registry = Registry::new(router.clone(), stats.clone(), (&config.mqtt).into());
        Self {
            handshakes: Arc::new(Semaphore::new(config.mqtt.max_handshakes)),
            config,
            registry,
            router,
            stats,
            plugins: Arc::new(plugins),
            config_source: None,
            reloading: tokio::sync::Mutex::new(()),
            certificates: Certificates::default(),
            restored: if store.is_none() {
                OnceLock::from(Restored::default())
            } else {
                OnceLock::new()
            },
            store,
        }
    }
}

impl Broker {
    /// Connections in the handshake now: CONNECT not yet read, or the auth chain not
    /// yet answered.
    pub fn handshakes_in_progress(&self) -> usize {
        self.config
            .mqtt
            .max_handshakes
            .saturating_sub(self.handshakes.available_permits())
    }

    /// A handshake slot for a new connection, or `None` (counted and logged) at
    /// `mqtt.max_handshakes`: that connection is to be closed at once.
    pub(crate) fn handshake_slot(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.handshakes.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.stats.handshake_refused();
                warn!(%peer, max = self.config.mqtt.max_handshakes, "closing new connection: mqtt.max_handshakes connections are in the handshake");
                None
            }
        }
    }
}
