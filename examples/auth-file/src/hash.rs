//! Password hashes: recognising a hash string, verifying a password against it, and writing
//! new argon2id hashes (SCRAM-SHA-256 entries are written by `scram.rs`).
//!
//! Five formats are verified. Two of them start with `$6$` and are told apart by shape:
//!
//! | format | looks like | written by |
//! |---|---|---|
//! | argon2 (PHC) | `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (also `$argon2i$`, `$argon2d$`) | `tandem-auth-file passwd`, aMQTT, argon2-cffi |
//! | mosquitto PBKDF2 | `$7$<iterations>$<base64 12-byte salt>$<base64 64-byte hash>` | `mosquitto_passwd` (its default) |
//! | mosquitto SHA-512 | `$6$<base64 12-byte salt>$<base64 64-byte hash>`: SHA512(password ‖ salt) | `mosquitto_passwd -H sha512`, mosquitto < 2.0 |
//! | sha512-crypt | `$6$[rounds=N$]<salt ≤16 of ./0-9A-Za-z>$<86 chars of ./0-9A-Za-z>` | glibc `crypt`, `openssl passwd -6`, aMQTT < 0.12 |
//! | SCRAM-SHA-256 | `$scram-sha-256$<iterations>$<base64 salt>$<base64 StoredKey>$<base64 ServerKey>` | `tandem-auth-file passwd --scram` |
//!
//! Mosquitto's `$6$` hash field is standard base64 of 64 bytes: 88 characters ending in `==`.
//! A sha512-crypt hash field is 86 characters of the crypt alphabet, which has no `=`, `+`.
//! The lengths differ, so no string is both.

use std::fmt;

use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha_crypt::ShaCrypt;
use sha2::{Digest as _, Sha512};
use subtle::ConstantTimeEq as _;

use crate::scram;

/// Mosquitto's salt length (`SALT_LEN` in its `password_mosq.h`).
const MOSQUITTO_SALT_LEN: usize = 12;
/// Both mosquitto formats store 64 bytes (a SHA-512 digest or a 64-byte PBKDF2 output).
const MOSQUITTO_HASH_LEN: usize = 64;
/// The crypt alphabet of sha512-crypt salts and hashes.
const CRYPT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A password hash from the file, checked when the file was read.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Hash {
    /// A PHC string of argon2id (or argon2i/argon2d); the parameters are read at each verify.
    Argon2(String),
    /// `mosquitto_passwd`'s default: PBKDF2-HMAC-SHA512.
    MosquittoPbkdf2 {
        iterations: u32,
        salt: [u8; MOSQUITTO_SALT_LEN],
        hash: [u8; MOSQUITTO_HASH_LEN],
    },
    /// `mosquitto_passwd -H sha512`: one SHA-512 of the password then the salt.
    MosquittoSha512 {
        salt: [u8; MOSQUITTO_SALT_LEN],
        hash: [u8; MOSQUITTO_HASH_LEN],
    },
    /// glibc's sha512-crypt.
    Sha512Crypt(String),
    /// SCRAM-SHA-256 credentials: a plain password is checked against the StoredKey, and MQTT 5
    /// clients can run the SCRAM exchange (`scram.rs`).
    Scram(scram::Credentials),
}

impl fmt::Debug for Hash {
    /// Names the format only: hashes stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.format())
    }
}

/// Why a hash string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HashError {
    /// Not one of the formats above.
    #[error(
        "unknown hash format (expected $argon2id$, mosquitto $7$ or $6$, sha512-crypt $6$, or $scram-sha-256$)"
    )]
    UnknownFormat,
    /// A known format with a broken field.
    #[error("invalid {format} hash: {reason}")]
    Invalid {
        format: &'static str,
        reason: String,
    },
}

fn invalid(format: &'static str, reason: impl Into<String>) -> HashError {
    HashError::Invalid {
        format,
        reason: reason.into(),
    }
}

