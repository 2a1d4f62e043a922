//! The configuration the broker pushes in `Describe` (`plugins.<alias>.config`), and what it
//! opens: the password file and its watcher.
//!
//! Opening happens while the configuration is deserialized (serde's `try_from`), because that
//! is what the SDK runs at `Describe`: a missing or unreadable file then fails `Describe`, so the
//! broker refuses to start (or does not mark this replica up) and says why. Each `Describe`
//! opens its own store; the previous one and its watcher stop when the last call using them
//! ends.

use std::path::PathBuf;
use std::sync::Arc;

use tandem_plugin::serde::Deserialize;

use crate::scram;
use crate::store::Store;
use crate::throttle::ThrottleSettings;
use crate::watch::{self, Watch};

/// What to answer for a username that is not in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(crate = "tandem_plugin::serde", rename_all = "lowercase")]
pub(crate) enum UnknownUser {
    /// Deny the connection (aMQTT's FileAuthPlugin).
    #[default]
    Deny,
    /// No opinion: another plugin of the auth chain decides.
    Abstain,
}

/// The YAML as written.
#[derive(Debug, Deserialize)]
#[serde(crate = "tandem_plugin::serde", deny_unknown_fields)]
pub(crate) struct Settings {
    /// `user:hash` lines.
    pub(crate) password_file: PathBuf,
    /// Whether clients without a username are allowed.
    #[serde(default)]
    pub(crate) allow_anonymous: bool,
    #[serde(default)]
    pub(crate) unknown_user: UnknownUser,
    /// Failed-login throttling (see `throttle.rs`).
    #[serde(default)]
    pub(crate) throttle: ThrottleSettings,
    /// The iteration count a SCRAM-SHA-256 exchange announces for a user without SCRAM
    /// credentials (unknown users); `None`: that of the file's first SCRAM entry, or 4096.
    #[serde(default)]
    pub(crate) scram_iterations: Option<u32>,
}

impl Settings {
    /// The iteration count told to users without SCRAM credentials of `users`' file.
    pub(crate) fn scram_fake_iterations(&self, users: &crate::passwd::Users) -> u32 {
        self.scram_iterations
            .or(users.scram_iterations())
            .unwrap_or(scram::DEFAULT_ITERATIONS)
    }
}

/// The settings with the opened password file; see the module documentation.
#[derive(Debug, Deserialize)]
#[serde(crate = "tandem_plugin::serde", try_from = "Settings")]
pub(crate) struct Config {
    pub(crate) settings: Settings,
    pub(crate) store: Arc<Store>,
    /// Reloads `store` while this configuration is alive.
    _watch: Watch,
}

impl TryFrom<Settings> for Config {
    type Error = String;

    fn try_from(settings: Settings) -> Result<Self, String> {
        if settings.password_file.as_os_str().is_empty() {
            return Err("password_file is empty: give the path of the password file".into());
        }
        let t = &settings.throttle;
        if (t.user_failures > 0 || t.address_failures > 0) && t.window.is_zero() {
            return Err("throttle.window is 0: give a duration such as 1m (or set user_failures and address_failures to 0 to turn throttling off)".into());
        }
        if t.max_entries == 0 {
            return Err("throttle.max_entries is 0: give the most usernames (and addresses) to track, such as 10000".into());
        }
        if let Some(n) = settings.scram_iterations
            && !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&n)
        {
            return Err(format!(
                "scram_iterations is {n}: give a count from {} to {} (what passwd --scram wrote)",
                scram::MIN_ITERATIONS,
                scram::MAX_ITERATIONS
            ));
        }
        let store = Arc::new(Store::open(&settings.password_file)?);
        let watch = watch::spawn(Arc::clone(&store));
        Ok(Config {
            settings,
            store,
            _watch: watch,
        })
    }
}
