//! The plugin's configuration (its `config:` in the broker's YAML, pushed by `Describe`) and the
//! rules it loads.
//!
//! Loading happens while the SDK deserializes the configuration at `Describe` (as in
//! `tandem-topic-acl`): a missing, unreadable or invalid rules file fails `Describe`, so the
//! broker refuses to start (fail closed), and the watcher that reloads the file lives exactly as
//! long as this configuration.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tandem_plugin::tracing::info;

use crate::cli;
use crate::live::{LiveRules, read_file};
use crate::watch;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// The rules file; absent: the command line's `--rules` (or `TANDEM_X509_RULES`).
    rules_file: Option<PathBuf>,
}

/// The checked configuration, with the rules loaded.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawConfig")]
pub(crate) struct Config {
    /// The rules in force, replaced by the watcher when the file changes.
    pub(crate) rules: Arc<LiveRules>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Config, String> {
        let path = raw
            .rules_file
            .or_else(|| cli::default_rules().cloned())
            .ok_or_else(|| {
                format!(
                    "no rules file: start the plugin with --rules FILE (or {}), or set `rules_file` in its `config:`",
                    cli::RULES_ENV
                )
            })?;
        let (text, rules) = read_file(&path)?;
        info!(file = %path.display(), summary = %rules.summary(), "rules loaded");
        let live = Arc::new(LiveRules::new(rules));
        watch::spawn(path, text, Arc::downgrade(&live));
        Ok(Config { rules: live })
    }
}
