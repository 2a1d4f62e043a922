//! The plugin's configuration: the `config:` section of the broker's YAML, checked and its keys
//! loaded while the broker's `Describe` is answered, so a bad setting or an unreadable key file
//! stops the broker's start-up with the message (fail closed) instead of denying everyone later.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use crate::attributes::ATTRIBUTE_PREFIX;
use crate::keys::{JwksSource, KeyStore};

/// What the plugin answers for a password that is not shaped like a JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NonJwt {
    /// Refuse the connection (the default: the password was meant for this plugin).
    Deny,
    /// No opinion, so a password plugin later in the chain can decide.
    Abstain,
}

/// The YAML as written; [`Config`] is what it becomes once checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// Accepted `alg` values. Required: a verifier must never take the algorithm from the token.
    algorithms: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "five_minutes", with = "humantime_serde")]
    jwks_refresh: Duration,
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    jwks_min_refresh: Duration,
    #[serde(default = "five_seconds", with = "humantime_serde")]
    jwks_timeout: Duration,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    leeway: Duration,
    #[serde(default = "yes")]
    require_exp: bool,
    #[serde(default = "sub")]
    username_claim: String,
    #[serde(default)]
    require_username_match: bool,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    publish_claim: Option<String>,
    #[serde(default)]
    subscribe_claim: Option<String>,
    #[serde(default)]
    receive_claim: Option<String>,
    #[serde(default = "deny")]
    non_jwt_password: NonJwt,
    #[serde(default = "thirty_thousand")]
    cache_ttl_ms: u64,
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn yes() -> bool {
    true
}
fn sub() -> String {
    "sub".into()
}
fn deny() -> NonJwt {
    NonJwt::Deny
}
fn thirty_thousand() -> u64 {
    30_000
}

/// The claims that carry topic filter lists, per action (aMQTT's `*_claim` settings).
#[derive(Debug, Default, Clone)]
pub(crate) struct TopicClaims {
    pub(crate) publish: Option<String>,
    pub(crate) subscribe: Option<String>,
    pub(crate) receive: Option<String>,
}

/// The checked configuration, with its keys loaded. One per `Describe`: the SDK deserializes it
/// once and hands the same `Arc` to every call, so the key store (and its refresh task) lives
/// exactly as long as this configuration is current.
#[derive(Debug, Deserialize)]
#[serde(try_from = "Raw")]
pub(crate) struct Config {
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) keys: Arc<KeyStore>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    require_exp: bool,
    pub(crate) username_claim: String,
    pub(crate) require_username_match: bool,
    /// Session attribute name <- claim name (or JSON pointer when it starts with `/`).
    pub(crate) attributes: BTreeMap<String, String>,
    pub(crate) topic_claims: TopicClaims,
    pub(crate) non_jwt_password: NonJwt,
    pub(crate) cache_ttl: Duration,
}

impl Config {
    /// The checks `jsonwebtoken` applies to a token signed with `alg` (already known allowed).
    pub(crate) fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        if self.require_exp {
            v.required_spec_claims.insert("exp".into());
        } else {
            v.validate_exp = false;
        }
        // Checked when set, and then required: a token without `iss` does not pass an issuer check.
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        v
    }

    /// The clock-skew allowance, also applied to `exp` in the topic checks.
    pub(crate) fn leeway(&self) -> Duration {
        self.leeway
    }
}

impl TryFrom<Raw> for Config {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Self, String> {
        let algorithms = parse_algorithms(&raw.algorithms)?;
        let wants_hmac = algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac);
        let wants_public = algorithms
            .iter()
            .any(|a| a.family() != AlgorithmFamily::Hmac);

        let secret = match (raw.secret, raw.secret_file) {
            (Some(_), Some(_)) => return Err("set `secret` or `secret_file`, not both".into()),
            (Some(s), None) => Some(s.into_bytes()),
            (None, Some(path)) => Some(read_secret(&path)?),
            (None, None) => None,
        };
        if let Some(s) = &secret
            && s.is_empty()
        {
            return Err("the HMAC secret is empty".into());
        }
        match (wants_hmac, secret.is_some()) {
            (true, false) => {
                return Err(
                    "an HS* algorithm is allowed but no `secret` or `secret_file` is set".into(),
                );
            }
            (false, true) => {
                return Err(
                    "`secret`/`secret_file` is set but no HS* algorithm is in `algorithms`".into(),
                );
            }
            _ => {}
        }

