//! The decision: anonymous clients by `allow_anonymous`, users by their hash in the file.
//!
//! Every username that is not refused by the throttle costs one hash verification, known or
//! not: an unknown user (with `unknown_user: deny`) and a user whose line cannot be used are
//! verified against the file's decoy hash, so the answer's timing does not tell which
//! usernames exist. Failures feed the throttle (`throttle.rs`), which then refuses a flood
//! without hashing.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use tandem_plugin::tokio::sync::Semaphore;
use tandem_plugin::tokio::task::spawn_blocking;
use tandem_plugin::{AuthDecision, AuthRequest, Authenticator, Context, HandlerError};

use crate::config::{Config, UnknownUser};
use crate::hash::{self, Hash};
use crate::throttle::{Throttle, ThrottleSettings, Throttled};

/// MQTT 5 CONNACK reason "bad user name or password" (the broker answers 3.1.1 clients with
/// "not authorized"). Throttled attempts get it too: the client cannot tell them apart.
const BAD_USER_OR_PASSWORD: u8 = 0x86;

/// The decoy of a file without any usable hash: argon2id at the `passwd` defaults, of a random
/// password nobody knows.
static FALLBACK_DECOY: LazyLock<Option<Hash>> = LazyLock::new(|| {
    let secret = argon2::password_hash::generate_salt();
    hash::hash_argon2id(&secret)
        .ok()
        .and_then(|phc| Hash::parse(&phc).ok())
});

/// What a password is verified against.
enum Target {
    /// The user's own hash.
    User(Hash),
    /// A decoy, for an attempt that is denied whatever the password: the reason to log.
    Decoy(Hash, String),
}

/// The authenticate handler.
#[derive(Debug)]
pub(crate) struct FileAuth {
    /// Bounds the hashes verified at once to the CPUs: argon2 takes ~19 MiB and a core for a
    /// while, and a reconnect storm must queue (until the broker's deadline), not exhaust memory.
    verifying: Arc<Semaphore>,
    /// Failed-login throttling; lives as long as the process, across `Describe`s.
    throttle: Arc<Throttle>,
    /// Hash verifications run (decoys included).
    verifications: Arc<AtomicU64>,
}

impl FileAuth {
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        FileAuth {
            verifying: Arc::new(Semaphore::new(cpus)),
            throttle: Arc::new(Throttle::new()),
            verifications: Arc::new(AtomicU64::new(0)),
        }
    }

    fn throttled(
        &self,
        settings: &ThrottleSettings,
        user: &str,
        addr: Option<IpAddr>,
    ) -> Option<AuthDecision> {
        self.throttle
            .check(settings, user, addr, Instant::now())
            .map(|why| {
                let what = match why {
                    Throttled::User => "this username",
                    Throttled::Address => "this address",
                };
                AuthDecision::deny(format!("throttled: too many failed logins for {what}"))
                    .with_reason_code(BAD_USER_OR_PASSWORD)
            })
    }

    fn failed(
        &self,
        settings: &ThrottleSettings,
        user: &str,
        addr: Option<IpAddr>,
        reason: impl Into<String>,
    ) -> AuthDecision {
        self.throttle.failed(settings, user, addr, Instant::now());
        AuthDecision::deny(reason).with_reason_code(BAD_USER_OR_PASSWORD)
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
        let settings = &config.settings.throttle;
        let addr = req.remote_addr.map(|a| a.ip());
        if let Some(refused) = self.throttled(settings, &user, addr) {
            return Ok(refused);
        }
        let loaded = config.store.current();
        let decoy = || loaded.users.decoy().or(FALLBACK_DECOY.as_ref()).cloned();
        let target = match loaded.users.get(&user) {
            None if config.settings.unknown_user == UnknownUser::Abstain => {
                return Ok(AuthDecision::abstain());
            }
            None => decoy().map(|h| Target::Decoy(h, "unknown user".into())),
            Some(Err(e)) => decoy().map(|h| {
                Target::Decoy(
                    h,
                    format!("the user's line in the password file was skipped: {e}"),
                )
            }),
            Some(Ok(hash)) => Some(Target::User(hash.clone())),
        };
        let Some(target) = target else {
            // No decoy could be made (argon2 refused its own defaults): deny all the same.
            return Ok(self.failed(settings, &user, addr, "unknown user"));
        };
        let Some(password) = req.password else {
            return Ok(self.failed(settings, &user, addr, "no password"));
        };
        if matches!(target, Target::User(_)) && loaded.cache.hit(&user, &password) {
            self.throttle.succeeded(&user);
            return Ok(allowed(user));
        }
        let permit = Arc::clone(&self.verifying).acquire_owned().await?;
        // Waiting for a CPU may have taken a while: a flood's queued attempts stop here once
        // the throttle engaged, instead of each running a hash.
        if let Some(refused) = self.throttled(settings, &user, addr) {
            return Ok(refused);
        }
        // The outcome is recorded (cache, throttle) by the blocking task itself, not after the
        // await: when the broker's deadline passes first, it drops this call, and a flood whose
        // every guess outlives the deadline must still be counted.
        let verifications = Arc::clone(&self.verifications);
        let throttle = Arc::clone(&self.throttle);
        let settings = settings.clone();
        let who = user.clone();
        let verified = spawn_blocking(move || {
            let _permit = permit;
            verifications.fetch_add(1, Ordering::Relaxed);
            let (ok, denied) = match target {
                Target::User(hash) => (hash.verify(&password), "bad password".to_owned()),
                Target::Decoy(hash, reason) => {
                    // Run for its cost only: whatever it says, the attempt is denied.
                    let _ = std::hint::black_box(hash.verify(&password));
                    (false, reason)
                }
            };
            if ok {
                loaded.cache.insert(&who, &password);
                throttle.succeeded(&who);
                Ok(())
            } else {
                throttle.failed(&settings, &who, addr, Instant::now());
                Err(denied)
            }
        })
        .await?;
        Ok(match verified {
            Ok(()) => allowed(user),
            Err(reason) => AuthDecision::deny(reason).with_reason_code(BAD_USER_OR_PASSWORD),
        })
    }
}

