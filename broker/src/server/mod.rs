//! Listeners, the accept loop and connection tasks.
//!
//! # Layout
//! - this file: [`Server`] (bind, serve, drain) and the accept loop with its
//!   connection limit; the transports before MQTT (PROXY header, TLS, WebSocket) are
//!   [`crate::transport`]'s.
//! - [`handshake`]: from an accepted socket to a served client (CONNECT, auth, session).
//! - [`connection`]: the per-connection loop: read, decode, apply, write; the end.
//! - [`exit`]: why a connection ended, and what that tells the client and plugins.
//! - [`publish`]: PUBLISH in, and routing on the client's behalf.
//! - [`reauth`]: MQTT 5 re-authentication (AUTH on a live connection).
//! - [`subscribe`]: SUBSCRIBE, UNSUBSCRIBE, and re-checks after a reload.
//! - [`deliver`]: messages out through their RECEIVE check; holds and resends.
//! - [`will`]: the will at the end, held while its check fails.

pub(crate) mod alias;
pub(crate) mod connack;
pub(crate) mod connection;
pub(crate) mod deliver;
pub(crate) mod durable;
pub(crate) mod exit;
pub(crate) mod handshake;
pub(crate) mod publish;
pub(crate) mod reauth;
pub(crate) mod subscribe;
pub(crate) mod will;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::broker::Broker;
use crate::config::Config;
use crate::plugins::{PluginError, PluginHost, lifecycle};
use crate::storage::{Snapshot, StorageError, Store, engine::Redb};
use crate::transport::{Certificates, Endpoint, Origin, TlsError};

/// Connections over the limit answered with a CONNACK refusal at once; past this many
/// refusals in progress, further ones are closed without an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

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
    let origin = Origin::tcp(peer, listener);
    handshake::serve(rd, wr, origin, broker, shutdown, handshake).await;
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
    /// A TLS listener's certificate files could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store could not be opened or read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A broker with its listeners bound, ready to serve.
pub struct Server {
    broker: Arc<Broker>,
    listeners: Vec<(Arc<Endpoint>, TcpListener)>,
    /// The admin HTTP listener, when `admin.bind` is set.
    admin: Option<TcpListener>,
    /// What the store held at start-up, restored by [`serve`](Self::serve).
    snapshot: Option<Snapshot>,
}

impl Server {
    /// Loads the TLS listeners' certificates, opens and reads the store, starts the
    /// plugin host (every plugin in a chain has answered `Describe` when it returns),
    /// then binds every configured listener. No client is served by a half-configured
    /// chain.
    pub async fn start(config: Config, shutdown: &CancellationToken) -> Result<Self, ServerError> {
        // Certificates first: a bad file stops the start before any plugin is started.
        let endpoints = config
            .listeners
            .iter()
            .map(|(name, l)| Ok(Arc::new(Endpoint::new(name, l, &config.mqtt)?)))
            .collect::<Result<Vec<_>, TlsError>>()?;
        // Then the store: a damaged one stops the start before any plugin is started.
        let (store, snapshot) = match open_store(&config).await? {
            Some((store, snapshot)) => (Some(store), Some(snapshot)),
            None => (None, None),
        };
        let plugins = PluginHost::start(&config.plugin_sections(), shutdown.child_token()).await?;
        // Plugins can set up before any client is served: delivered and acked (bounded).
        lifecycle::pre_start(&plugins).await;
        let mut listeners = Vec::new();
        for (endpoint, l) in endpoints.into_iter().zip(config.listeners.values()) {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    listener: endpoint.name.to_string(),
                    addr: l.bind,
                    source,
                })?;
            listeners.push((endpoint, listener));
        }
        let certificates = Certificates::new(
            listeners
                .iter()
                .filter_map(|(e, _)| e.tls().cloned())
                .collect(),
        );
        let admin = match config.admin.bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::AdminBind { addr, source })?,
            ),
            None => None,
        };
        let mut broker = Broker::new(config, plugins, store);
        broker.certificates = certificates;
        Ok(Self {
            broker: Arc::new(broker),
            listeners,
            admin,
            snapshot,
        })
    }

    /// Records where the configuration came from, for reloads. Call before
    /// [`serve`](Self::serve).
    pub fn set_config_source(&mut self, source: crate::config::overrides::ConfigSource) {
        if let Some(broker) = Arc::get_mut(&mut self.broker) {
            broker.config_source = Some(source);
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
            .filter_map(|(e, l)| l.local_addr().ok().map(|a| (e.name.to_string(), a)))
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
        // The store's contents go back before any client is accepted (the listeners'
        // sockets are bound: clients that connect meanwhile wait in the backlog), while
        // `/readyz` answers 503.
        if let (Some(store), Some(mut snapshot)) = (self.broker.store.clone(), self.snapshot) {
            let wills = std::mem::take(&mut snapshot.wills);
            let broker = self.broker.clone();
            let restored = tokio::task::spawn_blocking(move || {
                crate::storage::restore::restore(&broker, &store, snapshot)
            })
            .await
            .unwrap_or_default();
            let _ = self.broker.restored.set(restored);
            will::restore_wills(&self.broker, wills, &shutdown);
        }
        let mut listening = Vec::new();
        for (endpoint, listener) in self.listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(listener = %endpoint.name, transport = %endpoint.kind.as_str(), %addr, "listening");
                listening.push((endpoint.name.to_string(), endpoint.kind.as_str(), addr));
            }
            tracker.spawn(accept_loop(
                endpoint,
                listener,
                self.broker.clone(),
                limit.clone(),
                refusals.clone(),
                tracker.clone(),
                shutdown.clone(),
            ));
        }
        lifecycle::post_start(&self.broker.plugins, &listening).await;
        tracker.spawn(self.broker.certificates.clone().watch(shutdown.clone()));
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
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !lifecycle::pre_shutdown(&self.broker.plugins, "signal", within).await {
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
        // Everything the connections changed on their way out is committed, durably;
        // what is dropped from memory after this stays in the store.
        // Bounded like the drain: a disk that hangs must not hold the pod past its
        // grace period (with sync: always nothing acknowledged is waiting here).
        if let Some(store) = &self.broker.store {
            match tokio::time::timeout(timeout, store.close()).await {
                Ok(()) => info!("storage: flushed and closed"),
                Err(_) => error!(
                    ?timeout,
                    "storage: the final flush did not finish in shutdown_timeout; stopping without it"
                ),
            }
        }
        // Plugins can tear down: delivered and acked (bounded) before the process exits.
        lifecycle::post_shutdown(&self.broker.plugins).await;
        self.broker.plugins.stop(timeout).await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
    }
}