        let source = match (raw.jwks_file, raw.jwks_url) {
            (Some(_), Some(_)) => return Err("set `jwks_file` or `jwks_url`, not both".into()),
            (Some(path), None) => Some(JwksSource::File(path)),
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "jwks_url {url:?} must start with http:// or https://"
                    ));
                }
                Some(JwksSource::Url(url))
            }
            (None, None) => None,
        };
        match (wants_public, source.is_some()) {
            (true, false) => {
                return Err(
                    "an RS*/PS*/ES*/EdDSA algorithm is allowed but no `jwks_file` or `jwks_url` is set"
                        .into(),
                );
            }
            (false, true) => {
                return Err(
                    "`jwks_file`/`jwks_url` is set but only HS* algorithms are in `algorithms`"
                        .into(),
                );
            }
            _ => {}
        }
        if raw.jwks_refresh < Duration::from_secs(1) {
            return Err("jwks_refresh must be at least 1s".into());
        }

        for (attr, claim) in &raw.attributes {
            if attr.starts_with(ATTRIBUTE_PREFIX) {
                return Err(format!(
                    "attribute {attr:?}: names starting with {ATTRIBUTE_PREFIX:?} are the plugin's own"
                ));
            }
            if attr.is_empty() || claim.is_empty() {
                return Err(format!(
                    "attributes: empty name or claim in {attr:?}: {claim:?}"
                ));
            }
        }
        if raw.username_claim.is_empty() {
            return Err("username_claim is empty".into());
        }

        let keys = KeyStore::load(
            secret.as_deref().map(DecodingKey::from_secret),
            source,
            raw.jwks_refresh,
            raw.jwks_min_refresh,
            raw.jwks_timeout,
        )?;
        Ok(Config {
            algorithms,
            keys,
            issuer: raw.issuer,
            audience: raw.audience,
            leeway: raw.leeway,
            require_exp: raw.require_exp,
            username_claim: raw.username_claim,
            require_username_match: raw.require_username_match,
            attributes: raw.attributes,
            topic_claims: TopicClaims {
                publish: raw.publish_claim,
                subscribe: raw.subscribe_claim,
                receive: raw.receive_claim,
            },
            non_jwt_password: raw.non_jwt_password,
            cache_ttl: Duration::from_millis(raw.cache_ttl_ms),
        })
    }
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    if names.is_empty() {
        return Err("algorithms: list at least one (for example [RS256, ES256])".into());
    }
    names
        .iter()
        .map(|name| {
            if name.eq_ignore_ascii_case("none") {
                return Err("algorithms: `none` (unsigned tokens) is never accepted".to_string());
            }
            Algorithm::from_str(name).map_err(|_| {
                format!(
                    "algorithms: unknown algorithm {name:?} (known: HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA)"
                )
            })
        })
        .collect()
}

/// Reads an HMAC secret file; one trailing newline (as editors and `echo` add) is not part of it.
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("secret_file {}: cannot read: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: serde_json::Value) -> Result<Config, String> {
        serde_json::from_value::<Config>(value).map_err(|e| e.to_string())
    }

    #[test]
    fn settings_are_checked_together() {
        let ok = parse(serde_json::json!({"algorithms": ["HS256"], "secret": "s"})).unwrap();
        assert_eq!(ok.algorithms, [Algorithm::HS256]);
        assert_eq!(ok.cache_ttl, Duration::from_secs(30));

        let cases = [
            (serde_json::json!({"algorithms": []}), "list at least one"),
            (
                serde_json::json!({"algorithms": ["none"], "secret": "s"}),
                "`none`",
            ),
            (
                serde_json::json!({"algorithms": ["HS999"], "secret": "s"}),
                "unknown algorithm",
            ),
            (serde_json::json!({"algorithms": ["HS256"]}), "no `secret`"),
            (
                serde_json::json!({"algorithms": ["RS256"]}),
                "no `jwks_file`",
            ),
            (
                serde_json::json!({"algorithms": ["RS256"], "secret": "s"}),
                "no HS* algorithm",
            ),
            (
                serde_json::json!({"algorithms": ["ES256"], "jwks_url": "ftp://x"}),
                "must start with http",
            ),
            (
                serde_json::json!({"algorithms": ["HS256"], "secret": "s", "secret_file": "/x"}),
                "not both",
            ),
            (
                serde_json::json!({"algorithms": ["HS256"], "secret": "s", "attributes": {"jwt.x": "y"}}),
                "plugin's own",
            ),
            (
                serde_json::json!({"algorithms": ["HS256"], "secret": "s", "leeway": "soon"}),
                "expected a duration",
            ),
            (
                serde_json::json!({"algorithms": ["HS256"], "secret": "s", "colour": 1}),
                "unknown field",
            ),
        ];
        for (value, needle) in cases {
            let err = parse(value.clone()).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
    }

    #[test]
    fn unreadable_key_files_fail_the_configuration() {
        let err = parse(
            serde_json::json!({"algorithms": ["HS256"], "secret_file": "/nonexistent/jwt.key"}),
        )
        .unwrap_err();
        assert!(
            err.contains("secret_file /nonexistent/jwt.key: cannot read"),
            "{err}"
        );
        let err = parse(
            serde_json::json!({"algorithms": ["ES256"], "jwks_file": "/nonexistent/jwks.json"}),
        )
        .unwrap_err();
        assert!(
            err.contains("jwks_file /nonexistent/jwks.json: cannot read"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, "{\"keys\": 3}").unwrap();
        let err =
            parse(serde_json::json!({"algorithms": ["ES256"], "jwks_file": path})).unwrap_err();
        assert!(err.contains("not a JWK set"), "{err}");

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let config =
            parse(serde_json::json!({"algorithms": ["HS256"], "secret_file": secret})).unwrap();
        assert!(config.keys.secret().is_some());
    }
}
