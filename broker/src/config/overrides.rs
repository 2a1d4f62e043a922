//! `--bind` and `--port`: the command line's say over one listener, as Mosquitto's
//! `-p` has, so trying the broker on another address needs no file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Overrides of the listener named `default` (or of the only listener, whatever its
/// name). Applied at start-up and again to the file a reload reads, so a reload does
/// not see the override as a change to `listeners`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerOverride {
    /// `--bind`: an address `IP:PORT`, or an `IP` that keeps the listener's port.
    pub bind: Option<String>,
    /// `--port`: the port, keeping the listener's address (or `--bind`'s).
    pub port: Option<u16>,
    /// The listener they were applied to at start-up, once [`pinned`](Self::pinned): a
    /// reload overrides that one again, or nothing when the file no longer has it
    /// (listener changes take effect only on restart anyway).
    pub listener: Option<String>,
}

impl ListenerOverride {
    /// Whether anything is overridden.
    pub fn is_empty(&self) -> bool {
        self.bind.is_none() && self.port.is_none()
    }

    /// Applies the overrides to `config`, read from `file`.
    pub fn apply(&self, config: &mut Config, file: &Path) -> Result<(), ConfigError> {
        if self.is_empty() {
            return Ok(());
        }
        let invalid = |path: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            path: path.to_owned(),
            message,
        };
        let name = match &self.listener {
            Some(pinned) if !config.listeners.contains_key(pinned) => return Ok(()),
            Some(pinned) => pinned.clone(),
            None => target(config),
        };
        let names: Vec<String> = config.listeners.keys().cloned().collect();
        let listener = config.listeners.get_mut(&name).ok_or_else(|| {
            invalid(
                "listeners",
                format!(
                    "--bind/--port change the listener named `default` (or the only one), and there are {}: {}; edit the file instead",
                    names.len(),
                    names.join(", ")
                ),
            )
        })?;
        if let Some(bind) = &self.bind {
            listener.bind = match (bind.parse::<SocketAddr>(), bind.parse::<IpAddr>()) {
                (Ok(addr), _) => addr,
                (_, Ok(ip)) => SocketAddr::new(ip, listener.bind.port()),
                _ => {
                    return Err(invalid(
                        "--bind",
                        format!(
                            "`{bind}` is neither IP:PORT nor an IP address (e.g. 0.0.0.0:1883, [::]:1883, 0.0.0.0)"
                        ),
                    ));
                }
            };
        }
        if let Some(port) = self.port {
            listener.bind.set_port(port);
        }
        Ok(())
    }
}

/// The listener the overrides change: `default`, or the only one whatever its name.
fn target(config: &Config) -> String {
    if config.listeners.contains_key("default") || config.listeners.len() != 1 {
        "default".to_owned()
    } else {
        config.listeners.keys().next().cloned().unwrap_or_default()
    }
}

impl ListenerOverride {
    /// These overrides tied to the listener they change in `config` (the one served at
    /// start-up), for every reload after.
    pub fn pinned(mut self, config: &Config) -> Self {
        if !self.is_empty() {
            self.listener = Some(target(config));
        }
        self
    }
}

/// Where the configuration in force came from: a file and the command line's
/// overrides. A reload reads it again the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSource {
    /// The file.
    pub file: PathBuf,
    /// `--bind` / `--port`.
    pub overrides: ListenerOverride,
}

impl ConfigSource {
    /// Reads the file and applies the overrides.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = Config::from_file(&self.file)?;
        self.overrides.apply(&mut config, &self.file)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(yaml: &str, o: ListenerOverride) -> Result<Config, ConfigError> {
        let mut c = Config::from_yaml(yaml, Path::new("t.yaml")).unwrap();
        o.apply(&mut c, Path::new("t.yaml")).map(|()| c)
    }

    fn bind(c: &Config, name: &str) -> String {
        c.listeners[name].bind.to_string()
    }

    #[test]
    fn port_bind_and_both_change_the_default_listener() {
        let yaml = "listeners:\n  default: { type: tcp, bind: 127.0.0.1:1883 }\n  other: { type: tcp, bind: 127.0.0.1:1884 }\n";
        let port = ListenerOverride {
            listener: None,
            bind: None,
            port: Some(2883),
        };
        let c = with(yaml, port).unwrap();
        assert_eq!(bind(&c, "default"), "127.0.0.1:2883");
        assert_eq!(bind(&c, "other"), "127.0.0.1:1884");
        let ip = ListenerOverride {
            listener: None,
            bind: Some("0.0.0.0".into()),
            port: None,
        };
        assert_eq!(bind(&with(yaml, ip).unwrap(), "default"), "0.0.0.0:1883");
        let both = ListenerOverride {
            listener: None,
            bind: Some("[::1]:7000".into()),
            port: Some(7001),
        };
        assert_eq!(bind(&with(yaml, both).unwrap(), "default"), "[::1]:7001");
    }

    #[test]
    fn the_only_listener_is_changed_whatever_its_name() {
        let yaml = "listeners:\n  edge: { type: tcp, bind: 127.0.0.1:1883 }\n";
        let port = ListenerOverride {
            listener: None,
            bind: None,
            port: Some(9),
        };
        assert_eq!(bind(&with(yaml, port).unwrap(), "edge"), "127.0.0.1:9");
    }

    #[test]
    fn several_listeners_without_default_and_a_bad_address_are_errors() {
        let yaml = "listeners:\n  a: { type: tcp, bind: 127.0.0.1:1 }\n  b: { type: tcp, bind: 127.0.0.1:2 }\n";
        let port = ListenerOverride {
            listener: None,
            bind: None,
            port: Some(9),
        };
        let err = with(yaml, port).unwrap_err().to_string();
        assert!(err.contains("there are 2: a, b"), "{err}");
        let yaml = "listeners:\n  default: { type: tcp, bind: 127.0.0.1:1 }\n";
        let host = ListenerOverride {
            listener: None,
            bind: Some("localhost".into()),
            port: None,
        };
        let err = with(yaml, host).unwrap_err().to_string();
        assert!(
            err.contains("--bind: `localhost` is neither IP:PORT"),
            "{err}"
        );
    }

    #[test]
    fn a_reload_overrides_the_listener_chosen_at_start_and_never_refuses_for_it() {
        let start = "listeners:\n  edge: { type: tcp, bind: 127.0.0.1:1883 }\n";
        let o = ListenerOverride {
            bind: None,
            port: Some(9),
            listener: None,
        };
        let o = o.pinned(&Config::from_yaml(start, Path::new("t.yaml")).unwrap());
        // The file gained a listener: `edge` is still the one changed, and nothing fails.
        let later = "listeners:\n  edge: { type: tcp, bind: 127.0.0.1:1883 }\n  more: { type: tcp, bind: 127.0.0.1:1884 }\n";
        let c = with(later, o.clone()).unwrap();
        assert_eq!(
            (bind(&c, "edge"), bind(&c, "more")),
            ("127.0.0.1:9".into(), "127.0.0.1:1884".into())
        );
        // The file lost it: nothing to change, and the reload is not refused for it.
        let gone = "listeners:\n  other: { type: tcp, bind: 127.0.0.1:1885 }\n";
        assert_eq!(bind(&with(gone, o).unwrap(), "other"), "127.0.0.1:1885");
    }
}
