//! Serving a [`Plugin`]: where to listen ([`ListenAddr`]), binding ([`Listener`]), optional TLS
//! ([`TlsConfig`]) and bearer token ([`BearerToken`]), and the gRPC server with health. The
//! settings come from `args.rs`; the socket file's care from `socket.rs`; how serving ends from
//! `shutdown.rs`; the default log setup from `logging.rs`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use tandem_proto::v1::plugin_server::PluginServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::{info, warn};

use crate::args::ServeArgs;
use crate::error::Error;
use crate::logging::init_tracing;
use crate::plugin::{Plugin, PluginService};
use crate::shutdown::{DRAIN_TIMEOUT, bounded, shutdown_signal};
use crate::socket::{bind_private, prepare_socket_path};
use crate::tls::{TlsConfig, tls_on_unix};
use crate::token::{BearerToken, TokenCheck};

/// Where a plugin server listens.
///
/// Parsed from `tcp://IP:PORT` or `http://IP:PORT` (`localhost` stands for `127.0.0.1`) and
/// `unix:///absolute/path.sock` (or `unix:relative.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A unix domain socket path.
    Unix(PathBuf),
}

impl ListenAddr {
    /// The address from the command line (`--listen ADDR` or `--listen=ADDR`), else from
    /// [`LISTEN_ENV`](crate::LISTEN_ENV), else [`DEFAULT_LISTEN`](crate::DEFAULT_LISTEN). Other
    /// arguments are left alone for the plugin's own parsing.
    pub fn from_args_or_env() -> Result<Self, Error> {
        ServeArgs::from_process().listen.parse()
    }
}

