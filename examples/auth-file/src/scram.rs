//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash): the credentials a password file entry holds,
//! and the server side of the exchange, as plain functions (`auth.rs` makes the decisions).
//!
//! # The entry
//!
//! `$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>`, the last three in standard
//! padded base64. StoredKey is H(ClientKey) and ServerKey is HMAC(SaltedPassword, "Server Key")
//! (RFC 5802 §3): enough to run the exchange and to check a plain password, not enough to log in
//! as the user. Iterations from [`MIN_ITERATIONS`] (RFC 7677's floor) to [`MAX_ITERATIONS`];
//! salts of 8 to 64 bytes (`passwd --scram` writes 16 random bytes).
//!
//! # The exchange
//!
//! Two steps, the state carried in the context the broker echoes back (so any replica can answer
//! step 1):
//! - step 0: client-first-message `n,,n=<user>,r=<cnonce>` → server-first-message
//!   `r=<cnonce><snonce>,s=<salt>,i=<iterations>`; the context holds the client-first-message and
//!   the server-first-message, nothing secret: step 1 looks the user up again.
//! - step 1: client-final-message `c=biws,r=<nonce>,p=<proof>` → server-final-message
//!   `v=<ServerSignature>` when the proof verifies.
//!
//! Decided beyond the RFC:
//! - No channel binding (no `-PLUS` mechanism): a `p=` gs2 flag is refused; `n` and `y` are
//!   accepted, and `c=` must be the base64 of the gs2 header the client sent.
//! - An authorization identity (`a=`) is accepted only when it names the authenticating user.
//! - No SASLprep: user names and passwords are the UTF-8 bytes the client sends, as
//!   `passwd --scram` hashes them (the same for ASCII; a client that normalises non-ASCII
//!   passwords differently fails).
//! - Messages are at most [`MAX_MESSAGE_LEN`] bytes; a mandatory extension (`m=`) is refused,
//!   optional ones (`x=...`) are ignored.

use std::fmt;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, STANDARD_NO_PAD as BASE64_NO_PAD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The MQTT 5 Authentication Method.
pub(crate) const METHOD: &str = "SCRAM-SHA-256";
/// How an entry starts in the password file.
pub(crate) const PREFIX: &str = "$scram-sha-256$";
/// RFC 7677 §4: at least 4096.
pub(crate) const MIN_ITERATIONS: u32 = 4096;
/// A bound on what one plain CONNECT password check against an entry may cost.
pub(crate) const MAX_ITERATIONS: u32 = 10_000_000;
/// What `passwd --scram` writes, and what unknown users are told when nothing says otherwise.
pub(crate) const DEFAULT_ITERATIONS: u32 = 4096;
/// The salt `passwd --scram` writes (and the fake salts of unknown users).
pub(crate) const SALT_LEN: usize = 16;
const MIN_SALT_LEN: usize = 8;
const MAX_SALT_LEN: usize = 64;
/// The most Authentication Data accepted in one client message.
pub(crate) const MAX_MESSAGE_LEN: usize = 4096;
/// The most context accepted back (two messages and a tag).
const MAX_CONTEXT_LEN: usize = 2 * MAX_MESSAGE_LEN + 256;
/// Names the context's layout, so a future one is refused rather than misread.
const CONTEXT_TAG: &str = "tandem-auth-file/scram-sha-256/1";

const KEY_LEN: usize = 32;
type Key = [u8; KEY_LEN];

fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// A password file entry's SCRAM-SHA-256 credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) iterations: u32,
    pub(crate) salt: Vec<u8>,
    stored_key: Key,
    server_key: Key,
}

impl fmt::Debug for Credentials {
    /// The parameters only: keys stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credentials of `password` (RFC 5802 §3). CPU heavy: `iterations` rounds of PBKDF2.
    pub(crate) fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        Credentials {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac(&salted, &[b"Client Key"])),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// New credentials with a random [`SALT_LEN`]-byte salt.
    pub(crate) fn generate(password: &[u8], iterations: u32) -> Self {
        Self::derive(
            password,
            &argon2::password_hash::generate_salt(),
            iterations,
        )
    }

