//! The topic role: publish, subscribe and receive checked against the topic filter lists the
//! token carried (aMQTT's `publish_claim`, `subscribe_claim`, `receive_claim`).
//!
//! The lists travel from `Authenticate` to here as session attributes (`jwt.publish`,
//! `jwt.subscribe`, `jwt.receive`, each a JSON array), which the broker sends with every topic
//! check, so the token is verified once per connection, not once per message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_plugin::{Action, Context, HandlerError, TopicDecision, TopicFilter, TopicRequest};

use crate::attributes::{EXP_ATTRIBUTE, action_attribute};
use crate::config::Config;
use crate::jwt::Jwt;

impl TopicFilter for Jwt {
    async fn topic_filter(
        &self,
        ctx: &Context,
        req: TopicRequest,
    ) -> Result<TopicDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        Ok(decide(&config, &req, now()))
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The decision at time `now` (seconds since the epoch).
fn decide(config: &Config, req: &TopicRequest, now: i64) -> TopicDecision {
    let attributes = &req.client.attributes;
    let mut ttl = config.cache_ttl;
    // aMQTT decodes the token at every check, so an expired token stops working; so here.
    if let Some(exp) = attributes
        .get(EXP_ATTRIBUTE)
        .and_then(|e| e.parse::<i64>().ok())
    {
        let left = exp + config.leeway().as_secs() as i64 - now;
        if left <= 0 {
            return TopicDecision::deny("token expired");
        }
        ttl = ttl.min(Duration::from_secs(left as u64));
    }
    let name = action_attribute(req.action);
    // No list for this action (claim not configured or not in the token, or another plugin
    // authenticated the client): no opinion.
    let Some(list) = attributes.get(name) else {
        return TopicDecision::abstain().cache_for(ttl);
    };
    let Ok(filters) = serde_json::from_str::<Vec<String>>(list) else {
        return TopicDecision::deny(format!("attribute {name} is not a JSON list"));
    };
    let allowed = match req.action {
        Action::Subscribe => match strip_share(&req.topic) {
            Some(requested) => filters.iter().any(|g| covers(g, requested)),
            None => false,
        },
        Action::Publish | Action::Receive => filters.iter().any(|g| matches(g, &req.topic)),
    };
    if allowed {
        TopicDecision::allow().cache_for(ttl)
    } else {
        TopicDecision::deny(format!("{} is outside the token's {name} list", req.topic))
            .cache_for(ttl)
    }
}

/// A valid MQTT topic filter: non-empty, `#` only as the whole last level, `+` only as a whole
/// level.
pub(crate) fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['#', '+']),
    })
}

/// The filter of a shared subscription (`$share/GROUP/filter`), or the filter itself.
fn strip_share(filter: &str) -> Option<&str> {
    match filter.strip_prefix("$share/") {
        None => Some(filter),
        Some(rest) => rest
            .split_once('/')
            .map(|(_, f)| f)
            .filter(|f| !f.is_empty()),
    }
}

pub(crate) use tandem_plugin::filter::{filter_covers as covers, topic_matches as matches};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::hs_config;
    use serde_json::json;
    use tandem_plugin::{Client, Verdict};

    #[test]
    fn filter_coverage_is_a_subset_check() {
        for (g, r) in [
            ("a/#", "a/#"),
            ("a/#", "a/+/c"),
            ("a/#", "a"),
            ("#", "a/+/#"),
            ("a/+", "a/+"),
            ("a/+", "a/b"),
            ("a/+/c", "a/+/c"),
            ("+/+", "x/y"),
        ] {
            assert!(covers(g, r), "{g} should cover {r}");
        }
        for (g, r) in [
            ("a/+", "a/#"),
            ("a/b", "a/+"),
            ("a/+", "a/b/c"),
            ("a/+", "a"),
            ("a/b/#", "a/#"),
            ("a/+/c", "a/+/#"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("a", "a/b"),
        ] {
            assert!(!covers(g, r), "{g} must not cover {r}");
        }
    }

    #[test]
    fn topic_matching_and_filter_validity() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(valid_filter("a/+/#"));
        assert!(valid_filter("#"));
        for bad in ["", "a/#/b", "a+", "a/b#", "#/a"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert_eq!(strip_share("$share/g/a/b"), Some("a/b"));
        assert_eq!(strip_share("$share/g"), None);
        assert_eq!(strip_share("a/b"), Some("a/b"));
    }

    fn request(action: Action, topic: &str, attrs: &[(&str, &str)]) -> TopicRequest {
        let mut client = Client::new("c1");
        for (k, v) in attrs {
            client = client.with_attribute(*k, *v);
        }
        TopicRequest::new(action, topic, client)
    }

    #[test]
    fn decisions_follow_the_lists_and_the_expiry() {
        let config = hs_config(json!({"cache_ttl_ms": 60000}));
        let attrs = [
            ("jwt.publish", r#"["t/acme/#"]"#),
            ("jwt.subscribe", r#"["a/+", "$share/x"]"#),
            ("jwt.exp", "1000"),
        ];
        let at = |action, topic| decide(&config, &request(action, topic, &attrs), 970);
        let d = at(Action::Publish, "t/acme/x");
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(
            d.cache_ttl,
            Duration::from_secs(30),
            "capped at the token's expiry"
        );
        assert_eq!(at(Action::Publish, "t/other").verdict, Verdict::Deny);
        assert_eq!(at(Action::Subscribe, "a/b").verdict, Verdict::Allow);
        assert_eq!(
            at(Action::Subscribe, "$share/g/a/+").verdict,
            Verdict::Allow
        );
        assert_eq!(at(Action::Subscribe, "a/#").verdict, Verdict::Deny);
        assert_eq!(at(Action::Receive, "t/acme/x").verdict, Verdict::Abstain);
        let late = decide(&config, &request(Action::Publish, "t/acme/x", &attrs), 1001);
        assert_eq!(late.verdict, Verdict::Deny);
        assert_eq!(late.reason, "token expired");
        // A client some other plugin authenticated: no lists, no opinion.
        let other = decide(&config, &request(Action::Publish, "t/acme/x", &[]), 0);
        assert_eq!(other.verdict, Verdict::Abstain);
    }
}
