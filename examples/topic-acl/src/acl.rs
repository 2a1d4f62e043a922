//! The ACL: its YAML form ([`AclSpec`], the same in the ACL file and inline in the broker's
//! YAML), its checked form ([`Acl`]), and the decision for one request ([`Acl::decide`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use tandem_plugin::{Action, Client};

use crate::filter::{self, covers, matches};

/// The ACL entry used for clients that connected without a username (as in aMQTT).
pub(crate) const ANONYMOUS: &str = "anonymous";

/// A filter of an ACL rule as written: a valid MQTT filter once each `{name}` placeholder is
/// replaced (checked when parsed, so a loaded ACL holds only usable filters).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub(crate) struct Pattern {
    text: String,
    /// Whether `text` has placeholders, so most rules skip the expansion.
    templated: bool,
}

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        // Check the filter with every placeholder replaced by a plain level fragment.
        let mut plain = String::with_capacity(text.len());
        let mut rest = text.as_str();
        let mut templated = false;
        while let Some(start) = rest.find(['{', '}']) {
            if rest[start..].starts_with('}') {
                return Err(format!("invalid filter `{text}`: `}}` without `{{`"));
            }
            let end = rest[start..]
                .find('}')
                .map(|e| e + start)
                .ok_or_else(|| format!("invalid filter `{text}`: `{{` without `}}`"))?;
            let name = &rest[start + 1..end];
            if name.is_empty() || name.contains(['{', '/', '+', '#']) {
                return Err(format!(
                    "invalid filter `{text}`: `{{{name}}}` is not a placeholder (use `{{username}}`, `{{client_id}}` or `{{attribute}}`)"
                ));
            }
            plain.push_str(&rest[..start]);
            plain.push('x');
            rest = &rest[end + 1..];
            templated = true;
        }
        plain.push_str(rest);
        filter::validate_filter(&plain).map_err(|err| format!("invalid filter `{text}`: {err}"))?;
        Ok(Pattern { text, templated })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// The filter for this client: `{username}`, `{client_id}` and `{name}` (the session
    /// attribute `name`) replaced. `None` when a placeholder has no value, or a value that is
    /// empty or holds `/`, `+`, `#` or NUL (it would widen the rule): such a rule matches nothing.
    pub(crate) fn expand(&self, client: &Client) -> Option<Cow<'_, str>> {
        if !self.templated {
            return Some(Cow::Borrowed(&self.text));
        }
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}')? + start;
            let value = match &rest[start + 1..end] {
                // The established identity, not what the client typed.
                "username" => client.identity()?,
                "client_id" => client.client_id.as_str(),
                attribute => client.attributes.get(attribute)?.as_str(),
            };
            if value.is_empty() || value.contains(['/', '+', '#', '\0']) {
                return None;
            }
            out.push_str(value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Some(Cow::Owned(out))
    }
}

/// Username (or `anonymous`) to the filters of its rules.
pub(crate) type Rules = BTreeMap<String, Vec<Pattern>>;

/// The ACL as written, in the ACL file or inline in the plugin's `config:`. The `-acl` keys
/// are aMQTT's; the `-deny` keys are a Tandem extension.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AclSpec {
    /// Filters each user may subscribe to.
    #[serde(rename = "subscribe-acl")]
    pub(crate) subscribe_acl: Option<Rules>,
    /// aMQTT's older name of `subscribe-acl`.
    pub(crate) acl: Option<Rules>,
    /// Topics each user may publish to.
    #[serde(rename = "publish-acl")]
    pub(crate) publish_acl: Option<Rules>,
    /// Topics each user may receive messages from.
    #[serde(rename = "receive-acl")]
    pub(crate) receive_acl: Option<Rules>,
    /// Filters each user may not subscribe to (nor to any filter within them).
    #[serde(rename = "subscribe-deny")]
    pub(crate) subscribe_deny: Option<Rules>,
    /// Topics each user may not publish to.
    #[serde(rename = "publish-deny")]
    pub(crate) publish_deny: Option<Rules>,
    /// Topics each user may not receive from.
    #[serde(rename = "receive-deny")]
    pub(crate) receive_deny: Option<Rules>,
}

