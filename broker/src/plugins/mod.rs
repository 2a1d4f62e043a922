//! The plugin host: out-of-process plugins called over gRPC.
//!
//! Plugins are named in `plugins:` and referenced by the `auth:` chain (Authenticate)
//! and the `topic-check:` chain (TopicFilter). Every call has a deadline; every failure
//! becomes the plugin's `on_error` verdict (deny by default); a plugin that keeps failing
//! is skipped until a probe finds it again; a plugin at its concurrency bound sheds. The
//! broker never lets a client through because a plugin failed, unless the operator
//! wrote `on_error: allow`.
//!
//! # Layout
//! - [`config`]: the YAML sections.
//! - [`endpoint`]: endpoint parsing (`unix://`, `http://`, `https://`, `dns:///`).
//! - [`plugin`]: one plugin: replicas, the call path, probes, counters.
//! - [`chain`]: how several plugins' verdicts combine.
//! - [`cache`]: the per-session TopicFilter decision cache.
//! - [`events`]: per-plugin event queues and `Events` streams.
//! - [`supervisor`]: plugins the broker starts itself (`command:`).

pub mod cache;
pub mod chain;
pub mod config;
pub mod endpoint;
pub mod events;
pub mod plugin;
pub mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use chain::{AuthOutcome, Chain, TopicOutcome};
pub use plugin::Plugin;

use crate::config::Config;

/// A plugin's decision, after `on_error` was applied to failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allows.
    Allow = 0,
    /// Denies.
    Deny = 1,
    /// No opinion.
    Abstain = 2,
}

impl Verdict {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Abstain => "abstain",
        }
    }
}

/// The two decision RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Authenticate`.
    Authenticate = 0,
    /// `TopicFilter`.
    TopicFilter = 1,
}

impl Rpc {
    /// The RPC's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Authenticate => "authenticate",
            Rpc::TopicFilter => "topic_filter",
        }
    }
}

/// Why a plugin call did not produce a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The deadline passed.
    Deadline = 0,
    /// Transport failure: connection refused, reset, lost.
    Unavailable = 1,
    /// The plugin answered a non-OK status.
    Status = 2,
    /// The plugin answered `VERDICT_UNSPECIFIED` (or an unknown verdict).
    Unspecified = 3,
    /// The plugin was at its `max_concurrency`.
    Shed = 4,
    /// No replica is up: the call was not attempted.
    CircuitOpen = 5,
}

impl ErrorKind {
    /// Every kind, in index order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Deadline,
        ErrorKind::Unavailable,
        ErrorKind::Status,
        ErrorKind::Unspecified,
        ErrorKind::Shed,
        ErrorKind::CircuitOpen,
    ];

    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Deadline => "deadline",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Status => "status",
            ErrorKind::Unspecified => "unspecified",
            ErrorKind::Shed => "shed",
            ErrorKind::CircuitOpen => "circuit_open",
        }
    }
}

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The configuration of a plugin is unusable.
    #[error("plugin `{alias}`: {message}")]
    Config {
        /// The alias.
        alias: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin did not answer `Describe` in time.
    #[error(
        "plugin `{alias}` at {endpoint} did not answer Describe within {waited:?} (plugins.{alias}.startup_timeout): {cause}"
    )]
    Startup {
        /// The alias.
        alias: String,
        /// Its endpoint.
        endpoint: String,
        /// How long start-up waited.
        waited: Duration,
        /// The last failure seen.
        cause: String,
    },
    /// A plugin in a chain does not declare the chain's role.
    #[error(
        "plugin `{alias}` ({name}) is listed in {section}.plugins but does not declare {role:?} in Describe"
    )]
    MissingRole {
        /// The alias.
        alias: String,
        /// The plugin's own name.
        name: String,
        /// `auth` or `topic-check`.
        section: &'static str,
        /// The missing role.
        role: pb::Role,
    },
    /// A plugin command could not be started.
    #[error("plugin `{alias}`: cannot start command {command:?}: {cause}")]
    Spawn {
        /// The alias.
        alias: String,
        /// The argv.
        command: Vec<String>,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Shutdown began during start-up.
    #[error("shutdown requested during plugin start-up")]
    Cancelled,
}

/// The plugins and the two chains.
pub struct PluginHost {
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// The Authenticate chain; `None` allows every client.
    pub auth: Option<Chain>,
    /// The TopicFilter chain; `None` allows every topic.
    pub topic_check: Option<Chain>,
    /// Bounds of each session's decision cache.
    pub cache: config::CacheConfig,
    /// Plugins that asked for events, and their queues.
    pub events: events::EventHub,
    /// Ends the `Events` streams (in [`stop`](Self::stop)).
    streams: CancellationToken,
    supervisors: parking_lot::Mutex<Vec<supervisor::Supervisor>>,
}

