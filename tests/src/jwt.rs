//! Signing the tokens the JWT plugin tests present as passwords: HS256 with a shared
//! secret, ES256 with a fresh P-256 key published as a JWK. One place, so every test
//! signs the way the plugin's documentation says a token issuer does.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// Now, in seconds since the epoch (the unit of `exp`, `nbf` and `iat` claims).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// `bytes` in unpadded base64url, the encoding of every part of a JWT.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `claims` signed with HS256 and `secret`.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing")
}

/// An EC P-256 signing key and its public JWK.
pub struct EcKey {
    encoding: EncodingKey,
    /// The public key as a JWK, with `kid` and `alg: ES256`.
    pub jwk: Value,
    kid: String,
}

impl EcKey {
    /// A fresh key pair, published under `kid`.
    pub fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate a P-256 key");
        let raw = pair.public_key_raw(); // 0x04 || x || y
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])});
        let encoding = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
            .expect("the generated key reads back");
        EcKey {
            encoding,
            jwk,
            kid: kid.into(),
        }
    }

    /// `claims` signed with ES256 and this key, its `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).expect("ES256 signing")
    }
}

/// A JWK set (`{"keys": [...]}`) of the public halves of `keys`.
pub fn jwks(keys: &[&EcKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}
