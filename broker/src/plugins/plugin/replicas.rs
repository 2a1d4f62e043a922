//! A plugin's replicas and how each is dialed: the endpoint resolved to addresses, one
//! channel per replica whose connector connects once (see the plugin module docs), TLS
//! for `https://` and `dns:///`, and the bearer token every request carries.
//!
//! Nothing here knows the `Plugin` that owns the replicas: this is the
//! plumbing it is built from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tandem_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Uri};
use tracing::warn;

use crate::plugins::config::PluginConfig;
use crate::plugins::endpoint::Endpoint;
use crate::plugins::error::PluginError;

/// A replica's channel with the broker's bearer token on every request.
pub(crate) type Chan = tonic::service::interceptor::InterceptedService<Channel, Bearer>;
pub(super) type Client = pb::plugin_client::PluginClient<Chan>;

/// The `authorization: Bearer <token>` a plugin's calls carry (see `token_file`), shared
/// by every channel of the plugin so that a reload's new token applies to all at once.
#[derive(Clone, Default)]
pub(crate) struct Bearer(pub(super) Arc<RwLock<Option<tonic::metadata::AsciiMetadataValue>>>);

impl Bearer {
    /// A bearer that sends `token` (as read by [`read_token`]), or nothing.
    pub(crate) fn new(token: Option<tonic::metadata::AsciiMetadataValue>) -> Self {
        Self(Arc::new(RwLock::new(token)))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0.read().clone() {
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// The largest `token_file` read: a bearer token is tens to hundreds of bytes (a JWT a
/// few KiB); anything larger is a wrong path.
const MAX_TOKEN_FILE: usize = 16 * 1024;

/// The most replicas a `dns:///` endpoint is dialled at: each is a channel, probes and a
/// circuit breaker, so a name that resolves to thousands of addresses (a misconfigured or
/// hostile DNS answer) must not make thousands. The first ones, in address order, are used.
const MAX_REPLICAS: usize = 64;

/// Reads a `token_file`: one token, surrounding whitespace ignored, as the header value
/// `Bearer <token>` (marked sensitive, so it is never logged).
pub(crate) fn read_token(
    alias: &str,
    path: &std::path::Path,
) -> Result<tonic::metadata::AsciiMetadataValue, PluginError> {
    let fail = |message: String| PluginError::Config {
        alias: alias.to_owned(),
        message,
    };
    // Read at most one byte past the bound, so a huge or endless file (a log, /dev/zero)
    // is refused without being read whole.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read as _;
            f.take(MAX_TOKEN_FILE as u64 + 1).read_to_end(&mut bytes)
        })
        .map_err(|e| fail(format!("cannot read token_file {}: {e}", path.display())))?;
    if bytes.len() > MAX_TOKEN_FILE {
        return Err(fail(format!(
            "token_file {} is larger than {MAX_TOKEN_FILE} bytes: not a token",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        fail(format!(
            "token_file {}: the token must be printable ASCII without spaces",
            path.display()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!("token_file {} is empty", path.display())));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(format!(
            "token_file {}: the token must be printable ASCII without spaces",
            path.display()
        )));
    }
    let mut value: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {token}").parse().map_err(|_| {
            fail(format!(
                "token_file {}: not a valid header value",
                path.display()
            ))
        })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Where a replica is reached.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A unix socket path.
    Unix(std::path::PathBuf),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

/// A replica: one address serving the plugin.
pub(crate) struct Replica {
    /// Its address, for logs and `$SYS`.
    pub(super) label: String,
    /// Where a new channel dials.
    pub(super) target: Target,
    /// The replica's connection; clients over it are cheap handles.
    pub(super) channel: RwLock<Channel>,
    /// Whether calls may be sent to it: set by a probe, cleared on failure.
    pub(super) up: AtomicBool,
    /// Whether a probe is running for it (one at a time).
    pub(super) probing: AtomicBool,
    /// Errors in a row, towards `failure_threshold`.
    pub(super) consecutive_errors: AtomicU32,
    /// Calls sent to this replica.
    pub(super) calls: AtomicU64,
    /// Calls this replica answered successfully: the evidence that it is alive, only busy,
    /// when one of its calls times out meanwhile.
    pub(super) answered: AtomicU64,
    /// Times in a row the replica was marked down for errors without a successful call
    /// in between: each one doubles the wait before the next probe.
    pub(super) trips: AtomicU32,
}

/// The endpoint every channel of the plugin is built from: scheme and host (the name
/// TLS checks), timeouts, keep-alive, and TLS with its files read now.
pub(crate) fn dial_template(
    alias: &str,
    config: &PluginConfig,
) -> Result<tonic::transport::Endpoint, PluginError> {
    let (scheme, host) = match &config.endpoint {
        Endpoint::Https { host, .. } => ("https", host.clone()),
        // Every replica of the name is dialed with TLS, checked against the name.
        Endpoint::Dns { host, .. } if config.tls.is_some() => ("https", host.clone()),
        Endpoint::Http { host, .. } | Endpoint::Dns { host, .. } => ("http", host.clone()),
        Endpoint::Unix(_) => ("http", "localhost".to_owned()),
    };
    let uri_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let mut template = tonic::transport::Endpoint::from_shared(format!("{scheme}://{uri_host}"))
        .map_err(|e| PluginError::Config {
            alias: alias.to_owned(),
            message: format!("endpoint: {e}"),
        })?
        .connect_timeout(config.timeout.max(Duration::from_millis(500)))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    if scheme == "https" {
        let mut tls = ClientTlsConfig::new().domain_name(
            config
                .tls
                .as_ref()
                .and_then(|t| t.domain.clone())
                .unwrap_or(host),
        );
        if let Some(t) = &config.tls {
            if let Some(ca) = &t.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca, "ca", alias)?));
            }
            match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(
                        read_pem(cert, "cert", alias)?,
                        read_pem(key, "key", alias)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(PluginError::Config {
                        alias: alias.to_owned(),
                        message: "tls.cert and tls.key go together".into(),
                    });
                }
            }
        }
        template = template.tls_config(tls).map_err(|e| PluginError::Config {
            alias: alias.to_owned(),
            message: format!("tls: {e}"),
        })?;
    } else if config.tls.is_some() {
        return Err(PluginError::Config {
            alias: alias.to_owned(),
            message: "tls: is only for https:// and dns:/// endpoints".into(),
        });
    }
    Ok(template)
}

