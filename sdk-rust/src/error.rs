//! The SDK's error type, and how errors become gRPC statuses at the edge.

use std::path::PathBuf;

use tonic::{Code, Status};

/// What a handler returns when it cannot decide: any error type converts into it with `?`.
///
/// The broker sees such an error as a non-OK gRPC status and applies the plugin's `on_error`
/// policy (deny by default), so returning an error is always safe. A [`tonic::Status`] or an
/// [`Error`] returned this way keeps its own status code; anything else becomes `INTERNAL` with
/// the error's message.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the SDK itself: serving, configuration and malformed requests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listen address could not be parsed.
    #[error(
        "invalid listen address {addr:?}: {reason} (expected tcp://IP:PORT, http://IP:PORT or unix:///path.sock)"
    )]
    InvalidListenAddr {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address, as a URL.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A stale unix socket file could not be removed, or the path is not a socket.
    #[error("cannot use unix socket path {}: {reason}", path.display())]
    SocketPath {
        /// The socket path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The TLS settings are incomplete or inconsistent, their PEM cannot be used, or TLS was asked
    /// for on a unix socket.
    #[error("invalid TLS configuration: {reason}")]
    Tls {
        /// What is wrong, naming the flag, variable or file to fix.
        reason: String,
    },
    /// A TLS certificate, key or CA file could not be read.
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    TlsFile {
        /// Which file: `certificate`, `private key` or `client CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bearer token is unusable (empty, or not a header value).
    #[error("invalid bearer token: {reason}")]
    Token {
        /// What is wrong.
        reason: String,
    },
    /// The token file could not be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A TCP listener reachable from other hosts, with neither a bearer token nor mTLS: anyone who
    /// reaches the port could push the plugin a configuration with `Describe`.
    #[error(
        "refusing to serve on {addr} without authentication: it is not a loopback address, so \
         anyone who can reach it could call the plugin (and push it a new config). Give \
         --token-file FILE (or TANDEM_PLUGIN_TOKEN_FILE) holding the token of the broker's \
         plugins.<alias>.token_file, or mTLS (--tls-cert, --tls-key and --tls-client-ca), or \
         listen on a unix socket or 127.0.0.1; --insecure serves anyway"
    )]
    Insecure {
        /// The address, as a URL.
        addr: String,
    },
    /// Tracing could not be set up (feature `otel`): a bad `OTEL_EXPORTER_OTLP_ENDPOINT`, or a
    /// subscriber already installed.
    #[error("tracing: {reason}")]
    Telemetry {
        /// What went wrong, naming the variable to fix.
        reason: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The tokio runtime of [`Plugin::run`](crate::Plugin::run) could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The configuration pushed by the broker does not fit the plugin's configuration type.
    #[error("invalid plugin configuration at `{path}`: {message}")]
    Config {
        /// Where in the configuration (for example `users[0].name`; `.` for the top level).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The broker sent a request the SDK cannot turn into a domain type.
    #[error("invalid request field `{field}`: {reason}")]
    InvalidRequest {
        /// The protobuf field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin answered with something the contract forbids (seen by the testing harness).
    #[error("invalid response field `{field}`: {reason}")]
    InvalidResponse {
        /// The protobuf field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// The gRPC status the broker receives for this error.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Error::Config { .. } | Error::InvalidRequest { .. } => Code::InvalidArgument,
            _ => Code::Internal,
        };
        Status::new(code, self.to_string())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        error.to_status()
    }
}

/// Turns a handler's error into the status sent to the broker.
pub(crate) fn handler_status(error: HandlerError) -> Status {
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => match error.downcast::<Error>() {
            Ok(error) => error.to_status(),
            Err(error) => Status::internal(error.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_errors_keep_their_status_code() {
        let status = handler_status(Box::new(Status::unavailable("database down")));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "database down");

        let status = handler_status(Box::new(Error::Config {
            path: "users".into(),
            message: "missing field".into(),
        }));
        assert_eq!(status.code(), Code::InvalidArgument);

        let io = std::io::Error::other("disk on fire");
        let status = handler_status(io.into());
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "disk on fire");
    }
}
