//! Who may connect: the `clients` entries, matched in order against the certificate (first
//! match wins), and the identity and attributes the matching entry gives the client.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::cert::{Certificate, San};
use crate::glob::{glob_matches, glob_matches_ignore_case};
use crate::template::Template;

/// Placeholders of identities and attribute values (`san` only with a `san` matcher).
const PLACEHOLDERS: &[&str] = &[
    "cn",
    "subject",
    "fingerprint",
    "san",
    "san_dns",
    "san_uri",
    "san_email",
    "san_ip",
];

/// One `clients` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientSpec {
    #[serde(rename = "match")]
    matcher: MatchSpec,
    /// The identity template; `{cn}` when absent (Mosquitto's `use_identity_as_username`).
    identity: Option<String>,
    /// Session attributes (values are templates too).
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// The `match` of an entry as written: every key given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchSpec {
    /// `true`: every certificate (that chained to the listener's CA). Alone.
    #[serde(default)]
    any: bool,
    /// Glob on the subject's common name.
    common_name: Option<String>,
    /// The whole subject, exactly as the broker writes it (RFC 4514).
    subject: Option<String>,
    /// `type:glob` on one subject alternative name (`ip:` takes an address, no glob).
    san: Option<String>,
    /// The SHA-256 fingerprint of the certificate, hex (case and `:` separators ignored).
    fingerprint: Option<String>,
    /// The broker listener the client came in on, exactly: whose `tls.client_ca` vouched
    /// for the certificate. Narrows the other keys (or `any: true`); never alone.
    listener: Option<String>,
}

/// A `san` matcher, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SanPattern {
    /// Case-insensitive glob on DNS names.
    Dns(String),
    Ip(IpAddr),
    /// Case-sensitive glob on URIs.
    Uri(String),
    /// Case-insensitive glob on email addresses.
    Email(String),
}

impl SanPattern {
    fn parse(text: &str) -> Result<SanPattern, String> {
        let (kind, pattern) = text.split_once(':').ok_or_else(|| {
            format!("`{text}`: give a type, as in `dns:{text}` (dns, ip, uri or email)")
        })?;
        if pattern.is_empty() {
            return Err(format!("`{text}`: nothing after `{kind}:`"));
        }
        Ok(match kind.to_ascii_lowercase().as_str() {
            "dns" => SanPattern::Dns(pattern.to_owned()),
            "uri" => SanPattern::Uri(pattern.to_owned()),
            "email" => SanPattern::Email(pattern.to_owned()),
            "ip" => SanPattern::Ip(pattern.parse().map_err(|_| {
                format!("`{text}`: `{pattern}` is not an IP address (no globs or ranges for ip:)")
            })?),
            _ => {
                return Err(format!(
                    "`{text}`: unknown type `{kind}` (dns, ip, uri or email)"
                ));
            }
        })
    }

    fn matches(&self, san: &San) -> bool {
        match (self, san) {
            (SanPattern::Dns(p), San::Dns(n)) => glob_matches_ignore_case(p, n),
            (SanPattern::Email(p), San::Email(n)) => glob_matches_ignore_case(p, n),
            (SanPattern::Uri(p), San::Uri(n)) => glob_matches(p, n),
            (SanPattern::Ip(p), San::Ip(ip)) => p == ip,
            _ => false,
        }
    }
}

/// A `match`, checked.
#[derive(Debug, Default)]
struct Matcher {
    common_name: Option<String>,
    subject: Option<String>,
    san: Option<SanPattern>,
    fingerprint: Option<String>,
    listener: Option<String>,
}

impl Matcher {
    fn from_spec(spec: MatchSpec) -> Result<Matcher, String> {
        let given = [
            spec.common_name.is_some(),
            spec.subject.is_some(),
            spec.san.is_some(),
            spec.fingerprint.is_some(),
        ];
        match (spec.any, given.iter().any(|g| *g)) {
            (true, true) => return Err("`any: true` stands alone".into()),
            (false, false) => {
                return Err(
                    "give common_name, subject, san or fingerprint (or `any: true` for every certificate)"
                        .into(),
                );
            }
            _ => {}
        }
        if let Some("") = spec.common_name.as_deref() {
            return Err("common_name is empty".into());
        }
        if let Some("") = spec.subject.as_deref() {
            return Err("subject is empty".into());
        }
        let fingerprint = match spec.fingerprint {
            None => None,
            Some(text) => {
                let hex: String = text.chars().filter(|c| *c != ':').collect();
                if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!(
                        "fingerprint `{text}` is not a SHA-256 (64 hex digits, `:` allowed)"
                    ));
                }
                Some(hex.to_ascii_lowercase())
            }
        };
        if let Some("") = spec.listener.as_deref() {
            return Err("listener is empty".into());
        }
        Ok(Matcher {
            common_name: spec.common_name,
            subject: spec.subject,
            san: spec.san.as_deref().map(SanPattern::parse).transpose()?,
            fingerprint,
            listener: spec.listener,
        })
    }

    /// `None` when the certificate does not match; else the SAN the `san` matcher took.
    fn matches<'c>(&self, cert: &'c Certificate) -> Option<Option<&'c San>> {
        if let Some(listener) = &self.listener
            && *listener != cert.listener
        {
            return None;
        }
        if let Some(glob) = &self.common_name
            && !cert
                .common_name
                .as_deref()
                .is_some_and(|cn| glob_matches(glob, cn))
        {
            return None;
        }
        if let Some(subject) = &self.subject
            && cert.subject.as_deref() != Some(subject.as_str())
        {
            return None;
        }
        if let Some(fingerprint) = &self.fingerprint
            && *fingerprint != cert.fingerprint
        {
            return None;
        }
        match &self.san {
            None => Some(None),
            Some(pattern) => cert.sans.iter().find(|s| pattern.matches(s)).map(Some),
        }
    }
}

