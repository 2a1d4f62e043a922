//! TLS listeners: a rustls server configuration built from the listener's certificate
//! files, and swapped whole when they change.
//!
//! Each handshake takes the configuration in force when it starts, so a rotation never
//! touches connections already open, and a new pair that does not load (a key that is
//! not the certificate's, a half-written file, no certificate in it) is refused with
//! the reason while the pair in force serves on. Files are compared by content, so a
//! reload or a file event that changed nothing builds nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use super::certinfo;
use super::origin::PeerTls;
use crate::config::{ClientAuth, ListenerKind, TlsConfig};

/// Why a listener's certificates could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds nothing usable.
    #[error("listener `{listener}`: tls.{field} {}: {message}", file.display())]
    File {
        /// The listener's name.
        listener: String,
        /// The key naming the file: `cert`, `key` or `client_ca`.
        field: &'static str,
        /// The file.
        file: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The files read, but rustls refused them together (for example a key that is
    /// not the certificate's).
    #[error("listener `{listener}`: tls.cert and tls.key: {message}")]
    Pair {
        /// The listener's name.
        listener: String,
        /// What rustls said.
        message: String,
    },
}

/// The contents of a listener's certificate files.
#[derive(PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// A TLS listener's configuration in force, and the files it came from.
pub(crate) struct TlsEndpoint {
    listener: String,
    kind: ListenerKind,
    config: TlsConfig,
    current: ArcSwap<ServerConfig>,
    /// What `current` was built from, to tell a change from a touch; the lock also
    /// makes reloads one at a time (an older read never replaces a newer one).
    loaded: Mutex<Loaded>,
}

/// The files in force, and why the last attempt to replace them failed.
struct Loaded {
    files: Files,
    /// The last refusal's reason: the same refusal again is [`Reloaded::StillRefused`]
    /// (logged once, not at every event or poll until something changes).
    refused: Option<String>,
}

/// What a reload did.
#[derive(Debug)]
pub(crate) enum Reloaded {
    /// The files are as they were.
    Unchanged,
    /// New handshakes use the new files.
    Replaced,
    /// Refused again for the reason already reported; the pair in force serves on.
    StillRefused(TlsError),
}

impl TlsEndpoint {
    /// Reads and checks the listener's files (at start-up: an error stops the broker).
    pub(crate) fn load(
        listener: &str,
        kind: ListenerKind,
        config: &TlsConfig,
    ) -> Result<Self, TlsError> {
        let files = read_files(listener, config)?;
        let built = build(listener, kind, config, &files)?;
        Ok(Self {
            listener: listener.to_owned(),
            kind,
            config: config.clone(),
            current: ArcSwap::from_pointee(built),
            loaded: Mutex::new(Loaded {
                files,
                refused: None,
            }),
        })
    }

    /// An acceptor with the configuration in force.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// The directories of the listener's files (what a watcher watches: Kubernetes
    /// replaces a mounted Secret by swapping a symlink in its directory).
    pub(crate) fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [
            Some(&self.config.cert),
            Some(&self.config.key),
            self.config.client_ca.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|f| match f.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Reads the files again and, when they changed and load, puts them in force for
    /// new handshakes. On an error the configuration in force is kept.
    pub(crate) fn reload(&self) -> Result<Reloaded, TlsError> {
        let mut loaded = self.loaded.lock();
        let built = read_files(&self.listener, &self.config).and_then(|files| {
            if loaded.files == files {
                return Ok(None);
            }
            let built = build(&self.listener, self.kind, &self.config, &files)?;
            Ok(Some((built, files)))
        });
        match built {
            Ok(None) => {
                loaded.refused = None;
                Ok(Reloaded::Unchanged)
            }
            Ok(Some((built, files))) => {
                self.current.store(Arc::new(built));
                *loaded = Loaded {
                    files,
                    refused: None,
                };
                Ok(Reloaded::Replaced)
            }
            Err(err) => {
                let reason = err.to_string();
                if loaded.refused.as_ref() == Some(&reason) {
                    return Ok(Reloaded::StillRefused(err));
                }
                loaded.refused = Some(reason);
                Err(err)
            }
        }
    }

    /// The listener's name.
    pub(crate) fn listener(&self) -> &str {
        &self.listener
    }

    /// When the certificate in force expires, for the log.
    pub(crate) fn not_after(&self) -> Option<String> {
        let loaded = self.loaded.lock();
        let leaf = CertificateDer::pem_slice_iter(&loaded.files.cert)
            .next()?
            .ok()?;
        certinfo::not_after(&leaf)
    }
}

fn read_files(listener: &str, config: &TlsConfig) -> Result<Files, TlsError> {
    Ok(Files {
        cert: read(listener, "cert", &config.cert)?,
        key: read(listener, "key", &config.key)?,
        client_ca: match &config.client_ca {
            Some(ca) => Some(read(listener, "client_ca", ca)?),
            None => None,
        },
    })
}

/// Certificate and key files are small; a larger file is a wrong path, not a PEM.
const MAX_FILE: u64 = 1024 * 1024;

fn read(listener: &str, field: &'static str, file: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |message: String| TlsError::File {
        listener: listener.to_owned(),
        field,
        file: file.to_owned(),
        message,
    };
    let meta = std::fs::metadata(file).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_FILE {
        return Err(err(format!("larger than {MAX_FILE} bytes: not a PEM file")));
    }
    std::fs::read(file).map_err(|e| err(e.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(
    listener: &str,
    kind: ListenerKind,
    config: &TlsConfig,
    files: &Files,
) -> Result<ServerConfig, TlsError> {
    let file_err = |field: &'static str, file: &Path, message: String| TlsError::File {
        listener: listener.to_owned(),
        field,
        file: file.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            file_err(
                "cert",
                &config.cert,
                format!("not a PEM certificate chain: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(file_err(
            "cert",
            &config.cert,
            "no CERTIFICATE block in the file".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
        file_err(
            "key",
            &config.key,
            format!("no PKCS#8, PKCS#1 or SEC1 private key: {e}"),
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair {
            listener: listener.to_owned(),
            message: e.to_string(),
        })?;
    let builder = match (config.client_auth(), &files.client_ca, &config.client_ca) {
        (ClientAuth::None, _, _) => builder.with_no_client_auth(),
        (auth, Some(ca), Some(ca_file)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| {
                    file_err("client_ca", ca_file, format!("not a PEM certificate: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    file_err("client_ca", ca_file, format!("not a CA certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(file_err(
                    "client_ca",
                    ca_file,
                    "no CERTIFICATE block in the file".to_owned(),
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| file_err("client_ca", ca_file, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        // Refused by the config check (client_auth needs client_ca).
        (_, _, _) => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair {
            listener: listener.to_owned(),
            message: e.to_string(),
        })?;
    if config.client_auth() != ClientAuth::None {
        // A resumed session keeps the certificate of the handshake it resumes, unchecked
        // (it may have expired or been replaced since): every connection that presents
        // a certificate gets a full handshake, and plugins see one verified now.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
    }
    server.alpn_protocols = match &config.alpn {
        Some(list) => list.iter().map(|p| p.as_bytes().to_vec()).collect(),
        None if kind == ListenerKind::Wss => vec![b"http/1.1".to_vec()],
        None => vec![b"mqtt".to_vec()],
    };
    Ok(server)
}

/// What the handshake on `conn` established, for plugins and logs.
pub(crate) fn peer_tls(conn: &ServerConnection) -> PeerTls {
    PeerTls {
        certificate: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| certinfo::describe(leaf)),
        server_name: conn.server_name().map(str::to_owned),
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        },
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| {
                s.suite()
                    .as_str()
                    .map_or_else(|| format!("{:?}", s.suite()), str::to_owned)
            })
            .unwrap_or_default(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}
