//! Plugin endpoints: where a plugin serves gRPC.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed plugin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path/to.sock`: a sidecar on a shared volume.
    Unix(PathBuf),
    /// `http://host:port`: plain HTTP/2.
    Http {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `https://host:port`: HTTP/2 over TLS (see the plugin's `tls:`).
    Https {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// `dns:///name:port`: every address the name resolves to is a replica; calls are
    /// balanced across the healthy ones and the name is resolved again periodically.
    Dns {
        /// Name to resolve.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Why an endpoint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid plugin endpoint `{0}`: expected unix:///path, http://host:port, https://host:port or dns:///host:port"
)]
pub struct EndpointError(String);

fn host_port(s: &str, original: &str) -> Result<(String, u16), EndpointError> {
    let err = || EndpointError(original.to_owned());
    let s = s.trim_end_matches('/');
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
    let port = port.parse::<u16>().map_err(|_| err())?;
    if host.is_empty() || host.contains('/') {
        return Err(err());
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') || path.len() < 2 {
                return Err(EndpointError(s.to_owned()));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("http://") {
            let (host, port) = host_port(rest, s)?;
            return Ok(Endpoint::Http { host, port });
        }
        if let Some(rest) = s.strip_prefix("https://") {
            let (host, port) = host_port(rest, s)?;
            return Ok(Endpoint::Https { host, port });
        }
        if let Some(rest) = s.strip_prefix("dns:///") {
            let (host, port) = host_port(rest, s)?;
            return Ok(Endpoint::Dns { host, port });
        }
        Err(EndpointError(s.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket = |h: &str| {
            if h.contains(':') {
                format!("[{h}]")
            } else {
                h.to_owned()
            }
        };
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Http { host, port } => write!(f, "http://{}:{port}", bracket(host)),
            Endpoint::Https { host, port } => write!(f, "https://{}:{port}", bracket(host)),
            Endpoint::Dns { host, port } => write!(f, "dns:///{}:{port}", bracket(host)),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "unix:///run/tandem/auth.sock".parse(),
            Ok(Endpoint::Unix("/run/tandem/auth.sock".into()))
        );
        assert_eq!(
            "http://127.0.0.1:50051".parse(),
            Ok(Endpoint::Http {
                host: "127.0.0.1".into(),
                port: 50051
            })
        );
        assert_eq!(
            "https://auth.example:443/".parse(),
            Ok(Endpoint::Https {
                host: "auth.example".into(),
                port: 443
            })
        );
        assert_eq!(
            "dns:///auth.tandem.svc:50051".parse(),
            Ok(Endpoint::Dns {
                host: "auth.tandem.svc".into(),
                port: 50051
            })
        );
        assert_eq!(
            "http://[::1]:7".parse(),
            Ok(Endpoint::Http {
                host: "::1".into(),
                port: 7
            })
        );
    }

    #[test]
    fn refuses_bad_ones() {
        for bad in [
            "",
            "auth:50051",
            "tcp://a:1",
            "http://a",
            "http://a:port",
            "http://:80",
            "unix://relative.sock",
            "dns://a:1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_as_parsed() {
        for s in [
            "unix:///a.sock",
            "http://h:1",
            "https://[::1]:2",
            "dns:///n:3",
        ] {
            assert_eq!(s.parse::<Endpoint>().unwrap().to_string(), s);
        }
    }
}
