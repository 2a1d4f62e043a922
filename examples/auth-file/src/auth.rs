//! The decision: anonymous clients by `allow_anonymous`, users by their hash in the file.
//!
//! Every username that is not refused by the throttle costs one hash verification, known or
//! not: an unknown user (with `unknown_user: deny`) and a user whose line cannot be used are
//! verified against the file's decoy hash, so the answer's timing does not tell which
//! usernames exist. Failures feed the throttle (`throttle.rs`), which then refuses a flood
//! without hashing.
//!
//! MQTT 5 enhanced authentication with method `SCRAM-SHA-256` runs the exchange of `scram.rs`
//! against the users' SCRAM entries (see [`FileAuth::scram`]); any other method is abstained
//! on, whatever the username and password say, so another plugin may know it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use tandem_plugin::tokio::sync::Semaphore;
use tandem_plugin::tokio::task::spawn_blocking;
use tandem_plugin::{AuthDecision, AuthRequest, Authenticator, Context, HandlerError};

use crate::config::{Config, UnknownUser};
use crate::hash::{self, Hash};
use crate::scram;
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
    /// The server's part of SCRAM nonces ([`scram::random_nonce`]; fixed by tests).
    server_nonce: fn() -> String,
}

impl FileAuth {
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        FileAuth {
            verifying: Arc::new(Semaphore::new(cpus)),
            throttle: Arc::new(Throttle::new()),
            verifications: Arc::new(AtomicU64::new(0)),
            server_nonce: scram::random_nonce,
        }
    }

    /// Uses `nonce` for the server's part of SCRAM nonces (for tests with known vectors).
    #[cfg(test)]
    fn with_server_nonce(mut self, nonce: fn() -> String) -> Self {
        self.server_nonce = nonce;
        self
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

    /// One step of a SCRAM-SHA-256 exchange (the connection's or a re-authentication's: both
    /// run the same way). Cheap on the server side (no PBKDF2: the entry holds the derived
    /// keys), so it runs on the async thread.
    fn scram(&self, config: &Config, req: &AuthRequest) -> AuthDecision {
        match req.auth_step {
            0 => self.scram_first(config, req),
            1 => self.scram_final(config, req),
            n => AuthDecision::deny(format!(
                "SCRAM-SHA-256: unexpected step {n} (the exchange has steps 0 and 1); refused"
            )),
        }
    }

    /// Step 0: client-first-message in, server-first-message out. A user without SCRAM
    /// credentials (not in the file with `unknown_user: deny`, an unusable line, another kind
    /// of hash) gets a fake salt and the configured iterations, and fails at step 1 as a wrong
    /// password does: the client cannot tell which users exist, or how they are stored.
    fn scram_first(&self, config: &Config, req: &AuthRequest) -> AuthDecision {
        // A message the client got wrong: the client is told what (the same for every user).
        let refuse = |why: &str| {
            let why = format!("SCRAM-SHA-256: {why}");
            AuthDecision::deny(why.clone())
                .with_client_reason(why)
                .with_reason_code(BAD_USER_OR_PASSWORD)
        };
        let Some(data) = req.auth_data.as_deref().filter(|d| !d.is_empty()) else {
            return refuse("no client-first-message in the Authentication Data");
        };
        let first = match scram::parse_client_first(data) {
            Ok(first) => first,
            Err(e) => return refuse(&e),
        };
        if req
            .username
            .as_deref()
            .is_some_and(|typed| !typed.is_empty() && typed != first.user)
        {
            return refuse("the CONNECT user name is not the user name n= of the SCRAM exchange");
        }
        let settings = &config.settings.throttle;
        let addr = req.remote_addr.map(|a| a.ip());
        if let Some(refused) = self.throttled(settings, &first.user, addr) {
            return refused;
        }
        let loaded = config.store.current();
        // Made for every user, so a known user's answer costs what an unknown one's does.
        let fake = scram::fake_credentials(
            &first.user,
            config.settings.scram_fake_iterations(&loaded.users),
        );
        let credentials = match loaded.users.get(&first.user) {
            Some(Ok(Hash::Scram(credentials))) => credentials,
            None if config.settings.unknown_user == UnknownUser::Abstain => {
                return AuthDecision::abstain();
            }
            None | Some(Err(_) | Ok(_)) => &fake,
        };
        let exchange = scram::Exchange::start(
            first,
            &(self.server_nonce)(),
            &credentials.salt,
            credentials.iterations,
        );
        AuthDecision::continue_with(exchange.server_first.clone(), exchange.context())
    }

    /// Step 1: client-final-message in; the proof checked against the user's entry as it is
    /// now (an entry changed since step 0 fails); server-final-message out with the ALLOW.
    fn scram_final(&self, config: &Config, req: &AuthRequest) -> AuthDecision {
        let exchange = match scram::Exchange::from_context(&req.auth_context) {
            Ok(exchange) => exchange,
            Err(e) => {
                return AuthDecision::deny(format!(
                    "SCRAM-SHA-256: the exchange state echoed by the broker does not parse ({e}); refused"
                ));
            }
        };
        let user = exchange.client_first.user.clone();
        let settings = &config.settings.throttle;
        let addr = req.remote_addr.map(|a| a.ip());
        if let Some(refused) = self.throttled(settings, &user, addr) {
            return refused;
        }
        let data = req.auth_data.as_deref().unwrap_or_default();
        let client_final = match exchange.parse_client_final(data) {
            Ok(client_final) => client_final,
            Err(e) => {
                // Checked before the user is looked up: the same for every user.
                let why = format!("SCRAM-SHA-256: {e}");
                return self
                    .failed(settings, &user, addr, why.clone())
                    .with_client_reason(why);
            }
        };
        let loaded = config.store.current();
        let fake = scram::fake_credentials(&user, exchange.iterations);
        // Why the fake keys stand in, if they do (for the log only: the client's answer is the
        // same). They never verify (no password derives them), and are checked all the same,
        // for the cost.
        let (credentials, stand_in) = match loaded.users.get(&user) {
            Some(Ok(Hash::Scram(c)))
                if c.salt == exchange.salt && c.iterations == exchange.iterations =>
            {
                (c, None)
            }
            Some(Ok(Hash::Scram(_))) => (
                &fake,
                Some("the user's entry changed during the exchange".to_owned()),
            ),
            Some(Ok(other)) => (
                &fake,
                Some(format!(
                    "the user's entry ({}) has no SCRAM-SHA-256 credentials; it can log in with a CONNECT password, or be given SCRAM credentials with `passwd set --scram`",
                    other.format()
                )),
            ),
            Some(Err(e)) => (
                &fake,
                Some(format!(
                    "the user's line in the password file was skipped: {e}"
                )),
            ),
            None => (&fake, Some("unknown user".to_owned())),
        };
        match (exchange.verify(&client_final, credentials), stand_in) {
            (Some(server_final), None) => {
                self.throttle.succeeded(&user);
                AuthDecision::allow()
                    .with_attribute("auth", "scram")
                    .with_identity(user)
                    .with_auth_data(server_final)
            }
            (_, stand_in) => {
                let why = stand_in.unwrap_or_else(|| "wrong password".to_owned());
                self.failed(settings, &user, addr, format!("SCRAM-SHA-256: {why}"))
            }
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
        if let Some(method) = req.auth_method.as_deref() {
            // Never decided by the username and password: only a method this plugin runs.
            return Ok(if method == scram::METHOD {
                self.scram(&config, &req)
            } else {
                AuthDecision::abstain()
            });
        }
        if req.auth_step != 0 || req.reauthentication {
            return Ok(AuthDecision::deny(
                "an enhanced authentication step without an authentication method; refused",
            ));
        }
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
#[path = "tests/auth.rs"]
mod tests;
