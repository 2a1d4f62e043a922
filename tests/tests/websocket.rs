//! WebSocket listeners (`ws`, `wss`): Eclipse Paho's Python client over WebSocket and over
//! TLS + WebSocket, and a raw WebSocket client for what a hostile or broken one sends: a
//! packet split across frames and packets sharing one, a text frame, an oversized frame,
//! plain HTTP without the upgrade, a wrong path, an origin not allowed.

use std::process::Command;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tandem_broker::protocol::{Packet, QoS};
use tandem_tests::pki::Pki;
use tandem_tests::tooling::paho_python;
use tandem_tests::wire::{decode, encode, subscribe_packet};
use tandem_tests::{DEADLINE, Tandem, connect_packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{WebSocketStream, client_async};

fn python_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/paho_ws.py")
}

fn paho(addr: std::net::SocketAddr, version: &str, cafile: Option<&str>) {
    let out = Command::new(paho_python())
        .arg(python_script())
        .args(["127.0.0.1", &addr.port().to_string(), "/mqtt", version])
        .args(cafile)
        .output()
        .expect("run paho_ws.py");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "paho over WebSocket (v{version}, tls: {}) failed:\n{}\n{}",
        cafile.is_some(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn paho_over_websocket_and_secure_websocket() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n  web: {{ type: ws, bind: 127.0.0.1:0 }}\n  webs: {{ type: wss, bind: 127.0.0.1:0, path: /mqtt, tls: {{ cert: {}, key: {} }} }}\n",
        cert.display(),
        key.display()
    ));
    let (ws, wss) = (broker.listener_addr("web"), broker.listener_addr("webs"));
    let ca = pki.ca().display().to_string();
    for version in ["311", "5"] {
        paho(ws, version, None);
        paho(wss, version, Some(&ca));
    }
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket client on `addr` at `path`, offering the `mqtt` subprotocol, with
/// `origin` if given.
async fn ws(addr: std::net::SocketAddr, path: &str, origin: Option<&str>) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("mqtt"));
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", HeaderValue::from_str(origin).unwrap());
    }
    match client_async(request, stream).await {
        Ok((ws, response)) => {
            assert_eq!(
                response.headers().get("sec-websocket-protocol").unwrap(),
                "mqtt",
                "the broker names the subprotocol it speaks"
            );
            Ok(ws)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reads binary frames until a whole packet decodes.
async fn recv(ws: &mut Ws, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(packet) = decode(buf).unwrap() {
            return packet;
        }
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a frame in time")
            .expect("the connection is open")
            .expect("a valid frame");
        match frame {
            Message::Binary(data) => buf.extend_from_slice(&data),
            other => panic!("not a binary frame: {other:?}"),
        }
    }
}

/// Waits for the broker to end the WebSocket (a Close frame or the socket's end).
async fn expect_closed(ws: &mut Ws) {
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the broker did not close the connection");
}

async fn connected(addr: std::net::SocketAddr, id: &str) -> (Ws, BytesMut) {
    let mut ws = ws(addr, "/mqtt", None).await.expect("upgrade");
    let connect = encode(&Packet::Connect(Box::new(connect_packet(id, true, 30))));
    ws.send(Message::Binary(Bytes::copy_from_slice(&connect)))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(recv(&mut ws, &mut buf).await, Packet::ConnAck(_)));
    (ws, buf)
}

