//! The rules and how they decide.

use std::collections::HashMap;
use std::time::Duration;

use tandem_plugin::filter::{filter_covers as covers, topic_matches};
use tandem_plugin::serde::Deserialize;
use tandem_plugin::{
    Action, AuthDecision, AuthRequest, Authenticator, Context, HandlerError, TopicDecision,
    TopicFilter, TopicRequest,
};

/// A verdict as written in the YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "tandem_plugin::serde", rename_all = "lowercase")]
enum Verdict {
    Allow,
    Deny,
    Abstain,
}

/// The plugin's configuration, from the broker's YAML.
#[derive(Debug, Deserialize)]
#[serde(crate = "tandem_plugin::serde", deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    users: HashMap<String, User>,
    #[serde(default = "abstain")]
    auth_default: Verdict,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default = "abstain")]
    topic_default: Verdict,
    #[serde(default)]
    cache_ttl_ms: u64,
    /// Answer this much later (to demonstrate deadlines).
    #[serde(default)]
    delay_ms: u64,
    /// The MQTT 5 Reason String sent with a refused CONNECT (wrong password, or an
    /// unknown user under `auth_default: deny`); none when absent.
    #[serde(default)]
    auth_client_reason: Option<String>,
}

fn abstain() -> Verdict {
    Verdict::Abstain
}

#[derive(Debug, Deserialize)]
#[serde(crate = "tandem_plugin::serde", deny_unknown_fields)]
struct User {
    password: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
    /// MQTT 5 user properties added to the user's CONNACK.
    #[serde(default)]
    connack_properties: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(crate = "tandem_plugin::serde", deny_unknown_fields)]
struct Rule {
    /// `publish`, `subscribe`, `receive` or `any`.
    action: String,
    /// Topic filter; `{name}` is replaced by the session attribute `name` (`{username}`
    /// and `{client_id}` too). A rule with a missing attribute does not match.
    filter: String,
    verdict: Verdict,
    #[serde(default)]
    reason: String,
    /// The MQTT 5 reason code of a deny (the broker's choice when absent).
    #[serde(default)]
    reason_code: Option<u8>,
    /// The MQTT 5 Reason String sent to the client with a deny.
    #[serde(default)]
    client_reason: Option<String>,
    /// Only for requests carrying this MQTT 5 user property (key, value) on the PUBLISH
    /// or SUBSCRIBE (answers are then not cached: the property is not part of the key).
    #[serde(default)]
    user_property: Option<(String, String)>,
    /// Only for these usernames (all clients when absent).
    #[serde(default)]
    users: Option<Vec<String>>,
}

/// The handlers.
pub(crate) struct Policy;

async fn delay(config: &Config) {
    if config.delay_ms > 0 {
        tandem_plugin::tokio::time::sleep(Duration::from_millis(config.delay_ms)).await;
    }
}

impl Authenticator for Policy {
    async fn authenticate(
        &self,
        ctx: &Context,
        req: AuthRequest,
    ) -> Result<AuthDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        delay(&config).await;
        let refused = |reason: &str| {
            let d = AuthDecision::deny(reason).with_reason_code(0x86);
            match &config.auth_client_reason {
                Some(why) => d.with_client_reason(why),
                None => d,
            }
        };
        let Some(user) = req.username.as_ref().and_then(|u| config.users.get(u)) else {
            return Ok(match config.auth_default {
                Verdict::Allow => AuthDecision::allow(),
                Verdict::Deny => refused("unknown user"),
                Verdict::Abstain => AuthDecision::abstain(),
            });
        };
        if req.password_str() != Some(user.password.as_str()) {
            return Ok(refused("bad password"));
        }
        // The password verified for this user: it is the client's identity.
        let mut decision = AuthDecision::allow().with_identity(req.username.unwrap_or_default());
        for (k, v) in &user.attributes {
            decision = decision.with_attribute(k, v);
        }
        for (k, v) in &user.connack_properties {
            decision = decision.with_user_property(k, v);
        }
        Ok(decision)
    }
}

impl TopicFilter for Policy {
    async fn topic_filter(
        &self,
        ctx: &Context,
        req: TopicRequest,
    ) -> Result<TopicDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        delay(&config).await;
        // A rule on user properties makes every answer uncacheable: the broker caches
        // per topic, and the next packet on it may carry other properties.
        let ttl = if config.rules.iter().any(|r| r.user_property.is_some()) {
            Duration::ZERO
        } else {
            Duration::from_millis(config.cache_ttl_ms)
        };
        for rule in &config.rules {
            if !action_matches(&rule.action, req.action) {
                continue;
            }
            if let Some(users) = &rule.users
                && !req
                    .client
                    .identity()
                    .is_some_and(|u| users.iter().any(|x| x == u))
            {
                continue;
            }
            if let Some((k, v)) = &rule.user_property
                && !req
                    .user_properties
                    .iter()
                    .any(|(rk, rv)| rk == k && rv == v)
            {
                continue;
            }
            let Some(filter) = expand(&rule.filter, &req) else {
                continue;
            };
            let hit = match req.action {
                Action::Subscribe => covers(&filter, &req.topic),
                _ => topic_matches(&filter, &req.topic),
            };
            if hit {
                let decision = match rule.verdict {
                    Verdict::Allow => TopicDecision::allow(),
                    Verdict::Deny => {
                        let mut d = TopicDecision::deny(rule.reason.clone());
                        d.reason_code = rule.reason_code;
                        d.client_reason = rule.client_reason.clone();
                        d
                    }
                    Verdict::Abstain => TopicDecision::abstain(),
                };
                return Ok(decision.cache_for(ttl));
            }
        }
        Ok(match config.topic_default {
            Verdict::Allow => TopicDecision::allow(),
            Verdict::Deny => TopicDecision::deny("no rule allows it"),
            Verdict::Abstain => TopicDecision::abstain(),
        }
        .cache_for(ttl))
    }
}

fn action_matches(rule: &str, action: Action) -> bool {
    matches!(
        (rule, action),
        ("any", _)
            | ("publish", Action::Publish)
            | ("subscribe", Action::Subscribe)
            | ("receive", Action::Receive)
    )
}

/// Replaces `{name}` by the client's attribute, username or client id.
fn expand(filter: &str, req: &TopicRequest) -> Option<String> {
    let mut out = String::with_capacity(filter.len());
    let mut rest = filter;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 1..end];
        let value = match name {
            "username" => req.client.identity()?.to_owned(),
            "client_id" => req.client.client_id.clone(),
            attr => req.client.attributes.get(attr)?.clone(),
        };
        // A value with wildcards or separators could widen the rule: refuse it.
        if value.is_empty() || value.contains(['+', '#', '/']) {
            return None;
        }
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_is_strict() {
        assert!(covers("a/#", "a/#"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
    }

    #[test]
    fn expansion_refuses_wildcards() {
        let mut client = tandem_plugin::Client::new("c1");
        client.attributes.insert("tenant".into(), "acme".into());
        let req = TopicRequest::new(Action::Publish, "x", client.clone());
        assert_eq!(expand("t/{tenant}/#", &req).as_deref(), Some("t/acme/#"));
        assert_eq!(expand("t/{missing}", &req), None);
        client.attributes.insert("tenant".into(), "#".into());
        let req = TopicRequest::new(Action::Publish, "x", client);
        assert_eq!(expand("t/{tenant}", &req), None);
    }
}
