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
//!
//! # Layout
//! - [`replicas`]: replicas and how each is dialed (resolution, channels, TLS, token).
//! - `describe`: health and `Describe`, and pushing a new `config:`.
//! - `probe`: start-up, re-resolution, probes and health checks.
//! - `call`: the call path and what each failure counts as.
//! - [`stats`]: the counters `$SYS` and `/metrics` read.
//!
//! This file holds the [`Plugin`] and its small API; the others add its methods and
//! never import from each other in a circle (`replicas` and `stats` know no `Plugin`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use tandem_proto::v1 as pb;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::plugins::config::PluginConfig;
use crate::plugins::error::PluginError;
use replicas::{Bearer, Replica, dial_template, read_token};

mod call;
mod describe;
mod probe;
pub mod replicas;
pub mod stats;

pub(crate) use replicas::Chan;
pub use stats::{LATENCY_BUCKETS_US, Latency, RpcStats};

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

impl From<pb::DescribeResponse> for Described {
    /// What the answer declares (`EVENT_KIND_UNSPECIFIED` entries are dropped: ignored).
    fn from(resp: pb::DescribeResponse) -> Self {
        Self {
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
        }
    }
}

impl Described {
    /// Whether the plugin declared `role`.
    pub fn serves(&self, role: pb::Role) -> bool {
        self.roles.contains(&role)
    }
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
    /// Why the last probe of a replica failed: start-up's error when none answers.
    last_failure: Mutex<Option<String>>,
    suppressed_errors: AtomicU64,
    shutdown: CancellationToken,
    /// The bearer token every call carries (`token_file`).
    bearer: Bearer,
}

impl Plugin {
    /// Builds the plugin from its configuration; no connection is made yet.
    pub fn new(
        alias: &str,
        config: PluginConfig,
        broker_instance_id: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, PluginError> {
        let template = dial_template(alias, &config)?;
        let bearer = Bearer::default();
        if let Some(path) = &config.token_file {
            *bearer.0.write() = Some(read_token(alias, path)?);
        }
        let describe_request = Self::first_describe_request(alias, &config, broker_instance_id)?;
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
            last_failure: Mutex::default(),
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
    pub(super) fn authed(&self, channel: Channel) -> Chan {
        tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone())
    }

    /// The `config:` section currently pushed to the plugin.
    pub fn pushed_config(&self) -> Option<serde_json::Value> {
        self.pushed.read().clone()
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

    /// The replicas that are up now.
    fn up_replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .iter()
            .filter(|r| r.up.load(Ordering::Acquire))
            .cloned()
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

    /// An up replica and its channel, for the `Events` stream.
    pub(crate) fn up_replica(&self) -> Option<(Arc<Replica>, Chan)> {
        self.pick(None).map(|r| {
            let channel = self.authed(r.channel.read().clone());
            (r, channel)
        })
    }
}
