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

    /// The chains this set leaves out, and what that allows: said in the log at
    /// start-up and after a reload, in `/readyz`'s body and in
    /// `tandem_chain_enforced`, so an open broker is never a surprise.
    pub fn open_chains(&self) -> Vec<OpenChain> {
        let mut open = Vec::new();
        if self.auth.is_none() {
            open.push(OpenChain::AUTH);
        }
        if self.topic_check.is_none() {
            open.push(OpenChain::TOPIC_CHECK);
        }
        open
    }
}

/// A chain left out of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenChain {
    /// The section, as named in the file.
    pub section: &'static str,
    /// What its absence allows.
    pub allows: &'static str,
}

impl OpenChain {
    /// No `auth:` section.
    pub const AUTH: Self = Self {
        section: "auth",
        allows: "every client is allowed to connect",
    };
    /// No `topic-check:` section.
    pub const TOPIC_CHECK: Self = Self {
        section: "topic-check",
        allows: "every topic is allowed (publish, subscribe and receive)",
    };
    /// Every chain, in the order they are reported.
    pub const ALL: [Self; 2] = [Self::AUTH, Self::TOPIC_CHECK];
}
