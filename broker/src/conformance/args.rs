//! The command line of `tandem plugin check`, and the [`Settings`] it stands for: the
//! plugin dialled as the broker would dial a `plugins:` entry with the same keys.

use std::path::PathBuf;
use std::time::Duration;

use crate::plugins::config::{PluginConfig, PluginTls};
use crate::plugins::endpoint::Endpoint;

use super::error::CheckError;

/// `tandem plugin check ENDPOINT`: runs the conformance checks against a running plugin
/// server and prints one line per check.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Where the plugin serves gRPC, as in the broker's `endpoint:`: `unix:///path.sock`,
    /// `http://host:port`, `https://host:port` (with the `--tls-*` options) or
    /// `dns:///name:port` (the first address is checked).
    pub endpoint: Endpoint,
    /// Deadline of every call, and of every ack waited for on the `Events` stream.
    #[arg(long, default_value = "2s", value_parser = humantime_serde::re::humantime::parse_duration)]
    pub timeout: Duration,
    /// A YAML (or JSON) file holding the plugin's `config:` section, pushed by `Describe`
    /// as the broker pushes it. Without it `Describe` carries no configuration.
    #[arg(long, value_name = "FILE")]
    pub plugin_config: Option<PathBuf>,
    /// The alias `Describe` names the plugin by (the key under the broker's `plugins:`).
    #[arg(long, default_value = "check")]
    pub alias: String,
    /// A username the plugin accepts with `--password`: Authenticate must ALLOW it, and
    /// DENY the same username with a wrong password. Without credentials that check is
    /// skipped.
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    /// The password of `--username`. A command line is visible to other users of the
    /// machine: give test credentials, or the password in `TANDEM_CHECK_PASSWORD`.
    #[arg(
        long,
        env = "TANDEM_CHECK_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    pub password: Option<String>,
    /// How the plugin is dialled, beyond its endpoint (boxed: rarely given, and the
    /// command enum stays small).
    #[command(flatten)]
    pub dial: Box<DialArgs>,
}

/// The bearer token and TLS options, as the broker's `token_file` and `tls:` keys.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DialArgs {
    /// File holding the bearer token every call carries (the broker's `token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the plugin's certificate (`https://`).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `--tls-key`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify the plugin's certificate against (default: the endpoint's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
}

/// What a check run is given: the plugin as a `plugins:` entry, and the test credentials.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The alias `Describe` carries.
    pub alias: String,
    /// Endpoint, timeout, TLS, token and `config:`, as the broker's entry would hold them.
    pub plugin: PluginConfig,
    /// `--username` and `--password`.
    pub credentials: Option<(String, String)>,
}

impl CheckArgs {
    /// The settings these arguments stand for; reads `--plugin-config`.
    pub fn settings(&self) -> Result<Settings, CheckError> {
        let mut plugin = PluginConfig::new(self.endpoint.clone());
        plugin.timeout = self.timeout;
        let dial = &self.dial;
        plugin.token_file = dial.token_file.clone();
        let tls = PluginTls {
            ca: dial.tls_ca.clone(),
            cert: dial.tls_cert.clone(),
            key: dial.tls_key.clone(),
            domain: dial.tls_domain.clone(),
        };
        if tls.ca.is_some() || tls.cert.is_some() || tls.domain.is_some() {
            plugin.tls = Some(tls);
        }
        if let Some(path) = &self.plugin_config {
            plugin.config = Some(read_plugin_config(path)?);
        }
        Ok(Settings {
            alias: self.alias.clone(),
            plugin,
            credentials: self.username.clone().zip(self.password.clone()),
        })
    }
}

/// The plugin's `config:` section from a YAML file (JSON is YAML too).
fn read_plugin_config(path: &std::path::Path) -> Result<serde_json::Value, CheckError> {
    let fail = |message: String| CheckError::PluginConfig {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let value: serde_json::Value =
        serde_yaml_ng::from_str(&text).map_err(|e| fail(e.to_string()))?;
    match value {
        serde_json::Value::Object(_) | serde_json::Value::Null => Ok(value),
        _ => Err(fail(
            "must hold a map (the plugin's config: section)".into(),
        )),
    }
}
