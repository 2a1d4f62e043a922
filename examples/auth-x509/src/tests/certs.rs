//! Real client certificates for tests (rcgen), and the TLS details the broker would send.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use tandem_plugin::TlsInfo;

/// A subject alternative name to put in a test certificate.
pub(super) enum Alt {
    Dns(&'static str),
    Ip(&'static str),
    Uri(&'static str),
    Email(&'static str),
}

/// The DER of a self-signed certificate with these common names (in order; several are allowed,
/// as the DER allows) and SANs. Whether it chains is the broker's business, not the plugin's.
pub(super) fn der(common_names: &[&str], alts: &[Alt]) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Acme");
    for (i, cn) in common_names.iter().enumerate() {
        // rcgen keeps one value per type: a second CN goes in under the CN's OID spelled as a
        // custom type, which encodes the same attribute.
        let kind = if i == 0 {
            DnType::CommonName
        } else {
            DnType::CustomDnType(vec![2, 5, 4, 3])
        };
        dn.push(kind, *cn);
    }
    params.distinguished_name = dn;
    for alt in alts {
        params.subject_alt_names.push(match alt {
            Alt::Dns(n) => SanType::DnsName((*n).try_into().unwrap()),
            Alt::Ip(ip) => SanType::IpAddress(ip.parse().unwrap()),
            Alt::Uri(u) => SanType::URI((*u).try_into().unwrap()),
            Alt::Email(e) => SanType::Rfc822Name((*e).try_into().unwrap()),
        });
    }
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

/// The TLS details of a connection with this certificate and the broker's subject string.
pub(super) fn tls(der: Vec<u8>, subject: &str) -> TlsInfo {
    TlsInfo {
        peer_certificate_der: Some(der),
        peer_subject: Some(subject.to_owned()),
        tls_version: Some("TLSv1.3".into()),
        ..TlsInfo::default()
    }
}
