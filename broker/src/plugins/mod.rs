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
//! - [`client`]: one client's handle on the plugins: checks, cache, events, in the
//!   broker's types; [`client_info`] the facts it reports; [`wire`] every conversion
//!   of those to the plugin contract's messages.
//! - [`lifecycle`]: the broker's own lifecycle events.

pub mod cache;
pub mod chain;
pub mod client;
pub mod client_info;
pub mod config;
pub mod endpoint;
pub mod events;
pub mod lifecycle;
pub mod plugin;
pub mod supervisor;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// A plugin answered `Describe` with INVALID_ARGUMENT or FAILED_PRECONDITION: it
    /// refuses the `config:` pushed to it.
    #[error("plugin `{alias}` refused its configuration (plugins.{alias}.config): {cause}")]
    Refused {
        /// The alias.
        alias: String,
        /// The plugin's answer.
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

/// The plugins and chains in force: replaced as a whole by a reload, never changed in
/// place. Connections hold one and pick up the next at their next loop turn.
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// The Authenticate chain; `None` allows every client.
    pub auth: Option<Chain>,
    /// The TopicFilter chain; `None` allows every topic.
    pub topic_check: Option<Chain>,
    /// Bounds of each session's decision cache.
    pub cache: config::CacheConfig,
    /// `topic-check.hold`: how long a QoS 1/2 delivery or a will whose check failed
    /// with a plugin error is held and checked again before it is dropped.
    pub hold: Duration,
    /// Plugins that asked for events, and their queues.
    pub events: events::EventHub,
    /// 1 at start-up, one more per successful reload. A session's cached decisions
    /// belong to one generation.
    pub generation: u64,
}

impl PluginSet {
    /// The plugins by alias.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// The plugin named `alias`.
    pub fn plugin(&self, alias: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(alias)
    }
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Plugins started and joined.
    pub added: Vec<String>,
    /// Plugins drained and stopped.
    pub removed: Vec<String>,
    /// Plugins whose endpoint or call settings changed: replaced by a new instance.
    pub replaced: Vec<String>,
    /// Plugins whose `config:` was pushed again with `Describe`.
    pub reconfigured: Vec<String>,
    /// The generation now in force.
    pub generation: u64,
}

/// A plugin's per-alias resources besides the [`Plugin`] itself.
#[derive(Default)]
struct Owned {
    /// Its process, when the broker runs it (`command:`).
    process: Option<supervisor::Supervisor>,
    /// Ends its `Events` stream.
    stream: Option<CancellationToken>,
}

