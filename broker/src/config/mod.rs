//! Configuration: strict YAML with defaults embedded in the binary.
//!
//! Every struct denies unknown keys, so a typo is an error that names the file, line,
//! column and key path instead of a setting silently ignored. Durations are written
//! the human way (`200ms`, `30s`). [`DEFAULT_CONFIG`] is the commented file that
//! `tandem print-default-config` prints and that `tandem` serves when given no file;
//! a unit test keeps it equal to [`Config::default`].
//!
//! # Layout
//! - this file: the whole [`Config`], reading, parsing and validation, and the errors
//!   that name file, line and key.
//! - [`mqtt`]: the `mqtt:` limits and session settings.
//! - [`listener`]: how clients reach the broker: `listeners:` (TCP, TLS, WebSocket).
//! - [`service`]: how the broker is watched: `admin:`, `sys:`, `log:`.
//! - [`storage`]: `storage:`, what survives a restart.
//!
//! The plugin sections (`plugins:`, `auth:`, `topic-check:`) are typed by the plugin
//! host (`crate::plugins::config`); the broker lends them to it as `PluginSections`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::telemetry::TracingConfig;
pub use listener::{CertUsername, ClientAuth, ListenerConfig, ListenerKind, TlsConfig};
pub use mqtt::{MqttConfig, SessionTakeover};
pub use service::{AdminConfig, LogConfig, LogFormat, LogLevel, SysConfig};
pub use storage::StorageConfig;

use crate::plugins::config::{AuthConfig, PluginConfig, PluginSections, TopicCheckConfig};

pub mod listener;
pub mod mqtt;
pub mod overrides;
pub mod service;
pub mod storage;

/// The commented default configuration, embedded at build time.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.yaml");

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not parse or did not match the schema.
    #[error("{file}: {location}{path}: {message}")]
    Parse {
        /// The file (or `<embedded default>`).
        file: PathBuf,
        /// `line L, column C: ` when known.
        location: String,
        /// Key path of the offending value, e.g. `listeners.default.bind`.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The configuration parsed but is not usable.
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Key path of the offending value.
        path: String,
        /// What was wrong and what to do.
        message: String,
    },
}

/// The whole broker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Named listeners (aMQTT's shape: a map of name to `type` and `bind`).
    pub listeners: BTreeMap<String, ListenerConfig>,
    /// MQTT limits and timers.
    pub mqtt: MqttConfig,
    /// `$SYS/broker/...` statistics.
    pub sys: SysConfig,
    /// How long a graceful shutdown may take before connections are dropped. Keep it
    /// shorter than a Kubernetes pod's termination grace period.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Plugins by alias.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// The Authenticate chain. Absent: every client may connect.
    pub auth: Option<AuthConfig>,
    /// The TopicFilter chain. Absent or `enable: false`: every topic is allowed.
    #[serde(rename = "topic-check")]
    pub topic_check: Option<TopicCheckConfig>,
    /// The admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); off by default.
    pub admin: AdminConfig,
    /// Log format and default filter.
    pub log: LogConfig,
    /// What survives a restart: memory only by default.
    pub storage: StorageConfig,
    /// OpenTelemetry tracing: where spans are exported, sampling.
    pub tracing: TracingConfig,
}

