//! The decision: anonymous clients by `allow_anonymous`, users by their hash in the file.

use std::sync::Arc;

use tandem_plugin::tokio::sync::Semaphore;
use tandem_plugin::tokio::task::spawn_blocking;
use tandem_plugin::{AuthDecision, AuthRequest, Authenticator, Context, HandlerError};

use crate::config::{Config, UnknownUser};

/// MQTT 5 CONNACK reason "bad user name or password" (the broker answers 3.1.1 clients with
/// "not authorized").
const BAD_USER_OR_PASSWORD: u8 = 0x86;

/// The authenticate handler.
#[derive(Debug)]
pub(crate) struct FileAuth {
    /// Bounds the hashes verified at once to the CPUs: argon2 takes ~19 MiB and a core for a
    /// while, and a reconnect storm must queue (until the broker's deadline), not exhaust memory.
    verifying: Arc<Semaphore>,
}

impl FileAuth {
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        FileAuth {
            verifying: Arc::new(Semaphore::new(cpus)),
        }
    }
}

impl Authenticator for FileAuth {
    async fn authenticate(
        &self,
        ctx: &Context,
        req: AuthRequest,
    ) -> Result<AuthDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        // An empty username is no username, as in aMQTT (`if not session.username`).
        let Some(user) = req.username.filter(|u| !u.is_empty()) else {
            return Ok(if config.settings.allow_anonymous {
                AuthDecision::allow().with_attribute("auth", "anonymous")
            } else {
                AuthDecision::deny("no username, and allow_anonymous is false")
            });
        };
        let loaded = config.store.current();
        let hash = match loaded.users.get(&user) {
            None => {
                return Ok(match config.settings.unknown_user {
                    UnknownUser::Deny => {
                        AuthDecision::deny("unknown user").with_reason_code(BAD_USER_OR_PASSWORD)
                    }
                    UnknownUser::Abstain => AuthDecision::abstain(),
                });
            }
            Some(Err(e)) => {
                return Ok(AuthDecision::deny(format!(
                    "the user's line in the password file was skipped: {e}"
                )));
            }
            Some(Ok(hash)) => hash.clone(),
        };
        let Some(password) = req.password else {
            return Ok(AuthDecision::deny("no password").with_reason_code(BAD_USER_OR_PASSWORD));
        };
        if !loaded.cache.hit(&user, &password) {
            let permit = Arc::clone(&self.verifying).acquire_owned().await?;
            let (ok, password) = spawn_blocking(move || {
                let _permit = permit;
                (hash.verify(&password), password)
            })
            .await?;
            if !ok {
                return Ok(
                    AuthDecision::deny("bad password").with_reason_code(BAD_USER_OR_PASSWORD)
                );
            }
            loaded.cache.insert(&user, &password);
        }
        Ok(AuthDecision::allow().with_attribute("auth", "file"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_plugin::testing::TestBroker;
    use tandem_plugin::{Plugin, Verdict};

    const ARGON2ID: &str =
        "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";

    fn plugin() -> Plugin {
        Plugin::new("auth-file", "test")
            .config::<Config>()
            .authenticate(FileAuth::new())
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn decisions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, format!("alice:{ARGON2ID}\nodd:$1$x$y\n")).unwrap();
        let broker = TestBroker::new(plugin());
        let config = |extra: &str| {
            let json = format!(
                r#"{{"password_file": {:?}{extra}}}"#,
                file.display().to_string()
            );
            tandem_plugin::serde_json::from_str::<tandem_plugin::serde_json::Value>(&json).unwrap()
        };
        broker.describe(config("")).await.unwrap();
        let verdict = |req: AuthRequest| {
            let broker = &broker;
            async move { broker.authenticate(req).await.unwrap() }
        };
        let req = |u: &str, p: &str| AuthRequest::new("c").with_username(u).with_password(p);

        let ok = verdict(req("alice", "argon pw")).await;
        assert_eq!(ok.verdict, Verdict::Allow);
        assert_eq!(ok.attributes.get("auth").map(String::as_str), Some("file"));
        // Again: answered from the cache, same answer.
        assert_eq!(
            verdict(req("alice", "argon pw")).await.verdict,
            Verdict::Allow
        );
        let bad = verdict(req("alice", "nope")).await;
        assert_eq!((bad.verdict, bad.reason_code), (Verdict::Deny, Some(0x86)));
        let no_pw = verdict(AuthRequest::new("c").with_username("alice")).await;
        assert_eq!(no_pw.verdict, Verdict::Deny);
        assert_eq!(verdict(req("odd", "x")).await.verdict, Verdict::Deny);
        assert_eq!(verdict(req("nobody", "x")).await.verdict, Verdict::Deny);
        assert_eq!(verdict(AuthRequest::new("c")).await.verdict, Verdict::Deny);
        assert_eq!(
            verdict(AuthRequest::new("c").with_username(""))
                .await
                .verdict,
            Verdict::Deny
        );

        broker
            .describe(config(
                r#", "allow_anonymous": true, "unknown_user": "abstain""#,
            ))
            .await
            .unwrap();
        let anon = verdict(AuthRequest::new("c")).await;
        assert_eq!(anon.verdict, Verdict::Allow);
        assert_eq!(verdict(req("nobody", "x")).await.verdict, Verdict::Abstain);
        // A user whose hash cannot be used is denied, not treated as unknown.
        assert_eq!(verdict(req("odd", "x")).await.verdict, Verdict::Deny);
        // A username with the wrong password is never let in by allow_anonymous (aMQTT's bug).
        assert_eq!(verdict(req("alice", "nope")).await.verdict, Verdict::Deny);
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn bad_configuration_fails_describe() {
        let broker = TestBroker::new(plugin());
        let describe = |v: tandem_plugin::serde_json::Value| {
            let broker = &broker;
            async move { broker.describe(v).await.unwrap_err().message().to_owned() }
        };
        use tandem_plugin::serde_json::json;
        let missing = describe(json!({"password_file": "/nonexistent/passwd"})).await;
        assert!(
            missing.contains("cannot read the password file /nonexistent/passwd"),
            "{missing}"
        );
        let unknown = describe(json!({"password_file": "/x", "alow_anonymous": true})).await;
        assert!(
            unknown.contains("unknown field `alow_anonymous`"),
            "{unknown}"
        );
        let required = describe(json!({})).await;
        assert!(
            required.contains("missing field `password_file`"),
            "{required}"
        );
        let verdict = describe(json!({"password_file": "/x", "unknown_user": "allow"})).await;
        assert!(verdict.contains("unknown variant `allow`"), "{verdict}");
    }
}
