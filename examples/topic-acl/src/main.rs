//! `tandem-topic-acl`: aMQTT's `TopicAccessControlListPlugin` as a Tandem topic-check plugin.
//!
//! Per-user allow-lists of topic filters for subscribe, publish and receive (`subscribe-acl`,
//! `publish-acl`, `receive-acl`; `anonymous` for clients without a username), from a YAML file
//! that is reloaded when it changes, or inline in the broker's YAML:
//!
//! ```yaml
//! plugins:
//!   acl:
//!     endpoint: unix:///tmp/tandem-acl.sock
//!     command: [tandem-topic-acl]
//!     config:
//!       acl_file: /etc/tandem/acl.yaml   # or the sections inline, as in the file
//!       cache_ttl_ms: 30000
//! ```
//!
//! # Layout
//! - `filter.rs`: filter validation, topic matching, and filter coverage for subscriptions.
//! - `acl.rs`: the ACL's YAML form, its checked form, and the decision for one request.
//! - `config.rs`: the plugin's configuration; loads the ACL at `Describe` (fail closed).
//! - `watch.rs`: reloads the ACL file on change (directory watch, polling fallback).
//! - `tests.rs`: the plugin driven through the SDK's in-process test broker.
//!
//! See `README.md` for how it follows and where it differs from aMQTT.

mod acl;
mod config;
mod filter;
mod live;
mod watch;

use tandem_plugin::{Context, HandlerError, Plugin, TopicDecision, TopicFilter, TopicRequest};

use crate::acl::Outcome;
use crate::config::{Config, Unconfigured};

/// The topic check handler: the ACL in force decides.
struct TopicAcl;

impl TopicFilter for TopicAcl {
    async fn topic_filter(
        &self,
        ctx: &Context,
        req: TopicRequest,
    ) -> Result<TopicDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        let decision = match config
            .acl
            .current()
            .decide(req.action, &req.client, &req.topic)
        {
            Outcome::Allow => TopicDecision::allow(),
            Outcome::Deny(reason) => match config.deny_reason_code {
                Some(code) => TopicDecision::deny(reason).with_reason_code(code),
                None => TopicDecision::deny(reason),
            },
            Outcome::Unconfigured => match config.unconfigured {
                Unconfigured::Abstain => TopicDecision::abstain(),
                Unconfigured::Allow => TopicDecision::allow(),
            },
        };
        Ok(decision.cache_for(config.cache_ttl))
    }
}

fn plugin() -> Plugin {
    Plugin::new("tandem-topic-acl", env!("CARGO_PKG_VERSION"))
        .config::<Config>()
        .topic_filter(TopicAcl)
}

fn main() -> Result<(), tandem_plugin::Error> {
    plugin().run()
}

#[cfg(test)]
mod tests;