impl AclSpec {
    /// Parses an ACL file's text; errors name the file, the key path and the line.
    pub(crate) fn from_yaml(path: &Path, text: &str) -> Result<AclSpec, String> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let spec: AclSpec = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let at = err.path().to_string();
            let mut message = err.into_inner().to_string();
            // serde_yaml_ng repeats its own (index-less) path: the one above is more precise.
            let plain_path: String = at
                .split('[')
                .map(|p| p.split_once(']').map_or(p, |(_, rest)| rest))
                .collect();
            if let Some(rest) = message.strip_prefix(&format!("{plain_path}: ")) {
                message = rest.to_owned();
            }
            // Its position is that of the enclosing value for errors in an element, and missing
            // for an unknown key: find the line of the key, or of the bad filter, instead.
            if let Some(line) = locate(&plain_path, filter_in(&message), text) {
                if let Some(cut) = message.rfind(" at line ") {
                    message.truncate(cut);
                }
                message = format!("{message} (line {line})");
            }
            let at = if at == "." {
                String::new()
            } else {
                format!("{at}: ")
            };
            format!("ACL file {}: {at}{message}", path.display())
        })?;
        Ok(spec)
    }

    /// Whether no section is set at all (an ACL with no opinion on anything is a mistake).
    pub(crate) fn is_empty(&self) -> bool {
        [
            &self.subscribe_acl,
            &self.acl,
            &self.publish_acl,
            &self.receive_acl,
            &self.subscribe_deny,
            &self.publish_deny,
            &self.receive_deny,
        ]
        .iter()
        .all(|s| s.is_none())
    }
}

/// The filter named by a [`Pattern`] error (`invalid filter `...`: ...`).
fn filter_in(message: &str) -> Option<&str> {
    let rest = message.split_once("invalid filter `")?.1;
    Some(rest.split_once("`: ")?.0)
}

/// The line (from 1) of a serde path in YAML text: each key of `path` (`publish-acl.bob`) in
/// turn, then `filter`'s text after the last key. `None` when not found (unusual layouts).
fn locate(path: &str, filter: Option<&str>, text: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    // Whether `key` stands before one of the line's colons (block or flow style, quoted or not).
    let has_key = |line: &str, key: &str| {
        line.match_indices(':').any(|(i, _)| {
            let word = line[..i]
                .rsplit(['{', ',', '[', ' ', '\t'])
                .next()
                .unwrap_or("");
            word.trim_matches(['"', '\'']) == key
        })
    };
    let mut at = 0;
    for key in path.split('.').filter(|k| !k.is_empty() && *k != "?") {
        at += lines[at..].iter().position(|line| has_key(line, key))?;
    }
    if let Some(filter) = filter {
        at += lines[at..].iter().position(|line| line.contains(filter))?;
    }
    (path != ".").then_some(at + 1)
}

/// The rules of one action.
#[derive(Debug, Default)]
struct Section {
    /// `None`: the `-acl` key is absent (or null): the ACL has no opinion on this action.
    allow: Option<Rules>,
    deny: Option<Rules>,
}

/// A checked ACL, ready to decide.
#[derive(Debug)]
pub(crate) struct Acl {
    subscribe: Section,
    publish: Section,
    receive: Section,
}

/// What the ACL says about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A rule of the user grants it.
    Allow,
    /// Denied, with the reason for the broker's log.
    Deny(String),
    /// The action's `-acl` section is not configured and no `-deny` rule applies.
    Unconfigured,
}

impl TryFrom<AclSpec> for Acl {
    type Error = String;