impl Hash {
    /// Recognises and checks a hash string.
    pub(crate) fn parse(s: &str) -> Result<Self, HashError> {
        if s.starts_with("$argon2id$") || s.starts_with("$argon2i$") || s.starts_with("$argon2d$") {
            PasswordHash::new(s).map_err(|e| invalid("argon2", e.to_string()))?;
            return Ok(Hash::Argon2(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix(scram::PREFIX) {
            return scram::Credentials::parse(rest)
                .map(Hash::Scram)
                .map_err(|reason| invalid("SCRAM-SHA-256", reason));
        }
        if let Some(rest) = s.strip_prefix("$7$") {
            // libxcrypt's scrypt is also `$7$`, but its parameters are not a decimal number
            // followed by `$`.
            let Some((iterations, rest)) = rest.split_once('$') else {
                return Err(HashError::UnknownFormat);
            };
            if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HashError::UnknownFormat);
            }
            let format = "mosquitto $7$ (PBKDF2-SHA512)";
            let iterations = iterations
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    invalid(format, "iterations must be a number from 1 to 4294967295")
                })?;
            let (salt, hash) = mosquitto_fields(format, rest)?;
            return Ok(Hash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(rest) = s.strip_prefix("$6$") {
            return if rest.ends_with('=') {
                let (salt, hash) = mosquitto_fields("mosquitto $6$ (SHA512)", rest)?;
                Ok(Hash::MosquittoSha512 { salt, hash })
            } else {
                check_sha512_crypt(rest)?;
                Ok(Hash::Sha512Crypt(s.to_owned()))
            };
        }
        Err(HashError::UnknownFormat)
    }

    /// The format's name, for logs.
    pub(crate) fn format(&self) -> &'static str {
        match self {
            Hash::Argon2(_) => "argon2",
            Hash::MosquittoPbkdf2 { .. } => "mosquitto-pbkdf2-sha512",
            Hash::MosquittoSha512 { .. } => "mosquitto-sha512",
            Hash::Sha512Crypt(_) => "sha512-crypt",
            Hash::Scram(_) => "scram-sha-256",
        }
    }

    /// Whether `password` matches. CPU heavy for argon2, PBKDF2 (SCRAM too) and sha512-crypt: call it off
    /// the async threads. Comparisons are constant-time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Argon2(phc) => PasswordHash::new(phc)
                .is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok()),
            Hash::Sha512Crypt(s) => {
                sha_crypt::PasswordVerifier::<str>::verify_password(&ShaCrypt::SHA512, password, s)
                    .is_ok()
            }
            Hash::MosquittoPbkdf2 {
                iterations,
                salt,
                hash,
            } => {
                let mut out = [0u8; MOSQUITTO_HASH_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(hash).into()
            }
            Hash::MosquittoSha512 { salt, hash } => {
                let out = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                out.as_slice().ct_eq(hash).into()
            }
            Hash::Scram(credentials) => credentials.verify_password(password),
        }
    }
}

/// `<base64 salt>$<base64 hash>` as mosquitto writes them (standard alphabet, padded).
fn mosquitto_fields(
    format: &'static str,
    rest: &str,
) -> Result<([u8; MOSQUITTO_SALT_LEN], [u8; MOSQUITTO_HASH_LEN]), HashError> {
    let (salt, hash) = rest
        .split_once('$')
        .ok_or_else(|| invalid(format, "expected <salt>$<hash>"))?;
    let decode = |what: &str, field: &str, len: usize| {
        BASE64
            .decode(field)
            .ok()
            .filter(|bytes| bytes.len() == len)
            .ok_or_else(|| invalid(format, format!("the {what} is not base64 of {len} bytes")))
    };
    let salt = decode("salt", salt, MOSQUITTO_SALT_LEN)?;
    let hash = decode("hash", hash, MOSQUITTO_HASH_LEN)?;
    Ok((
        salt.try_into().unwrap_or([0; MOSQUITTO_SALT_LEN]),
        hash.try_into().unwrap_or([0; MOSQUITTO_HASH_LEN]),
    ))
}

