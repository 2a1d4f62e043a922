//! One plugin: its replicas, the call path with deadline, shedding and failure
//! accounting, and the probes that bring a replica back.
//!
//! # Replicas and reconnects
//! An endpoint resolves to one replica (`unix://`, `http://`, `https://`) or to one per
//! address (`dns:///`). Each replica has its own gRPC channel whose connector connects
//! **once**: when the connection is lost, the channel does not quietly reconnect to what
//! may be a restarted process that has not been given its configuration. Instead the
//! call fails, the replica is marked down, and a probe builds a new channel, checks gRPC
//! health, calls `Describe` with the plugin's `config:` and only then marks it up. So
//! every connection a plugin serves calls on has been described first.
//!
//! # Failure accounting
//! A transport failure marks the replica down at once (and the call is retried on another
//! replica if one is up and the deadline allows: checks are idempotent). Other errors
//! (deadline, bad status, unspecified verdict) count towards `failure_threshold`
//! consecutive errors, after which the replica is marked down too. With no replica up the
//! plugin's circuit is open: calls answer `on_error` at once, without waiting.
//!
//! A plugin that is busy is not a plugin that is broken, and only the broken one may open
//! the circuit for everyone:
//! - a call shed at `max_concurrency` never reached a replica: it is answered `on_error`
//!   and counted as shed, never as a replica's error;
//! - a call that passed its deadline while the same replica answered other calls (it is
//!   alive, only queueing, for example under an authentication flood) is a real error for
//!   that call (`on_error`, counted as a deadline error) but not a strike against the
//!   replica. A replica that answers nothing at all still trips after `failure_threshold`
//!   deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock};
use tandem_proto::v1 as pb;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri};
use tracing::field::Empty;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{OnError, PluginConfig};
use super::endpoint::Endpoint;
use super::{ErrorKind, PluginError, Rpc, Verdict};
use crate::telemetry::TracedRpc;

/// A replica's channel with the broker's bearer token on every request.
pub(crate) type Chan = tonic::service::interceptor::InterceptedService<Channel, Bearer>;
type Client = pb::plugin_client::PluginClient<Chan>;
type Health = tonic_health::pb::health_client::HealthClient<Chan>;