    fn try_from(spec: AclSpec) -> Result<Acl, String> {
        if spec.acl.is_some() && spec.subscribe_acl.is_some() {
            return Err("`acl` is the old name of `subscribe-acl`; give only one of them".into());
        }
        Ok(Acl {
            subscribe: Section {
                allow: spec.subscribe_acl.or(spec.acl),
                deny: spec.subscribe_deny,
            },
            publish: Section {
                allow: spec.publish_acl,
                deny: spec.publish_deny,
            },
            receive: Section {
                allow: spec.receive_acl,
                deny: spec.receive_deny,
            },
        })
    }
}

/// The user's rules of a section: `None` when the section is not configured, empty when the
/// user has no entry.
fn rules_of<'a>(rules: &'a Option<Rules>, user: &str) -> Option<&'a [Pattern]> {
    rules
        .as_ref()
        .map(|r| r.get(user).map_or(&[][..], Vec::as_slice))
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Subscribe => "subscribe",
        Action::Publish => "publish",
        Action::Receive => "receive",
    }
}

impl Acl {
    /// Decides on `client` doing `action` on `topic` (a filter for subscribe, a topic name
    /// otherwise).
    ///
    /// A `-deny` rule of the user that matches (publish, receive) or contains the requested
    /// filter (subscribe) denies. Otherwise, with the action's `-acl` section configured, a rule
    /// of the user that matches or covers allows, and anything else denies (a user without an
    /// entry, or with an empty list, may do nothing). Without that section: [`Outcome::Unconfigured`].
    pub(crate) fn decide(&self, action: Action, client: &Client, topic: &str) -> Outcome {
        let section = match action {
            Action::Subscribe => &self.subscribe,
            Action::Publish => &self.publish,
            Action::Receive => &self.receive,
        };
        let name = action_name(action);
        let valid = match action {
            Action::Subscribe => filter::validate_filter(topic),
            Action::Publish | Action::Receive => filter::validate_topic(topic),
        };
        if let Err(err) = valid {
            return Outcome::Deny(format!("invalid {name} topic `{topic}`: {err}"));
        }
        // Rules are keyed on the identity the auth chain established (a JWT's subject, the
        // user whose password verified), which is the CONNECT username only when no auth
        // plugin set one.
        let user = client.identity().unwrap_or(ANONYMOUS);
        let hits = |rule: &str| match action {
            Action::Subscribe => covers(rule, topic),
            Action::Publish | Action::Receive => matches(rule, topic),
        };
        if let Some(deny) = rules_of(&section.deny, user)
            && let Some(rule) = deny
                .iter()
                .find(|p| p.expand(client).is_some_and(|f| hits(&f)))
        {
            return Outcome::Deny(format!("{name}-deny rule `{rule}` of `{user}`"));
        }
        let Some(allow) = rules_of(&section.allow, user) else {
            return Outcome::Unconfigured;
        };
        if allow
            .iter()
            .any(|p| p.expand(client).is_some_and(|f| hits(&f)))
        {
            Outcome::Allow
        } else if allow.is_empty() {
            Outcome::Deny(format!("no {name}-acl rules for `{user}`"))
        } else {
            Outcome::Deny(format!("no {name}-acl rule of `{user}` allows it"))
        }
    }

