//! A SCRAM-SHA-256 client (RFC 5802 with RFC 7677's hash) for the MQTT 5 enhanced
//! authentication tests, and the password file entries `tandem-auth-file` reads.
//!
//! Written apart from the plugin's implementation, on other primitives (`ring`, where the plugin
//! uses the RustCrypto crates), so that the end-to-end tests are a second opinion on the
//! exchange rather than the plugin agreeing with itself.
//!
//! ```
//! use tandem_tests::scram::ScramClient;
//!
//! let mut client = ScramClient::with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
//! // CONNECT: Authentication Method "SCRAM-SHA-256", Authentication Data:
//! assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
//! // AUTH 0x18 from the broker carries server-first-message; the client answers AUTH 0x18 with:
//! let client_final = client
//!     .client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
//!     .unwrap();
//! assert!(client_final.ends_with(b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="));
//! // CONNACK 0x00 carries server-final-message:
//! client.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
//! ```

use std::fmt;
use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

/// The MQTT 5 Authentication Method.
pub const METHOD: &str = "SCRAM-SHA-256";
/// The fewest iterations the client accepts from a server (RFC 7677 §4).
pub const MIN_ITERATIONS: u32 = 4096;

/// Why the client gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The server's message is not what RFC 5802 describes.
    Malformed(String),
    /// The server's nonce does not start with the client's (or adds nothing to it).
    NonceMismatch,
    /// The server asks for fewer than [`MIN_ITERATIONS`].
    TooFewIterations(u32),
    /// The server-final-message is an error, `e=<message>`.
    Server(String),
    /// The server signature `v=` is not the one the password gives: the server does not know
    /// the user's credentials.
    BadServerSignature,
    /// `verify_server_final` before `client_final`.
    OutOfOrder,
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramError::Malformed(why) => write!(f, "malformed server message: {why}"),
            ScramError::NonceMismatch => f.write_str("the server nonce does not extend ours"),
            ScramError::TooFewIterations(n) => {
                write!(f, "{n} iterations, fewer than {MIN_ITERATIONS}")
            }
            ScramError::Server(e) => write!(f, "the server says e={e}"),
            ScramError::BadServerSignature => f.write_str("the server signature does not verify"),
            ScramError::OutOfOrder => f.write_str("no client-final-message was made yet"),
        }
    }
}

impl std::error::Error for ScramError {}

/// One client side of one exchange: `client_first`, then `client_final` with the server's
/// answer, then `verify_server_final`.
#[derive(Debug, Clone)]
pub struct ScramClient {
    user: String,
    password: String,
    nonce: String,
    /// The ServerSignature expected, once `client_final` ran.
    expected_server_signature: Option<Vec<u8>>,
}

/// `,` and `=` escaped as RFC 5802's saslname wants (`=2C`, `=3D`).
fn saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    let iterations = NonZeroU32::new(iterations).expect("iterations are at least 1");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

impl ScramClient {
    /// A client with a random nonce (24 characters of base64).
    pub fn new(user: &str, password: &str) -> Self {
        let mut bytes = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system's random source");
        Self::with_nonce(user, password, &STANDARD.encode(bytes))
    }

    /// A client with this nonce (printable ASCII without `,`), for exchanges known in advance.
    pub fn with_nonce(user: &str, password: &str, nonce: &str) -> Self {
        assert!(
            !nonce.is_empty()
                && nonce
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b','),
            "a SCRAM nonce is printable ASCII without ','"
        );
        ScramClient {
            user: user.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    /// The client's nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", saslname(&self.user), self.nonce)
    }