impl PluginHost {
    /// Starts every configured plugin (and the commands of those the broker runs), waits
    /// until each has answered `Describe`, and checks that chain members declare their
    /// role. Nothing is served before this returns `Ok`.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, PluginError> {
        let mut supervisors = Vec::new();
        let result = Self::start_with(config, shutdown, &mut supervisors).await;
        if result.is_err() {
            // Leave no process behind when start-up fails.
            let stops = supervisors
                .into_iter()
                .map(|s| s.stop(Duration::from_secs(5)));
            futures_util::future::join_all(stops).await;
        }
        result
    }

    async fn start_with(
        config: &Config,
        shutdown: CancellationToken,
        started: &mut Vec<supervisor::Supervisor>,
    ) -> Result<Self, PluginError> {
        let instance = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
        );
        let mut plugins = BTreeMap::new();
        for (alias, pc) in &config.plugins {
            if let Some(command) = &pc.command {
                // Not tied to the shutdown signal: plugin processes outlive it until
                // `stop`, so they still receive the disconnections and
                // broker_post_shutdown.
                started.push(supervisor::Supervisor::spawn(
                    alias,
                    command,
                    &pc.endpoint,
                    CancellationToken::new(),
                )?);
            }
            let plugin = Arc::new(Plugin::new(
                alias,
                pc.clone(),
                &instance,
                shutdown.child_token(),
            )?);
            plugins.insert(alias.clone(), plugin);
        }
        let starts = plugins.values().map(|p| {
            let p = p.clone();
            async move { p.start().await }
        });
        for result in futures_util::future::join_all(starts).await {
            result?;
        }
        let chain = |section: &'static str,
                     aliases: &[String],
                     role: pb::Role|
         -> Result<Chain, PluginError> {
            let mut members = Vec::new();
            for alias in aliases {
                let plugin = plugins.get(alias).ok_or_else(|| PluginError::Config {
                    alias: alias.clone(),
                    message: format!("listed in {section}.plugins but not defined under plugins:"),
                })?;
                let described = plugin.described().unwrap_or_default();
                if !described.serves(role) {
                    return Err(PluginError::MissingRole {
                        alias: alias.clone(),
                        name: described.name,
                        section,
                        role,
                    });
                }
                members.push(plugin.clone());
            }
            Ok(Chain::new(section, members))
        };
        let auth = match &config.auth {
            Some(a) => Some(chain("auth", &a.plugins, pb::Role::Authenticate)?),
            None => {
                info!("no auth section: every client is allowed to connect");
                None
            }
        };
        let topic_check = match &config.topic_check {
            Some(t) if t.enable => Some(chain("topic-check", &t.plugins, pb::Role::TopicFilter)?),
            _ => None,
        };
        let mut subscribers = Vec::new();
        let streams = CancellationToken::new();
        for p in plugins.values() {
            let described = p.described().unwrap_or_default();
            if described.event_kinds.is_empty() {
                continue;
            }
            let queue = Arc::new(events::EventQueue::new(
                p.config.events.queue,
                p.config.events.overflow,
            ));
            let max_batch = match described.max_events_per_batch {
                0 => 256,
                n => n as usize,
            };
            // Streams outlive the shutdown signal: they still carry the disconnections and
            // broker_post_shutdown; `stop` ends them.
            tokio::spawn(events::drive(
                p.clone(),
                queue.clone(),
                max_batch,
                streams.clone(),
            ));
            info!(plugin = %p.alias, kinds = ?described.event_kinds, "streaming events");
            subscribers.push(events::Subscriber {
                alias: p.alias.clone(),
                kinds: described
                    .event_kinds
                    .iter()
                    .fold(0, |acc, k| acc | (1u32 << (*k as u32))),
                topic_filters: described.message_topic_filters.clone(),
                payloads: described.want_message_payloads,
                raw_packets: described.want_raw_packets,
                queue,
                lifecycle_timeout: p.config.events.lifecycle_timeout,
            });
        }
        for p in plugins.values() {
            if p.config.on_error == config::OnError::Allow {
                warn!(plugin = %p.alias, "on_error: allow: this plugin FAILS OPEN; a failure lets clients through");
            }
        }
        Ok(Self {
            plugins,
            auth,
            topic_check,
            cache: config
                .topic_check
                .as_ref()
                .map(|t| t.cache.clone())
                .unwrap_or_default(),
            events: events::EventHub::new(subscribers),
            streams,
            supervisors: parking_lot::Mutex::new(std::mem::take(started)),
        })
    }

    /// The plugins by alias.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Stops the plugin processes the broker started, within `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.streams.cancel();
        let supervisors = std::mem::take(&mut *self.supervisors.lock());
        futures_util::future::join_all(supervisors.into_iter().map(|s| s.stop(grace))).await;
    }
}