/// `[rounds=N$]salt$hash` of sha512-crypt (after `$6$`).
fn check_sha512_crypt(rest: &str) -> Result<(), HashError> {
    const FORMAT: &str = "sha512-crypt";
    let mut fields: Vec<&str> = rest.split('$').collect();
    if let Some(rounds) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        let ok = rounds
            .parse::<u32>()
            .is_ok_and(|n| (1_000..=999_999_999).contains(&n));
        if !ok {
            return Err(invalid(FORMAT, "rounds must be from 1000 to 999999999"));
        }
        fields.remove(0);
    }
    let [salt, hash] = fields[..] else {
        return Err(HashError::UnknownFormat);
    };
    let crypt_chars = |s: &str| s.bytes().all(|b| CRYPT_ALPHABET.contains(&b));
    if salt.is_empty() || salt.len() > 16 || !crypt_chars(salt) {
        return Err(invalid(
            FORMAT,
            "the salt must be 1 to 16 characters of ./0-9A-Za-z",
        ));
    }
    if hash.len() != 86 || !crypt_chars(hash) {
        return Err(invalid(
            FORMAT,
            "the hash must be 86 characters of ./0-9A-Za-z",
        ));
    }
    Ok(())
}

/// A new argon2id hash (the crate's defaults: m=19456 KiB, t=2, p=1) with a random salt.
pub(crate) fn hash_argon2id(password: &[u8]) -> Result<String, argon2::password_hash::Error> {
    Ok(Argon2::default().hash_password(password)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every vector was made by a tool outside this crate (see the comments), so these tests
    // check compatibility, not only round trips.

    /// `echo -n 'argon pw' | argon2 somesalt123 -id -t 2 -m 12 -p 1 -e` (the reference CLI).
    const ARGON2ID: &str =
        "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";
    /// `mosquitto_passwd -b FILE mosq7 'pass word7'` (mosquitto 2.0.11).
    const MOSQ7: &str = "$7$101$/fw4tlkaPcGR/MvC$ClFIA0swUFAT9AjoAY8eEzD7eknAzwgHLvSdnTjxYVI/v0CpnTZ9EIGP9ckCwpHDiBHAItaVWfYvylfjmbCARw==";
    /// `mosquitto_passwd -b -H sha512 FILE mosq6 pw6`.
    const MOSQ6: &str = "$6$fLBYk1YW1mWVcj44$XE1mJHjpvPWqJJNwdBjf3jqoE776hoNIW4jUjFgyvDuDcDluJN9DP6AUvKBeXctkfyaHvEqt07OxcA/d6YEzuA==";
    /// Python's `hashlib.pbkdf2_hmac('sha512', b'py7', b'0123456789ab', 101)`, base64.
    const PY7: &str = "$7$101$MDEyMzQ1Njc4OWFi$EpD72hs1HUXXgo0HGEPSNjRqujtseEAhxalkUuqLpV7Cl1PySphSMbx/6V6YdNm3hYt5pRFB+FL7wRBB3fgH7A==";
    /// `openssl passwd -6 -salt saltsalt 'crypt pw'`.
    const CRYPT: &str = "$6$saltsalt$Wt1GYnk2Hz1IYROUpFhJB.kMh5e28HCzY2lY3OkzOrK9X4fN7Jf43VtPqz3jlrXn8xuzsmo/GTkQLUGXy2ae//";
    /// Python's `crypt.crypt('rounds pw', '$6$rounds=1000$shortsalt$')` (glibc).
    const CRYPT_ROUNDS: &str = "$6$rounds=1000$shortsalt$J2/8Pn18c1ZKfuK4Fz6GZqQ1fyDuFzOg3.ERTnqmy7h/0XF8xzHdZhyO/kIZjKte7GRfP2/ZKHpt/P3EjcTri/";
    /// RFC 7677's user (password "pencil", its salt), keys by Python's `hashlib` (see `scram.rs`).
    const SCRAM: &str = crate::scram::tests::RFC_ENTRY;

    fn check(hash: &str, format: &str, right: &str, wrong: &str) {
        let h = Hash::parse(hash).unwrap_or_else(|e| panic!("{hash}: {e}"));
        assert_eq!(h.format(), format);
        assert!(h.verify(right.as_bytes()), "{format}: right password");
        assert!(!h.verify(wrong.as_bytes()), "{format}: wrong password");
        assert!(!h.verify(b""), "{format}: empty password");
    }

    #[test]
    fn outside_vectors_verify() {
        check(ARGON2ID, "argon2", "argon pw", "argon pw ");
        check(MOSQ7, "mosquitto-pbkdf2-sha512", "pass word7", "pass word");
        check(PY7, "mosquitto-pbkdf2-sha512", "py7", "py6");
        check(MOSQ6, "mosquitto-sha512", "pw6", "pw7");
        check(CRYPT, "sha512-crypt", "crypt pw", "crypt");
        check(CRYPT_ROUNDS, "sha512-crypt", "rounds pw", "rounds");
        check(SCRAM, "scram-sha-256", "pencil", "pencil2");
    }

    #[test]
    fn new_hashes_are_argon2id_and_verify() {
        let h = hash_argon2id(b"s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        let parsed = Hash::parse(&h).unwrap();
        assert!(parsed.verify(b"s3cret"));
        assert!(!parsed.verify(b"s3cret!"));
    }

    #[test]
    fn unknown_and_broken_hashes_are_refused() {
        for unknown in [
            "plaintext",
            "",
            "$1$salt$abcdefghijklmnopqrstuv",     // md5-crypt
            "$2b$12$abcdefghijklmnopqrstuv",      // bcrypt
            "$5$salt$abcdefghijklmnopqrstuvwxyz", // sha256-crypt
            "$7$CU..../....salt$hash",            // libxcrypt scrypt
            "$y$j9T$salt$hash",                   // yescrypt
            "$6$onlyonefield",
        ] {
            assert_eq!(
                Hash::parse(unknown),
                Err(HashError::UnknownFormat),
                "{unknown}"
            );
        }
        for broken in [
            "$argon2id$v=19$m=4096,t=2,p=1$!!$x",
            "$7$0$MDEyMzQ1Njc4OWFi$EpD7",
            "$7$101$c2hvcnQ=$EpD72hs1HUXXgo0HGEPSNjRqujtseEAhxalkUuqLpV7Cl1PySphSMbx/6V6YdNm3hYt5pRFB+FL7wRBB3fgH7A==",
            "$7$101$MDEyMzQ1Njc4OWFi",
            "$6$MDEyMzQ1Njc4OWFi$c2hvcnQ=",
            "$6$rounds=10$saltsalt$Wt1GYnk2Hz1IYROUpFhJB.kMh5e28HCzY2lY3OkzOrK9X4fN7Jf43VtPqz3jlrXn8xuzsmo/GTkQLUGXy2ae//",
            "$6$saltsalt$tooshort",
            "$6$salt+salt$Wt1GYnk2Hz1IYROUpFhJB.kMh5e28HCzY2lY3OkzOrK9X4fN7Jf43VtPqz3jlrXn8xuzsmo/GTkQLUGXy2ae//",
            "$scram-sha-256$1000$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "$scram-sha-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
        ] {
            assert!(
                matches!(Hash::parse(broken), Err(HashError::Invalid { .. })),
                "{broken}: {:?}",
                Hash::parse(broken)
            );
        }
    }

    #[test]
    fn debug_does_not_show_the_hash() {
        let h = Hash::parse(MOSQ6).unwrap();
        assert_eq!(format!("{h:?}"), "mosquitto-sha512");
        let h = Hash::parse(SCRAM).unwrap();
        assert_eq!(format!("{h:?}"), "scram-sha-256");
    }
}
