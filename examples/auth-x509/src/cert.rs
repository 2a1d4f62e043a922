//! What a client certificate says, read once per `Authenticate` from the broker's [`TlsInfo`].
//!
//! The broker only sends a certificate that chained to the listener's `tls.client_ca`, so
//! everything here is already vouched for; this file only reads it. The common name, the
//! subject alternative names (with their types) and the fingerprint come from the certificate
//! itself (`peer_certificate_der`): the broker's text forms of SANs carry no type the contract
//! fixes, and a CN taken from the DER needs no RFC 4514 unescaping. The subject is the broker's
//! RFC 4514 string (`peer_subject`), the form an operator sees in its logs and writes in rules.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use tandem_plugin::TlsInfo;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// One subject alternative name, by type. Other types (directory names, other names, ...) are
/// not kept: no rule can name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum San {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
    Email(String),
}

impl San {
    /// The value without its type, as placeholders give it.
    pub(crate) fn value(&self) -> String {
        match self {
            San::Dns(v) | San::Uri(v) | San::Email(v) => v.clone(),
            San::Ip(ip) => ip.to_string(),
        }
    }
}

/// A verified client certificate, as rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Certificate {
    /// The subject as the broker wrote it (RFC 4514, most specific first), if it sent one.
    pub(crate) subject: Option<String>,
    /// The subject's common name; `None` when it has none, several, an empty one, or one that
    /// is not text (so a rule cannot pick one of two CNs, or match on a `#`-encoded value).
    pub(crate) common_name: Option<String>,
    /// Subject alternative names in certificate order.
    pub(crate) sans: Vec<San>,
    /// SHA-256 of the DER, 64 lowercase hex digits.
    pub(crate) fingerprint: String,
    /// The broker listener the client came in on: whose `tls.client_ca` vouched for it.
    pub(crate) listener: String,
}

/// Why there is no certificate to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Not a TLS connection (or a broker that sends no TLS details).
    NoTls,
    /// TLS without a client certificate (`client_auth: optional` or `none`).
    NoCertificate,
    /// The DER could not be read as a certificate (the broker verified it, so this is a bug or
    /// an encoding this parser does not know): denied, whatever `no_certificate` says.
    Unreadable(String),
}

impl Certificate {
    /// The client certificate of a connection on `listener`.
    pub(crate) fn from_tls(tls: Option<&TlsInfo>, listener: &str) -> Result<Certificate, Missing> {
        let tls = tls.ok_or(Missing::NoTls)?;
        let der = match tls.peer_certificate_der.as_deref() {
            Some(der) if !der.is_empty() => der,
            _ => return Err(Missing::NoCertificate),
        };
        let mut cert = Certificate::from_der(der).map_err(Missing::Unreadable)?;
        cert.subject = tls.peer_subject.clone().filter(|s| !s.is_empty());
        cert.listener = listener.to_owned();
        Ok(cert)
    }

    /// Reads the CN, SANs and fingerprint of `der` (no subject string: see the module docs).
    pub(crate) fn from_der(der: &[u8]) -> Result<Certificate, String> {
        let (_, x509) = X509Certificate::from_der(der).map_err(|err| err.to_string())?;
        let mut names = x509.subject().iter_common_name();
        let common_name = match (names.next(), names.next()) {
            (Some(cn), None) => cn
                .as_str()
                .ok()
                .filter(|cn| !cn.is_empty())
                .map(str::to_owned),
            _ => None,
        };
        let mut sans = Vec::new();
        let extension = x509
            .subject_alternative_name()
            .map_err(|err| format!("subject alternative names: {err}"))?;
        if let Some(extension) = extension {
            for name in &extension.value.general_names {
                match name {
                    GeneralName::DNSName(n) => sans.push(San::Dns((*n).to_owned())),
                    GeneralName::RFC822Name(n) => sans.push(San::Email((*n).to_owned())),
                    GeneralName::URI(n) => sans.push(San::Uri((*n).to_owned())),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from(bytes) {
                            sans.push(San::Ip(ip));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Certificate {
            subject: None,
            common_name,
            sans,
            fingerprint: hex(&Sha256::digest(der)),
            listener: String::new(),
        })
    }

    /// The first DNS name among the SANs.
    pub(crate) fn first_dns(&self) -> Option<&str> {
        self.sans.iter().find_map(|s| match s {
            San::Dns(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

/// An IP SAN is the address's bytes: 4 for IPv4, 16 for IPv6 (anything else is not an address).
fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}
