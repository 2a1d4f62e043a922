//! The plugin host: starts every plugin (and the processes the broker runs), builds
//! the [`PluginSet`] in force from them, opens the `Events` streams, and stops it all.
//! A reload, which changes a set in force, is in [`reload`](super::reload).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tandem_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::chain::Chain;
use super::config::{CacheConfig, OnError, PluginSections, default_hold};
use super::error::PluginError;
use super::events::{EventHub, EventQueue, Subscriber, drive};
use super::plugin::Plugin;
use super::set::PluginSet;
use super::supervisor::Supervisor;

/// A plugin's per-alias resources besides the [`Plugin`] itself.
#[derive(Default)]
pub(super) struct Owned {
    /// Its process, when the broker runs it (`command:`).
    pub(super) process: Option<Supervisor>,
    /// Ends its `Events` stream.
    pub(super) stream: Option<CancellationToken>,
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
    pub(super) owned: parking_lot::Mutex<BTreeMap<String, Owned>>,
    /// One reload at a time.
    pub(super) reloading: tokio::sync::Mutex<()>,
}

impl PluginHost {
    /// Starts every configured plugin (and the commands of those the broker runs), waits
    /// until each has answered `Describe`, and checks that chain members declare their
    /// role. Nothing is served before this returns `Ok`.
    pub async fn start(
        config: &PluginSections,
        shutdown: CancellationToken,
    ) -> Result<Self, PluginError> {
        let instance = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
        );
        let host = Self {
            current: arc_swap::ArcSwap::from_pointee(PluginSet {
                plugins: BTreeMap::new(),
                auth: None,
                topic_check: None,
                cache: CacheConfig::default(),
                hold: default_hold(),
                events: EventHub::default(),
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
                // A broker without plugins is open by design (the embedded default on
                // loopback); one with plugins and a chain left out is worth a warning.
                for open in set.open_chains() {
                    if config.plugins.is_empty() {
                        info!("no {} section: {}", open.section, open.allows);
                    } else {
                        warn!("no {} section: {}", open.section, open.allows);
                    }
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
    pub(super) async fn start_plugins(
        &self,
        config: &PluginSections,
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
                match Supervisor::spawn(alias, command, &pc.endpoint, CancellationToken::new()) {
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

    pub(super) fn own(&self, alias: &str) -> parking_lot::MappedMutexGuard<'_, Owned> {
        parking_lot::MutexGuard::map(self.owned.lock(), |o| {
            o.entry(alias.to_owned()).or_default()
        })
    }

    /// Builds a set from `config`: `fresh` plugins (just started) and `kept` ones
    /// (already serving, with their event queues); checks the chains' roles.
    pub(super) fn assemble(
        &self,
        config: &PluginSections,
        mut fresh: BTreeMap<String, Arc<Plugin>>,
        kept: &BTreeMap<String, (Arc<Plugin>, Option<Subscriber>)>,
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
                None => Arc::new(EventQueue::with_bytes(
                    p.config.events.queue,
                    p.config.events.max_bytes,
                    p.config.events.overflow,
                )),
            };
            subscribers.push(Subscriber {
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
            if p.config.on_error == OnError::Allow && !kept.contains_key(&p.alias) {
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
                .map_or_else(default_hold, |t| t.hold),
            events: EventHub::new(subscribers),
            generation,
        })
    }

    /// Puts `set` in force and opens the `Events` streams of plugins that have none.
    pub(super) fn install(&self, set: PluginSet) {
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
            tokio::spawn(drive(
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

    /// Ends the plugins `aliases`: their probes and streams stop, their processes are
    /// stopped within `grace`. Calls already in flight on them finish (they hold the
    /// plugin).
    pub(super) async fn retire(
        &self,
        aliases: &[String],
        plugins: Vec<Arc<Plugin>>,
        grace: Duration,
    ) {
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
