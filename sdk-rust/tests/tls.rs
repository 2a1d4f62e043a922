//! TLS and mTLS over real sockets, with certificates generated at test time: the broker's side is
//! a tonic client with `ClientTlsConfig` (CA, client identity, domain name), as in the broker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tandem_plugin::proto::v1 as pb;
use tandem_plugin::proto::v1::plugin_client::PluginClient;
use tandem_plugin::{Error, ListenAddr, Listener, Plugin, TlsConfig};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A CA and the PEM files it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Signed {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: ca.pem(),
            issuer: ca,
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca).unwrap();
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Signs a leaf certificate for `names` (DNS names or IP addresses) and writes
    /// `<stem>.pem` and `<stem>.key`.
    fn sign(&self, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Signed {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        let signed = Signed {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        std::fs::write(self.path(&format!("{stem}.pem")), &signed.cert).unwrap();
        std::fs::write(self.path(&format!("{stem}.key")), &signed.key).unwrap();
        signed
    }

    fn server(&self) -> Signed {
        self.sign(
            "server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self) -> Signed {
        self.sign("broker", &["broker"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Server TLS from the files, with client certificates required when `mtls`.
    fn server_tls(&self, mtls: bool) -> TlsConfig {
        self.server();
        let tls = TlsConfig::from_files(self.path("server.pem"), self.path("server.key")).unwrap();
        if mtls {
            tls.with_client_ca_file(self.path("ca.pem")).unwrap()
        } else {
            tls
        }
    }
}

type Server = tokio::task::JoinHandle<Result<(), Error>>;

/// Serves a plugin over `tls` on an ephemeral port: its URL, the shutdown trigger, the task.
async fn start(tls: TlsConfig) -> (String, oneshot::Sender<()>, Server) {
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
        .with_tls(tls)
        .expect("TLS on TCP");
    let ListenAddr::Tcp(socket) = listener.local_addr().unwrap() else {
        panic!("tcp expected")
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let plugin = Plugin::new("tls-plugin", "1.0");
    let server = tokio::spawn(plugin.serve_on(listener, async {
        let _ = stopped.await;
    }));
    (format!("https://127.0.0.1:{}", socket.port()), stop, server)
}

async fn stop(stop: oneshot::Sender<()>, server: Server) {
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within the deadline")
        .expect("task")
        .expect("clean exit");
}

/// Connects as the broker does and calls Describe; the error, as text, if either step fails.
async fn describe(url: &str, tls: Option<ClientTlsConfig>) -> Result<pb::DescribeResponse, String> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("{e:?}"))?;
    }
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        PluginClient::new(channel)
            .describe(pb::DescribeRequest {
                plugin_alias: "tls".into(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("describe: {status:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "timed out".to_owned())?
}

fn client_tls(ca_pem: &str, identity: Option<&Signed>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    match identity {
        Some(id) => tls.identity(Identity::from_pem(&id.cert, &id.key)),
        None => tls,
    }
}

#[tokio::test]
async fn mtls_serves_describe_and_health_to_a_client_with_a_certificate() {
    let pki = Pki::new("plugin CA");
    let client = pki.client();
    let (url, stop_server, server) = start(pki.server_tls(true)).await;

    let tls = client_tls(&pki.ca, Some(&client));
    let description = describe(&url, Some(tls.clone())).await.expect("describe");
    assert_eq!(description.name, "tls-plugin");

    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "tandem.plugin.v1.Plugin".into(),
        })
        .await
        .expect("health over TLS")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    stop(stop_server, server).await;
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new("plugin CA");
    let (url, stop_server, server) = start(pki.server_tls(true)).await;

    let err = describe(&url, Some(client_tls(&pki.ca, None)))
        .await
        .expect_err("no client certificate, no call");
    assert!(
        err.contains("CertificateRequired"),
        "refused by the handshake: {err}"
    );

    // Nor does a certificate signed by another CA get through.
    let stranger = Pki::new("someone else's CA").client();
    let err = describe(&url, Some(client_tls(&pki.ca, Some(&stranger))))
        .await
        .expect_err("a client certificate from another CA is refused");
    assert!(err.contains("UnknownCA"), "refused by the handshake: {err}");

    // Plain HTTP/2 on the TLS port fails too.
    let plain = url.replace("https://", "http://");
    describe(&plain, None).await.expect_err("no TLS, no call");

    // The server is unharmed by the refused clients.
    let client = pki.client();
    describe(&url, Some(client_tls(&pki.ca, Some(&client))))
        .await
        .expect("a good client still gets through");
    stop(stop_server, server).await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_refuses_the_plugin() {
    let pki = Pki::new("plugin CA");
    let client = pki.client();
    let (url, stop_server, server) = start(pki.server_tls(true)).await;

    let other = Pki::new("another CA");
    let err = describe(&url, Some(client_tls(&other.ca, Some(&client))))
        .await
        .expect_err("the plugin's certificate is not trusted");
    assert!(
        err.contains("UnknownIssuer"),
        "refused by the handshake: {err}"
    );

    // And the certificate is checked against the domain name.
    let wrong_name = client_tls(&pki.ca, Some(&client)).domain_name("acl.example");
    describe(&url, Some(wrong_name))
        .await
        .expect_err("the certificate is not for that name");
    stop(stop_server, server).await;
}

#[tokio::test]
async fn tls_without_a_client_ca_accepts_clients_without_certificates() {
    let pki = Pki::new("plugin CA");
    let tls = pki.server_tls(false);
    assert!(!tls.requires_client_cert());
    let (url, stop_server, server) = start(tls).await;

    let description = describe(&url, Some(client_tls(&pki.ca, None)))
        .await
        .expect("server-only TLS");
    assert_eq!(description.name, "tls-plugin");
    stop(stop_server, server).await;
}

#[tokio::test]
async fn tls_from_pem_contents_serves_too() {
    let pki = Pki::new("plugin CA");
    let server_cert = pki.server();
    let client = pki.client();
    let tls = TlsConfig::from_pem(server_cert.cert, server_cert.key)
        .unwrap()
        .with_client_ca_pem(pki.ca.clone())
        .unwrap();
    assert!(tls.requires_client_cert());
    let (url, stop_server, server) = start(tls).await;
    describe(&url, Some(client_tls(&pki.ca, Some(&client))))
        .await
        .expect("describe");
    stop(stop_server, server).await;
}

fn assert_tls_error(result: Result<TlsConfig, Error>, expected: &str) {
    match result {
        Err(err @ Error::Tls { .. }) => {
            assert!(err.to_string().contains(expected), "{err}");
        }
        other => panic!("expected a TLS error mentioning {expected:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn unusable_tls_settings_fail_at_start() {
    let pki = Pki::new("plugin CA");
    pki.server();
    pki.client();
    let file = |name: &str| pki.path(name);

    // A missing file names itself.
    let err = TlsConfig::from_files(file("server.pem"), file("missing.key")).unwrap_err();
    assert!(
        matches!(&err, Error::TlsFile { what: "private key", path, .. } if path.ends_with("missing.key")),
        "{err}"
    );
    // A key that is not the certificate's.
    assert_tls_error(
        TlsConfig::from_files(file("server.pem"), file("broker.key")),
        "cannot be used",
    );
    // The files swapped.
    assert_tls_error(
        TlsConfig::from_files(file("server.key"), file("server.pem")),
        "no PEM certificate",
    );
    // A client CA file without a certificate.
    let tls = TlsConfig::from_files(file("server.pem"), file("server.key")).unwrap();
    assert_tls_error(
        tls.with_client_ca_file(file("server.key")),
        "client CA file",
    );

    // TLS on a unix socket, and the socket file does not stay behind.
    let socket = pki.dir.path().join("plugin.sock");
    let listener = Listener::bind(&ListenAddr::Unix(socket.clone()))
        .await
        .unwrap();
    let tls = TlsConfig::from_files(file("server.pem"), file("server.key")).unwrap();
    let err = listener.with_tls(tls).unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("TCP"), "{err}");
    assert!(!Path::new(&socket).exists());
}