    /// Sizes for the log: `subscribe=3/7 publish=-` is 3 users with 7 filters, `-` unconfigured.
    pub(crate) fn summary(&self) -> String {
        fn count(rules: &Option<Rules>) -> String {
            match rules {
                None => "-".into(),
                Some(r) => format!("{}/{}", r.len(), r.values().map(Vec::len).sum::<usize>()),
            }
        }
        format!(
            "subscribe-acl={} publish-acl={} receive-acl={} subscribe-deny={} publish-deny={} receive-deny={} (users/filters)",
            count(&self.subscribe.allow),
            count(&self.publish.allow),
            count(&self.receive.allow),
            count(&self.subscribe.deny),
            count(&self.publish.deny),
            count(&self.receive.deny),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(yaml: &str) -> Acl {
        Acl::try_from(AclSpec::from_yaml(Path::new("test.yaml"), yaml).unwrap()).unwrap()
    }

    fn parse_err(yaml: &str) -> String {
        match AclSpec::from_yaml(Path::new("/etc/acl.yaml"), yaml).map(Acl::try_from) {
            Err(e) | Ok(Err(e)) => e,
            Ok(Ok(_)) => panic!("expected an error for {yaml}"),
        }
    }

    fn anon() -> Client {
        Client::new("c1")
    }

    fn user(name: &str) -> Client {
        Client::new("c1").with_username(name)
    }

    #[test]
    fn verdicts_follow_amqtt() {
        let acl = acl(r##"
subscribe-acl:
  alice: ["sensors/#", "a/+"]
  anonymous: ["public/#"]
  nobody: []
publish-acl:
  alice: ["sensors/alice/#"]
"##);
        use Action::*;
        assert_eq!(
            acl.decide(Subscribe, &user("alice"), "sensors/x/y"),
            Outcome::Allow
        );
        assert_eq!(acl.decide(Subscribe, &user("alice"), "a/b"), Outcome::Allow);
        assert_eq!(acl.decide(Subscribe, &user("alice"), "a/+"), Outcome::Allow);
        assert!(matches!(
            acl.decide(Subscribe, &user("alice"), "a/#"),
            Outcome::Deny(_)
        ));
        assert!(matches!(
            acl.decide(Subscribe, &user("alice"), "public/x"),
            Outcome::Deny(_)
        ));
        assert_eq!(acl.decide(Subscribe, &anon(), "public/x"), Outcome::Allow);
        // A user without an entry, or with an empty one, may do nothing.
        assert!(matches!(
            acl.decide(Subscribe, &user("bob"), "public/x"),
            Outcome::Deny(_)
        ));
        assert!(matches!(
            acl.decide(Subscribe, &user("nobody"), "a"),
            Outcome::Deny(_)
        ));
        assert_eq!(
            acl.decide(Publish, &user("alice"), "sensors/alice/t"),
            Outcome::Allow
        );
        assert!(matches!(
            acl.decide(Publish, &user("alice"), "sensors/bob/t"),
            Outcome::Deny(_)
        ));
        assert!(matches!(
            acl.decide(Publish, &anon(), "public/x"),
            Outcome::Deny(_)
        ));
        // No receive-acl: no opinion.
        assert_eq!(
            acl.decide(Receive, &user("alice"), "anything"),
            Outcome::Unconfigured
        );
        // Malformed requests are denied, not matched.
        assert!(matches!(
            acl.decide(Publish, &user("alice"), "sensors/alice/+"),
            Outcome::Deny(_)
        ));
        assert!(matches!(
            acl.decide(Subscribe, &user("alice"), "sensors/#/x"),
            Outcome::Deny(_)
        ));
    }

    #[test]
    fn deny_rules_win_and_cover_only_contained_filters() {
        let acl = acl(r##"
subscribe-acl: { anonymous: ["#"] }
subscribe-deny: { anonymous: ["test/nosubscribe"] }
receive-deny: { anonymous: ["secret/#"] }
"##);
        use Action::*;
        assert!(matches!(
            acl.decide(Subscribe, &anon(), "test/nosubscribe"),
            Outcome::Deny(_)
        ));
        for granted in ["#", "+/+", "/#", "TopicA/+", "test/+", "test/nosubscribe/x"] {
            assert_eq!(
                acl.decide(Subscribe, &anon(), granted),
                Outcome::Allow,
                "{granted}"
            );
        }
        assert!(matches!(
            acl.decide(Subscribe, &anon(), "$SYS/#"),
            Outcome::Deny(_)
        ));
        assert!(matches!(
            acl.decide(Receive, &anon(), "secret/a"),
            Outcome::Deny(_)
        ));
        assert_eq!(
            acl.decide(Receive, &anon(), "public"),
            Outcome::Unconfigured
        );
    }

    #[test]
    fn placeholders_expand_or_match_nothing() {
        let acl = acl(r##"
publish-acl:
  alice: ["tenants/{tenant}/{username}/#", "devices/{client_id}"]
"##);
        let alice = user("alice").with_attribute("tenant", "acme");
        assert_eq!(
            acl.decide(Action::Publish, &alice, "tenants/acme/alice/x"),
            Outcome::Allow
        );
        assert_eq!(
            acl.decide(Action::Publish, &alice, "devices/c1"),
            Outcome::Allow
        );
        assert!(matches!(
            acl.decide(Action::Publish, &alice, "tenants/other/alice/x"),
            Outcome::Deny(_)
        ));
        // No attribute: that rule matches nothing (the other one still applies).
        assert!(matches!(
            acl.decide(Action::Publish, &user("alice"), "tenants/x/alice/y"),
            Outcome::Deny(_)
        ));
        // An attribute value with a wildcard does not widen the rule.
        let sly = user("alice").with_attribute("tenant", "#");
        assert!(matches!(
            acl.decide(Action::Publish, &sly, "tenants/#/alice/x"),
            Outcome::Deny(_)
        ));
    }

    #[test]
    fn bad_acls_are_clear_errors() {
        let err = parse_err("subscribe-acl:\n  alice: [\"ok/#\", \"a/#/b\"]\n");
        assert!(err.contains("/etc/acl.yaml"), "{err}");
        assert!(err.contains("subscribe-acl.alice[1]"), "{err}");
        assert!(err.contains("`a/#/b`") && err.contains("(line 2)"), "{err}");
        let err =
            parse_err("# comment\nsubscribe-acl:\n  alice:\n    - ok/#\n    - a/#/b\n  bob: [x]\n");
        assert!(
            err.contains("subscribe-acl.alice[1]: invalid filter `a/#/b`"),
            "{err}"
        );
        assert!(err.contains("(line 5)"), "{err}");
        let err = parse_err("publish-acl:\n  bob: [\"a+\"]\n");
        assert!(
            err.contains("publish-acl.bob[0]") && err.contains("`+` must be alone"),
            "{err}"
        );
        let err = parse_err("publish-acl:\n  bob: [\"\"]\n");
        assert!(err.contains("it is empty"), "{err}");
        let err = parse_err("publish_acl:\n  bob: [x]\n");
        assert!(
            err.contains("unknown field `publish_acl`") && err.contains("(line 1)"),
            "{err}"
        );
        let err = parse_err("publish-acl:\n  bob: x\n");
        assert!(
            err.contains("publish-acl.bob") && err.contains("(line 2)"),
            "{err}"
        );
        let err = parse_err("publish-acl: { malice: [ok], \"alice\": [ok, \"x+\"] }\n");
        assert!(
            err.contains("publish-acl.alice[1]") && err.contains("(line 1)"),
            "{err}"
        );
        let err = parse_err("acl: { a: [x] }\nsubscribe-acl: { a: [x] }\n");
        assert!(err.contains("only one"), "{err}");
        let err = parse_err("publish-acl: { a: [\"x/{tenant\"] }\n");
        assert!(err.contains("without `}`"), "{err}");
        let err = parse_err("publish-acl: { a: [\"x/{}\"] }\n");
        assert!(err.contains("not a placeholder"), "{err}");
        let err = parse_err("publish-acl: [\n");
        assert!(err.contains("/etc/acl.yaml"), "{err}");
    }

    #[test]
    fn acl_is_the_old_name_of_subscribe_acl() {
        let acl = acl("acl: { anonymous: [\"a/#\"] }\n");
        assert_eq!(
            acl.decide(Action::Subscribe, &anon(), "a/b"),
            Outcome::Allow
        );
        assert_eq!(
            acl.decide(Action::Publish, &anon(), "a/b"),
            Outcome::Unconfigured
        );
        assert!(acl.summary().contains("subscribe-acl=1/1 publish-acl=-"));
    }
}