/// The `authorization: Bearer <token>` a plugin's calls carry (see `token_file`), shared
/// by every channel of the plugin so that a reload's new token applies to all at once.
#[derive(Clone, Default)]
pub(crate) struct Bearer(Arc<RwLock<Option<tonic::metadata::AsciiMetadataValue>>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0.read().clone() {
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// Reads a `token_file`: one token, surrounding whitespace ignored, as the header value
/// `Bearer <token>` (marked sensitive, so it is never logged).
fn read_token(
    alias: &str,
    path: &std::path::Path,
) -> Result<tonic::metadata::AsciiMetadataValue, PluginError> {
    let fail = |message: String| PluginError::Config {
        alias: alias.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read token_file {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!("token_file {} is empty", path.display())));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(format!(
            "token_file {}: the token must be printable ASCII without spaces",
            path.display()
        )));
    }
    let mut value: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {token}").parse().map_err(|_| {
            fail(format!(
                "token_file {}: not a valid header value",
                path.display()
            ))
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where a replica is reached.
#[derive(Debug, Clone)]
enum Target {
    Unix(std::path::PathBuf),
    Tcp(std::net::SocketAddr),
}

/// What `Describe` told us.
#[derive(Debug, Clone, Default)]
pub struct Described {
    /// The plugin's own name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Roles it serves.
    pub roles: Vec<pb::Role>,
    /// Event kinds it wants on its `Events` stream.
    pub event_kinds: Vec<pb::EventKind>,
    /// Topic filters restricting message events.
    pub message_topic_filters: Vec<String>,
    /// Whether message events carry payloads.
    pub want_message_payloads: bool,
    /// Whether packet events carry the packet's raw bytes.
    pub want_raw_packets: bool,
    /// Largest batch it wants (0: the broker chooses).
    pub max_events_per_batch: u32,
}

impl Described {
    /// Whether the plugin declared `role`.
    pub fn serves(&self, role: pb::Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Counters of one RPC of one plugin.
#[derive(Debug, Default)]
pub struct RpcStats {
    /// Calls attempted (including those answered by `on_error` without a call).
    pub calls: AtomicU64,
    /// Verdicts by kind: allow, deny, abstain (after `on_error`).
    pub verdicts: [AtomicU64; 3],
    /// Errors by [`ErrorKind`].
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    /// How long calls took, sent to a replica (shed and circuit-open answers, which
    /// make no call, are not in it).
    pub latency: Latency,
}

/// Upper bounds of the [`Latency`] buckets, in microseconds: 250µs to 5s, roughly
/// doubling, covering a fast local plugin and the largest sensible deadline.
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// A fixed-bucket histogram of call durations: one relaxed atomic add per bucket and
/// sum, no lock, so recording costs the call path almost nothing; `/metrics` reads it.
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last one is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Latency {
    /// Records one call's duration.
    pub fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and the observations per bucket (not cumulative)
    /// by upper bound in seconds, the last one `+Inf`.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let bounds = LATENCY_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(&self.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// A replica: one address serving the plugin.
pub(crate) struct Replica {
    label: String,
    target: Target,
    /// The replica's connection; clients over it are cheap handles.
    channel: RwLock<Channel>,
    up: AtomicBool,
    probing: AtomicBool,
    consecutive_errors: AtomicU32,
    /// Calls sent to this replica.
    calls: AtomicU64,
    /// Calls this replica answered successfully: the evidence that it is alive, only busy,
    /// when one of its calls times out meanwhile.
    answered: AtomicU64,
    /// Times in a row the replica was marked down for errors without a successful call
    /// in between: each one doubles the wait before the next probe.
    trips: AtomicU32,
}

/// One configured plugin.
pub struct Plugin {
    /// Its alias in the configuration.
    pub alias: String,
    /// Its configuration.
    pub config: PluginConfig,
    template: tonic::transport::Endpoint,
    replicas: RwLock<Vec<Arc<Replica>>>,
    next: AtomicUsize,
    inflight: Arc<Semaphore>,
    described: RwLock<Option<Described>>,
    /// What `Describe` sends: changed by a reload that pushes a new `config:`.
    describe_request: RwLock<pb::DescribeRequest>,
    /// The `config:` currently pushed (the configuration's, or a reload's).
    pushed: RwLock<Option<serde_json::Value>>,
    /// Counters for Authenticate and TopicFilter.
    pub stats: [RpcStats; 2],
    last_error_log: Mutex<Option<std::time::Instant>>,
    /// The plugin's refusal of its configuration at the last `Describe`, if it refused.
    refused: Mutex<Option<String>>,
    suppressed_errors: AtomicU64,
    shutdown: CancellationToken,
    /// The bearer token every call carries (`token_file`).
    bearer: Bearer,
}

/// Converts a YAML/JSON value to a protobuf `Struct` value.
fn to_pb_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_pb_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_pb_struct(o: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_pb_value(v))).collect(),
    }
}

/// The `config:` section as the protobuf `Struct` that `Describe` carries.
fn pushed_struct(
    alias: &str,
    config: Option<&serde_json::Value>,
) -> Result<Option<prost_types::Struct>, PluginError> {
    match config {
        Some(serde_json::Value::Object(o)) => Ok(Some(to_pb_struct(o))),
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(_) => Err(PluginError::Config {
            alias: alias.to_owned(),
            message: "config: must be a map".into(),
        }),
    }
}

/// One gRPC health check of the whole server (service ""), bounded by `timeout` both as
/// the gRPC deadline and locally.
async fn health_check(
    channel: Chan,
    timeout: Duration,
) -> Result<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>, tokio::time::error::Elapsed>
{
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(timeout);
    let checked = tokio::time::timeout(timeout, Health::new(channel).check(req)).await?;
    Ok(checked.map(tonic::Response::into_inner))
}

fn read_pem(path: &std::path::Path, what: &str, alias: &str) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| PluginError::Config {
        alias: alias.to_owned(),
        message: format!("cannot read tls.{what} {}: {e}", path.display()),
    })
}

