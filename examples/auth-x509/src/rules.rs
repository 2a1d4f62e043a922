//! The rules file: its YAML form ([`RulesSpec`]), its checked form ([`Rules`]), and how a
//! file's text becomes one, with errors that name the file and the key.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::acl::{AclRule, AclSpec};
use crate::clients::{ClientRule, ClientSpec};

/// What to answer when the rules do not decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Fallback {
    /// Deny (fail closed).
    #[default]
    Deny,
    /// No opinion (ABSTAIN): the other plugins of the chain decide.
    #[serde(alias = "abstain")]
    Ignore,
}

/// The rules file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RulesSpec {
    /// A connection without a client certificate (or without TLS).
    #[serde(default)]
    no_certificate: Fallback,
    /// A certificate that no `clients` entry matches.
    #[serde(default)]
    unmatched_certificate: Fallback,
    /// A topic check for an identity that no `acl` entry names.
    #[serde(default)]
    unmatched_identity: Fallback,
    /// How long the broker may reuse a topic decision.
    #[serde(default = "default_cache_ttl", with = "humantime_serde")]
    cache_ttl: Duration,
    #[serde(default)]
    clients: Vec<ClientSpec>,
    #[serde(default)]
    acl: Vec<AclSpec>,
}

fn default_cache_ttl() -> Duration {
    Duration::from_secs(30)
}

/// Checked rules, ready to decide.
#[derive(Debug)]
pub(crate) struct Rules {
    pub(crate) no_certificate: Fallback,
    pub(crate) unmatched_certificate: Fallback,
    pub(crate) unmatched_identity: Fallback,
    pub(crate) cache_ttl: Duration,
    pub(crate) clients: Vec<ClientRule>,
    pub(crate) acl: Vec<AclRule>,
}

impl TryFrom<RulesSpec> for Rules {
    type Error = String;

    fn try_from(spec: RulesSpec) -> Result<Rules, String> {
        if spec.clients.is_empty() && spec.acl.is_empty() {
            return Err(
                "no rules: give `clients` (who may connect) and/or `acl` (their topics)".into(),
            );
        }
        let clients = spec
            .clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                ClientRule::from_spec(c).map_err(|(key, err)| format!("clients[{i}].{key}: {err}"))
            })
            .collect::<Result<_, _>>()?;
        let acl = spec
            .acl
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                AclRule::from_spec(a).map_err(|(key, err)| format!("acl[{i}].{key}: {err}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            no_certificate: spec.no_certificate,
            unmatched_certificate: spec.unmatched_certificate,
            unmatched_identity: spec.unmatched_identity,
            cache_ttl: spec.cache_ttl,
            clients,
            acl,
        })
    }
}

impl Rules {
    /// Parses and checks a rules file's text; errors name the file and where in it.
    pub(crate) fn from_yaml(path: &Path, text: &str) -> Result<Rules, String> {
        let at = |message: String| format!("rules file {}: {message}", path.display());
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let spec: RulesSpec = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let key = err.path().to_string();
            let mut message = err.into_inner().to_string();
            // serde_yaml_ng starts with its own path (`clients[0]: unknown field ...`), which
            // the one above already gives, more precisely.
            if let Some((own, rest)) = message.split_once(": ")
                && !own.contains(' ')
                && key.starts_with(own)
            {
                message = rest.to_owned();
            }
            if key == "." {
                at(message)
            } else {
                at(format!("{key}: {message}"))
            }
        })?;
        Rules::try_from(spec).map_err(at)
    }

    /// Reads and checks a rules file given as bytes (from disk).
    pub(crate) fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Rules, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|err| format!("rules file {}: not UTF-8: {err}", path.display()))?;
        Rules::from_yaml(path, text)
    }

    /// Sizes for the log.
    pub(crate) fn summary(&self) -> String {
        format!(
            "clients={} acl={}/{} (entries/filters)",
            self.clients.len(),
            self.acl.len(),
            self.acl.iter().map(AclRule::filters).sum::<usize>()
        )
    }
}