fn read_pem(path: &std::path::Path, what: &str, alias: &str) -> Result<Vec<u8>, PluginError> {
    std::fs::read(path).map_err(|e| PluginError::Config {
        alias: alias.to_owned(),
        message: format!("cannot read tls.{what} {}: {e}", path.display()),
    })
}

pub(crate) fn channel(template: &tonic::transport::Endpoint, target: &Target) -> Channel {
    // The connector connects once: see the module docs.
    let used = Arc::new(AtomicBool::new(false));
    let target = target.clone();
    let connector = tower::service_fn(move |_: Uri| {
        let used = used.clone();
        let target = target.clone();
        async move {
            if used.load(Ordering::Acquire) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "connection to plugin lost; it must be described again",
                ));
            }
            let io = match target {
                Target::Unix(path) => TokioIo::new(Box::new(
                    tokio::net::UnixStream::connect(path).await?,
                ) as Box<dyn Io>),
                Target::Tcp(addr) => {
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    let _ = s.set_nodelay(true);
                    TokioIo::new(Box::new(s) as Box<dyn Io>)
                }
            };
            used.store(true, Ordering::Release);
            Ok::<_, std::io::Error>(io)
        }
    });
    template.connect_with_connector_lazy(connector)
}

/// Resolves the endpoint to its targets now.
pub(crate) async fn resolve(endpoint: &Endpoint) -> Result<Vec<(String, Target)>, String> {
    match endpoint {
        Endpoint::Unix(path) => Ok(vec![(
            format!("unix://{}", path.display()),
            Target::Unix(path.clone()),
        )]),
        Endpoint::Http { host, port }
        | Endpoint::Https { host, port }
        | Endpoint::Dns { host, port } => {
            let addrs = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?;
            let mut out: Vec<(String, Target)> =
                addrs.map(|a| (a.to_string(), Target::Tcp(a))).collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out.dedup_by(|a, b| a.0 == b.0);
            if !matches!(endpoint, Endpoint::Dns { .. }) {
                // A plain http(s) endpoint is one replica: its first address.
                out.truncate(1);
            } else if out.len() > MAX_REPLICAS {
                warn!(
                    name = %host,
                    addresses = out.len(),
                    max = MAX_REPLICAS,
                    "dns:/// endpoint resolves to more addresses than the broker dials; using the first ones"
                );
                out.truncate(MAX_REPLICAS);
            }
            Ok(out)
        }
    }
}

/// Object-safe alias for the stream types a connector hands to hyper.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let ok = read_token("p", &file("ok", b"  s3cr3t-token\n")).unwrap();
        assert_eq!(ok.to_str().unwrap(), "Bearer s3cr3t-token");
        assert!(ok.is_sensitive(), "never logged");
        let err = |p: &std::path::Path| read_token("p", p).unwrap_err().to_string();
        let big = file("big", &vec![b'a'; MAX_TOKEN_FILE + 1]);
        assert!(err(&big).contains("larger than"), "{}", err(&big));
        // An endless file is refused after the bound, not read whole.
        let zero = std::path::Path::new("/dev/zero");
        if zero.exists() {
            assert!(err(zero).contains("larger than"), "{}", err(zero));
        }
        assert!(err(&file("empty", b"  \n")).contains("is empty"));
        assert!(err(&file("space", b"two words")).contains("printable ASCII"));
        assert!(err(&file("binary", &[0xff, 0xfe])).contains("printable ASCII"));
        assert!(err(&dir.path().join("missing")).contains("cannot read"));
    }
}
