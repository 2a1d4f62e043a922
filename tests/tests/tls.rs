//! TLS listeners with peers nobody here wrote (Debian's `mosquitto_pub`/`mosquitto_sub`
//! over OpenSSL): server certificates, client certificates required or optional, the
//! certificate's identity as the username, certificates rotated under a running
//! broker, and clients that speak the wrong thing to the wrong port.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tandem_tests::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tandem_tests::{DEADLINE, Tandem, connect_packet, policy_bin};

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A broker with a plain `default` listener and a `secure` TLS one whose `tls:` block is
/// `tls`, plus `extra` YAML.
fn broker(tls: &str, extra: &str) -> Tandem {
    Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n  secure: {{ type: tls, bind: 127.0.0.1:0, tls: {tls} }}\n{extra}"
    ))
}

/// `mosquitto_sub` on `listener`, waiting for `count` messages on `topic`, subscribed
/// when this returns.
fn subscriber(
    broker: &Tandem,
    listener: &str,
    id: &str,
    topic: &str,
    count: u32,
    tls: &[impl AsRef<OsStr>],
) -> Child {
    let port = broker.listener_addr(listener).port().to_string();
    let child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            topic,
            "-q",
            "1",
            "-i",
            id,
        ])
        .args(["-C", &count.to_string(), "-W", "20", "-v"])
        .args(tls)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)");
    broker
        .wait_log_all(&[&format!("client_id={id}"), "subscribed"], DEADLINE)
        .unwrap_or_else(|| panic!("{id} did not subscribe on {listener}"));
    child
}

/// `mosquitto_sub` over TLS, waiting for one message on `topic`.
fn tls_sub(broker: &Tandem, id: &str, topic: &str, tls: &[impl AsRef<OsStr>]) -> Child {
    subscriber(broker, "secure", id, topic, 1, tls)
}

/// `mosquitto_pub` of one QoS 1 message to `port`.
fn publish(port: u16, topic: &str, message: &str, args: &[impl AsRef<OsStr>]) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", "1", "-m", message])
        .args(args)
        .output()
        .expect("mosquitto_pub is installed")
}

/// `mosquitto_*` arguments for TLS trusting `ca`, presenting `cert` and `key`.
fn with_cert(ca: &str, cert: &Path, key: &Path) -> Vec<String> {
    ["--cafile", ca, "--cert", &p(cert), "--key", &p(key)]
        .map(str::to_owned)
        .to_vec()
}

fn received(sub: Child) -> String {
    let out = sub.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn mosquitto_clients_over_tls_with_a_cafile() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let broker = broker(&format!("{{ cert: {}, key: {} }}", p(&cert), p(&key)), "");
    let ca = p(&pki.ca());
    let sub = tls_sub(&broker, "tls-sub", "secure/#", &["--cafile", &ca]);
    let secure = broker.listener_addr("secure").port();
    let out = publish(secure, "secure/x", "over tls", &["--cafile", &ca]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(received(sub), "secure/x over tls");
    // The same clients, the other way: TLS publisher, plain subscriber, one broker.
    let line = broker
        .wait_log_all(&["client connected", "listener=secure"], DEADLINE)
        .expect("the TLS client's connection is logged with its listener");
    assert!(line.contains("client connected"));

    // A client that does not trust the server's CA is refused by the client itself.
    let other = Pki::new("another CA");
    let out = publish(secure, "secure/x", "no", &["--cafile", &p(&other.ca())]);
    assert!(
        !out.status.success(),
        "a client with the wrong CA connected"
    );
}

#[test]
fn client_certificates_required_refuse_clients_without_one() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let (dev_cert, dev_key) = pki.client("device-17", "device-17", &["sensor-17.example.com"]);
    let stranger = Pki::new("stranger CA");
    let (s_cert, s_key) = stranger.client("device-17", "device-17", &[]);
    let broker = broker(
        &format!(
            "{{ cert: {}, key: {}, client_ca: {}, client_auth: required }}",
            p(&cert),
            p(&key),
            p(&pki.ca())
        ),
        "",
    );
    let ca = p(&pki.ca());
    let device = with_cert(&ca, &dev_cert, &dev_key);
    let sub = tls_sub(&broker, "mtls-sub", "m/#", &device);
    let secure = broker.listener_addr("secure").port();

    // No certificate: the handshake fails, logged with its reason.
    let out = publish(secure, "m/x", "no cert", &["--cafile", &ca]);
    assert!(
        !out.status.success(),
        "a client without a certificate connected"
    );
    broker
        .wait_log_all(
            &[
                "closing connection: TLS handshake failed",
                "listener=secure",
            ],
            DEADLINE,
        )
        .expect("the refused handshake is logged");
    // A certificate from another CA, with the same name: refused as well.
    let out = publish(secure, "m/x", "stranger", &with_cert(&ca, &s_cert, &s_key));
    assert!(
        !out.status.success(),
        "a certificate from another CA was accepted"
    );

    let out = publish(secure, "m/x", "with cert", &device);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(received(sub), "m/x with cert");
}

