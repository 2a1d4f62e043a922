//! What an identity may do with topics: the `acl` entries, keyed on the established identity
//! (a glob), with topic filters that may name the identity (`{identity}`).
//!
//! Every entry whose `identity` glob matches contributes its filters. Publish and receive are
//! allowed when one of them matches the topic; a subscription when one of them covers the whole
//! requested filter (every topic it can match), so `devices/{identity}/#` grants
//! `devices/d1/+/x` but not `devices/+/x` or `#`. `receive` defaults to the entry's `subscribe`.

use serde::Deserialize;
use tandem_plugin::Action;
use tandem_plugin::filter::{filter_covers, topic_matches};

use crate::glob::glob_matches;
use crate::template::Template;

/// One `acl` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclSpec {
    /// Glob on the established identity.
    identity: String,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    /// Absent: the `subscribe` filters.
    receive: Option<Vec<String>>,
}

/// A filter of an entry: valid MQTT once `{identity}` is replaced.
#[derive(Debug, Clone)]
struct Pattern(Template);

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let template = Template::parse(text, &["identity"])?;
        // Checked with the placeholder as a plain level fragment.
        validate_filter(&template.with_placeholders_as("x"))
            .map_err(|err| format!("invalid filter `{text}`: {err}"))?;
        Ok(Pattern(template))
    }

    /// The filter for `identity`; `None` when the identity cannot be put in a filter without
    /// changing its meaning: with `/`, `+`, `#` or NUL it would reach other levels or become a
    /// wildcard, and a leading `$` at the start of a filter would reach `$SYS`-like topics
    /// that wildcards keep out. Such a filter matches nothing.
    fn expand(&self, identity: &str) -> Option<String> {
        if identity.is_empty() || identity.contains(['/', '+', '#', '\0']) {
            return None;
        }
        let filter = self.0.expand(|_| Some(identity.to_owned())).ok()?;
        if filter.starts_with('$') && !self.0.to_string().starts_with('$') {
            return None;
        }
        Some(filter)
    }
}

/// An `acl` entry, checked.
#[derive(Debug)]
pub(crate) struct AclRule {
    identity: String,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    receive: Option<Vec<Pattern>>,
}

impl AclRule {
    pub(crate) fn from_spec(spec: AclSpec) -> Result<AclRule, (String, String)> {
        if spec.identity.is_empty() {
            return Err((
                "identity".into(),
                "is empty (`*` for every identity)".into(),
            ));
        }
        let list = |name: &str, filters: &[String]| {
            filters
                .iter()
                .enumerate()
                .map(|(i, f)| Pattern::parse(f).map_err(|e| (format!("{name}[{i}]"), e)))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(AclRule {
            publish: list("publish", &spec.publish)?,
            subscribe: list("subscribe", &spec.subscribe)?,
            receive: spec
                .receive
                .as_deref()
                .map(|r| list("receive", r))
                .transpose()?,
            identity: spec.identity,
        })
    }

    fn patterns(&self, action: Action) -> &[Pattern] {
        match action {
            Action::Publish => &self.publish,
            Action::Subscribe => &self.subscribe,
            Action::Receive => self.receive.as_deref().unwrap_or(&self.subscribe),
        }
    }

    /// The number of filters, for the load log.
    pub(crate) fn filters(&self) -> usize {
        self.publish.len() + self.subscribe.len() + self.receive.as_ref().map_or(0, Vec::len)
    }
}

/// What the `acl` entries say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    Allow,
    /// Denied, with the reason for the broker's log.
    Deny(String),
    /// No entry names this identity (or the client has none).
    Unmatched,
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Receive => "receive",
    }
}

/// Decides on `identity` doing `action` on `topic` (a filter for subscribe).
pub(crate) fn decide(
    rules: &[AclRule],
    action: Action,
    identity: Option<&str>,
    topic: &str,
) -> Access {
    let name = action_name(action);
    let valid = match action {
        Action::Subscribe => validate_filter(topic),
        Action::Publish | Action::Receive => validate_topic(topic),
    };
    if let Err(err) = valid {
        return Access::Deny(format!("invalid {name} topic `{topic}`: {err}"));
    }
    let Some(identity) = identity else {
        return Access::Unmatched;
    };
    let mut named = rules
        .iter()
        .filter(|r| glob_matches(&r.identity, identity))
        .peekable();
    if named.peek().is_none() {
        return Access::Unmatched;
    }
    let hits = |filter: &str| match action {
        Action::Subscribe => filter_covers(filter, topic),
        Action::Publish | Action::Receive => topic_matches(filter, topic),
    };
    let allowed = named
        .flat_map(|r| r.patterns(action))
        .filter_map(|p| p.expand(identity))
        .any(|f| hits(&f));
    if allowed {
        Access::Allow
    } else {
        Access::Deny(format!(
            "no acl entry of `{identity}` allows {name} on `{topic}`"
        ))
    }
}

/// Checks that `filter` is a valid MQTT topic filter.
pub(crate) fn validate_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("it is empty");
    }
    if filter.contains('\0') {
        return Err("it contains a NUL character");
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err("`#` must be alone on the last level (as in `a/#`)");
        }
        if level.contains('+') && level != "+" {
            return Err("`+` must be alone on its level (as in `a/+/c`)");
        }
    }
    Ok(())
}

/// Checks that `topic` is a valid MQTT topic name (what is published or received).
fn validate_topic(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("it is empty");
    }
    if topic.contains('\0') {
        return Err("it contains a NUL character");
    }
    if topic.contains(['+', '#']) {
        return Err("a topic name cannot contain `+` or `#`");
    }
    Ok(())
}
