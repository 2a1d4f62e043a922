//! The plugin's configuration (its `config:` in the broker's YAML, pushed by `Describe`) and
//! the live ACL it loads.
//!
//! Loading happens while the SDK deserializes the configuration at `Describe`, so an unreadable
//! or invalid ACL file fails `Describe` and the broker refuses to start (fail closed), and the
//! watcher that reloads the file lives exactly as long as this configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tandem_plugin::tracing::info;

use crate::acl::{Acl, AclSpec, Rules};
use crate::live::{LiveAcl, load_file};
use crate::watch;

/// What to answer when the action's `-acl` section is not configured and no `-deny` rule applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unconfigured {
    /// No opinion: the other plugins of the chain decide (all abstaining denies).
    #[default]
    Abstain,
    /// aMQTT's "no restrictions" for a missing section, in a chain of this plugin alone.
    Allow,
}

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// An ACL file (YAML with the keys below); exclusive with inline rules.
    acl_file: Option<PathBuf>,
    /// How long the broker may reuse a decision.
    #[serde(default = "default_cache_ttl_ms")]
    cache_ttl_ms: u64,
    #[serde(default)]
    unconfigured: Unconfigured,
    /// The MQTT 5 reason code of every denial (the broker's 0x87 when absent).
    deny_reason_code: Option<u8>,
    #[serde(rename = "subscribe-acl")]
    subscribe_acl: Option<Rules>,
    acl: Option<Rules>,
    #[serde(rename = "publish-acl")]
    publish_acl: Option<Rules>,
    #[serde(rename = "receive-acl")]
    receive_acl: Option<Rules>,
    #[serde(rename = "subscribe-deny")]
    subscribe_deny: Option<Rules>,
    #[serde(rename = "publish-deny")]
    publish_deny: Option<Rules>,
    #[serde(rename = "receive-deny")]
    receive_deny: Option<Rules>,
}

fn default_cache_ttl_ms() -> u64 {
    30_000
}

/// The checked configuration, with the ACL loaded.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawConfig")]
pub(crate) struct Config {
    /// Sent with every decision (`TopicDecision::cache_for`).
    pub(crate) cache_ttl: Duration,
    pub(crate) unconfigured: Unconfigured,
    /// The MQTT 5 reason code sent with every denial; `None`: the broker's choice.
    pub(crate) deny_reason_code: Option<u8>,
    /// The ACL in force, replaced by the watcher when the file changes.
    pub(crate) acl: Arc<LiveAcl>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Config, String> {
        let inline = AclSpec {
            subscribe_acl: raw.subscribe_acl,
            acl: raw.acl,
            publish_acl: raw.publish_acl,
            receive_acl: raw.receive_acl,
            subscribe_deny: raw.subscribe_deny,
            publish_deny: raw.publish_deny,
            receive_deny: raw.receive_deny,
        };
        let acl = match (&raw.acl_file, inline.is_empty()) {
            (Some(_), false) => {
                return Err("give either `acl_file` or inline rules, not both".into());
            }
            (None, true) => {
                return Err("no ACL: set `acl_file`, or inline `subscribe-acl`, `publish-acl`, `receive-acl` or a `-deny` section".into());
            }
            (None, false) => {
                let acl = Acl::try_from(inline)?;
                info!(source = "inline", summary = %acl.summary(), "ACL loaded");
                Arc::new(LiveAcl::new(acl))
            }
            (Some(path), true) => {
                let text = std::fs::read(path)
                    .map_err(|err| format!("ACL file {}: cannot read it: {err}", path.display()))?;
                let acl = load_file(path, &text)?;
                info!(file = %path.display(), summary = %acl.summary(), "ACL loaded");
                let live = Arc::new(LiveAcl::new(acl));
                watch::spawn(path.clone(), text, Arc::downgrade(&live));
                live
            }
        };
        if let Some(code) = raw.deny_reason_code
            && code < 0x80
        {
            return Err(format!(
                "deny_reason_code {code:#04x} is not a failure code (0x80 and up)"
            ));
        }
        Ok(Config {
            cache_ttl: Duration::from_millis(raw.cache_ttl_ms),
            unconfigured: raw.unconfigured,
            deny_reason_code: raw.deny_reason_code,
            acl,
        })
    }
}
