//! `tandem-certgen`: a throw-away CA and a server certificate for the TLS benchmarks, so that
//! no certificate is committed and no `openssl` command is needed.
//!
//! `tandem-certgen --out DIR` writes into DIR (created if missing):
//! - `ca.pem`: the CA certificate, for the client (`tandem-loadgen --tls-ca DIR/ca.pem`);
//! - `server.pem`, `server.key`: the server's certificate (signed by the CA, for `localhost` and
//!   `127.0.0.1`, serverAuth) and its PKCS#8 key, for the brokers.
//!
//! Keys are ECDSA P-256 (rcgen's default), what a deployment would choose today and what
//! both rustls and OpenSSL handle natively. The CA key is not kept: nothing more is signed.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Writes ca.pem, server.pem and server.key for TLS benchmarks on localhost.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Names the server certificate is valid for (DNS names or IP addresses).
    #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
    names: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.names.is_empty() {
        bail!("--names needs at least one name");
    }
    std::fs::create_dir_all(&cli.out)
        .with_context(|| format!("cannot create {}", cli.out.display()))?;

    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Tandem benchmark CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

    // Names that parse as IP addresses become IP SANs.
    let mut server = CertificateParams::new(cli.names.clone())?;
    server
        .distinguished_name
        .push(DnType::CommonName, &cli.names[0]);
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &*issuer)?;

    let write = |name: &str, text: String| {
        let path = cli.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("ca.pem", issuer.pem())?;
    write("server.pem", cert.pem())?;
    write("server.key", key.serialize_pem())?;
    eprintln!(
        "tandem-certgen: wrote ca.pem, server.pem and server.key ({}) to {}",
        cli.names.join(", "),
        cli.out.display()
    );
    Ok(())
}
