//! Verification keys: the HMAC secret, and public keys from a JWK set (a file or an HTTP URL)
//! reloaded periodically, keeping the last good set when a reload fails.
//!
//! A `jwks_file` is read while the configuration is checked, so an unreadable or unusable file
//! fails the broker's `Describe`. A `jwks_url` is fetched in the background right after (the
//! broker's start-up does not depend on the issuer being up); until a fetch succeeds, tokens
//! needing it are denied. A token naming a `kid` the set lacks triggers one early reload, at
//! most every `jwks_min_refresh`, so a key rotation is picked up without waiting a full period.

use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Header};
use tracing::{info, warn};

/// Largest JWK set accepted from a URL.
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// Where the JWK set comes from.
#[derive(Debug, Clone)]
pub(crate) enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(p) => write!(f, "jwks_file {}", p.display()),
            JwksSource::Url(u) => write!(f, "jwks_url {u}"),
        }
    }
}

/// One usable public key of the set.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    /// The `alg` the JWK pins, if any; the token's `alg` must then be this one.
    alg: Option<Algorithm>,
    family: AlgorithmFamily,
    pub(crate) key: DecodingKey,
}

/// The keys of the last good load.
#[derive(Default)]
struct KeySet {
    keys: Vec<Arc<Key>>,
    loaded: bool,
}

/// The JWK set and its reloading.
struct Jwks {
    source: JwksSource,
    /// A std lock: held only to clone or swap the `Arc`.
    current: RwLock<Arc<KeySet>>,
    /// When the last load was attempted; serialises loads.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    min_refresh: Duration,
    timeout: Duration,
}

/// All verification keys of one configuration.
pub(crate) struct KeyStore {
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("jwks", &self.jwks.as_ref().map(|j| j.source.to_string()))
            .finish()
    }
}

/// Why the key for a token could not be found.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("no HMAC secret is configured")]
    NoSecret,
    #[error("no JWK set is configured")]
    NoJwks,
    #[error("the JWK set from {0} has not been loaded yet")]
    NotLoaded(String),
    #[error("no key in the JWK set matches kid {kid:?} and alg {alg:?}")]
    Unknown { kid: Option<String>, alg: Algorithm },
}

impl KeyStore {
    /// Builds the store; reads a `jwks_file` now and starts the periodic reload (when called
    /// inside a tokio runtime, as in `Describe`).
    pub(crate) fn load(
        secret: Option<DecodingKey>,
        source: Option<JwksSource>,
        refresh: Duration,
        min_refresh: Duration,
        timeout: Duration,
    ) -> Result<Arc<KeyStore>, String> {
        let jwks = match source {
            None => None,
            Some(source) => {
                let initial = match &source {
                    JwksSource::File(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            format!("jwks_file {}: cannot read: {e}", path.display())
                        })?;
                        let set = parse_jwks(&text)
                            .map_err(|e| format!("jwks_file {}: {e}", path.display()))?;
                        info!(source = %source, keys = set.keys.len(), "JWK set loaded");
                        set
                    }
                    JwksSource::Url(_) => KeySet::default(),
                };
                Some(Jwks {
                    source,
                    current: RwLock::new(Arc::new(initial)),
                    last_attempt: tokio::sync::Mutex::new(None),
                    min_refresh,
                    timeout,
                })
            }
        };
        let store = Arc::new(KeyStore { secret, jwks });
        store.spawn_refresh(refresh);
        Ok(store)
    }

    /// The HMAC secret, if configured.
    pub(crate) fn secret(&self) -> Option<&DecodingKey> {
        self.secret.as_ref()
    }

    /// The public keys that may have signed a token with this header. When none matches, the set
    /// is reloaded (rate-limited) and searched once more.
    pub(crate) async fn candidates(&self, header: &Header) -> Result<Vec<Arc<Key>>, KeyError> {
        let jwks = self.jwks.as_ref().ok_or(KeyError::NoJwks)?;
        let found = jwks.matching(header);
        if !found.is_empty() {
            return Ok(found);
        }
        jwks.reload_if_due().await;
        let found = jwks.matching(header);
        if !found.is_empty() {
            return Ok(found);
        }
        if !jwks.snapshot().loaded {
            return Err(KeyError::NotLoaded(jwks.source.to_string()));
        }
        Err(KeyError::Unknown {
            kid: header.kid.clone(),
            alg: header.alg,
        })
    }

    /// Reloads the JWK set every `period` while this store is alive (it holds only a weak
    /// reference, so a new `Describe` replacing the configuration ends the task).
    fn spawn_refresh(self: &Arc<Self>, period: Duration) {
        let Some(jwks) = &self.jwks else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A file was just read; a URL is fetched at once.
        let mut wait = match jwks.source {
            JwksSource::File(_) => period,
            JwksSource::Url(_) => Duration::ZERO,
        };
        let weak: Weak<KeyStore> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                wait = period;
                let Some(store) = weak.upgrade() else { return };
                if let Some(jwks) = &store.jwks {
                    jwks.reload().await;
                }
            }
        });
    }
}

