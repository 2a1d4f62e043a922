//! Plugin configuration: the `plugins:`, `auth:` and `topic-check:` sections, and each
//! plugin's `events:`.
//!
//! Every configuration type of the plugin host is here, and this file imports nothing
//! from the host but the endpoint syntax: the broker's configuration embeds these types,
//! and the host reads only them ([`PluginSections`]), never the broker's whole `Config`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::Endpoint;

/// The sections of the broker's configuration the plugin host reads: what
/// `PluginHost::start` and `PluginHost::reload` apply. The broker's configuration keeps them
/// at its top level (`plugins:`, `auth:`, `topic-check:`) and lends a copy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginSections {
    /// Plugins by alias (`plugins:`).
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The Authenticate chain (`auth:`). Absent: every client may connect.
    pub auth: Option<AuthConfig>,
    /// The TopicFilter chain (`topic-check:`). Absent or `enable: false`: every topic
    /// is allowed.
    pub topic_check: Option<TopicCheckConfig>,
}

/// One plugin, under its alias in `plugins:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Where the plugin serves gRPC: `unix:///path`, `http://host:port`,
    /// `https://host:port` or `dns:///name:port` (every address, re-resolved).
    pub endpoint: Endpoint,
    /// Deadline of each call, also sent as the gRPC deadline.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Verdict used when a call fails (deadline, transport, bad status, unspecified
    /// verdict, shed, circuit open).
    #[serde(default)]
    pub on_error: OnError,
    /// The plugin's own configuration, pushed to it by `Describe`.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// TLS towards an `https://` endpoint, or towards every replica of a `dns:///` one
    /// (checked against the name resolved, or `tls.domain`), and client certificate for mTLS.
    #[serde(default)]
    pub tls: Option<PluginTls>,
    /// File holding the bearer token the broker proves itself with: every call to the
    /// plugin (Describe, health, Authenticate, TopicFilter, the Events stream) carries
    /// `authorization: Bearer <token>`. Read at start and on each reload.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Optional: the broker starts this process, restarts it if it dies and stops it
    /// on shutdown (argv; the first element is the program).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Calls in flight to this plugin at once; a call over it is shed to `on_error`.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Consecutive errors after which a replica is marked down: calls skip it (and
    /// apply `on_error` at once if no replica is left) until a probe (gRPC health, then
    /// `Describe`) brings it back.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Longest wait between probes of a replica that is down (backoff starts at 50ms).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long start-up waits for the plugin's first `Describe` answer.
    #[serde(default = "default_startup_timeout", with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// How often a `dns:///` endpoint is resolved again.
    #[serde(default = "default_resolve_interval", with = "humantime_serde")]
    pub resolve_interval: Duration,
    /// The plugin's event queue, if it asks for events in `Describe`.
    #[serde(default)]
    pub events: EventsConfig,
}

impl PluginConfig {
    /// A plugin at `endpoint` with every other key at the default a YAML entry without
    /// it gets (what `tandem plugin check` dials with, before its own options).
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: default_timeout(),
            on_error: OnError::default(),
            config: None,
            tls: None,
            token_file: None,
            command: None,
            max_concurrency: default_max_concurrency(),
            failure_threshold: default_failure_threshold(),
            max_backoff: default_max_backoff(),
            startup_timeout: default_startup_timeout(),
            resolve_interval: default_resolve_interval(),
            events: EventsConfig::default(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}
fn default_max_concurrency() -> usize {
    256
}
fn default_failure_threshold() -> u32 {
    5
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(5)
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_resolve_interval() -> Duration {
    Duration::from_secs(10)
}

/// What a failed call counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed (the default): the failure denies.
    #[default]
    Deny,
    /// The failure is no opinion: the chain's other plugins decide.
    Abstain,
    /// Fail open: the failure allows. Logged loudly and counted.
    Allow,
}

impl OnError {
    /// The value as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Deny => "deny",
            OnError::Abstain => "abstain",
            OnError::Allow => "allow",
        }
    }
}

/// TLS settings for an `https://` or `dns:///` plugin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginTls {
    /// PEM file of the CA that signed the plugin's certificate.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for mTLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Name to verify the plugin's certificate against (default: the endpoint's host).
    #[serde(default)]
    pub domain: Option<String>,
}

/// `auth:`: the Authenticate chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Plugin aliases, called concurrently; attributes merge in this order.
    pub plugins: Vec<String>,
}

/// `topic-check:`: the TopicFilter chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicCheckConfig {
    /// Whether topic checks run at all (aMQTT's key).
    #[serde(default = "default_true")]
    pub enable: bool,
    /// Plugin aliases, called concurrently.
    #[serde(default)]
    pub plugins: Vec<String>,
    /// The per-session decision cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// How long a QoS 1/2 delivery (or a will) whose check failed with a plugin error
    /// (not a DENY) is held and checked again before it is dropped and counted.
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub hold: Duration,
}

/// `topic-check.hold` when not written.
pub fn default_hold() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}

/// Bounds of the per-session TopicFilter decision cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Decisions kept per session; past it, expired entries are swept, and if none
    /// expired the new decision is not cached.
    pub max_entries: usize,
    /// Bytes of topics kept per session (the keys are copies of the topics); past it,
    /// as past `max_entries`.
    pub max_bytes: usize,
    /// Cap on a plugin's `cache_ttl_ms`.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_bytes: 64 * 1024,
            max_ttl: Duration::from_secs(60),
        }
    }
}

/// What happens when a plugin's event queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest queued event, count it (the default).
    #[default]
    DropOldest,
    /// Make the producer wait for room: nothing is lost, publishers slow down.
    Backpressure,
}

/// `plugins.<alias>.events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events kept for the plugin (sent and unacked, or waiting to be sent).
    pub queue: usize,
    /// Encoded bytes of the events kept (payloads and raw packets included); at this
    /// bound the overflow policy applies as at `queue`.
    pub max_bytes: usize,
    /// Behaviour at the bound.
    pub overflow: Overflow,
    /// How long start-up waits for `broker_pre_start` to be acked, and shutdown for
    /// `broker_post_shutdown`.
    #[serde(with = "humantime_serde")]
    pub lifecycle_timeout: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            queue: 10_000,
            max_bytes: 64 * 1024 * 1024,
            overflow: Overflow::DropOldest,
            lifecycle_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_has_the_defaults_of_a_yaml_entry_with_only_an_endpoint() {
        let endpoint: Endpoint = "unix:///run/p.sock".parse().unwrap();
        let yaml: PluginConfig = serde_yaml_ng::from_str("endpoint: unix:///run/p.sock").unwrap();
        assert_eq!(PluginConfig::new(endpoint), yaml);
    }
}
