//! Listeners, the accept loop and connection tasks.
//!
//! # Layout
//! - this file: [`Server`] (bind, serve, drain) and the accept loop with its
//!   connection limit.
//! - [`connection`]: the per-connection task.

pub(crate) mod connection;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use tandem_proto::v1 as pb;

use crate::config::Config;
use crate::plugins::{PluginError, PluginHost};
use crate::router::Router;
use crate::session::Registry;
use crate::stats::Stats;

/// Connections over the limit answered with a CONNACK refusal at once; past this many
/// refusals in progress, further ones are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

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
    pub plugins: PluginHost,
    /// The file `config` was read from, which a reload reads again; `None` for the
    /// embedded default. `config` stays the start-up configuration: the plugin
    /// sections in force are the plugin host's.
    pub config_file: Option<std::path::PathBuf>,
    /// One permit per connection still in the handshake (`mqtt.max_handshakes`).
    handshakes: Arc<Semaphore>,
}

impl Broker {
    /// A broker with empty state for `config`, consulting `plugins`.
    pub fn new(config: Config, plugins: PluginHost) -> Self {
        let stats = Arc::new(Stats::default());
        let retained = crate::router::retained::Bounds {
            max_messages: config.mqtt.max_retained_messages,
            max_bytes: config.mqtt.max_retained_bytes,
        };
        let router = Arc::new(Router::new(stats.clone(), retained));
        let registry = Registry::new(router.clone(), stats.clone(), (&config.mqtt).into());
        Self {
            handshakes: Arc::new(Semaphore::new(config.mqtt.max_handshakes)),
            config,
            registry,
            router,
            stats,
            plugins,
            config_file: None,
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
    fn handshake_slot(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
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

/// Serves one client connection over any byte stream, split into its read and write
/// halves, as a connection accepted by a listener is served (`mqtt.max_handshakes`
/// included; `mqtt.max_connections` is the listeners' business). For in-process tests
/// and fuzzing: the listeners serve their TCP sockets through the same code.
pub async fn serve_client<R, W>(
    broker: Arc<Broker>,
    rd: R,
    wr: W,
    peer: SocketAddr,
    listener: Arc<str>,
    shutdown: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let Some(handshake) = broker.handshake_slot(peer) else {
        return;
    };
    connection::serve(rd, wr, peer, listener, broker, shutdown, handshake).await;
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind its address.
    #[error("listener `{listener}`: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name from the config.
        listener: String,
        /// Address it tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The admin listener could not bind its address.
    #[error("admin.bind: cannot bind {addr}: {source}")]
    AdminBind {
        /// Address it tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The plugin host did not start.
    #[error(transparent)]
    Plugins(#[from] PluginError),
}

/// A broker with its listeners bound, ready to serve.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<(String, TcpListener)>,
    /// The admin HTTP listener, when `admin.bind` is set.
    admin: Option<TcpListener>,
}

impl Server {
    /// Starts the plugin host (every plugin in a chain has answered `Describe` when it
    /// returns), then binds every configured listener. No client is served by a
    /// half-configured chain.
    pub async fn start(config: Config, shutdown: &CancellationToken) -> Result<Self, ServerError> {
        let plugins = PluginHost::start(&config, shutdown.child_token()).await?;
        // Plugins can set up before any client is served: delivered and acked (bounded).
        plugins
            .current()
            .events
            .emit_and_wait(pb::EventKind::BrokerPreStart, |_| {
                pb::event::Kind::BrokerPreStart(pb::BrokerPreStart {
                    broker_version: env!("CARGO_PKG_VERSION").to_owned(),
                })
            })
            .await;
        let mut listeners = Vec::new();
        for (name, l) in &config.listeners {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    listener: name.clone(),
                    addr: l.bind,
                    source,
                })?;
            listeners.push((name.clone(), listener));
        }
        let admin = match config.admin.bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::AdminBind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            broker: Arc::new(Broker::new(config, plugins)),
            listeners,
            admin,
        })
    }

    /// Records the file the configuration came from, for reloads. Call before
    /// [`serve`](Self::serve).
    pub fn set_config_file(&mut self, file: std::path::PathBuf) {
        if let Some(broker) = Arc::get_mut(&mut self.broker) {
            broker.config_file = Some(file);
        }
    }

    /// The shared broker state (for tests and embedding).
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Bound addresses by listener name (port 0 in the config is resolved here).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(name, l)| l.local_addr().ok().map(|a| (name.clone(), a)))
            .collect()
    }

    /// The admin listener's bound address, if `admin.bind` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled, then closes the listeners, tells every
    /// connection to close and waits for them up to the configured shutdown timeout.
    pub async fn serve(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(self.broker.config.mqtt.max_connections));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        for (name, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(listener = %name, %addr, "listening");
            }
            tracker.spawn(accept_loop(
                name.into(),
                listener,
                self.broker.clone(),
                limit.clone(),
                refusals.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        // Not in `tracker`: the admin listener outlives the drain (so `/readyz` answers
        // 503 meanwhile) and is stopped last.
        let admin_stop = CancellationToken::new();
        let admin = self.admin.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "admin listening");
            }
            tokio::spawn(crate::admin::serve(
                listener,
                self.broker.clone(),
                shutdown.clone(),
                admin_stop.clone(),
            ))
        });
        let plugins = self.broker.plugins.current();
        let events = &plugins.events;
        let listening = self
            .broker
            .config
            .listeners
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        events
            .emit(pb::EventKind::BrokerPostStart, None, None, |_| {
                pb::event::Kind::BrokerPostStart(pb::BrokerPostStart {
                    listeners: listening
                        .iter()
                        .map(|name| pb::ListenerInfo {
                            name: name.clone(),
                            transport: "tcp".into(),
                            ..Default::default()
                        })
                        .collect(),
                })
            })
            .await;
        tracker.spawn({
            let broker = self.broker.clone();
            let shutdown = shutdown.clone();
            async move { broker.registry.run_expiry(shutdown).await }
        });
        if self.broker.config.sys.enable {
            tracker.spawn(crate::sys::publish_loop(
                self.broker.clone(),
                shutdown.clone(),
            ));
        }
        shutdown.cancelled().await;
        let timeout = self.broker.config.shutdown_timeout;
        // One deadline for queueing broker_pre_shutdown and draining connections, so the
        // whole drain fits in `shutdown_timeout` as docs/deploy.md budgets it.
        let deadline = tokio::time::Instant::now() + timeout;
        // Bounded: a `backpressure` queue of a stalled plugin must not stop the shutdown.
        let plugins = self.broker.plugins.current();
        let pre_shutdown =
            plugins
                .events
                .emit(pb::EventKind::BrokerPreShutdown, None, None, |_| {
                    pb::event::Kind::BrokerPreShutdown(pb::BrokerPreShutdown {
                        reason: "signal".into(),
                    })
                });
        if tokio::time::timeout_at(deadline, pre_shutdown)
            .await
            .is_err()
        {
            warn!("broker_pre_shutdown could not be queued in time; shutting down anyway");
        }
        tracker.close();
        info!(?timeout, "shutting down: closing connections");
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                ?timeout,
                "connections still open after the shutdown timeout; dropping them"
            );
        }
        // Plugins can tear down: delivered and acked (bounded) before the process exits.
        // The set in force now, which a reload may have changed since start-up.
        let plugins = self.broker.plugins.current();
        plugins
            .events
            .emit_and_wait(pb::EventKind::BrokerPostShutdown, |_| {
                pb::event::Kind::BrokerPostShutdown(pb::BrokerPostShutdown {})
            })
            .await;
        self.broker.plugins.stop(timeout).await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

async fn accept_loop(
    name: Arc<str>,
    listener: TcpListener,
    broker: Arc<Broker>,
    limit: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(err) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                warn!(cause = %err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                // Over the handshake cap the socket is dropped here: closed at once,
                // before a task or a buffer is spent on it.
                let Some(handshake) = broker.handshake_slot(peer) else {
                    continue;
                };
                let broker = broker.clone();
                let shutdown = shutdown.clone();
                let name = name.clone();
                let _ = stream.set_nodelay(true);
                let (rd, wr) = stream.into_split();
                // Boxed: the connection future is large, and tokio moves a spawned
                // future several times before first polling it; a box moves as a pointer.
                tracker.spawn(Box::pin(async move {
                    connection::serve(rd, wr, peer, name, broker, shutdown, handshake).await;
                    drop(permit);
                }));
            }
            Err(_) => {
                broker.stats.connection_refused();
                warn!(%peer, max = broker.config.mqtt.max_connections, "refusing connection: mqtt.max_connections reached");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    let max = broker.config.mqtt.connect_size_limit();
                    tracker.spawn(async move {
                        connection::refuse_over_limit(stream, max).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}
