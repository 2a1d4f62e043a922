//! Plugin endpoints: unix socket, plain HTTP/2, TLS with client certificates, and a
//! `dns:///` name with two replicas that share the load and cover for each other.

use std::path::Path;
use std::time::Duration;

use rcgen::ExtendedKeyUsagePurpose;
use tandem_broker::protocol::ConnectReason;
use tandem_tests::pki::Pki;
use tandem_tests::{
    PluginProcess, REPLICAS_HOST, RawClient, Tandem, connect_as, ensure_replica_hosts, free_port,
    policy_bin, wait_sys,
};

const USERS: &str = "{ users: { alice: { password: pa } } }";

fn broker_with(endpoint: &str, extra: &str) -> Tandem {
    Tandem::start(&format!(
        "sys: {{ interval: 1s }}\nplugins:\n  users:\n    endpoint: {endpoint}\n    startup_timeout: 10s\n{extra}    config: {USERS}\nauth: {{ plugins: [users] }}\n"
    ))
}

async fn assert_auth_works(broker: &Tandem) {
    assert!(connect_as(broker.addr, "a", "alice", "pa").await.is_ok());
    assert_eq!(
        connect_as(broker.addr, "b", "alice", "no").await.err(),
        Some(ConnectReason::BadUserNameOrPassword)
    );
}

#[tokio::test]
async fn unix_socket_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/users.sock", dir.path().display());
    let plugin = PluginProcess::start(&policy_bin(), &["--roles", "auth"], &listen);
    let broker = broker_with(&plugin.endpoint, "");
    assert_auth_works(&broker).await;
}