#[test]
fn optional_client_certificates_and_the_common_name_as_username() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let (dev_cert, dev_key) = pki.client("device-17", "device-17", &[]);
    // Every client may connect; topics under devices/<username>/ only.
    let broker = broker(
        &format!(
            "{{ cert: {}, key: {}, client_ca: {}, client_auth: optional, use_identity_as_username: common_name }}",
            p(&cert),
            p(&key),
            p(&pki.ca())
        ),
        &format!(
            r##"plugins:
  acl:
    endpoint: unix://{dir}/acl.sock
    command: [{bin}]
    config:
      rules:
        - {{ action: publish, filter: "devices/{{username}}/#", verdict: allow }}
        - {{ action: subscribe, filter: "devices/#", verdict: allow }}
        - {{ action: receive, filter: "#", verdict: allow }}
      topic_default: deny
topic-check: {{ plugins: [acl] }}
"##,
            bin = policy_bin().display(),
            dir = pki.path("").display(),
        ),
    );
    let watcher = subscriber(
        &broker,
        "default",
        "watcher",
        "devices/#",
        1,
        &[] as &[&str],
    );
    let secure = broker.listener_addr("secure").port();
    let ca = p(&pki.ca());
    let cert_args = with_cert(&ca, &dev_cert, &dev_key);
    // The certificate says device-17; the username it types is ignored.
    let out = publish(
        secure,
        "devices/device-99/t",
        "impersonating",
        &[&cert_args[..], &["-u".to_owned(), "device-99".to_owned()]].concat(),
    );
    assert!(out.status.success(), "{out:?}");
    broker
        .wait_log_all(&["topic check denied", "devices/device-99/t"], DEADLINE)
        .expect("the publish as another device is denied");
    // Without a certificate there is no name to take: refused at CONNECT (as
    // Mosquitto does), whatever username it types.
    let out = publish(
        secure,
        "devices/device-17/t",
        "typed",
        &["--cafile", &ca, "-u", "device-17"],
    );
    assert!(
        !out.status.success(),
        "a client without a certificate connected: {out:?}"
    );
    broker
        .wait_log("tls.use_identity_as_username", DEADLINE)
        .expect("the refusal says why");
    let out = publish(secure, "devices/device-17/t", "mine", &cert_args);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(received(watcher), "devices/device-17/t mine");
}

#[tokio::test]
async fn wrong_protocol_on_each_port_closes_that_connection_only() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let broker = broker(&format!("{{ cert: {}, key: {} }}", p(&cert), p(&key)), "");
    let ca = p(&pki.ca());
    let sub = tls_sub(&broker, "bystander", "b/#", &["--cafile", &ca]);
    let secure = broker.listener_addr("secure");

    // Plain MQTT on the TLS port: not a TLS record. The broker answers with a TLS
    // alert record (content type 21) and closes; logged.
    let mut plain = tokio::net::TcpStream::connect(secure).await.unwrap();
    let mut connect = bytes::BytesMut::new();
    tandem_broker::protocol::encode(
        &tandem_broker::protocol::Packet::Connect(Box::new(connect_packet(
            "plain-on-tls",
            true,
            30,
        ))),
        tandem_broker::protocol::ProtocolVersion::V3_1_1,
        &mut connect,
    );
    plain.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer))
        .await
        .expect("the broker closes the connection")
        .unwrap();
    assert_eq!(
        answer.first(),
        Some(&21),
        "a TLS alert, then the end: {answer:?}"
    );
    broker
        .wait_log_all(&["TLS handshake failed", "listener=secure"], DEADLINE)
        .expect("plain MQTT on the TLS port is logged");

    // TLS on the plain port: a ClientHello is no CONNECT; closed, and logged.
    let out = publish(
        broker.addr.port(),
        "b/x",
        "tls on plain",
        &["--cafile", &ca],
    );
    assert!(!out.status.success());
    broker
        .wait_log("closing connection: invalid CONNECT", DEADLINE)
        .expect("TLS on the plain port is logged");

    // (Silence on the TLS port: silent_tls_connections_hold_only_their_handshake_slots...)

    // The bystander is unaffected.
    let out = publish(secure.port(), "b/x", "still here", &["--cafile", &ca]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(received(sub), "b/x still here");
}