/// The answer for a verified user: the username is the identity the password proved.
fn allowed(user: String) -> AuthDecision {
    AuthDecision::allow()
        .with_attribute("auth", "file")
        .with_identity(user)
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
        assert_eq!(ok.identity.as_deref(), Some("alice"));
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
    async fn unknown_users_cost_a_verification_and_failures_are_throttled_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, format!("alice:{ARGON2ID}\nbob:{ARGON2ID}\n")).unwrap();
        let auth = FileAuth::new();
        let verifications = Arc::clone(&auth.verifications);
        let count = || verifications.load(Ordering::Relaxed);
        let broker = TestBroker::new(
            Plugin::new("auth-file", "test")
                .config::<Config>()
                .authenticate(auth),
        );
        broker
            .describe(tandem_plugin::serde_json::json!({
                "password_file": file.display().to_string(),
                "throttle": {"user_failures": 3, "address_failures": 4, "window": "1m"},
            }))
            .await
            .unwrap();
        let from = |u: &str, p: &str, ip: [u8; 4]| {
            let mut r = AuthRequest::new("c").with_username(u).with_password(p);
            r.remote_addr = Some((ip, 40000).into());
            r
        };
        let ask = |r: AuthRequest| {
            let broker = &broker;
            async move { broker.authenticate(r).await.unwrap() }
        };

        // An unknown user takes one hash verification, like a known one, and is denied even
        // with a password that verifies against the decoy (alice's hash).
        let before = count();
        let unknown = ask(from("nobody", "argon pw", [10, 0, 0, 1])).await;
        assert_eq!(
            (unknown.verdict, unknown.reason.as_str()),
            (Verdict::Deny, "unknown user")
        );
        assert_eq!(
            count(),
            before + 1,
            "the unknown user was verified against the decoy"
        );
        assert_eq!(unknown.identity, None);
        let known = ask(from("alice", "wrong", [10, 0, 0, 2])).await;
        assert_eq!(
            (known.verdict, known.reason_code),
            (Verdict::Deny, Some(0x86))
        );
        assert_eq!(
            unknown.reason_code, known.reason_code,
            "same answer to the client"
        );
        assert_eq!(count(), before + 2);

        // Three failures for alice (from two addresses): the fourth attempt is refused without
        // a verification, even with the right password; bob is not affected.
        ask(from("alice", "wrong", [10, 0, 0, 3])).await;
        ask(from("alice", "wrong", [10, 0, 0, 2])).await;
        let n = count();
        let throttled = ask(from("alice", "argon pw", [10, 0, 0, 9])).await;
        assert_eq!(throttled.verdict, Verdict::Deny);
        assert!(
            throttled.reason.starts_with("throttled"),
            "{}",
            throttled.reason
        );
        assert_eq!(throttled.reason_code, Some(0x86));
        assert_eq!(count(), n, "no verification for a throttled username");
        let bob = ask(from("bob", "argon pw", [10, 0, 0, 9])).await;
        assert_eq!(bob.verdict, Verdict::Allow);
        assert_eq!(
            bob.identity.as_deref(),
            Some("bob"),
            "the verified username is the identity"
        );

        // Four failures from one address, over any usernames: that address is refused.
        for u in ["u1", "u2", "u3", "u4"] {
            ask(from(u, "x", [10, 0, 0, 7])).await;
        }
        let n = count();
        let by_address = ask(from("bob", "argon pw", [10, 0, 0, 7])).await;
        assert_eq!(by_address.verdict, Verdict::Deny);
        assert!(
            by_address.reason.contains("this address"),
            "{}",
            by_address.reason
        );
        assert_eq!(count(), n, "no verification for a throttled address");

        // A new Describe (a reload, a probe) does not reset the throttle.
        broker
            .describe(tandem_plugin::serde_json::json!({
                "password_file": file.display().to_string(),
                "throttle": {"user_failures": 3, "address_failures": 4, "window": "1m"},
            }))
            .await
            .unwrap();
        let still = ask(from("alice", "argon pw", [10, 0, 0, 9])).await;
        assert!(still.reason.starts_with("throttled"), "{}", still.reason);
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, "").unwrap();
        let f = file.display().to_string();
        let window = describe(json!({"password_file": f, "throttle": {"window": "0s"}})).await;
        assert!(window.contains("throttle.window is 0"), "{window}");
        let entries = describe(json!({"password_file": f, "throttle": {"max_entries": 0}})).await;
        assert!(entries.contains("throttle.max_entries is 0"), "{entries}");
        let typo = describe(json!({"password_file": f, "throttle": {"user_failure": 3}})).await;
        assert!(typo.contains("unknown field `user_failure`"), "{typo}");
    }
}
