//! How the broker is watched: `admin:` (metrics and health over HTTP), `sys:` (`$SYS`
//! statistics) and `log:`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to serve `/metrics`, `/healthz` and `/readyz` on; `None` (the default)
    /// serves nothing. Port 0 picks a free one (tests use it).
    pub bind: Option<SocketAddr>,
    /// Admin connections served at once; one more is closed at once. Scrapers and
    /// probes hold one connection each.
    pub max_connections: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: None,
            max_connections: 16,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Line format on stderr.
    pub format: LogFormat,
    /// Default filter (`info`, `warn,tandem_broker=debug`, ...). `RUST_LOG`, then
    /// `--log`/`TANDEM_LOG`, override it.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: LogLevel("info".to_owned()),
        }
    }
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `key=value` lines for people.
    Text,
    /// One JSON object per line for log collectors; span fields (such as a
    /// connection's `client_id`) are under `spans`.
    Json,
}

/// A log filter in `tracing_subscriber::EnvFilter` syntax, checked when the file is read
/// so a typo is reported with its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogLevel(String);

impl LogLevel {
    /// The filter text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&text)
            .map_err(|e| format!("invalid log filter `{text}`: {e}"))?;
        Ok(Self(text))
    }
}

impl From<LogLevel> for String {
    fn from(level: LogLevel) -> String {
        level.0
    }
}

/// `$SYS` statistics publishing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysConfig {
    /// Publish `$SYS/broker/...` at all.
    pub enable: bool,
    /// Interval between updates (aMQTT's `sys_interval`).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for SysConfig {
    fn default() -> Self {
        Self {
            enable: true,
            interval: Duration::from_secs(10),
        }
    }
}