    /// client-first-message, the CONNECT's (or the re-authenticating AUTH's) Authentication
    /// Data: `n,,n=<user>,r=<nonce>` (no channel binding, no authorization identity).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// client-final-message answering `server_first` (`r=<nonce>,s=<salt>,i=<iterations>`),
    /// the Authentication Data of the client's AUTH 0x18. Refuses a server nonce that does not
    /// extend the client's and fewer than [`MIN_ITERATIONS`] iterations.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramError::Malformed("server-first-message is not UTF-8".into()))?;
        let mut attributes = text.split(',');
        let mut next = |name: &str| {
            attributes
                .next()
                .and_then(|a| a.strip_prefix(name))
                .ok_or_else(|| ScramError::Malformed(format!("expected {name} in {text:?}")))
        };
        if text.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extension m=".into()));
        }
        let nonce = next("r=")?;
        let salt = STANDARD
            .decode(next("s=")?)
            .map_err(|e| ScramError::Malformed(format!("salt: {e}")))?;
        let iterations: u32 = next("i=")?
            .parse()
            .map_err(|e| ScramError::Malformed(format!("iterations: {e}")))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        if iterations < MIN_ITERATIONS {
            return Err(ScramError::TooFewIterations(iterations));
        }

        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, &client_key);
        let server_key = hmac_sha256(&salted, b"Server Key");
        // c= is the base64 of the gs2 header "n,,".
        let without_proof = format!("c={},r={nonce}", STANDARD.encode("n,,"));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare());
        let client_signature = hmac_sha256(stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature = Some(hmac_sha256(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks server-final-message (the CONNACK's, or the AUTH 0x00's of a re-authentication):
    /// `v=<ServerSignature>` must be what the password gives; `e=<message>` is an error.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let expected = self
            .expected_server_signature
            .as_ref()
            .ok_or(ScramError::OutOfOrder)?;
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramError::Malformed("server-final-message is not UTF-8".into()))?;
        let first = text.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(ScramError::Server(error.to_owned()));
        }
        let signature = first
            .strip_prefix("v=")
            .ok_or_else(|| ScramError::Malformed(format!("expected v= or e= in {text:?}")))?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|e| ScramError::Malformed(format!("v=: {e}")))?;
        if &signature != expected {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

/// A password file line of `tandem-auth-file` with SCRAM-SHA-256 credentials:
/// `user:$scram-sha-256$<iterations>$<salt>$<StoredKey>$<ServerKey>` (standard base64), as
/// `tandem-auth-file passwd add --scram` writes, with a salt of the test's choosing.
pub fn password_file_line(user: &str, password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password, salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "{user}:$scram-sha-256${iterations}${}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &[u8] =
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &[u8] = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &[u8] = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    #[test]
    fn rfc_7677_example() {
        let mut client = ScramClient::with_nonce("user", "pencil", NONCE);
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            client.verify_server_final(SERVER_FINAL),
            Err(ScramError::OutOfOrder)
        );
        assert_eq!(client.client_final(SERVER_FIRST).unwrap(), CLIENT_FINAL);
        client.verify_server_final(SERVER_FINAL).unwrap();
        // Extensions after v= are allowed.
        client
            .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1")
            .unwrap();
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_caught() {
        let mut client = ScramClient::with_nonce("user", "pencil2", NONCE);
        let fin = client.client_final(SERVER_FIRST).unwrap();
        assert_ne!(fin, CLIENT_FINAL);
        assert_eq!(
            client.verify_server_final(SERVER_FINAL),
            Err(ScramError::BadServerSignature)
        );
        assert_eq!(
            client.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::Server("invalid-proof".into()))
        );
        assert!(matches!(
            client.verify_server_final(b"x=1"),
            Err(ScramError::Malformed(_))
        ));
        assert!(matches!(
            client.verify_server_final(b"v=!!"),
            Err(ScramError::Malformed(_))
        ));
    }

    #[test]
    fn bad_server_first_messages_are_refused() {
        let mut client = ScramClient::with_nonce("user", "pencil", NONCE);
        assert_eq!(
            client.client_final(b"r=otherNonce123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            client.client_final(b"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            Err(ScramError::NonceMismatch),
            "the server must add its own part"
        );
        assert_eq!(
            client.client_final(b"r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095"),
            Err(ScramError::TooFewIterations(4095))
        );
        for bad in [
            &b""[..],
            b"s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqOx,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=!!,i=4096",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=many",
            b"r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==",
            b"m=x,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
            b"\xff",
        ] {
            assert!(
                matches!(client.client_final(bad), Err(ScramError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn names_are_escaped_and_nonces_random() {
        let client = ScramClient::with_nonce("a,b=c", "pw", "n");
        assert_eq!(client.client_first(), b"n,,n=a=2Cb=3Dc,r=n");
        let (a, b) = (ScramClient::new("u", "p"), ScramClient::new("u", "p"));
        assert_ne!(a.nonce(), b.nonce());
        assert_eq!(a.nonce().len(), 24);
    }

    #[test]
    fn password_file_lines() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        // The keys of RFC 7677's user, by Python's hashlib and hmac.
        assert_eq!(
            password_file_line("user", "pencil", &salt, 4096),
            "user:$scram-sha-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