impl Default for Config {
    fn default() -> Self {
        let mut listeners = BTreeMap::new();
        listeners.insert(
            "default".to_owned(),
            ListenerConfig::tcp(SocketAddr::from(([127, 0, 0, 1], 1883))),
        );
        Self {
            listeners,
            mqtt: MqttConfig::default(),
            sys: SysConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            plugins: BTreeMap::new(),
            auth: None,
            topic_check: None,
            admin: AdminConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Config {
    /// The plugin host's sections (`plugins:`, `auth:`, `topic-check:`): what
    /// `PluginHost::start` and `PluginHost::reload` apply.
    pub fn plugin_sections(&self) -> PluginSections {
        PluginSections {
            plugins: self.plugins.clone(),
            auth: self.auth.clone(),
            topic_check: self.topic_check.clone(),
        }
    }

    /// Parses and validates YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let location = inner
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            // serde_yaml_ng appends "at line L column C" itself; it is already in front.
            let mut message = inner.to_string();
            if let Some(cut) = message.find(" at line ") {
                message.truncate(cut);
            }
            ConfigError::Parse {
                file: file.to_owned(),
                location,
                path: if path == "." { String::new() } else { path },
                message,
            }
        })?;
        config.validate(file)?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::from_yaml(&text, file)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::from_yaml(DEFAULT_CONFIG, Path::new("<embedded default>"))
            .expect("the embedded default config is valid (checked by a unit test)")
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        let invalid = |path: &str, message: &str| ConfigError::Invalid {
            file: file.to_owned(),
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if self.listeners.is_empty() {
            return Err(invalid("listeners", "at least one listener is needed"));
        }
        for (name, listener) in &self.listeners {
            if let Err((key, message)) = listener.check() {
                return Err(invalid(&format!("listeners.{name}.{key}"), &message));
            }
        }
        if self.mqtt.max_connections == 0 {
            return Err(invalid("mqtt.max_connections", "must be at least 1"));
        }
        if self.mqtt.max_packet_size < 64
            || self.mqtt.max_packet_size > crate::protocol::MAX_REMAINING_LENGTH + 5
        {
            return Err(invalid(
                "mqtt.max_packet_size",
                "must be between 64 and 268435460 bytes",
            ));
        }
        if self.mqtt.max_connect_packet_size < 64 {
            return Err(invalid(
                "mqtt.max_connect_packet_size",
                "must be at least 64 bytes",
            ));
        }
        if self.mqtt.max_handshakes == 0 {
            return Err(invalid("mqtt.max_handshakes", "must be at least 1"));
        }
        if self.mqtt.max_inflight == 0 {
            return Err(invalid("mqtt.max_inflight", "must be at least 1"));
        }
        if self.mqtt.max_queued_messages == 0 {
            return Err(invalid("mqtt.max_queued_messages", "must be at least 1"));
        }
        if self.mqtt.backpressure_timeout.is_zero() {
            return Err(invalid(
                "mqtt.backpressure_timeout",
                "must be above 0 (drop_new drops at once)",
            ));
        }
        if self.mqtt.max_topic_levels == 0 {
            return Err(invalid("mqtt.max_topic_levels", "must be at least 1"));
        }
        if self.mqtt.session_expiry.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "mqtt.session_expiry",
                "must be above 0 (null keeps parked sessions until the broker stops)",
            ));
        }
        if self.mqtt.max_keep_alive == 0 {
            // A cap of 0 would tell MQTT 5 clients "no keepalive" and let dead
            // connections hold their slot for ever.
            return Err(invalid(
                "mqtt.max_keep_alive",
                "must be at least 1 second (65535 imposes nothing)",
            ));
        }
        if self.mqtt.receive_maximum == 0 {
            // MQTT 5 forbids announcing 0 (section 3.2.2.3.3).
            return Err(invalid(
                "mqtt.receive_maximum",
                "must be at least 1 (65535 announces nothing)",
            ));
        }
        if self.mqtt.max_parked_sessions == 0 {
            return Err(invalid("mqtt.max_parked_sessions", "must be at least 1"));
        }
        if self.admin.max_connections == 0 {
            return Err(invalid("admin.max_connections", "must be at least 1"));
        }
        if self.sys.enable && self.sys.interval < Duration::from_secs(1) {
            return Err(invalid("sys.interval", "must be at least 1s"));
        }
        if let Err((key, message)) = self.storage.check() {
            return Err(invalid(&format!("storage.{key}"), &message));
        }
        if let Err((path, message)) = self.tracing.check() {
            return Err(invalid(path, &message));
        }
        let chains = [
            ("auth.plugins", self.auth.as_ref().map(|a| &a.plugins)),
            (
                "topic-check.plugins",
                self.topic_check.as_ref().map(|t| &t.plugins),
            ),
        ];
        for (path, aliases) in chains {
            let Some(aliases) = aliases else { continue };
            if aliases.is_empty() {
                return Err(invalid(
                    path,
                    "names no plugin; remove the section to allow everything",
                ));
            }
            for alias in aliases {
                if !self.plugins.contains_key(alias) {
                    return Err(invalid(
                        path,
                        &format!("`{alias}` is not defined under plugins:"),
                    ));
                }
            }
        }
        for (alias, p) in &self.plugins {
            let path = format!("plugins.{alias}");
            if p.timeout.is_zero() {
                return Err(invalid(&format!("{path}.timeout"), "must be above 0"));
            }
            if p.max_concurrency == 0 {
                return Err(invalid(
                    &format!("{path}.max_concurrency"),
                    "must be at least 1",
                ));
            }
            if p.failure_threshold == 0 {
                return Err(invalid(
                    &format!("{path}.failure_threshold"),
                    "must be at least 1",
                ));
            }
            if p.command.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid(&format!("{path}.command"), "must name a program"));
            }
            if p.config
                .as_ref()
                .is_some_and(|c| !c.is_object() && !c.is_null())
            {
                return Err(invalid(&format!("{path}.config"), "must be a map"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::config::OnError;

    #[test]
    fn embedded_default_equals_default_impl() {
        assert_eq!(Config::embedded_default(), Config::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_path() {
        let text = "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:1883\n    bnid: x\n";
        let err = Config::from_yaml(text, Path::new("t.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("t.yaml: line 5, column 5: "), "{msg}");
        assert!(msg.contains("listeners.default"), "{msg}");
        assert!(msg.contains("unknown field `bnid`"), "{msg}");
    }

    #[test]
    fn bad_value_names_key() {
        let text = "mqtt:\n  max_inflight: lots\n";
        let msg = Config::from_yaml(text, Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("mqtt.max_inflight"), "{msg}");
    }

    #[test]
    fn durations_are_human() {
        let c = Config::from_yaml("mqtt:\n  connect_timeout: 250ms\n", Path::new("t")).unwrap();
        assert_eq!(c.mqtt.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn chains_must_name_defined_plugins() {
        let text =
            "plugins:\n  acl:\n    endpoint: unix:///tmp/acl.sock\nauth:\n  plugins: [acl, nope]\n";
        let msg = Config::from_yaml(text, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "t: auth.plugins: `nope` is not defined under plugins:");
    }

    #[test]
    fn bad_endpoint_names_line_and_key() {
        let text = "plugins:\n  acl:\n    endpoint: tcp://x:1\n";
        let msg = Config::from_yaml(text, Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 3") && msg.contains("plugins.acl.endpoint"),
            "{msg}"
        );
        assert!(msg.contains("invalid plugin endpoint"), "{msg}");
    }

    #[test]
    fn plugin_defaults() {
        let text = "plugins:\n  a:\n    endpoint: http://127.0.0.1:1\n    config: {x: 1}\ntopic-check:\n  plugins: [a]\n";
        let c = Config::from_yaml(text, Path::new("t")).unwrap();
        let p = &c.plugins["a"];
        assert_eq!(p.timeout, Duration::from_millis(200));
        assert_eq!(p.on_error, OnError::Deny);
        let t = c.topic_check.unwrap();
        assert!(t.enable);
        assert_eq!(t.cache.max_entries, 1024);
        assert_eq!(t.cache.max_bytes, 64 * 1024);
        assert_eq!(t.hold, Duration::from_secs(30));
    }

    #[test]
    fn topic_check_hold_and_cache_bytes() {
        let text = "plugins:\n  a:\n    endpoint: http://127.0.0.1:1\ntopic-check:\n  plugins: [a]\n  hold: 2s\n  cache: { max_bytes: 100 }\n";
        let t = Config::from_yaml(text, Path::new("t"))
            .unwrap()
            .topic_check
            .unwrap();
        assert_eq!(t.hold, Duration::from_secs(2));
        assert_eq!(t.cache.max_bytes, 100);
        assert_eq!(
            t.cache.max_entries, 1024,
            "the other cache keys keep defaults"
        );
        let typo = "plugins:\n  a:\n    endpoint: http://127.0.0.1:1\ntopic-check:\n  plugins: [a]\n  hold_time: 2s\n";
        assert!(Config::from_yaml(typo, Path::new("t")).is_err());
    }

    #[test]
    fn admin_and_log_sections() {
        let c = Config::from_yaml(
            "admin:\n  bind: 127.0.0.1:0\nlog:\n  format: json\n  level: warn,tandem_broker=debug\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.admin.bind, Some(SocketAddr::from(([127, 0, 0, 1], 0))));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level.as_str(), "warn,tandem_broker=debug");
        let off = Config::from_yaml("admin:\n  bind: null\n", Path::new("t")).unwrap();
        assert_eq!(off.admin.bind, None);
        assert_eq!(Config::default().admin.bind, None, "off by default");
    }

    #[test]
    fn bad_log_settings_name_line_and_key() {
        let msg = Config::from_yaml("log:\n  format: xml\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2") && msg.contains("log.format"),
            "{msg}"
        );
        let msg = Config::from_yaml("log:\n  level: \"info,[\"\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("line 2") && msg.contains("log.level"), "{msg}");
        assert!(msg.contains("invalid log filter"), "{msg}");
        let msg = Config::from_yaml("admin:\n  bind: localhost\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 2") && msg.contains("admin.bind"),
            "{msg}"
        );
    }

    #[test]
    fn tracing_section() {
        let text = "tracing:\n  otlp_endpoint: http://127.0.0.1:4317\n  sample_ratio: 0.25\n";
        let c = Config::from_yaml(text, Path::new("t")).unwrap();
        assert_eq!(
            c.tracing.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
        assert_eq!(c.tracing.service_name, "tandem");
        assert_eq!(c.tracing.sample_ratio, 0.25);
        let msg = Config::from_yaml(
            "tracing:\n  otlp_endpoint: localhost:4317\n",
            Path::new("t"),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.starts_with("t: tracing.otlp_endpoint: "), "{msg}");
        let msg = Config::from_yaml("tracing:\n  sample: 1\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("unknown field `sample`"), "{msg}");
    }

    #[test]
    fn session_settings() {
        let c = Config::from_yaml(
            "mqtt:\n  session_takeover: any\n  session_expiry: 90s\n  max_parked_sessions: 3\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.mqtt.session_takeover, SessionTakeover::Any);
        assert_eq!(c.mqtt.session_expiry, Some(Duration::from_secs(90)));
        assert_eq!(c.mqtt.max_parked_sessions, 3);
        let never = Config::from_yaml("mqtt:\n  session_expiry: null\n", Path::new("t")).unwrap();
        assert_eq!(never.mqtt.session_expiry, None);
        let d = Config::default().mqtt;
        assert_eq!(d.session_takeover, SessionTakeover::SameIdentity);
        assert_eq!(d.session_expiry, Some(Duration::from_secs(7200)));
        let msg = Config::from_yaml("mqtt:\n  session_expiry: 0s\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("t: mqtt.session_expiry: must be above 0"),
            "{msg}"
        );
        let msg = Config::from_yaml("mqtt:\n  max_keep_alive: 0\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("t: mqtt.max_keep_alive: must be at least 1"),
            "{msg}"
        );
        let msg = Config::from_yaml("mqtt:\n  receive_maximum: 0\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("t: mqtt.receive_maximum: must be at least 1"),
            "{msg}"
        );
        let c = Config::from_yaml(
            "mqtt:\n  max_keep_alive: 60\n  topic_alias_maximum: 0\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(c.mqtt.topic_alias_maximum, 0);
        // MQTT 5: held to the cap when asking more or none; 3.1.1 keeps its own.
        assert_eq!(c.mqtt.keep_alive_for(120, true), (60, true));
        assert_eq!(c.mqtt.keep_alive_for(0, true), (60, true));
        assert_eq!(c.mqtt.keep_alive_for(30, true), (30, false));
        assert_eq!(c.mqtt.keep_alive_for(120, false), (120, false));
        assert_eq!(
            d.keep_alive_for(0, true),
            (0, false),
            "the default imposes nothing"
        );
        let msg = Config::from_yaml("mqtt:\n  session_takeover: anyone\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("mqtt.session_takeover"), "{msg}");
    }

    #[test]
    fn validation_names_the_field() {
        let msg = Config::from_yaml("mqtt:\n  max_inflight: 0\n", Path::new("t"))
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "t: mqtt.max_inflight: must be at least 1");
    }
}