#[tokio::test]
async fn frames_are_a_byte_stream_and_bad_frames_close_only_their_connection() {
    let broker = Tandem::start_config(
        "listeners:\n  default: { type: tcp, bind: 127.0.0.1:0 }\n  web: { type: ws, bind: 127.0.0.1:0, path: /mqtt, allowed_origins: [\"https://app.example.com\"] }\nmqtt: { max_packet_size: 4096 }\nadmin: { bind: 127.0.0.1:0 }\n",
    );
    let addr = broker.listener_addr("web");

    // A CONNECT split across two frames, then SUBSCRIBE and PUBLISH in one frame: the
    // frames' payloads are one stream.
    let mut ws1 = ws(addr, "/mqtt", None).await.expect("upgrade");
    let connect = encode(&Packet::Connect(Box::new(connect_packet(
        "split", true, 30,
    ))));
    let (a, b) = connect.split_at(5);
    ws1.send(Message::Binary(Bytes::copy_from_slice(a)))
        .await
        .unwrap();
    ws1.send(Message::Binary(Bytes::copy_from_slice(b)))
        .await
        .unwrap();
    let mut buf1 = BytesMut::new();
    assert!(matches!(
        recv(&mut ws1, &mut buf1).await,
        Packet::ConnAck(_)
    ));
    let mut both = encode(&Packet::Subscribe(subscribe_packet(
        1,
        &[("s/#", QoS::AtMostOnce)],
    )));
    both.extend_from_slice(&encode(&Packet::Publish(
        tandem_broker::protocol::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "s/x".into(),
            pkid: 0,
            payload: bytes::Bytes::from_static(b"together"),
            properties: None,
        },
    )));
    ws1.send(Message::Binary(both.freeze())).await.unwrap();
    assert!(matches!(recv(&mut ws1, &mut buf1).await, Packet::SubAck(_)));
    match recv(&mut ws1, &mut buf1).await {
        Packet::Publish(p) => assert_eq!(&p.payload[..], b"together"),
        other => panic!("expected the PUBLISH back, got {other:?}"),
    }

    // A text frame: closed, logged.
    let (mut text, _) = connected(addr, "texter").await;
    text.send(Message::Text("hello".into())).await.unwrap();
    expect_closed(&mut text).await;
    broker
        .wait_log_all(
            &["closing connection: transport error", "text frame"],
            DEADLINE,
        )
        .expect("the text frame is logged");

    // A frame over max_packet_size + 64 KiB: closed, logged.
    let (mut big, _) = connected(addr, "big").await;
    let _ = big
        .send(Message::Binary(Bytes::from(vec![
            0u8;
            4096 + 64 * 1024 + 1
        ])))
        .await;
    expect_closed(&mut big).await;
    broker
        .wait_log_all(
            &["closing connection: transport error", "client_id=big"],
            DEADLINE,
        )
        .expect("the oversized frame is logged");

    // Plain HTTP without the upgrade: closed, logged.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, http.read_to_end(&mut answer))
        .await
        .expect("the broker closes a plain HTTP request");
    broker
        .wait_log("closing connection: WebSocket upgrade failed", DEADLINE)
        .expect("the plain HTTP request is logged");

    // The wrong path, and an origin the listener does not allow: HTTP errors.
    let err = ws(addr, "/other", None)
        .await
        .expect_err("wrong path refused");
    assert!(err.contains("404"), "{err}");
    let err = ws(addr, "/mqtt", Some("https://evil.example"))
        .await
        .expect_err("foreign origin refused");
    assert!(err.contains("403"), "{err}");
    broker
        .wait_log("origin not in the listener's allowed_origins", DEADLINE)
        .expect("the refused origin is logged");
    assert!(
        ws(addr, "/mqtt", Some("https://app.example.com"))
            .await
            .is_ok()
    );

    // The first client was not disturbed by any of it.
    ws1.send(Message::Binary(encode(&Packet::PingReq).freeze()))
        .await
        .unwrap();
    assert!(matches!(recv(&mut ws1, &mut buf1).await, Packet::PingResp));

    // Counted: three WebSocket clients connected (split, texter, big), none over TCP;
    // the plain HTTP request, the wrong path and the foreign origin failed before MQTT.
    let admin = broker.admin_addr();
    let scrape = tandem_tests::probe::wait_scrape(
        admin,
        r#"tandem_connections_by_transport_total{transport="ws"}"#,
        |n| n == 3.0,
    )
    .await;
    let v = |name: &str| tandem_tests::probe::series(&scrape, name).unwrap();
    assert_eq!(
        v(r#"tandem_connections_by_transport_total{transport="tcp"}"#),
        0.0
    );
    assert_eq!(v("tandem_transport_failures_total"), 3.0);
}

#[tokio::test]
async fn pings_and_bytes_before_authentication_are_bounded() {
    let broker = Tandem::start_config(
        "listeners:\n  default: { type: tcp, bind: 127.0.0.1:0 }\n  web: { type: ws, bind: 127.0.0.1:0 }\n",
    );
    let addr = broker.listener_addr("web");
    let ping = Message::Ping(Bytes::from(vec![7u8; 125]));

    // Before CONNECT: pings (or anything) past max_connect_packet_size + 80 KiB close
    // the connection, logged.
    let mut early = ws(addr, "/mqtt", None).await.expect("upgrade");
    for _ in 0..2_000 {
        if early.send(ping.clone()).await.is_err() {
            break;
        }
    }
    broker
        .wait_log(
            "more bytes before authentication than the listener allows",
            DEADLINE,
        )
        .expect("the pre-authentication cap closes the connection");

    // After CONNECT (keepalive off): a client that pings without ever reading makes the
    // broker queue pongs it cannot send; their buffer is bounded, so RSS stays flat.
    let (mut flooder, _) = connected(addr, "pinger").await;
    let before = tandem_tests::probe::rss_kib(broker.pid());
    // 40 MB of pings, none of their pongs read.
    for _ in 0..320_000 {
        if flooder.send(ping.clone()).await.is_err() {
            break;
        }
    }
    let after = tandem_tests::probe::rss_kib(broker.pid());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} KiB to {after} KiB under a ping flood"
    );
    // The broker still serves others.
    let (mut other, mut buf) = connected(addr, "other").await;
    other
        .send(Message::Binary(encode(&Packet::PingReq).freeze()))
        .await
        .unwrap();
    assert!(matches!(recv(&mut other, &mut buf).await, Packet::PingResp));
}
