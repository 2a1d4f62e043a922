//! Certificates made by the tests (never committed): a CA and the server and client
//! certificates it signs, as PEM files in a temporary directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::plugin::PluginProcess;

/// A CA (`ca.pem`) and certificates it signed, as PEM files in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA whose subject's common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            issuer,
        };
        std::fs::write(pki.path("ca.pem"), pki.issuer.pem()).unwrap();
        pki
    }

    /// A file in the CA's directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The CA certificate, `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// Writes `<stem>.pem` and `<stem>.key`: a certificate for `names` (subject
    /// alternative names) whose common name is `stem`.
    pub fn sign(&self, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) {
        self.sign_as(stem, &[(DnType::CommonName, stem)], names, usage);
    }

    /// Writes `<stem>.pem` and `<stem>.key`: a certificate with `subject` (in encoding
    /// order) and subject alternative names `names` (DNS names and IP addresses; rcgen
    /// tells them apart).
    pub fn sign_as(
        &self,
        stem: &str,
        subject: &[(DnType, &str)],
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        let (pem, keyfile) = (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&keyfile, key.serialize_pem()).unwrap();
        (pem, keyfile)
    }

    /// A server certificate for `localhost` and `127.0.0.1`: `(<stem>.pem, <stem>.key)`.
    pub fn server(&self, stem: &str) -> (PathBuf, PathBuf) {
        self.sign_as(
            stem,
            &[(DnType::CommonName, "localhost")],
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate whose common name is `cn`, with `sans`.
    pub fn client(&self, stem: &str, cn: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        self.sign_as(
            stem,
            &[(DnType::OrganizationName, "Acme"), (DnType::CommonName, cn)],
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// Starts the plugin `program args...` serving mutual TLS on a free port of 127.0.0.1:
    /// its certificate `plugin.pem` (for `localhost` and `127.0.0.1`) and the client
    /// certificates it accepts are this CA's. Signs `broker.pem` for the client to present.
    pub fn start_mtls_plugin(&self, program: &Path, args: &[&str]) -> (PluginProcess, u16) {
        self.sign(
            "plugin",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        self.sign("broker", &["broker"], ExtendedKeyUsagePurpose::ClientAuth);
        let p = |file: &str| self.path(file).display().to_string();
        let (cert, key, ca) = (p("plugin.pem"), p("plugin.key"), p("ca.pem"));
        let mut args = args.to_vec();
        args.extend([
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ]);
        PluginProcess::start_tcp(program, &args, "127.0.0.1")
    }
}