#[test]
fn certificates_rotate_without_a_restart() {
    let first = Pki::new("first CA");
    let second = Pki::new("second CA");
    let (cert1, key1) = first.server("server");
    let (cert2, key2) = second.server("server");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let broker = broker(&format!("{{ cert: {}, key: {} }}", p(&cert), p(&key)), "");
    let secure = broker.listener_addr("secure").port();
    let (ca1, ca2) = (p(&first.ca()), p(&second.ca()));
    // Connected with the first certificate, and staying connected.
    let sub = subscriber(
        &broker,
        "secure",
        "long-lived",
        "r/#",
        2,
        &["--cafile", &ca1],
    );

    // A bad pair (the second certificate with the first key) is refused; the first
    // pair serves on.
    std::fs::copy(&cert2, &cert).unwrap();
    broker
        .wait_log("TLS certificates not replaced", DEADLINE)
        .expect("the mismatched pair is refused with a log line");
    assert!(
        publish(secure, "r/probe", "old pair", &["--cafile", &ca1])
            .status
            .success()
    );

    // The key arrives: the second pair is in force for new handshakes.
    std::fs::copy(&key2, &key).unwrap();
    broker
        .wait_log("TLS certificates replaced", DEADLINE)
        .expect("the new pair is put in force");
    assert_eq!(
        broker.count_log("TLS certificates not replaced"),
        1,
        "a refused pair is logged once, not at every event"
    );
    let out = publish(secure, "r/x", "rotated", &["--cafile", &ca2]);
    assert!(
        out.status.success(),
        "a client trusting the new CA: {out:?}"
    );
    let out = publish(secure, "r/x", "stale", &["--cafile", &ca1]);
    assert!(!out.status.success(), "the old certificate still served");
    // The connection made before the rotation is untouched: it got the message
    // published under the old pair and the one published under the new.
    assert_eq!(received(sub), "r/probe old pair\nr/x rotated");
}

#[test]
fn a_missing_key_file_stops_start_up_naming_the_listener_and_file() {
    let pki = Pki::new("tandem test CA");
    let (cert, _) = pki.server("server");
    // With a plugin configured: the certificates are checked before it is started.
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let err = Tandem::expect_startup_failure(
        &format!(
            "listeners:\n  secure: {{ type: tls, bind: 127.0.0.1:0, tls: {{ cert: {}, key: /nonexistent/server.key }} }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --output, {o}]\n",
            p(&cert),
            d = dir.path().display(),
            b = tandem_tests::event_logger_bin().display(),
            o = events.display(),
        ),
        Duration::from_secs(20),
    );
    assert!(
        err.contains("listener `secure`: tls.key /nonexistent/server.key"),
        "{err}"
    );
    assert!(
        !events.exists(),
        "the plugin was started (and told broker_pre_start) before the certificates were read"
    );
    // `tandem check-config` loads the files as start-up does: a key that is not the
    // certificate's is named, a good pair is reported with its expiry.
    let other = Pki::new("other CA");
    let (_, other_key) = other.server("other");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tandem.yaml");
    let config = |key: &Path| {
        format!(
            "listeners:\n  secure: {{ type: tls, bind: 127.0.0.1:0, tls: {{ cert: {}, key: {} }} }}\n",
            p(&cert),
            p(key)
        )
    };
    std::fs::write(&file, config(&other_key)).unwrap();
    let out = Command::new(tandem_tests::tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("listener `secure`: tls.cert and tls.key"),
        "{err}"
    );
    std::fs::write(&file, config(&pki.path("server.key"))).unwrap();
    let out = Command::new(tandem_tests::tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("listener secure: TLS certificate and key load; valid until"),
        "{text}"
    );

    let err = Tandem::expect_startup_failure(
        "listeners:\n  secure: { type: tls, bind: 127.0.0.1:0 }\n",
        Duration::from_secs(20),
    );
    assert!(err.contains("listeners.secure.tls"), "{err}");
}

#[tokio::test]
async fn silent_tls_connections_hold_only_their_handshake_slots_for_connect_timeout() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let broker = broker(
        &format!("{{ cert: {}, key: {} }}", p(&cert), p(&key)),
        "mqtt: { max_handshakes: 2, connect_timeout: 2s }\nadmin: { bind: 127.0.0.1:0 }\n",
    );
    let secure = broker.listener_addr("secure");
    let admin = broker.admin_addr();
    // Two sockets that never send a ClientHello hold both handshake slots...
    let silent = [
        tokio::net::TcpStream::connect(secure).await.unwrap(),
        tokio::net::TcpStream::connect(secure).await.unwrap(),
    ];
    // ...once the broker has accepted them (a connect completes in the kernel first)...
    tandem_tests::probe::wait_series(admin, "tandem_handshakes", |n| n == 2.0).await;
    // ...so a new connection, on any listener, is closed at once (logged)...
    let mut c = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, c.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once: {read:?}"
    );
    broker
        .wait_log(
            "mqtt.max_handshakes connections are in the handshake",
            DEADLINE,
        )
        .expect("the refusal is logged");
    // ...until mqtt.connect_timeout closes the silent ones, logged; then clients are
    // served again.
    broker
        .wait_log(
            "the TLS handshake did not finish within mqtt.connect_timeout",
            DEADLINE,
        )
        .expect("the stalled handshakes are closed at the timeout");
    drop(silent);
    let deadline = std::time::Instant::now() + DEADLINE;
    while tandem_tests::connect_as(broker.addr, "after", "u", "p")
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "no slot came free");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