impl Plugin {
    /// Builds the plugin from its configuration; no connection is made yet.
    pub fn new(
        alias: &str,
        config: PluginConfig,
        broker_instance_id: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, PluginError> {
        let (scheme, host) = match &config.endpoint {
            Endpoint::Https { host, .. } => ("https", host.clone()),
            // Every replica of the name is dialed with TLS, checked against the name.
            Endpoint::Dns { host, .. } if config.tls.is_some() => ("https", host.clone()),
            Endpoint::Http { host, .. } | Endpoint::Dns { host, .. } => ("http", host.clone()),
            Endpoint::Unix(_) => ("http", "localhost".to_owned()),
        };
        let uri_host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        let mut template =
            tonic::transport::Endpoint::from_shared(format!("{scheme}://{uri_host}"))
                .map_err(|e| PluginError::Config {
                    alias: alias.to_owned(),
                    message: format!("endpoint: {e}"),
                })?
                .connect_timeout(config.timeout.max(Duration::from_millis(500)))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
        if scheme == "https" {
            let mut tls = ClientTlsConfig::new().domain_name(
                config
                    .tls
                    .as_ref()
                    .and_then(|t| t.domain.clone())
                    .unwrap_or(host),
            );
            if let Some(t) = &config.tls {
                if let Some(ca) = &t.ca {
                    tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "ca", alias)?));
                }
                match (&t.cert, &t.key) {
                    (Some(cert), Some(key)) => {
                        tls = tls.identity(Identity::from_pem(
                            read_pem(cert, "cert", alias)?,
                            read_pem(key, "key", alias)?,
                        ));
                    }
                    (None, None) => {}
                    _ => {
                        return Err(PluginError::Config {
                            alias: alias.to_owned(),
                            message: "tls.cert and tls.key go together".into(),
                        });
                    }
                }
            }
            template = template.tls_config(tls).map_err(|e| PluginError::Config {
                alias: alias.to_owned(),
                message: format!("tls: {e}"),
            })?;
        } else if config.tls.is_some() {
            return Err(PluginError::Config {
                alias: alias.to_owned(),
                message: "tls: is only for https:// and dns:/// endpoints".into(),
            });
        }
        let bearer = Bearer::default();
        if let Some(path) = &config.token_file {
            *bearer.0.write() = Some(read_token(alias, path)?);
        }
        let describe_request = pb::DescribeRequest {
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            plugin_alias: alias.to_owned(),
            config: pushed_struct(alias, config.config.as_ref())?,
            broker_instance_id: broker_instance_id.to_owned(),
            config_generation: 1,
        };
        Ok(Self {
            alias: alias.to_owned(),
            pushed: RwLock::new(config.config.clone()),
            inflight: Arc::new(Semaphore::new(config.max_concurrency)),
            config,
            template,
            replicas: RwLock::default(),
            next: AtomicUsize::new(0),
            described: RwLock::default(),
            describe_request: RwLock::new(describe_request),
            stats: Default::default(),
            last_error_log: Mutex::default(),
            refused: Mutex::default(),
            suppressed_errors: AtomicU64::new(0),
            shutdown,
            bearer,
        })
    }

    /// Reads `token_file` again (a reload): later calls carry the token it holds now. An
    /// unreadable or empty file is an error and the token in use stays.
    pub fn reload_token(&self) -> Result<(), PluginError> {
        if let Some(path) = &self.config.token_file {
            let value = read_token(&self.alias, path)?;
            *self.bearer.0.write() = Some(value);
        }
        Ok(())
    }

    /// `channel` with the plugin's bearer token on every request.
    fn authed(&self, channel: Channel) -> Chan {
        tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone())
    }

    /// The `config:` section currently pushed to the plugin.
    pub fn pushed_config(&self) -> Option<serde_json::Value> {
        self.pushed.read().clone()
    }

    /// Pushes a new `config:` with `Describe` (a reload): the first up replica decides
    /// whether the plugin accepts it (a refusal is an error and nothing changes); the
    /// other replicas get it too, and one that fails is marked down, so its probe
    /// describes it again with the new configuration before it serves.
    pub async fn push_config(
        self: &Arc<Self>,
        config: Option<serde_json::Value>,
    ) -> Result<(), PluginError> {
        let fail = |message: String| PluginError::Config {
            alias: self.alias.clone(),
            message,
        };
        let body = pushed_struct(&self.alias, config.as_ref())?;
        let (previous, request) = {
            let mut current = self.describe_request.write();
            let previous = current.clone();
            current.config = body;
            current.config_generation += 1;
            (previous, current.clone())
        };
        let up: Vec<Arc<Replica>> = self
            .replicas
            .read()
            .iter()
            .filter(|r| r.up.load(Ordering::Acquire))
            .cloned()
            .collect();
        if up.is_empty() {
            // Nothing to push to now: every probe describes with the new request.
            *self.pushed.write() = config;
            return Ok(());
        }
        let timeout = self.config.timeout.max(Duration::from_secs(1));
        for (i, replica) in up.iter().enumerate() {
            let mut client = Client::new(self.authed(replica.channel.read().clone()));
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(timeout);
            let answer = tokio::time::timeout(timeout, client.describe(req)).await;
            match answer {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    if let Some(d) = self.described.write().as_mut() {
                        d.event_kinds = resp
                            .event_kinds()
                            .filter(|k| *k != pb::EventKind::Unspecified)
                            .collect();
                        d.roles = resp.roles().collect();
                        d.message_topic_filters = resp.message_topic_filters;
                        d.want_message_payloads = resp.want_message_payloads;
                        d.want_raw_packets = resp.want_raw_packets;
                    }
                }
                Ok(Err(status)) if i == 0 && status.code() != tonic::Code::Unavailable => {
                    *self.describe_request.write() = previous;
                    return Err(fail(format!(
                        "refused the new config: ({:?}) {}",
                        status.code(),
                        status.message()
                    )));
                }
                // No answer (or a later replica refusing): probed again, and the probe
                // describes it with the new request before it serves.
                _ => self.mark_down(replica, "no answer to the new configuration"),
            }
        }
        info!(plugin = %self.alias, generation = request.config_generation, "configuration pushed");
        *self.pushed.write() = config;
        Ok(())
    }

    /// Takes the plugin out of service for good (removed or replaced by a reload):
    /// probes and re-resolution stop; calls in flight finish.
    pub fn retire(&self) {
        self.shutdown.cancel();
        for r in self.replicas.read().iter() {
            r.up.store(false, Ordering::Release);
        }
    }

    /// What the plugin said in its last successful `Describe`.
    pub fn described(&self) -> Option<Described> {
        self.described.read().clone()
    }

    /// Each replica: its address, whether it is up, and the calls it was sent.
    pub fn replicas(&self) -> Vec<(String, bool, u64)> {
        self.replicas
            .read()
            .iter()
            .map(|r| {
                (
                    r.label.clone(),
                    r.up.load(Ordering::Acquire),
                    r.calls.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Number of replicas and how many are up.
    pub fn replica_health(&self) -> (usize, usize) {
        let replicas = self.replicas.read();
        let up = replicas
            .iter()
            .filter(|r| r.up.load(Ordering::Acquire))
            .count();
        (replicas.len(), up)
    }

    fn channel(&self, target: &Target) -> Channel {
        // The connector connects once: see the module docs.
        let used = Arc::new(AtomicBool::new(false));
        let target = target.clone();
        let connector = tower::service_fn(move |_: Uri| {
            let used = used.clone();
            let target = target.clone();
            async move {
                if used.load(Ordering::Acquire) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "connection to plugin lost; it must be described again",
                    ));
                }
                let io = match target {
                    Target::Unix(path) => TokioIo::new(Box::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ) as Box<dyn Io>),
                    Target::Tcp(addr) => {
                        let s = tokio::net::TcpStream::connect(addr).await?;
                        let _ = s.set_nodelay(true);
                        TokioIo::new(Box::new(s) as Box<dyn Io>)
                    }
                };
                used.store(true, Ordering::Release);
                Ok::<_, std::io::Error>(io)
            }
        });
        self.template.connect_with_connector_lazy(connector)
    }

    /// Resolves the endpoint to its targets now.
    async fn resolve(&self) -> Result<Vec<(String, Target)>, String> {
        match &self.config.endpoint {
            Endpoint::Unix(path) => Ok(vec![(
                format!("unix://{}", path.display()),
                Target::Unix(path.clone()),
            )]),
            Endpoint::Http { host, port }
            | Endpoint::Https { host, port }
            | Endpoint::Dns { host, port } => {
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?;
                let mut out: Vec<(String, Target)> =
                    addrs.map(|a| (a.to_string(), Target::Tcp(a))).collect();
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out.dedup_by(|a, b| a.0 == b.0);
                if !matches!(self.config.endpoint, Endpoint::Dns { .. }) {
                    // A plain http(s) endpoint is one replica: its first address.
                    out.truncate(1);
                }
                Ok(out)
            }
        }
    }

    /// Brings the replica set in line with `targets`: new ones are added (down, to be
    /// probed), vanished ones removed.
    fn reconcile(self: &Arc<Self>, targets: Vec<(String, Target)>) {
        let mut added = Vec::new();
        {
            let mut replicas = self.replicas.write();
            replicas.retain(|r| {
                let keep = targets.iter().any(|(l, _)| *l == r.label);
                if !keep {
                    info!(plugin = %self.alias, replica = %r.label, "replica removed");
                }
                keep
            });
            for (label, target) in targets {
                if replicas.iter().any(|r| r.label == label) {
                    continue;
                }
                let replica = Arc::new(Replica {
                    channel: RwLock::new(self.channel(&target)),
                    label,
                    target,
                    up: AtomicBool::new(false),
                    probing: AtomicBool::new(false),
                    consecutive_errors: AtomicU32::new(0),
                    calls: AtomicU64::new(0),
                    answered: AtomicU64::new(0),
                    trips: AtomicU32::new(0),
                });
                replicas.push(replica.clone());
                added.push(replica);
            }
        }
        for replica in added {
            self.spawn_probe(replica);
        }
    }

    /// Resolves, starts probing every replica, and waits until one has answered
    /// `Describe` (or `startup_timeout` passes). Also starts re-resolution for `dns:///`.
    pub async fn start(self: &Arc<Self>) -> Result<(), PluginError> {
        let deadline = Instant::now() + self.config.startup_timeout;
        let mut last_err;
        loop {
            match self.resolve().await {
                Ok(t) if !t.is_empty() => {
                    self.reconcile(t);
                    break;
                }
                Ok(_) => last_err = "the name resolved to no address".into(),
                Err(e) => last_err = e,
            }
            if Instant::now() >= deadline {
                return Err(PluginError::Startup {
                    alias: self.alias.clone(),
                    endpoint: self.config.endpoint.to_string(),
                    waited: self.config.startup_timeout,
                    cause: last_err,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if matches!(self.config.endpoint, Endpoint::Dns { .. }) {
            let me = self.clone();
            tokio::spawn(async move { me.resolve_loop().await });
        }
        loop {
            if self.replica_health().1 > 0 {
                return Ok(());
            }
            if let Some(cause) = self.refused.lock().take() {
                return Err(PluginError::Refused {
                    alias: self.alias.clone(),
                    cause,
                });
            }
            if Instant::now() >= deadline {
                return Err(PluginError::Startup {
                    alias: self.alias.clone(),
                    endpoint: self.config.endpoint.to_string(),
                    waited: self.config.startup_timeout,
                    cause: "no replica answered Describe (see the warnings above)".into(),
                });
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(PluginError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    async fn resolve_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.resolve_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.resolve().await {
                Ok(t) if !t.is_empty() => self.reconcile(t),
                Ok(_) => {
                    warn!(plugin = %self.alias, "endpoint resolved to no address; keeping the known replicas")
                }
                Err(e) => {
                    warn!(plugin = %self.alias, cause = %e, "re-resolution failed; keeping the known replicas")
                }
            }
        }
    }

    fn spawn_probe(self: &Arc<Self>, replica: Arc<Replica>) {
        if replica.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.probe(&replica).await;
            replica.probing.store(false, Ordering::Release);
        });
    }

    /// Probes a down replica with backoff until it answers health and `Describe`.
    ///
    /// A replica tripped by errors (not by a lost connection) is waited for first, longer
    /// each time in a row, and comes back on probation: one more error trips it again.
    /// So a plugin that answers health but stalls its handlers costs little per call.
    async fn probe(&self, replica: &Replica) {
        let mut backoff = Duration::from_millis(50);
        let trips = replica.trips.load(Ordering::Acquire);
        if trips > 0 {
            let wait = (backoff * 2u32.saturating_pow(trips - 1)).min(self.config.max_backoff);
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let mut attempts = 0u32;
        loop {
            if self.shutdown.is_cancelled() || !self.is_current(replica) {
                return;
            }
            let channel = self.channel(&replica.target);
            match self.describe_on(channel.clone()).await {
                Ok(described) => {
                    *replica.channel.write() = channel;
                    let probation = if trips > 0 {
                        self.config.failure_threshold - 1
                    } else {
                        0
                    };
                    replica
                        .consecutive_errors
                        .store(probation, Ordering::Release);
                    info!(
                        plugin = %self.alias,
                        replica = %replica.label,
                        name = %described.name,
                        version = %described.version,
                        roles = ?described.roles,
                        "plugin described; replica up"
                    );
                    // The description is stored before the replica counts as up: start-up
                    // checks the roles as soon as it sees a replica up.
                    *self.described.write() = Some(described);
                    replica.up.store(true, Ordering::Release);
                    return;
                }
                Err(cause) => {
                    attempts += 1;
                    // A starting process takes a moment to listen: say nothing for the
                    // first attempts, then every tenth, so a long outage does not flood.
                    if attempts == 3 || attempts.is_multiple_of(10) {
                        warn!(plugin = %self.alias, replica = %replica.label, %cause, attempts, "plugin not answering; retrying");
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    fn is_current(&self, replica: &Replica) -> bool {
        self.replicas
            .read()
            .iter()
            .any(|r| std::ptr::eq(Arc::as_ptr(r), replica))
    }

    /// gRPC health (a plugin without the health service passes), then `Describe`.
    async fn describe_on(&self, channel: Channel) -> Result<Described, String> {
        let timeout = self.config.timeout.max(Duration::from_secs(1));
        match health_check(self.authed(channel.clone()), timeout).await {
            Err(_) => return Err("health check timed out".into()),
            Ok(Ok(resp)) => {
                let status = resp.status;
                if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Err(format!("health status {status} is not SERVING"));
                }
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {}
            Ok(Err(s)) => return Err(format!("health check failed: {}", s.message())),
        }
        let mut client = Client::new(self.authed(channel));
        let request = self.describe_request.read().clone();
        let mut req = tonic::Request::new(request);
        req.set_timeout(timeout);
        let resp = match tokio::time::timeout(timeout, client.describe(req)).await {
            Err(_) => return Err("Describe timed out".into()),
            Ok(Err(s)) => {
                let message = format!("Describe failed: {:?}: {}", s.code(), s.message());
                // The plugin is up and says no to its configuration: retrying the same
                // request cannot help, so start-up fails at once with its reason.
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) {
                    *self.refused.lock() = Some(message.clone());
                }
                return Err(message);
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok(Described {
            roles: resp.roles().collect(),
            event_kinds: resp
                .event_kinds()
                .filter(|k| *k != pb::EventKind::Unspecified)
                .collect(),
            message_topic_filters: resp.message_topic_filters,
            want_message_payloads: resp.want_message_payloads,
            want_raw_packets: resp.want_raw_packets,
            max_events_per_batch: resp.max_events_per_batch,
            name: resp.name,
            version: resp.version,
        })
    }

    /// Asks each up replica's gRPC health service, on the connection calls use, whether
    /// it still answers; returns how many said SERVING (a plugin without the health
    /// service counts as serving when it answers). A replica whose connection is gone,
    /// or that says it is not serving, is marked down and probed, as after a failed
    /// call. So a plugin that died is seen down without waiting for a client's call.
    pub async fn check_health(self: &Arc<Self>) -> usize {
        let up: Vec<Arc<Replica>> = self
            .replicas
            .read()
            .iter()
            .filter(|r| r.up.load(Ordering::Acquire))
            .cloned()
            .collect();
        let timeout = self.config.timeout.max(Duration::from_millis(500));
        let checks = up.iter().map(|replica| async move {
            let channel = self.authed(replica.channel.read().clone());
            let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
            match health_check(channel, timeout).await {
                Ok(Ok(resp)) if resp.status == serving => true,
                Ok(Ok(_)) => {
                    self.mark_down(replica, "health check: not serving");
                    false
                }
                Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => true,
                Ok(Err(s)) if failure_kind(&s, false) == ErrorKind::Unavailable => {
                    self.mark_down(replica, "health check: transport failure");
                    false
                }
                // Slow or failing otherwise: not counted as answering now; calls and
                // failure_threshold decide whether it is down.
                Ok(Err(_)) | Err(_) => false,
            }
        });
        futures_util::future::join_all(checks)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// An up replica and its channel, for the `Events` stream.
    pub(crate) fn up_replica(&self) -> Option<(Arc<Replica>, Chan)> {
        self.pick(None).map(|r| {
            let channel = self.authed(r.channel.read().clone());
            (r, channel)
        })
    }

    /// The `Events` stream on `replica` failed: its connection is gone, so it is marked
    /// down and probed (and described again) like after a failed call.
    pub(crate) fn stream_lost(self: &Arc<Self>, replica: &Arc<Replica>) {
        self.mark_down(replica, "Events stream lost");
    }

    /// The next replica that is up, round robin.
    fn pick(&self, skip: Option<&Arc<Replica>>) -> Option<Arc<Replica>> {
        let replicas = self.replicas.read();
        let n = replicas.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &replicas[(start + i) % n])
            .find(|r| r.up.load(Ordering::Acquire) && skip.is_none_or(|s| !Arc::ptr_eq(s, r)))
            .cloned()
    }

    fn mark_down(self: &Arc<Self>, replica: &Arc<Replica>, why: &str) {
        if replica.up.swap(false, Ordering::AcqRel) {
            warn!(plugin = %self.alias, replica = %replica.label, cause = why, "replica marked down; probing");
        }
        self.spawn_probe(replica.clone());
    }

    fn failure(self: &Arc<Self>, replica: &Arc<Replica>, kind: ErrorKind) {
        let n = replica.consecutive_errors.fetch_add(1, Ordering::AcqRel) + 1;
        if kind == ErrorKind::Unavailable {
            self.mark_down(replica, "transport failure");
        } else if n >= self.config.failure_threshold && replica.up.load(Ordering::Acquire) {
            replica.trips.fetch_add(1, Ordering::AcqRel);
            self.mark_down(replica, "too many consecutive errors");
        }
    }

    /// Calls an RPC with the plugin's deadline, on an up replica, shedding over the
    /// concurrency bound. One retry on another replica after a transport failure.
    pub(super) async fn call<Req, Resp, F, Fut>(
        self: &Arc<Self>,
        request: Req,
        f: F,
    ) -> Result<Resp, ErrorKind>
    where
        Req: Clone + TracedRpc<Response = Resp>,
        F: Fn(Client, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let Ok(_permit) = self.inflight.try_acquire() else {
            return Err(ErrorKind::Shed);
        };
        let deadline = Instant::now() + self.config.timeout;
        let mut tried: Option<Arc<Replica>> = None;
        for _attempt in 0..2 {
            let Some(replica) = self.pick(tried.as_ref()) else {
                return Err(if tried.is_some() {
                    ErrorKind::Unavailable
                } else {
                    ErrorKind::CircuitOpen
                });
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::Deadline);
            }
            // One span per attempt; its trace context goes to the plugin in the metadata.
            let span = info_span!("plugin_call", "otel.kind" = "client", plugin = %self.alias, rpc = Req::RPC,
                replica = %replica.label, verdict = Empty, error = Empty, "otel.status_code" = Empty);
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(left);
            crate::telemetry::inject(&span, req.metadata_mut());
            let client = Client::new(self.authed(replica.channel.read().clone()));
            replica.calls.fetch_add(1, Ordering::Relaxed);
            let answered_before = replica.answered.load(Ordering::Acquire);
            let attempt =
                tokio::time::timeout_at(deadline, f(client, req)).instrument(span.clone());
            let kind = match attempt.await {
                Ok(Ok(resp)) => {
                    span.record("verdict", Req::verdict(resp.get_ref()));
                    replica.answered.fetch_add(1, Ordering::AcqRel);
                    replica.consecutive_errors.store(0, Ordering::Release);
                    replica.trips.store(0, Ordering::Release);
                    return Ok(resp.into_inner());
                }
                Err(_) => ErrorKind::Deadline,
                Ok(Err(status)) => {
                    let kind = failure_kind(&status, Instant::now() >= deadline);
                    if kind == ErrorKind::Status {
                        self.log_error(kind, &format!("{:?}: {}", status.code(), status.message()));
                    }
                    kind
                }
            };
            span.record("error", kind.as_str());
            span.record("otel.status_code", "ERROR");
            let busy = kind == ErrorKind::Deadline
                && replica.answered.load(Ordering::Acquire) != answered_before;
            if busy {
                // It answered others meanwhile: queueing, not broken (see the module docs).
                debug!(plugin = %self.alias, replica = %replica.label,
                    "deadline passed while the replica answered other calls; not counted against it");
            } else {
                self.failure(&replica, kind);
            }
            if kind != ErrorKind::Unavailable {
                return Err(kind);
            }
            tried = Some(replica);
        }
        Err(ErrorKind::Unavailable)
    }

    /// Counts a call's outcome for `rpc`, and its duration if a call was made.
    pub(super) fn record(
        &self,
        rpc: Rpc,
        verdict: Verdict,
        error: Option<ErrorKind>,
        took: Duration,
    ) {
        let s = &self.stats[rpc as usize];
        s.calls.fetch_add(1, Ordering::Relaxed);
        if !matches!(error, Some(ErrorKind::Shed | ErrorKind::CircuitOpen)) {
            s.latency.observe(took);
        }
        s.verdicts[verdict as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = error {
            s.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs a call error at most once a second per plugin, with the count suppressed.
    pub(super) fn log_error(&self, kind: ErrorKind, detail: &str) {
        let now = std::time::Instant::now();
        let mut last = self.last_error_log.lock();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.suppressed_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(now);
        drop(last);
        let suppressed = self.suppressed_errors.swap(0, Ordering::Relaxed);
        let on_error = self.config.on_error;
        if on_error == OnError::Allow {
            warn!(plugin = %self.alias, kind = kind.as_str(), detail, suppressed, "plugin call failed; on_error=allow lets it through (FAIL-OPEN)");
        } else {
            warn!(plugin = %self.alias, kind = kind.as_str(), detail, suppressed, on_error = ?on_error, "plugin call failed; applying on_error");
        }
    }
}

/// What a call that ended with `status` counts as, `deadline_passed` telling whether
/// its deadline had passed when it ended.
///
/// A status the plugin sent has no source; one the client made from a transport error
/// carries that error. Every transport failure is `Unavailable`, so the replica is
/// marked down and the call retried on another one: the connection refused or lost
/// (UNAVAILABLE), reset or broken under a call in flight (UNKNOWN "transport error"),
/// a GOAWAY or protocol error (INTERNAL "h2 protocol error"), and a request that hyper
/// cancelled because its connection closed as it was sent (CANCELLED "operation was
/// canceled", source "connection closed": a replica killed while the broker had not yet
/// read the close). CANCELLED is a deadline when the deadline has passed, or when the
/// plugin sent it (its server's timer answers CANCELLED "Timeout expired").
fn failure_kind(status: &tonic::Status, deadline_passed: bool) -> ErrorKind {
    let from_transport = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::DeadlineExceeded => ErrorKind::Deadline,
        tonic::Code::Cancelled if deadline_passed || !from_transport => ErrorKind::Deadline,
        tonic::Code::Unavailable => ErrorKind::Unavailable,
        _ if from_transport => ErrorKind::Unavailable,
        _ => ErrorKind::Status,
    }
}

/// Object-safe alias for the stream types a connector hands to hyper.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_unavailable_and_only_a_real_deadline_is_a_deadline() {
        use tonic::{Code, Status};
        // What the client makes from a transport error: the code it derived, and the
        // error itself as the source (as for hyper's "connection closed").
        #[derive(Debug)]
        struct Lost(Status);
        impl std::fmt::Display for Lost {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection closed")
            }
        }
        impl std::error::Error for Lost {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let transport = |code: Code, what: &str| {
            let status = Status::from_error(Box::new(Lost(Status::new(code, what))));
            assert_eq!(status.code(), code);
            assert!(std::error::Error::source(&status).is_some());
            status
        };
        let canceled = transport(Code::Cancelled, "operation was canceled");
        assert_eq!(canceled.code(), Code::Cancelled);
        assert_eq!(failure_kind(&canceled, false), ErrorKind::Unavailable);
        assert_eq!(failure_kind(&canceled, true), ErrorKind::Deadline);
        assert_eq!(
            failure_kind(&transport(Code::Unknown, "transport error"), false),
            ErrorKind::Unavailable
        );
        assert_eq!(
            failure_kind(&transport(Code::Internal, "h2 protocol error"), false),
            ErrorKind::Unavailable
        );
        // Sent by the plugin: no source.
        let sent = |code: Code| Status::new(code, "from the plugin");
        assert_eq!(
            failure_kind(&sent(Code::Cancelled), false),
            ErrorKind::Deadline
        );
        assert_eq!(
            failure_kind(&sent(Code::DeadlineExceeded), false),
            ErrorKind::Deadline
        );
        assert_eq!(
            failure_kind(&sent(Code::Unavailable), false),
            ErrorKind::Unavailable
        );
        assert_eq!(
            failure_kind(&sent(Code::Internal), false),
            ErrorKind::Status
        );
        assert_eq!(
            failure_kind(&sent(Code::PermissionDenied), true),
            ErrorKind::Status
        );
    }

    #[test]
    fn latency_lands_in_the_first_bucket_at_or_above_it() {
        let l = Latency::default();
        l.observe(Duration::from_micros(250)); // on a bound: that bucket (le is inclusive)
        l.observe(Duration::from_micros(251));
        l.observe(Duration::from_millis(200));
        l.observe(Duration::from_secs(60)); // above every bound: +Inf only
        let (sum, count, buckets) = l.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.200501).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(buckets[0], (0.00025, 1));
        assert_eq!(buckets[1], (0.0005, 1));
        assert_eq!(buckets[9], (0.25, 1));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);
    }
}