async fn accept_loop(
    endpoint: Arc<Endpoint>,
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
                let _ = stream.set_nodelay(true);
                if endpoint.is_plain() {
                    let origin = Origin::tcp(peer, endpoint.name.clone());
                    let (rd, wr) = stream.into_split();
                    // Boxed: the connection future is large, and tokio moves a spawned
                    // future several times before first polling it; a box moves as a
                    // pointer.
                    tracker.spawn(Box::pin(async move {
                        handshake::serve(rd, wr, origin, broker, shutdown, handshake).await;
                        drop(permit);
                    }));
                    continue;
                }
                let endpoint = endpoint.clone();
                tracker.spawn(Box::pin(async move {
                    // A shutdown does not wait for handshakes that have not reached MQTT.
                    let opened = tokio::select! {
                        opened = endpoint.open(stream, peer) => opened,
                        _ = shutdown.cancelled() => return,
                    };
                    match opened {
                        Ok((rd, wr, origin)) => {
                            handshake::serve(rd, wr, origin, broker, shutdown, handshake).await;
                        }
                        Err(err) if err.is_routine() => {
                            debug!(%peer, listener = %endpoint.name, "connection closed before MQTT: {err}");
                        }
                        Err(err) => {
                            broker.stats.transport_failed();
                            info!(%peer, listener = %endpoint.name, "closing connection: {err}");
                        }
                    }
                    drop(permit);
                }));
            }
            Err(_) => {
                broker.stats.connection_refused();
                warn!(%peer, max = broker.config.mqtt.max_connections, "refusing connection: mqtt.max_connections reached");
                // Only plain TCP can be answered before its transport is set up; other
                // listeners' connections over the limit are closed at once.
                if !endpoint.is_plain() {
                    continue;
                }
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    let max = broker.config.mqtt.connect_size_limit();
                    tracker.spawn(async move {
                        handshake::refuse_over_limit(stream, max).await;
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// Opens the store at `storage.path` and reads it, off the async threads; `None` when
/// the broker keeps everything in memory.
async fn open_store(config: &Config) -> Result<Option<(Arc<Store>, Snapshot)>, StorageError> {
    let Some(path) = config.storage.path.clone() else {
        return Ok(None);
    };
    let mode = config.storage.mode();
    let opened = tokio::task::spawn_blocking(move || {
        let mut engine = Redb::open(&path)?;
        let snapshot = crate::storage::Storage::load(&mut engine)?;
        let store = Store::start(Box::new(engine), mode, snapshot.next_seq)?;
        Ok::<_, StorageError>((store, snapshot))
    })
    .await
    .map_err(|e| StorageError::Engine {
        path: config.storage.path.clone().unwrap_or_default(),
        detail: format!("reading the store failed: {e}"),
    })??;
    info!(path = %config.storage.path.as_deref().unwrap_or_else(|| std::path::Path::new("")).display(),
        sync = ?config.storage.mode(), "storage: opened");
    Ok(Some(opened))
}
