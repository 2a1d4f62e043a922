//! The set of plugins and chains in force. The host builds a new one at start-up and
//! at each reload and swaps it in whole; connections read it without a lock and never
//! see it half changed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::chain::Chain;
use super::config::CacheConfig;
use super::events::EventHub;
use super::plugin::Plugin;

/// The plugins and chains in force: replaced as a whole by a reload, never changed in
/// place. Connections hold one and pick up the next at their next loop turn.
pub struct PluginSet {
    /// Every plugin in force by alias, chain member or not (the host builds it).
    pub(super) plugins: BTreeMap<String, Arc<Plugin>>,
    /// The Authenticate chain; `None` allows every client.
    pub auth: Option<Chain>,
    /// The TopicFilter chain; `None` allows every topic.
    pub topic_check: Option<Chain>,
    /// Bounds of each session's decision cache.
    pub cache: CacheConfig,
    /// `topic-check.hold`: how long a QoS 1/2 delivery or a will whose check failed
    /// with a plugin error is held and checked again before it is dropped.
    pub hold: Duration,
    /// Plugins that asked for events, and their queues.
    pub events: EventHub,
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