impl FromStr for ListenAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidListenAddr {
            addr: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(invalid("the socket path is empty"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        let authority = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .ok_or_else(|| invalid("unknown scheme"))?
            .trim_end_matches('/');
        let authority = match authority.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => authority.to_owned(),
        };
        authority.parse().map(ListenAddr::Tcp).map_err(|_| {
            invalid("expected an IP address and a port, such as 127.0.0.1:50051 or [::]:50051")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// A bound listening socket, ready to serve. Bind first when you need the real address (port 0 in
/// tests), optionally add TLS with [`with_tls`](Self::with_tls), then pass it to
/// [`Plugin::serve_on`].
#[derive(Debug)]
pub struct Listener {
    inner: Bound,
    tls: Option<TlsConfig>,
    token: Option<BearerToken>,
    insecure: bool,
}

#[derive(Debug)]
enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds the address. For a unix socket, creates the parent directory if needed and removes a
    /// stale socket file left by an earlier run (any other kind of file there is an error).
    pub async fn bind(addr: &ListenAddr) -> Result<Self, Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        let inner = match addr {
            ListenAddr::Tcp(socket) => {
                Bound::Tcp(TcpListener::bind(socket).await.map_err(bind_error)?)
            }
            ListenAddr::Unix(path) => {
                prepare_socket_path(path)?;
                Bound::Unix(bind_private(path).map_err(bind_error)?, path.clone())
            }
        };
        Ok(Listener {
            inner,
            tls: None,
            token: None,
            insecure: false,
        })
    }

    /// Requires the broker's bearer token on every call of the plugin service: a call without
    /// `authorization: Bearer <token>` is answered `UNAUTHENTICATED`. gRPC health stays open (it
    /// tells only whether the plugin serves, and orchestrators' probes send no token).
    pub fn with_token(self, token: BearerToken) -> Self {
        Listener {
            token: Some(token),
            ..self
        }
    }

    /// Serves a TCP address that is not loopback even with neither a token nor mTLS (anyone who
    /// reaches it may call the plugin). Without this, [`Plugin::serve_on`] refuses.
    pub fn allow_insecure(self) -> Self {
        Listener {
            insecure: true,
            ..self
        }
    }

    /// Refuses a listener reachable from other hosts whose callers need not prove anything.
    fn check_exposure(&self) -> Result<(), Error> {
        let Bound::Tcp(tcp) = &self.inner else {
            return Ok(());
        };
        let authenticated = self.token.is_some()
            || self
                .tls
                .as_ref()
                .is_some_and(TlsConfig::requires_client_cert);
        let local = tcp.local_addr().map_err(|source| Error::Bind {
            addr: "tcp".into(),
            source,
        })?;
        if authenticated || self.insecure || local.ip().is_loopback() {
            return Ok(());
        }
        Err(Error::Insecure {
            addr: ListenAddr::Tcp(local).to_string(),
        })
    }

    /// Serves TLS on this TCP listener (gRPC health included), so clients connect to
    /// `https://host:port`; with a client CA in `tls`, only clients presenting a certificate it
    /// signed get through the handshake (mTLS). A unix socket listener is an error (and its socket
    /// file is removed): TLS applies only to TCP.
    pub fn with_tls(self, tls: TlsConfig) -> Result<Self, Error> {
        match self.inner {
            Bound::Tcp(_) => Ok(Listener {
                tls: Some(tls),
                ..self
            }),
            Bound::Unix(listener, path) => {
                drop(listener);
                let _ = std::fs::remove_file(&path);
                Err(tls_on_unix(&path))
            }
        }
    }

    /// The TLS this listener serves, if any.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> Result<ListenAddr, Error> {
        match &self.inner {
            Bound::Tcp(listener) => listener
                .local_addr()
                .map(ListenAddr::Tcp)
                .map_err(|source| Error::Bind {
                    addr: "tcp".into(),
                    source,
                }),
            Bound::Unix(_, path) => Ok(ListenAddr::Unix(path.clone())),
        }
    }
}

impl Plugin {
    /// Serves the plugin until SIGTERM or SIGINT: listens where `--listen` or
    /// `TANDEM_PLUGIN_LISTEN` says (default `tcp://127.0.0.1:50051`), serves the plugin service and
    /// gRPC health, then drains in-flight calls and exits. Installs a `tracing` subscriber
    /// logging to stderr (`RUST_LOG`, default `info`) unless the program set one.
    ///
    /// Requires the broker's bearer token when `--token-file FILE` (or `TANDEM_PLUGIN_TOKEN_FILE`)
    /// is given, and refuses a non-loopback TCP address with neither a token nor mTLS unless
    /// `--insecure` is given (see [`Listener::allow_insecure`]).
    ///
    /// Serves TLS when `--tls-cert FILE` and `--tls-key FILE` (or `TANDEM_PLUGIN_TLS_CERT` and
    /// `TANDEM_PLUGIN_TLS_KEY`) are given, and requires client certificates signed by the CA of
    /// `--tls-client-ca FILE` (`TANDEM_PLUGIN_TLS_CLIENT_CA`) when that is given too: see
    /// [`TlsConfig::from_args_or_env`]. Incomplete TLS settings, unusable files, or TLS with a
    /// unix socket are an error before anything is bound.
    pub async fn serve(self) -> Result<(), Error> {
        let tracing = init_tracing(self.name());
        let served = self.serve_from_args().await;
        tracing.finish().await;
        if let Err(e) = &served {
            // `main` returning the error prints its Debug form; say it in words too.
            eprintln!("error: {e}");
        }
        served
    }

    async fn serve_from_args(self) -> Result<(), Error> {
        let args = ServeArgs::from_process();
        if args.help {
            print!("{}", crate::args::usage(self.name(), self.version()));
            return Ok(());
        }
        let addr: ListenAddr = args.listen.parse()?;
        let tls = TlsConfig::from_settings(args.tls_cert, args.tls_key, args.tls_client_ca)?;
        if let (Some(_), ListenAddr::Unix(path)) = (&tls, &addr) {
            return Err(tls_on_unix(path));
        }
        let token = BearerToken::from_setting(args.token_file)?;
        let insecure = args.insecure;
        let mut listener = Listener::bind(&addr).await?;
        if let Some(tls) = tls {
            listener = listener.with_tls(tls)?;
        }
        if let Some(token) = token {
            listener = listener.with_token(token);
        }
        if insecure {
            listener = listener.allow_insecure();
        }
        self.serve_on(listener, shutdown_signal()).await
    }

