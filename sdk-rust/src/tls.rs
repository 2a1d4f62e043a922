//! TLS for a TCP listener ([`TlsConfig`]): the server's certificate and key, and, when a client
//! CA is given, client certificates required and verified (mTLS). Read from `--tls-cert`,
//! `--tls-key`, `--tls-client-ca` or their `TANDEM_PLUGIN_TLS_*` variables (found by `args.rs`;
//! checked here).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::args::{ServeArgs, TLS_CERT_ENV, TLS_CLIENT_CA_ENV, TLS_KEY_ENV};
use crate::error::Error;

/// How long a client may take over its TLS handshake; a stalled one is dropped after that.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS for a plugin's TCP listener, so that the broker reaches it at an `https://host:port`
/// endpoint. With [`with_client_ca_file`](Self::with_client_ca_file) (or `_pem`) it is mutual
/// TLS: a client must present a certificate that chains to that CA, or the handshake fails.
///
/// Every constructor checks the PEM at once (certificates parse, the key parses and matches the
/// certificate), so a bad file is an error at start-up, not at the first connection. Attach it
/// with [`Listener::with_tls`](crate::Listener::with_tls); [`Plugin::serve`](crate::Plugin::serve)
/// does so from the flags or environment ([`from_args_or_env`](Self::from_args_or_env)).
///
/// The SDK uses rustls with the *ring* provider. If the program installs its own rustls
/// `CryptoProvider`, it must do so before building a `TlsConfig`; otherwise the SDK installs
/// *ring* as the process default.
#[derive(Clone)]
pub struct TlsConfig {
    cert_chain: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsConfig")
            .field("requires_client_cert", &self.requires_client_cert())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Server TLS from PEM files: `cert` holds the server certificate followed by any
    /// intermediates, `key` its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, Error> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        Self::build(
            read(cert, "certificate")?,
            read(key, "private key")?,
            &format!("certificate file {}", cert.display()),
            &format!("key file {}", key.display()),
        )
    }

    /// Server TLS from PEM contents (see [`from_files`](Self::from_files)).
    pub fn from_pem(
        cert_chain: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<Self, Error> {
        Self::build(cert_chain.into(), key.into(), "certificate PEM", "key PEM")
    }

    /// Requires client certificates, verified against the CA certificate(s) in this PEM file.
    pub fn with_client_ca_file(self, ca: impl AsRef<Path>) -> Result<Self, Error> {
        let ca = ca.as_ref();
        self.client_ca(
            read(ca, "client CA")?,
            &format!("client CA file {}", ca.display()),
        )
    }

    /// Requires client certificates, verified against the CA certificate(s) in this PEM.
    pub fn with_client_ca_pem(self, ca: impl Into<Vec<u8>>) -> Result<Self, Error> {
        self.client_ca(ca.into(), "client CA PEM")
    }

    /// Whether clients must present a certificate (mTLS).
    pub fn requires_client_cert(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The TLS settings from the command line, else the environment; `None` when neither a
    /// certificate nor a key is given (plain HTTP/2).
    ///
    /// - `--tls-cert FILE` or [`TLS_CERT_ENV`]: the PEM server certificate chain;
    /// - `--tls-key FILE` or [`TLS_KEY_ENV`]: its PEM private key;
    /// - `--tls-client-ca FILE` or [`TLS_CLIENT_CA_ENV`]: a PEM CA; when set, clients must
    ///   present a certificate it signed.
    ///
    /// A certificate without a key (or the reverse), or a client CA without both, is an error, as
    /// is a file that cannot be read or used. Flags take `--flag VALUE` or `--flag=VALUE`; other
    /// arguments are left alone.
    pub fn from_args_or_env() -> Result<Option<Self>, Error> {
        let args = ServeArgs::from_process();
        Self::from_settings(args.tls_cert, args.tls_key, args.tls_client_ca)
    }

    /// The TLS these settings ask for (see [`from_args_or_env`](Self::from_args_or_env)).
    pub(crate) fn from_settings(
        cert: Option<String>,
        key: Option<String>,
        client_ca: Option<String>,
    ) -> Result<Option<Self>, Error> {
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Self::from_files(cert, key)?,
            (None, None) if client_ca.is_none() => return Ok(None),
            (None, None) => {
                return Err(invalid(format!(
                    "--tls-client-ca ({TLS_CLIENT_CA_ENV}) needs --tls-cert ({TLS_CERT_ENV}) and \
                     --tls-key ({TLS_KEY_ENV}): client certificates are only checked over TLS"
                )));
            }
            (Some(_), None) => {
                return Err(invalid(format!(
                    "--tls-cert ({TLS_CERT_ENV}) is set but --tls-key ({TLS_KEY_ENV}) is not; \
                     TLS needs both"
                )));
            }
            (None, Some(_)) => {
                return Err(invalid(format!(
                    "--tls-key ({TLS_KEY_ENV}) is set but --tls-cert ({TLS_CERT_ENV}) is not; \
                     TLS needs both"
                )));
            }
        };
        match client_ca {
            Some(ca) => tls.with_client_ca_file(ca).map(Some),
            None => Ok(Some(tls)),
        }
    }

    fn build(
        cert_chain: Vec<u8>,
        key: Vec<u8>,
        cert_from: &str,
        key_from: &str,
    ) -> Result<Self, Error> {
        check_certificates(&cert_chain, cert_from)?;
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
            invalid(format!(
                "no usable PEM private key (PKCS#8, PKCS#1 or SEC1) in the {key_from}: {e}"
            ))
        })?;
        let tls = TlsConfig {
            cert_chain,
            key,
            client_ca: None,
        };
        tls.check()?;
        Ok(tls)
    }

    fn client_ca(mut self, ca: Vec<u8>, from: &str) -> Result<Self, Error> {
        check_certificates(&ca, from)?;
        self.client_ca = Some(ca);
        self.check()?;
        Ok(self)
    }

    /// Builds the server's rustls configuration once, the way serving will, to fail early.
    fn check(&self) -> Result<(), Error> {
        self.apply(Server::builder()).map(drop)
    }

    /// The server builder with this TLS configuration.
    pub(crate) fn apply<L>(&self, server: Server<L>) -> Result<Server<L>, Error> {
        install_crypto_provider();
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_chain, &self.key))
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        server.tls_config(config).map_err(|e| {
            invalid(format!(
                "the certificate and key cannot be used: {}",
                chain(&e)
            ))
        })
    }
}

