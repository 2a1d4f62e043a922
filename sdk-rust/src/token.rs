//! Who may call the plugin ([`BearerToken`]): the broker proves itself with a shared bearer
//! token (`--token-file` or `TANDEM_PLUGIN_TOKEN_FILE`, found by `args.rs`; the broker's
//! `plugins.<alias>.token_file` holds the same token). A listener with a token answers every RPC of the plugin service
//! (`Describe`, `Authenticate`, `TopicFilter`, `Events`) `UNAUTHENTICATED` unless the call carries
//! `authorization: Bearer <token>`; the comparison takes the same time wherever the tokens
//! differ. gRPC health stays open to probes: it changes nothing and tells only SERVING or not.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Status};

use crate::args::ServeArgs;
use crate::error::Error;

/// The bearer token a plugin requires of its callers (see the module docs). Its `Debug` form never
/// shows the token.
#[derive(Clone)]
pub struct BearerToken {
    token: Arc<[u8]>,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    /// A token; surrounding whitespace is ignored. It must be printable ASCII without spaces
    /// (what an HTTP header carries), and not empty.
    pub fn new(token: &str) -> Result<Self, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Token {
                reason: "the token is empty".into(),
            });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Token {
                reason: "the token must be printable ASCII without spaces".into(),
            });
        }
        Ok(Self {
            token: token.as_bytes().into(),
        })
    }

    /// The token in a file (one line; surrounding whitespace ignored).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
            path: PathBuf::from(path),
            source,
        })?;
        Self::new(&text).map_err(|e| match e {
            Error::Token { reason } => Error::Token {
                reason: format!("{reason} (in {})", path.display()),
            },
            other => other,
        })
    }

    /// The token from `--token-file FILE`, else
    /// [`TOKEN_FILE_ENV`](crate::args::TOKEN_FILE_ENV); `None` when neither is given.
    pub fn from_args_or_env() -> Result<Option<Self>, Error> {
        Self::from_setting(ServeArgs::from_process().token_file)
    }

    /// The token in this file, if one is named.
    pub(crate) fn from_setting(token_file: Option<String>) -> Result<Option<Self>, Error> {
        token_file.map(Self::from_file).transpose()
    }

    /// Whether `header` (an `authorization` value) is `Bearer <this token>`, in time that does
    /// not depend on where it differs.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(given) = header.strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, &self.token)
    }

    /// The check run on every request the listener receives.
    pub(crate) fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let ok = req
            .metadata()
            .get("authorization")
            .is_some_and(|v| self.matches(v.as_bytes()));
        if ok {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "this plugin requires the broker's bearer token (authorization: Bearer ...)",
            ))
        }
    }
}

/// Compares in time that depends only on the lengths, never on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    diff == 0
}

/// The interceptor a listener puts in front of every service: with a token, the check above;
/// without one, every call passes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TokenCheck(pub(crate) Option<BearerToken>);

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match &self.0 {
            Some(token) => token.check(req),
            None => Ok(req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        let t = BearerToken::new(" s3cret\n").unwrap();
        assert!(t.matches(b"Bearer s3cret"));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cretX",
            b"Bearer S3cret",
            b"bearer s3cret",
            b"s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(!t.matches(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(BearerToken::new("  ").is_err());
        assert!(BearerToken::new("two words").is_err());
        assert_eq!(format!("{t:?}"), "BearerToken(..)", "never the token");
    }

    #[test]
    fn calls_without_the_token_are_unauthenticated() {
        let mut check = TokenCheck(Some(BearerToken::new("t").unwrap()));
        use tonic::service::Interceptor as _;
        let err = check.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("authorization", "Bearer t".parse().unwrap());
        assert!(check.call(req).is_ok());
        assert!(TokenCheck(None).call(Request::new(())).is_ok());
    }
}