impl Jwks {
    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn matching(&self, header: &Header) -> Vec<Arc<Key>> {
        self.snapshot()
            .keys
            .iter()
            .filter(|k| {
                k.family == header.alg.family()
                    && k.alg.is_none_or(|a| a == header.alg)
                    && (header.kid.is_none() || k.kid == header.kid)
            })
            .cloned()
            .collect()
    }

    /// Reloads unless a load was attempted less than `min_refresh` ago.
    async fn reload_if_due(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_and_swap().await;
    }

    /// Reloads now (the periodic refresh).
    async fn reload(&self) {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_swap().await;
    }

    async fn fetch_and_swap(&self) {
        let result = match &self.source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| format!("cannot read: {e}")),
            JwksSource::Url(url) => {
                let (url, timeout) = (url.clone(), self.timeout);
                tokio::task::spawn_blocking(move || fetch(&url, timeout))
                    .await
                    .unwrap_or_else(|e| Err(format!("fetch task failed: {e}")))
            }
        }
        .and_then(|text| parse_jwks(&text));
        match result {
            Ok(set) => {
                info!(source = %self.source, keys = set.keys.len(), "JWK set loaded");
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
            }
            Err(cause) => {
                warn!(source = %self.source, %cause, "JWK set reload failed; keeping the previous keys");
            }
        }
    }
}

/// GETs a JWK set (blocking; run on the blocking pool).
fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| format!("GET: {e}"))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .map_err(|e| format!("reading the body: {e}"))
}

/// Parses a JWK set, keeping the signature keys this plugin can use; fails when none is left.
fn parse_jwks(text: &str) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_str(text)
        .map_err(|e| format!("not a JWK set ({{\"keys\": [...]}}): {e}"))?;
    let mut keys = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        match usable_key(value) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(why) => warn!(index = i, %why, "JWK skipped"),
        }
    }
    if keys.is_empty() {
        return Err("the JWK set has no usable signature key (RSA, EC or OKP)".into());
    }
    Ok(KeySet { keys, loaded: true })
}

fn usable_key(value: serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key (use: enc)".into());
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        // A symmetric key published in a key set would let anyone who reads the set sign.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (oct) key".into()),
        _ => return Err("an unknown key type".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(
            Algorithm::try_from(a).map_err(|_| format!("alg {a} is not a signature algorithm"))?,
        ),
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err("its alg does not fit its key type".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(Key {
        kid: jwk.common.key_id,
        alg,
        family,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_keys_are_skipped_and_an_empty_set_is_an_error() {
        let err = parse_jwks(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
            .err()
            .unwrap();
        assert!(err.contains("no usable signature key"), "{err}");
        assert!(parse_jwks("[]").err().unwrap().contains("not a JWK set"));
    }
}