    /// Reads the fields after [`PREFIX`]: `<iterations>$<salt>$<StoredKey>$<ServerKey>`.
    pub(crate) fn parse(fields: &str) -> Result<Self, String> {
        let [iterations, salt, stored_key, server_key] = fields.split('$').collect::<Vec<_>>()[..]
        else {
            return Err("expected <iterations>$<salt>$<StoredKey>$<ServerKey>".into());
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(n))
            .ok_or_else(|| {
                format!("iterations must be a number from {MIN_ITERATIONS} to {MAX_ITERATIONS}")
            })?;
        let salt = BASE64
            .decode(salt)
            .ok()
            .filter(|s| (MIN_SALT_LEN..=MAX_SALT_LEN).contains(&s.len()))
            .ok_or_else(|| {
                format!("the salt is not base64 of {MIN_SALT_LEN} to {MAX_SALT_LEN} bytes")
            })?;
        let key = |what: &str, field: &str| {
            decode_key(field).ok_or_else(|| format!("the {what} is not base64 of {KEY_LEN} bytes"))
        };
        Ok(Credentials {
            iterations,
            salt,
            stored_key: key("StoredKey", stored_key)?,
            server_key: key("ServerKey", server_key)?,
        })
    }

    /// The entry as the password file holds it (after `user:`).
    pub(crate) fn to_entry(&self) -> String {
        format!(
            "{PREFIX}{}${}${}${}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }

    /// Whether a plain (CONNECT) password matches: H(HMAC(SaltedPassword, "Client Key")) is the
    /// StoredKey, compared in constant time. CPU heavy, as [`derive`](Self::derive).
    pub(crate) fn verify_password(&self, password: &[u8]) -> bool {
        let salted = salted_password(password, &self.salt, self.iterations);
        let stored_key = sha256(&hmac(&salted, &[b"Client Key"]));
        stored_key.ct_eq(&self.stored_key).into()
    }
}

fn decode_key(field: &str) -> Option<Key> {
    BASE64.decode(field).ok()?.try_into().ok()
}

/// Random per process: the key of unknown users' fake salts and keys.
static FAKE_KEY: LazyLock<Key> = LazyLock::new(|| {
    let mut key = [0u8; KEY_LEN];
    key[..16].copy_from_slice(&argon2::password_hash::generate_salt());
    key[16..].copy_from_slice(&argon2::password_hash::generate_salt());
    key
});

/// Stand-in credentials for a user without SCRAM credentials, so the exchange looks the same:
/// the salt is keyed on the user name (the same user gets the same salt from this process),
/// and the keys are random values no password derives.
pub(crate) fn fake_credentials(user: &str, iterations: u32) -> Credentials {
    let key = &*FAKE_KEY;
    Credentials {
        iterations,
        salt: hmac(key, &[b"salt\0", user.as_bytes()])[..SALT_LEN].to_vec(),
        stored_key: hmac(key, &[b"stored key\0", user.as_bytes()]),
        server_key: hmac(key, &[b"server key\0", user.as_bytes()]),
    }
}

/// A server nonce: 16 random bytes, base64 without padding (22 printable characters).
pub(crate) fn random_nonce() -> String {
    BASE64_NO_PAD.encode(argon2::password_hash::generate_salt())
}

/// A client-first-message, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFirst {
    /// `n,,` (or `y,,`, or with `a=<user>`): what `c=` must encode.
    pub(crate) gs2_header: String,
    /// The user name, `=2C` and `=3D` decoded.
    pub(crate) user: String,
    /// The client's nonce.
    pub(crate) nonce: String,
    /// client-first-message-bare, part of the AuthMessage.
    pub(crate) bare: String,
}

fn message_text<'a>(what: &str, data: &'a [u8]) -> Result<&'a str, String> {
    if data.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "the {what} is {} bytes, more than the {MAX_MESSAGE_LEN} accepted",
            data.len()
        ));
    }
    let text = std::str::from_utf8(data).map_err(|_| format!("the {what} is not UTF-8"))?;
    if text.contains('\0') {
        return Err(format!("the {what} contains a NUL character"));
    }
    Ok(text)
}

