//! Token verification: signature with the key the configuration allows for the token's
//! algorithm, then `exp`, `nbf`, `iss` and `aud`. Every failure has a reason for the log.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, decode, decode_header};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::keys::KeyError;

/// The verified claims.
pub(crate) type Claims = Map<String, Value>;

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Rejected {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid (nbf)")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("required claim {0} is missing")]
    MissingClaim(String),
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Whether `password` has the shape of a compact JWS (three dot-separated parts).
pub(crate) fn looks_like_jwt(password: &str) -> bool {
    password.split('.').count() == 3 && !password.contains(char::is_whitespace)
}

/// Verifies `token` and returns its claims.
pub(crate) async fn verify(token: &str, config: &Config) -> Result<Claims, Rejected> {
    let header = decode_header(token).map_err(|e| header_error(token, e))?;
    // The accepted algorithms come from the configuration, never from the token.
    if !config.algorithms.contains(&header.alg) {
        return Err(Rejected::Algorithm(format!("{:?}", header.alg)));
    }
    let validation = config.validation(header.alg);
    let check = |key: &DecodingKey| decode::<Claims>(token, key, &validation).map(|d| d.claims);
    if header.alg.family() == AlgorithmFamily::Hmac {
        let key = config.keys.secret().ok_or(KeyError::NoSecret)?;
        return check(key).map_err(rejected);
    }
    // Several keys may fit a token without `kid`: the first that verifies wins.
    let mut last = Rejected::Signature;
    for key in config.keys.candidates(&header).await? {
        match check(&key.key) {
            Ok(claims) => return Ok(claims),
            Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => last = rejected(e),
            Err(e) => return Err(rejected(e)),
        }
    }
    Err(last)
}

fn rejected(err: jsonwebtoken::errors::Error) -> Rejected {
    match err.into_kind() {
        ErrorKind::InvalidSignature => Rejected::Signature,
        ErrorKind::ExpiredSignature => Rejected::Expired,
        ErrorKind::ImmatureSignature => Rejected::NotYetValid,
        ErrorKind::InvalidIssuer => Rejected::Issuer,
        ErrorKind::InvalidAudience => Rejected::Audience,
        ErrorKind::MissingRequiredClaim(c) => Rejected::MissingClaim(c),
        ErrorKind::InvalidAlgorithm => Rejected::Algorithm("mismatch with the key".into()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => Rejected::Malformed("cannot decode it".into()),
        other => Rejected::Invalid(format!("{other:?}")),
    }
}

/// A header `jsonwebtoken` cannot read: say so, naming an algorithm it does not know (`none`).
fn header_error(token: &str, err: jsonwebtoken::errors::Error) -> Rejected {
    let alg = token
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_owned));
    match alg {
        Some(alg) if alg.parse::<Algorithm>().is_err() => Rejected::Algorithm(alg),
        _ => Rejected::Malformed(format!("header: {err}")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    pub(crate) fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    pub(crate) fn hs_config(extra: Value) -> Config {
        let mut value = json!({"algorithms": ["HS256"], "secret": "s3cret", "leeway": "0s"});
        value
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(value).unwrap()
    }

    pub(crate) fn hs_token(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap()
    }

    fn reason(r: Result<Claims, Rejected>) -> String {
        r.expect_err("expected a rejection").to_string()
    }

    #[tokio::test]
    async fn hmac_tokens_are_checked_for_signature_time_issuer_and_audience() {
        let config = hs_config(json!({"issuer": "https://issuer", "audience": "mqtt"}));
        let good = json!({"sub": "d1", "exp": now() + 60, "iss": "https://issuer", "aud": "mqtt"});
        let claims = verify(&hs_token(good.clone()), &config).await.unwrap();
        assert_eq!(claims["sub"], "d1");

        let mut expired = good.clone();
        expired["exp"] = json!(now() - 10);
        assert_eq!(
            reason(verify(&hs_token(expired), &config).await),
            "token expired"
        );
        let mut early = good.clone();
        early["nbf"] = json!(now() + 600);
        assert!(reason(verify(&hs_token(early), &config).await).contains("not yet valid"));
        let mut iss = good.clone();
        iss["iss"] = json!("https://other");
        assert_eq!(
            reason(verify(&hs_token(iss), &config).await),
            "wrong issuer"
        );
        let mut aud = good.clone();
        aud["aud"] = json!("web");
        assert_eq!(
            reason(verify(&hs_token(aud), &config).await),
            "wrong audience"
        );
        let mut no_iss = good.clone();
        no_iss.as_object_mut().unwrap().remove("iss");
        assert!(reason(verify(&hs_token(no_iss), &config).await).contains("iss is missing"));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(reason(verify(&hs_token(no_exp), &config).await).contains("exp is missing"));

        let forged = encode(
            &Header::new(Algorithm::HS256),
            &good,
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert_eq!(reason(verify(&forged, &config).await), "bad signature");
        assert!(reason(verify("not-a-token", &config).await).starts_with("malformed"));
        assert!(reason(verify("a.b.c", &config).await).starts_with("malformed"));
    }

    #[tokio::test]
    async fn unsigned_and_unlisted_algorithms_are_refused() {
        let config = hs_config(json!({}));
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(json!({"sub": "d1", "exp": now() + 60}))
        );
        assert_eq!(
            reason(verify(&none, &config).await),
            "algorithm none is not allowed"
        );
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"exp": now() + 60}),
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert_eq!(
            reason(verify(&hs512, &config).await),
            "algorithm HS512 is not allowed"
        );
    }

    /// An EC P-256 key pair as (PKCS#8 PEM private key, JWK public key).
    pub(crate) fn ec_key(kid: &str) -> (String, Value) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
        (pair.serialize_pem(), jwk)
    }

    /// An RSA key made by the `openssl` CLI, as (PEM private key, JWK public key).
    fn rsa_key(kid: &str) -> (String, Value) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        let status = std::process::Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&path)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl CLI runs");
        assert!(status.success());
        let out = std::process::Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text.trim().strip_prefix("Modulus=").unwrap();
        let modulus: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = json!({"kty": "RSA", "kid": kid, "n": b64(&modulus), "e": "AQAB"});
        (std::fs::read_to_string(&path).unwrap(), jwk)
    }

    fn jwks_config(dir: &std::path::Path, algorithms: Value, keys: Vec<Value>) -> Config {
        let path = dir.join("jwks.json");
        std::fs::write(&path, json!({ "keys": keys }).to_string()).unwrap();
        serde_json::from_value(json!({"algorithms": algorithms, "jwks_file": path})).unwrap()
    }

    fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims, key).unwrap()
    }

    #[tokio::test]
    async fn public_keys_come_from_the_jwk_set_by_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (ec_pem, ec_jwk) = ec_key("ec-1");
        let (rsa_pem, rsa_jwk) = rsa_key("rsa-1");
        let config = jwks_config(dir.path(), json!(["RS256", "ES256"]), vec![ec_jwk, rsa_jwk]);
        let ec = EncodingKey::from_ec_pem(ec_pem.as_bytes()).unwrap();
        let rsa = EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap();
        let claims = json!({"sub": "d1", "exp": now() + 60});

        let t = signed(Algorithm::ES256, Some("ec-1"), &ec, claims.clone());
        assert_eq!(verify(&t, &config).await.unwrap()["sub"], "d1");
        let t = signed(Algorithm::RS256, Some("rsa-1"), &rsa, claims.clone());
        assert_eq!(verify(&t, &config).await.unwrap()["sub"], "d1");
        // No kid: every key of the family is tried.
        let t = signed(Algorithm::RS256, None, &rsa, claims.clone());
        assert!(verify(&t, &config).await.is_ok());

        let t = signed(Algorithm::ES256, Some("ec-2"), &ec, claims.clone());
        assert!(reason(verify(&t, &config).await).contains("no key in the JWK set matches kid"));
        let (other_pem, _) = ec_key("ec-1");
        let other = EncodingKey::from_ec_pem(other_pem.as_bytes()).unwrap();
        let t = signed(Algorithm::ES256, Some("ec-1"), &other, claims.clone());
        assert_eq!(reason(verify(&t, &config).await), "bad signature");
        // An HMAC token signed with the public key as secret finds no secret to check against.
        let t = signed(
            Algorithm::HS256,
            Some("rsa-1"),
            &EncodingKey::from_secret(rsa_pem.as_bytes()),
            claims,
        );
        assert_eq!(
            reason(verify(&t, &config).await),
            "algorithm HS256 is not allowed"
        );
    }

    #[tokio::test]
    async fn a_rotated_key_file_is_picked_up_on_an_unknown_kid() {
        let dir = tempfile::tempdir().unwrap();
        let (_, old_jwk) = ec_key("old");
        let (new_pem, new_jwk) = ec_key("new");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({ "keys": [old_jwk] }).to_string()).unwrap();
        let config: Config = serde_json::from_value(json!({
            "algorithms": ["ES256"], "jwks_file": path, "jwks_min_refresh": "0s"
        }))
        .unwrap();
        let key = EncodingKey::from_ec_pem(new_pem.as_bytes()).unwrap();
        let t = signed(
            Algorithm::ES256,
            Some("new"),
            &key,
            json!({"exp": now() + 60}),
        );
        assert!(verify(&t, &config).await.is_err());
        std::fs::write(&path, json!({ "keys": [new_jwk] }).to_string()).unwrap();
        assert!(verify(&t, &config).await.is_ok());
        // A broken file keeps the last good keys.
        std::fs::write(&path, "garbage").unwrap();
        let t2 = signed(
            Algorithm::ES256,
            Some("gone"),
            &key,
            json!({"exp": now() + 60}),
        );
        assert!(verify(&t2, &config).await.is_err());
        assert!(verify(&t, &config).await.is_ok());
    }
}