    /// Like [`serve`](Self::serve), from a plain `fn main` (builds a multi-threaded tokio runtime).
    pub fn run(self) -> Result<(), Error> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?
            .block_on(self.serve())
    }

    /// Serves on a bound listener until `shutdown` resolves, then stops accepting, reports
    /// NOT_SERVING on health, drains in-flight calls, and removes the unix socket file. Over TLS
    /// when the listener has it ([`Listener::with_tls`]); requiring a bearer token when it has one
    /// ([`Listener::with_token`]). A TCP listener on an address that is not loopback, with neither
    /// a token nor mTLS, is refused ([`Error::Insecure`]) unless [`Listener::allow_insecure`].
    pub async fn serve_on(
        self,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        if let Err(e) = listener.check_exposure() {
            if let Bound::Unix(_, path) = &listener.inner {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        let (mut server, tls) = match &listener.tls {
            Some(tls) if tls.requires_client_cert() => (tls.apply(Server::builder())?, "mtls"),
            Some(tls) => (tls.apply(Server::builder())?, "tls"),
            None => (Server::builder(), "off"),
        };
        let token = listener.token.is_some();
        let name = self.name().to_owned();
        let roles = self.roles();
        let plugin = self.into_service();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<PluginServer<PluginService>>().await;

        let (draining, drain_started) = oneshot::channel::<()>();
        let closing = plugin.clone();
        let shutdown = async move {
            shutdown.await;
            health
                .set_not_serving::<PluginServer<PluginService>>()
                .await;
            closing.close_event_streams();
            let _ = draining.send(());
        };
        // Bounds the drain: a call stuck in a handler must not keep the process alive past the
        // pod's grace period.
        let drain_deadline = async move {
            match drain_started.await {
                Ok(()) => tokio::time::sleep(DRAIN_TIMEOUT).await,
                Err(_) => std::future::pending().await,
            }
        };
        let router = server
            .add_service(health_service)
            // Every Plugin RPC is behind the token check (a no-op without a token). gRPC health
            // is not: it tells only SERVING or not, and Kubernetes' and compose's probes
            // cannot send a token.
            .add_service(InterceptedService::new(
                PluginServer::new(plugin),
                TokenCheck(listener.token.clone()),
            ));
        let local = listener.local_addr()?;
        info!(plugin = %name, listen = %local, tls, token, insecure = listener.insecure, ?roles, "plugin serving");
        let (served, socket_path) = match listener.inner {
            Bound::Tcp(tcp) => {
                let serve =
                    router.serve_with_incoming_shutdown(TcpListenerStream::new(tcp), shutdown);
                (bounded(serve, drain_deadline).await, None)
            }
            Bound::Unix(unix, path) => {
                let serve =
                    router.serve_with_incoming_shutdown(UnixListenerStream::new(unix), shutdown);
                (bounded(serve, drain_deadline).await, Some(path))
            }
        };
        if let Some(path) = socket_path
            && let Err(e) = std::fs::remove_file(&path)
        {
            warn!(path = %path.display(), cause = %e, "cannot remove the socket file");
        }
        served?;
        info!(plugin = %name, "plugin stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "tcp://127.0.0.1:50051".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:50051".parse().unwrap())
        );
        assert_eq!(
            "http://[::]:7000/".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("[::]:7000".parse().unwrap())
        );
        assert_eq!(
            "http://localhost:1".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            "unix:///run/tandem/auth.sock"
                .parse::<ListenAddr>()
                .unwrap(),
            ListenAddr::Unix("/run/tandem/auth.sock".into())
        );
        for bad in [
            "127.0.0.1:50051",
            "tcp://example.com:1",
            "unix://",
            "grpc://x:1",
            "tcp://1.2.3.4",
        ] {
            assert!(
                matches!(
                    bad.parse::<ListenAddr>(),
                    Err(Error::InvalidListenAddr { .. })
                ),
                "{bad} should be refused"
            );
        }
        let addr = ListenAddr::Unix("/tmp/p.sock".into());
        assert_eq!(addr.to_string().parse::<ListenAddr>().unwrap(), addr);
    }
}
