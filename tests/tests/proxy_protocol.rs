//! `proxy_protocol: true`: behind a load balancer (HAProxy, an AWS NLB) every connection
//! starts with a PROXY protocol header, and the client address in it is the one logs
//! and plugins see, on plain TCP and under TLS alike. A connection without a valid
//! header is closed with the reason logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tandem_broker::protocol::Packet;
use tandem_tests::pki::Pki;
use tandem_tests::wire::{decode, encode};
use tandem_tests::{DEADLINE, RawClient, Tandem, connect_packet, event_logger_bin};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn events(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `client_connected` event of `client_id`, waited for.
async fn connected_event(path: &std::path::Path, client_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(e) = events(path)
            .into_iter()
            .find(|e| e["kind"] == "client_connected" && e["client_id"] == client_id)
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no client_connected for {client_id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a CONNECT as `id` and reads its CONNACK over any stream.
async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, id: &str) {
    let connect = encode(&Packet::Connect(Box::new(connect_packet(id, true, 30))));
    stream.write_all(&connect).await.unwrap();
    let mut buf = BytesMut::new();
    let packet = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(p) = decode(&mut buf).unwrap() {
                return p;
            }
            assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .expect("CONNACK in time");
    assert!(matches!(packet, Packet::ConnAck(_)), "{packet:?}");
}

/// A v2 PROXY header for a TCP over IPv4 connection from `src` to `dst`, with a TLV
/// behind the addresses (as AWS NLBs add one).
fn v2_header(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    let tlv = [0xEA, 0x00, 0x03, b'v', b'p', b'c'];
    h.extend_from_slice(&((12 + tlv.len()) as u16).to_be_bytes());
    h.extend_from_slice(&src.0);
    h.extend_from_slice(&dst.0);
    h.extend_from_slice(&src.1.to_be_bytes());
    h.extend_from_slice(&dst.1.to_be_bytes());
    h.extend_from_slice(&tlv);
    h
}

#[tokio::test]
async fn the_proxied_address_reaches_plugins_and_logs_on_tcp_and_tls() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n  behind: {{ type: tcp, bind: 127.0.0.1:0, proxy_protocol: true }}\n  secure: {{ type: tls, bind: 127.0.0.1:0, proxy_protocol: true, tls: {{ cert: {}, key: {} }} }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --kinds, client_connected, --output, {o}]\n",
        cert.display(),
        key.display(),
        d = dir.path().display(),
        b = event_logger_bin().display(),
        o = out.display(),
    ));
    let behind = broker.listener_addr("behind");
    let secure = broker.listener_addr("secure");

    // v1 on plain TCP: the header, then MQTT.
    let mut v1 = TcpStream::connect(behind).await.unwrap();
    v1.write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n")
        .await
        .unwrap();
    mqtt_connect(&mut v1, "via-v1").await;
    let e = connected_event(&out, "via-v1").await;
    assert_eq!(e["remote_addr"], "203.0.113.7:51234", "{e}");
    assert_eq!(e["listener"], "behind");
    assert_eq!(e["transport"], "tcp");
    broker
        .wait_log_all(&["client_id=via-v1", "peer=203.0.113.7:51234"], DEADLINE)
        .expect("the log names the proxied address");

    // v2 (with a TLV) before a TLS handshake: the header is outside TLS, as an NLB sends it.
    let mut tcp = TcpStream::connect(secure).await.unwrap();
    tcp.write_all(&v2_header(
        ([198, 51, 100, 23], 40000),
        ([10, 0, 0, 2], 8883),
    ))
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(pem_der(
            &std::fs::read_to_string(pki.ca()).unwrap(),
        )))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS after the PROXY header");
    mqtt_connect(&mut tls, "via-v2").await;
    let e = connected_event(&out, "via-v2").await;
    assert_eq!(e["remote_addr"], "198.51.100.23:40000", "{e}");
    assert_eq!(e["transport"], "tls");

    // No header: closed, with the reason logged; the others are unaffected.
    let mut bare = RawClient::tcp(behind).await;
    bare.send(&Packet::Connect(Box::new(connect_packet("bare", true, 30))))
        .await;
    bare.expect_closed().await;
    broker
        .wait_log_all(
            &["closing connection", "no PROXY header", "listener=behind"],
            DEADLINE,
        )
        .expect("the missing header is logged");
    // A header that lies about its length: closed too.
    let mut liar = TcpStream::connect(behind).await.unwrap();
    let mut header = v2_header(([1, 2, 3, 4], 1), ([5, 6, 7, 8], 2));
    header[14..16].copy_from_slice(&60000u16.to_be_bytes());
    liar.write_all(&header).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, liar.read_to_end(&mut rest))
        .await
        .expect("closed at once, not waiting for 60000 bytes");
    broker
        .wait_log("invalid PROXY header", DEADLINE)
        .expect("the oversized header is logged");
    // The plain listener needs no header, and the first client is still served.
    let _plain = RawClient::connect(broker.addr, "plain").await;
    v1.write_all(&encode(&Packet::PingReq)).await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(DEADLINE, v1.read_exact(&mut pong))
        .await
        .expect("PINGRESP in time")
        .unwrap();
    assert_eq!(pong, [0xD0, 0]);
}

/// The DER of the first PEM block of `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
