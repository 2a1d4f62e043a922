//! A verified client certificate's facts for plugins: its subject in RFC 4514 form, its
//! subject alternative names, its SHA-256 fingerprint.
//!
//! Only certificates rustls has already verified against the listener's CA reach this
//! file; a certificate it cannot read (possible only for odd encodings webpki accepts)
//! is described with its fingerprint and DER alone, never refused here.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

use super::origin::PeerCertificate;

/// Describes the leaf certificate `der`.
pub(crate) fn describe(der: &[u8]) -> PeerCertificate {
    let fingerprint_sha256 = hex(&Sha256::digest(der));
    let mut described = PeerCertificate {
        der: der.to_vec(),
        fingerprint_sha256,
        ..PeerCertificate::default()
    };
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return described;
    };
    described.subject = rfc4514(cert.subject());
    // Only a subject with exactly one CN has a common name: with several, which one
    // names the client is a guess (the first in the encoding is the least specific).
    let mut names = cert.subject().iter_common_name();
    described.common_name = match (names.next(), names.next()) {
        (Some(cn), None) => cn.as_str().ok().map(str::to_owned),
        _ => None,
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        described.sans = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(n) => Some(format!("DNS:{n}")),
                GeneralName::RFC822Name(n) => Some(format!("email:{n}")),
                GeneralName::URI(n) => Some(format!("URI:{n}")),
                GeneralName::IPAddress(ip) => ip_text(ip).map(|ip| format!("IP:{ip}")),
                _ => None,
            })
            .collect();
    }
    described
}

/// When the certificate `der` stops being valid, for the log (`None` if unreadable).
pub(crate) fn not_after(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.to_string())
}

fn ip_text(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A distinguished name as RFC 4514 writes it: the most specific RDN first (the
/// reverse of the encoding), `,` between RDNs, `+` within one, well-known attribute
/// types by their short names and the rest as dotted OIDs with the value's DER in hex.
pub(crate) fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<&_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            attribute(&mut out, attr);
        }
    }
    out
}

fn attribute(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let oid = attr.attr_type().to_id_string();
    let short = match oid.as_str() {
        "2.5.4.3" => Some("CN"),
        "2.5.4.6" => Some("C"),
        "2.5.4.7" => Some("L"),
        "2.5.4.8" => Some("ST"),
        "2.5.4.9" => Some("STREET"),
        "2.5.4.10" => Some("O"),
        "2.5.4.11" => Some("OU"),
        "0.9.2342.19200300.100.1.25" => Some("DC"),
        "0.9.2342.19200300.100.1.1" => Some("UID"),
        _ => None,
    };
    match (short, attr.as_str()) {
        (Some(short), Ok(value)) => {
            out.push_str(short);
            out.push('=');
            escape(out, value);
        }
        _ => {
            // RFC 4514 section 2.4: the dotted OID and `#` with the BER of the value.
            out.push_str(&oid);
            out.push_str("=#");
            out.push_str(&hex(attr.attr_value().as_bytes()));
        }
    }
}

/// RFC 4514 section 2.4 escaping of an attribute value.
fn escape(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(params: rcgen::CertificateParams) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_is_rfc4514_most_specific_first_with_escapes() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "DE");
        dn.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        dn.push(rcgen::DnType::CommonName, " dev+17#");
        params.distinguished_name = dn;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([10, 0, 0, 5].into()));
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://acme/dev".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "ops@acme.test".try_into().unwrap(),
        ));
        let der = cert(params);
        let d = describe(&der);
        assert_eq!(d.subject, r"CN=\ dev\+17#,O=Acme\, Inc.,C=DE");
        assert_eq!(d.common_name.as_deref(), Some(" dev+17#"));
        assert_eq!(
            d.sans,
            [
                "DNS:a.example",
                "IP:10.0.0.5",
                "URI:spiffe://acme/dev",
                "email:ops@acme.test"
            ]
        );
        assert_eq!(d.fingerprint_sha256.len(), 64);
        assert_eq!(d.fingerprint_sha256, hex(&Sha256::digest(&der)));
        assert!(not_after(&der).is_some());
    }

    #[test]
    fn unreadable_der_keeps_the_fingerprint_and_nothing_else() {
        let d = describe(b"not a certificate");
        assert!(d.subject.is_empty() && d.sans.is_empty() && d.common_name.is_none());
        assert_eq!(d.fingerprint_sha256.len(), 64);
    }
}