#[tokio::test]
async fn http_endpoint() {
    let (plugin, _) = PluginProcess::start_tcp(&policy_bin(), &["--roles", "auth"], "127.0.0.1");
    let broker = broker_with(&plugin.endpoint, "");
    assert_auth_works(&broker).await;
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn https_endpoint_with_client_certificates() {
    let pki = Pki::new("tandem test CA");
    let (_plugin, port) = pki.start_mtls_plugin(&policy_bin(), &["--roles", "auth"]);
    let ca = p(&pki.ca());
    let endpoint = format!("https://127.0.0.1:{port}");
    let tls = format!(
        "    tls: {{ ca: {ca}, cert: {}, key: {}, domain: localhost }}\n",
        p(&pki.path("broker.pem")),
        p(&pki.path("broker.key"))
    );
    let broker = broker_with(&endpoint, &tls);
    assert_auth_works(&broker).await;

    // Without a client certificate the plugin refuses the broker, and the broker refuses
    // to start rather than serve with a half-configured chain.
    let err = Tandem::expect_startup_failure(
        &format!(
            "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  users:\n    endpoint: {endpoint}\n    startup_timeout: 2s\n    tls: {{ ca: {ca}, domain: localhost }}\n    config: {USERS}\nauth: {{ plugins: [users] }}\n"
        ),
        Duration::from_secs(20),
    );
    assert!(
        err.contains("plugin `users`") && err.contains("did not answer Describe"),
        "{err}"
    );
}

#[tokio::test]
async fn dns_endpoint_balances_across_replicas_and_survives_losing_one() {
    ensure_replica_hosts();
    let (_a, mut b, port) = replicas_on_one_port(&["--roles", "auth"]);
    let broker = broker_with(
        &format!("dns:///{REPLICAS_HOST}:{port}"),
        "    resolve_interval: 1s\n",
    );

    let mut watcher = connect_as(broker.addr, "watcher", "alice", "pa")
        .await
        .unwrap();
    let base = "$SYS/broker/plugins/users";
    // Both replicas up before the calls are counted: under load one replica can still be
    // starting when the broker is (its probe then brings it in), and calls made before
    // that all go to the other one.
    let up = wait_sys(&mut watcher, &format!("{base}/replicas_up"), |v| v == "2").await;
    assert_eq!(up, "2");
    for i in 0..20 {
        assert!(
            connect_as(broker.addr, &format!("c{i}"), "alice", "pa")
                .await
                .is_ok()
        );
    }
    // Replicas are numbered in $SYS: any client may read it, and plugin addresses are
    // not theirs to learn.
    for replica in 0..2 {
        let calls = wait_sys(
            &mut watcher,
            &format!("{base}/replica/{replica}/calls"),
            |v| v.parse::<u64>().is_ok_and(|n| n >= 5),
        )
        .await;
        eprintln!("replica {replica} served {calls} calls");
    }

    // Lose one replica: every client is still served (no denial), by the other one.
    b.kill();
    for i in 0..20 {
        let r = connect_as(broker.addr, &format!("d{i}"), "alice", "pa").await;
        assert!(
            r.is_ok(),
            "connect {i} after losing a replica: {:?}",
            r.err()
        );
    }
    let up = wait_sys(&mut watcher, &format!("{base}/replicas_up"), |v| v == "1").await;
    assert_eq!(up, "1");
    let mut c =
        RawClient::connect_with(broker.addr, tandem_tests::connect_packet("x", true, 0)).await;
    assert_eq!(c.1.reason, ConnectReason::NotAuthorized);
    c.0.expect_closed().await;
}

/// `tls:` on a `dns:///` endpoint: every address the name resolves to is a replica dialed
/// with TLS, its certificate checked against the name (no plaintext left for credentials).
#[tokio::test]
async fn dns_endpoint_with_tls_dials_every_replica_with_tls() {
    ensure_replica_hosts();
    let pki = Pki::new("tandem dns CA");
    pki.sign(
        "replica",
        &[REPLICAS_HOST],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (cert, key, ca) = (
        p(&pki.path("replica.pem")),
        p(&pki.path("replica.key")),
        p(&pki.path("ca.pem")),
    );
    let tls_args = ["--roles", "auth", "--tls-cert", &cert, "--tls-key", &key];
    let (_a, _b, port) = replicas_on_one_port(&tls_args);
    let endpoint = format!("dns:///{REPLICAS_HOST}:{port}");
    let broker = broker_with(&endpoint, &format!("    tls: {{ ca: {ca} }}\n"));
    assert_auth_works(&broker).await;
    let mut watcher = connect_as(broker.addr, "watcher", "alice", "pa")
        .await
        .unwrap();
    let base = "$SYS/broker/plugins/users";
    // Both replicas up before the calls are counted: under load one replica can still be
    // starting when the broker is (its probe then brings it in), and calls made before
    // that all go to the other one.
    let up = wait_sys(&mut watcher, &format!("{base}/replicas_up"), |v| v == "2").await;
    assert_eq!(up, "2");
    for i in 0..20 {
        assert!(
            connect_as(broker.addr, &format!("c{i}"), "alice", "pa")
                .await
                .is_ok()
        );
    }
    // Both replicas (numbered in $SYS, as 127.0.0.2 and 127.0.0.3) served calls.
    for replica in 0..2 {
        wait_sys(
            &mut watcher,
            &format!("$SYS/broker/plugins/users/replica/{replica}/calls"),
            |v| v.parse::<u64>().is_ok_and(|n| n >= 5),
        )
        .await;
    }

    // The certificate is checked: a CA that did not sign it gets no replica up.
    let other = Pki::new("another CA");
    let err = Tandem::expect_startup_failure(
        &format!(
            "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  users:\n    endpoint: {endpoint}\n    startup_timeout: 2s\n    tls: {{ ca: {} }}\n    config: {USERS}\nauth: {{ plugins: [users] }}\n",
            p(&other.path("ca.pem"))
        ),
        Duration::from_secs(20),
    );
    assert!(err.contains("did not answer Describe"), "{err}");
}

/// Two policy plugins with `args`, on 127.0.0.2 and 127.0.0.3 and one port (the replica
/// name resolves to both addresses, one port). A port found free can be taken before both
/// have bound it, so another is tried then, a few times.
fn replicas_on_one_port(args: &[&str]) -> (PluginProcess, PluginProcess, u16) {
    let replica = |host: &str, port: u16| {
        PluginProcess::try_start(&policy_bin(), args, &format!("tcp://{host}:{port}"))
    };
    (0..5)
        .find_map(|_| {
            let port = free_port();
            let a = replica("127.0.0.2", port).ok()?;
            let b = replica("127.0.0.3", port).ok()?;
            Some((a, b, port))
        })
        .expect("two replicas listening on one port")
}