/// RFC 5802 `saslname`: `=2C` is `,`, `=3D` is `=`, any other `=` is an error.
fn decode_saslname(what: &str, s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        out.push(match escape {
            Some("=2C") => ',',
            Some("=3D") => '=',
            _ => return Err(format!("the {what} has a '=' not followed by 2C or 3D")),
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    Ok(out)
}

/// RFC 5802 `printable`: ASCII 0x21 to 0x7E except `,`.
fn check_nonce(nonce: &str) -> Result<(), String> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err("the nonce r= must be one or more printable ASCII characters but ','".into());
    }
    Ok(())
}

/// An optional extension, `<letter>=<value>`: checked for shape, then ignored.
fn check_extension(attr: &str) -> Result<(), String> {
    let b = attr.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
        return Err(format!(
            "{:?} is not an attribute (<letter>=<value>)",
            attr.chars().take(16).collect::<String>()
        ));
    }
    Ok(())
}

/// Reads a client-first-message (step 0's Authentication Data).
pub(crate) fn parse_client_first(data: &[u8]) -> Result<ClientFirst, String> {
    let text = message_text("client-first-message", data)?;
    let mut gs2 = text.splitn(3, ',');
    let (Some(flag), Some(authzid), Some(bare)) = (gs2.next(), gs2.next(), gs2.next()) else {
        return Err("the client-first-message does not start with a gs2 header (n,,)".into());
    };
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err("channel binding (gs2 flag p=) is not supported: use gs2 flag n".into());
        }
        _ => {
            return Err(
                "the gs2 header's channel binding flag must be n or y (p= is not supported)".into(),
            );
        }
    }
    let authzid = match authzid {
        "" => None,
        a => Some(decode_saslname(
            "authorization identity",
            a.strip_prefix("a=")
                .ok_or("the gs2 header's second field must be empty or a=<authzid>")?,
        )?),
    };
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err("mandatory extension m= is not supported".into());
    }
    let user = decode_saslname(
        "user name n=",
        first
            .strip_prefix("n=")
            .ok_or("the client-first-message must name the user first (n=<user>)")?,
    )?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("the client-first-message must give the nonce after the user (r=<nonce>)")?;
    check_nonce(nonce)?;
    for ext in attrs {
        check_extension(ext)?;
    }
    if authzid.is_some_and(|a| a != user) {
        return Err(
            "the authorization identity a= is not the user name: acting as another user is not supported"
                .into(),
        );
    }
    Ok(ClientFirst {
        gs2_header,
        user,
        nonce: nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// One exchange between step 0 and step 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    pub(crate) client_first: ClientFirst,
    /// The server-first-message sent.
    pub(crate) server_first: String,
    /// The client's nonce and the server's.
    pub(crate) nonce: String,
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
}

impl Exchange {
    /// Answers a client-first-message with `server_nonce` and the user's salt and iterations.
    pub(crate) fn start(
        client_first: ClientFirst,
        server_nonce: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Self {
        let nonce = format!("{}{server_nonce}", client_first.nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        Exchange {
            client_first,
            server_first,
            nonce,
            salt: salt.to_vec(),
            iterations,
        }
    }

    /// The state for step 1: the tag, the client-first-message and the server-first-message,
    /// NUL-separated (neither message can hold a NUL).
    pub(crate) fn context(&self) -> Vec<u8> {
        let c = &self.client_first;
        format!(
            "{CONTEXT_TAG}\0{}{}\0{}",
            c.gs2_header, c.bare, self.server_first
        )
        .into_bytes()
    }

    /// Reads [`context`](Self::context) back, checking it all again.
    pub(crate) fn from_context(context: &[u8]) -> Result<Self, String> {
        if context.len() > MAX_CONTEXT_LEN {
            return Err(format!("{} bytes", context.len()));
        }
        let text = std::str::from_utf8(context).map_err(|_| "not UTF-8")?;
        let [tag, client_first, server_first] = text.split('\0').collect::<Vec<_>>()[..] else {
            return Err("not three NUL-separated fields".into());
        };
        if tag != CONTEXT_TAG {
            return Err(format!("unknown layout {:?}", tag.get(..40).unwrap_or(tag)));
        }
        let client_first = parse_client_first(client_first.as_bytes())?;
        let (nonce, salt, iterations) = parse_server_first(server_first)?;
        if nonce.len() <= client_first.nonce.len() || !nonce.starts_with(&client_first.nonce) {
            return Err("the server nonce does not extend the client's".into());
        }
        Ok(Exchange {
            client_first,
            server_first: server_first.to_owned(),
            nonce,
            salt,
            iterations,
        })
    }

    /// Checks the client-final-message's shape, channel binding and nonce; the proof is
    /// checked by [`verify`](Self::verify).
    pub(crate) fn parse_client_final(&self, data: &[u8]) -> Result<ClientFinal, String> {
        let text = message_text("client-final-message", data)?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or("the client-final-message has no proof (c=...,r=...,p=...)")?;
        let proof = proof
            .strip_prefix("p=")
            .ok_or("the client-final-message must end with the proof p=")?;
        let proof = decode_key(proof)
            .ok_or_else(|| format!("the proof p= is not base64 of {KEY_LEN} bytes"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or("the client-final-message must start with the channel binding c=")?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.client_first.gs2_header.as_bytes()) {
            return Err(format!(
                "the channel binding c= is not the base64 of the gs2 header {:?} (c={})",
                self.client_first.gs2_header,
                BASE64.encode(&self.client_first.gs2_header)
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or("the client-final-message must give the nonce after c= (r=<nonce>)")?;
        if nonce != self.nonce {
            return Err("the nonce r= is not the one of the server-first-message".into());
        }
        for ext in attrs {
            check_extension(ext)?;
        }
        Ok(ClientFinal {
            without_proof: without_proof.to_owned(),
            proof,
        })
    }

    /// Whether the proof is the user's: ClientKey = proof XOR HMAC(StoredKey, AuthMessage),
    /// and H(ClientKey) = StoredKey (constant time). On success, the server-final-message
    /// `v=<ServerSignature>`. The work is the same either way.
    pub(crate) fn verify(
        &self,
        client_final: &ClientFinal,
        credentials: &Credentials,
    ) -> Option<String> {
        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, client_final.without_proof
        );
        let client_signature = hmac(&credentials.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = client_final.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let verified: bool = sha256(&client_key).ct_eq(&credentials.stored_key).into();
        let server_signature = hmac(&credentials.server_key, &[auth_message.as_bytes()]);
        verified.then(|| format!("v={}", BASE64.encode(server_signature)))
    }
}

/// A client-final-message whose shape, channel binding and nonce were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientFinal {
    /// client-final-message-without-proof, part of the AuthMessage.
    without_proof: String,
    proof: Key,
}

/// Reads a server-first-message as [`Exchange::start`] writes it.
fn parse_server_first(s: &str) -> Result<(String, Vec<u8>, u32), String> {
    let [r, salt, i] = s.split(',').collect::<Vec<_>>()[..] else {
        return Err("the server-first-message is not r=,s=,i=".into());
    };
    let nonce = r.strip_prefix("r=").ok_or("no r=")?;
    check_nonce(nonce)?;
    let salt = salt
        .strip_prefix("s=")
        .and_then(|s| BASE64.decode(s).ok())
        .ok_or("no s= of base64")?;
    let iterations = i
        .strip_prefix("i=")
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
        .ok_or("no i= in range")?;
    Ok((nonce.to_owned(), salt, iterations))
}

#[cfg(test)]
#[path = "tests/scram.rs"]
pub(crate) mod tests;