/// The error for TLS used with a unix socket.
pub(crate) fn tls_on_unix(path: &Path) -> Error {
    invalid(format!(
        "TLS applies only to TCP listeners, not to the unix socket {}: remove the --tls-* flags \
         and TANDEM_PLUGIN_TLS_* variables, or listen on tcp://",
        path.display()
    ))
}

fn invalid(reason: String) -> Error {
    Error::Tls { reason }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsFile {
        what,
        path: PathBuf::from(path),
        source,
    })
}

fn check_certificates(pem: &[u8], from: &str) -> Result<(), Error> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| invalid(format!("malformed PEM in the {from}: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(format!(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the {from}"
        )));
    }
    Ok(())
}

/// tonic builds its rustls configuration on the process-wide default provider, which rustls
/// cannot choose (and panics) when several providers are compiled in, for example *ring* here and
/// aws-lc-rs through another dependency. Installs *ring* unless the program installed one.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only if another thread installed one just now, which then wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An error and its sources, `: `-separated (tonic's own message is only "transport error").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn no_settings_means_no_tls() {
        assert!(
            TlsConfig::from_settings(None, None, None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn incomplete_settings_are_refused_with_the_names_to_fix() {
        let cases = [
            (some("c.pem"), None, None, "--tls-key"),
            (None, some("k.pem"), None, "--tls-cert"),
            (None, None, some("ca.pem"), "--tls-client-ca"),
            (some("c.pem"), None, some("ca.pem"), "--tls-key"),
        ];
        for (cert, key, ca, names) in cases {
            let err = TlsConfig::from_settings(cert, key, ca).unwrap_err();
            assert!(matches!(err, Error::Tls { .. }), "{err}");
            assert!(err.to_string().contains(names), "{err}");
            assert!(err.to_string().contains("TANDEM_PLUGIN_TLS_"), "{err}");
        }
    }

    #[test]
    fn unreadable_files_name_the_file() {
        let err = TlsConfig::from_settings(
            some("/nonexistent/cert.pem"),
            some("/nonexistent/key.pem"),
            None,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::TlsFile { what: "certificate", path, .. } if path.ends_with("cert.pem")),
            "{err}"
        );
    }

    #[test]
    fn pem_without_certificates_or_key_is_refused() {
        let err = TlsConfig::from_pem("not a certificate", "nor a key").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }
}