/// Owns every plugin, the set in force, and the processes the broker runs.
pub struct PluginHost {
    current: arc_swap::ArcSwap<PluginSet>,
    /// Mirrors `current.generation`: one atomic load tells a connection whether to
    /// pick up a new set.
    generation: AtomicU64,
    instance: String,
    shutdown: CancellationToken,
    /// Parent of every plugin's `Events` stream token: [`stop`](Self::stop) ends them.
    streams: CancellationToken,
    owned: parking_lot::Mutex<BTreeMap<String, Owned>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

/// The plugin configuration without its pushed `config:`: when only that differs, the
/// plugin is kept and its configuration pushed again; otherwise it is replaced.
fn transport_part(pc: &config::PluginConfig) -> config::PluginConfig {
    config::PluginConfig {
        config: None,
        ..pc.clone()
    }
}

impl PluginHost {
    /// Starts every configured plugin (and the commands of those the broker runs), waits
    /// until each has answered `Describe`, and checks that chain members declare their
    /// role. Nothing is served before this returns `Ok`.
    pub async fn start(config: &Config, shutdown: CancellationToken) -> Result<Self, PluginError> {
        let instance = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
        );
        let host = Self {
            current: arc_swap::ArcSwap::from_pointee(PluginSet {
                plugins: BTreeMap::new(),
                auth: None,
                topic_check: None,
                cache: config::CacheConfig::default(),
                hold: config::default_hold(),
                events: events::EventHub::default(),
                generation: 0,
            }),
            generation: AtomicU64::new(0),
            instance,
            shutdown,
            streams: CancellationToken::new(),
            owned: parking_lot::Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
        };
        let aliases: Vec<&String> = config.plugins.keys().collect();
        let started = match host.start_plugins(config, &aliases).await {
            Ok(started) => started,
            Err(err) => return Err(err),
        };
        match host.assemble(config, started, &BTreeMap::new(), 1) {
            Ok(set) => {
                if set.auth.is_none() {
                    info!("no auth section: every client is allowed to connect");
                }
                host.install(set);
                Ok(host)
            }
            Err(err) => {
                host.stop(Duration::from_secs(5)).await;
                Err(err)
            }
        }
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The generation in force (cheaper than [`current`](Self::current) to poll).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts `aliases` of `config` (their processes first), waiting for each to answer
    /// `Describe`. On failure, what was started is stopped again.
    async fn start_plugins(
        &self,
        config: &Config,
        aliases: &[&String],
    ) -> Result<BTreeMap<String, Arc<Plugin>>, PluginError> {
        let mut plugins = BTreeMap::new();
        let mut result = Ok(());
        for alias in aliases {
            let pc = &config.plugins[*alias];
            if let Some(command) = &pc.command {
                // Not tied to the shutdown signal: plugin processes outlive it until
                // `stop`, so they still receive the disconnections and
                // broker_post_shutdown.
                match supervisor::Supervisor::spawn(
                    alias,
                    command,
                    &pc.endpoint,
                    CancellationToken::new(),
                ) {
                    Ok(process) => self.own(alias).process = Some(process),
                    Err(err) => {
                        result = Err(err);
                        break;
                    }
                }
            }
            match Plugin::new(
                alias,
                pc.clone(),
                &self.instance,
                self.shutdown.child_token(),
            ) {
                Ok(p) => {
                    plugins.insert((*alias).clone(), Arc::new(p));
                }
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        if result.is_ok() {
            let starts = plugins.values().map(|p| {
                let p = p.clone();
                async move { p.start().await }
            });
            result = futures_util::future::join_all(starts)
                .await
                .into_iter()
                .collect();
        }
        match result {
            Ok(()) => Ok(plugins),
            Err(err) => {
                let names: Vec<String> = aliases.iter().map(|a| (*a).clone()).collect();
                self.retire(
                    &names,
                    plugins.values().cloned().collect(),
                    Duration::from_secs(5),
                )
                .await;
                Err(err)
            }
        }
    }

    fn own(&self, alias: &str) -> parking_lot::MappedMutexGuard<'_, Owned> {
        parking_lot::MutexGuard::map(self.owned.lock(), |o| {
            o.entry(alias.to_owned()).or_default()
        })
    }

    /// Builds a set from `config`: `fresh` plugins (just started) and `kept` ones
    /// (already serving, with their event queues); checks the chains' roles.
    fn assemble(
        &self,
        config: &Config,
        mut fresh: BTreeMap<String, Arc<Plugin>>,
        kept: &BTreeMap<String, (Arc<Plugin>, Option<events::Subscriber>)>,
        generation: u64,
    ) -> Result<PluginSet, PluginError> {
        let mut plugins = BTreeMap::new();
        for alias in config.plugins.keys() {
            if let Some(p) = fresh
                .remove(alias)
                .or_else(|| kept.get(alias).map(|k| k.0.clone()))
            {
                plugins.insert(alias.clone(), p);
            }
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
            None => None,
        };
        let topic_check = match &config.topic_check {
            Some(t) if t.enable => Some(chain("topic-check", &t.plugins, pb::Role::TopicFilter)?),
            _ => None,
        };
        let mut subscribers = Vec::new();
        for p in plugins.values() {
            let described = p.described().unwrap_or_default();
            if described.event_kinds.is_empty() {
                continue;
            }
            let kinds = described
                .event_kinds
                .iter()
                .fold(0, |acc, k| acc | (1u32 << (*k as u32)));
            // A kept plugin keeps its queue and stream (and what is unacked in it).
            let queue = match kept.get(&p.alias).and_then(|k| k.1.as_ref()) {
                Some(sub) => sub.queue.clone(),
                None => Arc::new(events::EventQueue::with_bytes(
                    p.config.events.queue,
                    p.config.events.max_bytes,
                    p.config.events.overflow,
                )),
            };
            subscribers.push(events::Subscriber {
                alias: p.alias.clone(),
                kinds,
                topic_filters: described.message_topic_filters.clone(),
                payloads: described.want_message_payloads,
                raw_packets: described.want_raw_packets,
                queue,
                lifecycle_timeout: p.config.events.lifecycle_timeout,
            });
        }
        for p in plugins.values() {
            if p.config.on_error == config::OnError::Allow && !kept.contains_key(&p.alias) {
                warn!(plugin = %p.alias, "on_error: allow: this plugin FAILS OPEN; a failure lets clients through");
            }
        }
        Ok(PluginSet {
            plugins,
            auth,
            topic_check,
            cache: config
                .topic_check
                .as_ref()
                .map(|t| t.cache.clone())
                .unwrap_or_default(),
            hold: config
                .topic_check
                .as_ref()
                .map_or_else(config::default_hold, |t| t.hold),
            events: events::EventHub::new(subscribers),
            generation,
        })
    }

    /// Puts `set` in force and opens the `Events` streams of plugins that have none.
    fn install(&self, set: PluginSet) {
        for sub in set.events.subscribers() {
            let mut owned = self.own(&sub.alias);
            if owned.stream.is_some() {
                continue;
            }
            let Some(plugin) = set.plugins.get(&sub.alias) else {
                continue;
            };
            let max_batch = match plugin.described().unwrap_or_default().max_events_per_batch {
                0 => 256,
                n => n as usize,
            };
            let token = self.streams.child_token();
            // Streams outlive the shutdown signal: they still carry the disconnections and
            // broker_post_shutdown; `stop` ends them.
            tokio::spawn(events::drive(
                plugin.clone(),
                sub.queue.clone(),
                max_batch,
                token.clone(),
            ));
            owned.stream = Some(token);
            info!(plugin = %sub.alias, kinds = ?plugin.described().unwrap_or_default().event_kinds, "streaming events");
        }
        let generation = set.generation;
        self.current.store(Arc::new(set));
        self.generation.store(generation, Ordering::Release);
    }

    /// Re-reads nothing itself: applies `config`'s plugin sections. Plugins added are
    /// started and described before they join a chain; removed ones leave the chains,
    /// finish their calls in flight and are stopped; a changed `config:` is pushed with
    /// `Describe` (the plugin keeps serving); any other change to a plugin replaces it.
    /// If anything fails (a plugin does not start, a chain member lacks its role, a
    /// plugin rejects its new `config:`), nothing changes and the error says why.
    pub async fn reload(&self, config: &Config) -> Result<ReloadSummary, PluginError> {
        let _one = self.reloading.lock().await;
        let old = self.current();
        let mut summary = ReloadSummary::default();
        let mut kept = BTreeMap::new();
        let mut to_start = Vec::new();
        let mut to_push = Vec::new();
        for (alias, pc) in &config.plugins {
            match old.plugins.get(alias) {
                Some(p) if transport_part(&p.config) == transport_part(pc) => {
                    if p.pushed_config() != pc.config {
                        to_push.push((p.clone(), pc.config.clone()));
                    }
                    let sub = old
                        .events
                        .subscribers()
                        .iter()
                        .find(|s| s.alias == *alias)
                        .cloned();
                    kept.insert(alias.clone(), (p.clone(), sub));
                }
                Some(_) => {
                    summary.replaced.push(alias.clone());
                    to_start.push(alias);
                }
                None => {
                    summary.added.push(alias.clone());
                    to_start.push(alias);
                }
            }
        }
        // A kept plugin's token_file is read again (a rotated token applies now); one that
        // cannot be read fails the reload before anything changed.
        for (plugin, _) in kept.values() {
            plugin.reload_token()?;
        }
        summary.removed = old
            .plugins
            .keys()
            .filter(|a| !config.plugins.contains_key(*a))
            .cloned()
            .collect();
        // A replaced plugin's new instance starts beside the old one, which serves until
        // the new set is in force (a unix socket path is taken over by the new process;
        // a TCP port in use makes the new instance fail to start, and the reload with
        // it). The old instance's process and stream are set aside meanwhile.
        let set_aside: Vec<(String, Owned)> = {
            let mut owned = self.owned.lock();
            summary
                .replaced
                .iter()
                .filter_map(|a| owned.remove(a).map(|o| (a.clone(), o)))
                .collect()
        };
        let restore = |set_aside: Vec<(String, Owned)>| {
            let mut owned = self.owned.lock();
            for (alias, o) in set_aside {
                owned.insert(alias, o);
            }
        };
        let fresh = match self.start_plugins(config, &to_start).await {
            Ok(fresh) => fresh,
            Err(err) => {
                restore(set_aside);
                return Err(err);
            }
        };
        let fresh_list: Vec<Arc<Plugin>> = fresh.values().cloned().collect();
        let fresh_names: Vec<String> = fresh.keys().cloned().collect();
        // Push changed configurations, then build the new set. Any failure undoes the
        // pushes made so far (newest first), stops the plugins just started and gives the
        // replaced ones their processes back: the set in force is untouched.
        let mut pushed: Vec<(Arc<Plugin>, Option<serde_json::Value>)> = Vec::new();
        let built = async {
            for (plugin, new_config) in to_push {
                let before = plugin.pushed_config();
                plugin.push_config(new_config).await?;
                summary.reconfigured.push(plugin.alias.clone());
                pushed.push((plugin, before));
            }
            summary.generation = old.generation + 1;
            self.assemble(config, fresh, &kept, summary.generation)
        }
        .await;
        let set = match built {
            Ok(set) => set,
            Err(err) => {
                for (p, previous) in pushed.into_iter().rev() {
                    let _ = p.push_config(previous).await;
                }
                self.retire(&fresh_names, fresh_list, Duration::from_secs(5))
                    .await;
                restore(set_aside);
                return Err(err);
            }
        };
        // Kept plugins whose re-Describe changed their event kinds keep their queue;
        // one that no longer wants events has its stream ended.
        let streaming: Vec<String> = set
            .events
            .subscribers()
            .iter()
            .map(|s| s.alias.clone())
            .collect();
        for alias in kept.keys() {
            if !streaming.contains(alias)
                && let Some(token) = self.own(alias).stream.take()
            {
                token.cancel();
            }
        }
        self.install(set);
        let removed: Vec<Arc<Plugin>> = summary
            .removed
            .iter()
            .filter_map(|a| old.plugins.get(a).cloned())
            .collect();
        self.retire(&summary.removed, removed, Duration::from_secs(5))
            .await;
        for alias in &summary.replaced {
            if let Some(p) = old.plugins.get(alias) {
                p.retire();
            }
        }
        let mut processes = Vec::new();
        for (_, o) in set_aside {
            if let Some(token) = o.stream {
                token.cancel();
            }
            processes.extend(o.process);
        }
        futures_util::future::join_all(
            processes
                .into_iter()
                .map(|s| s.stop(Duration::from_secs(5))),
        )
        .await;
        Ok(summary)
    }

    /// Ends the plugins `aliases`: their probes and streams stop, their processes are
    /// stopped within `grace`. Calls already in flight on them finish (they hold the
    /// plugin).
    async fn retire(&self, aliases: &[String], plugins: Vec<Arc<Plugin>>, grace: Duration) {
        for p in &plugins {
            p.retire();
        }
        let mut processes = Vec::new();
        {
            let mut owned = self.owned.lock();
            for alias in aliases {
                if let Some(o) = owned.remove(alias) {
                    if let Some(token) = o.stream {
                        token.cancel();
                    }
                    processes.extend(o.process);
                }
            }
        }
        futures_util::future::join_all(processes.into_iter().map(|s| s.stop(grace))).await;
    }

    /// The plugins in force, by alias.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.current().plugins.values().cloned().collect()
    }

    /// Stops the plugin processes the broker started, within `grace`.
    pub async fn stop(&self, grace: Duration) {
        self.streams.cancel();
        let owned = std::mem::take(&mut *self.owned.lock());
        let processes = owned.into_values().filter_map(|o| o.process);
        futures_util::future::join_all(processes.map(|s| s.stop(grace))).await;
    }
}