/// A `clients` entry, checked.
#[derive(Debug)]
pub(crate) struct ClientRule {
    matcher: Matcher,
    identity: Template,
    attributes: Vec<(String, Template)>,
}

impl ClientRule {
    pub(crate) fn from_spec(spec: ClientSpec) -> Result<ClientRule, (&'static str, String)> {
        let matcher = Matcher::from_spec(spec.matcher).map_err(|e| ("match", e))?;
        let source = spec.identity.as_deref().unwrap_or("{cn}");
        if source.is_empty() {
            return Err(("identity", "is empty (leave it out for `{cn}`)".into()));
        }
        let identity = Template::parse(source, PLACEHOLDERS).map_err(|e| ("identity", e))?;
        let mut attributes = Vec::with_capacity(spec.attributes.len());
        for (name, value) in spec.attributes {
            if name.is_empty() {
                return Err(("attributes", "an attribute name is empty".into()));
            }
            let template = Template::parse(&value, PLACEHOLDERS)
                .map_err(|e| ("attributes", format!("{name}: {e}")))?;
            attributes.push((name, template));
        }
        let uses_san = identity.uses("san") || attributes.iter().any(|(_, t)| t.uses("san"));
        if uses_san && matcher.san.is_none() {
            return Err((
                "identity",
                "`{san}` is the SAN the `san` matcher took: add `san:` to `match`, or use {san_dns}, {san_uri}, {san_email}, {san_ip}".into(),
            ));
        }
        Ok(ClientRule {
            matcher,
            identity,
            attributes,
        })
    }
}

/// What the `clients` entries say about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Connect {
    /// Entry `rule` (from 0) matched.
    Allow {
        rule: usize,
        identity: String,
        attributes: Vec<(String, String)>,
    },
    /// Entry `rule` matched but cannot give an identity (the reason is for the log).
    Deny { rule: usize, reason: String },
    /// No entry matched.
    Unmatched,
}

/// The value of a placeholder for `cert`, the SAN `matched` by the entry's `san` matcher.
fn placeholder(name: &str, cert: &Certificate, matched: Option<&San>) -> Option<String> {
    let first = |want: fn(&San) -> bool| cert.sans.iter().find(|s| want(s)).map(San::value);
    match name {
        "cn" => cert.common_name.clone(),
        "subject" => cert.subject.clone(),
        "fingerprint" => Some(cert.fingerprint.clone()),
        "san" => matched.map(San::value),
        "san_dns" => cert.first_dns().map(str::to_owned),
        "san_uri" => first(|s| matches!(s, San::Uri(_))),
        "san_email" => first(|s| matches!(s, San::Email(_))),
        "san_ip" => first(|s| matches!(s, San::Ip(_))),
        _ => None,
    }
}

/// The first entry of `rules` that matches `cert`, and what it gives.
pub(crate) fn decide(rules: &[ClientRule], cert: &Certificate) -> Connect {
    let Some((rule, entry, matched)) = rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| r.matcher.matches(cert).map(|m| (i, r, m)))
    else {
        return Connect::Unmatched;
    };
    let value = |name: &str| placeholder(name, cert, matched);
    let identity = match entry.identity.expand(value) {
        Ok(identity) => identity,
        Err(missing) => {
            return Connect::Deny {
                rule,
                reason: format!(
                    "clients[{rule}] matched, but its identity `{}` needs `{{{missing}}}`, which this certificate has none of",
                    entry.identity
                ),
            };
        }
    };
    if identity.is_empty() || identity.chars().any(char::is_control) {
        return Connect::Deny {
            rule,
            reason: format!(
                "clients[{rule}] matched, but its identity `{}` gives {identity:?}: empty or with control characters",
                entry.identity
            ),
        };
    }
    let mut attributes = Vec::with_capacity(entry.attributes.len());
    for (name, template) in &entry.attributes {
        match template.expand(value) {
            Ok(v) => attributes.push((name.clone(), v)),
            Err(missing) => {
                return Connect::Deny {
                    rule,
                    reason: format!(
                        "clients[{rule}] matched, but its attribute {name} needs `{{{missing}}}`, which this certificate has none of"
                    ),
                };
            }
        }
    }
    Connect::Allow {
        rule,
        identity,
        attributes,
    }
}
