//! The `tandem-auth-jwt` example plugin, started by the broker (`command:`), with real clients:
//! tokens accepted and refused, keys from a secret file, a JWK set file and a JWK set served over
//! HTTP by the test (with a key rotation picked up by the periodic reload), topic permissions
//! from claims, claims as attributes for another plugin, and a fail-closed start-up.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tandem_broker::protocol::{ConnectReason, QoS, SubscribeReason};
use tandem_tests::jwt::{EcKey, b64, hs256, jwks, now};
use tandem_tests::{DEADLINE, Tandem, binary, connect_as, policy_bin};

const SECRET: &[u8] = b"a shared secret for the test";

/// The broker with the JWT plugin (HS256 from a secret file, ES256 from a JWK set file; both
/// roles) and the policy plugin reading the `tenant` attribute the JWT plugin maps from a claim.
fn start(dir: &std::path::Path, es: &EcKey) -> Tandem {
    std::fs::write(dir.join("jwt.key"), [SECRET, b"\n"].concat()).unwrap();
    std::fs::write(dir.join("jwks.json"), jwks(&[es])).unwrap();
    let (jwt, policy, d) = (
        binary("tandem-auth-jwt"),
        policy_bin(),
        dir.display().to_string(),
    );
    let yaml = format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  jwt:
    endpoint: unix://{d}/jwt.sock
    command: [{jwt}, --roles, "auth,topic"]
    config:
      algorithms: [HS256, ES256]
      secret_file: {d}/jwt.key
      jwks_file: {d}/jwks.json
      issuer: https://issuer.test
      audience: mqtt
      leeway: 5s
      attributes: {{ tenant: tenant }}
      publish_claim: publish
      subscribe_claim: subscribe
      receive_claim: receive
  policy:
    endpoint: unix://{d}/policy.sock
    command: [{policy}, --roles, topic]
    config:
      rules:
        - {{ action: any, filter: "tenants/{{tenant}}/#", verdict: allow }}
auth:
  plugins: [jwt]
topic-check:
  enable: true
  plugins: [jwt, policy]
"##,
        jwt = jwt.display(),
        policy = policy.display(),
    );
    Tandem::start_config(&yaml)
}

fn claims(sub: &str, extra: Value) -> Value {
    let mut c =
        json!({"sub": sub, "iss": "https://issuer.test", "aud": "mqtt", "exp": now() + 600});
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

#[tokio::test]
async fn tokens_are_verified_and_refusals_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let es = EcKey::new("es-1");
    let broker = start(dir.path(), &es);
    let a = broker.addr;

    assert!(
        connect_as(a, "ok", "anyone", &hs256(SECRET, &claims("d1", json!({}))))
            .await
            .is_ok()
    );
    assert!(
        connect_as(a, "es", "anyone", &es.sign(&claims("d2", json!({}))))
            .await
            .is_ok(),
        "ES256 with a key from jwks_file"
    );

    let refused = [
        (
            "expired",
            hs256(SECRET, &claims("d1", json!({"exp": now() - 60}))),
            "token expired",
        ),
        (
            "forged",
            hs256(b"guessed", &claims("d1", json!({}))),
            "bad signature",
        ),
        (
            "unsigned",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims("d1", json!({})).to_string().as_bytes())
            ),
            "algorithm none is not allowed",
        ),
        (
            "issuer",
            hs256(SECRET, &claims("d1", json!({"iss": "https://evil.test"}))),
            "wrong issuer",
        ),
        (
            "unknown-kid",
            EcKey::new("es-9").sign(&claims("d1", json!({}))),
            "no key in the JWK set matches kid",
        ),
        (
            "garbage",
            "not-a-jwt".to_string(),
            "the password is not a JWT",
        ),
    ];
    for (client, token, reason) in &refused {
        // The plugin asks for 0x86; a 3.1.1 client gets the broker's refusal code.
        let refused = connect_as(a, client, "anyone", token).await.err();
        assert!(
            matches!(
                refused,
                Some(ConnectReason::BadUserNameOrPassword | ConnectReason::NotAuthorized)
            ),
            "{client} must be refused, got {refused:?}"
        );
        assert!(
            broker
                .wait_log_all(&["authentication denied", "plugin=jwt", reason], DEADLINE)
                .is_some(),
            "{client}: the broker logs the reason {reason:?}"
        );
    }
    // No password at all: the plugin abstains, and with every plugin abstaining the broker denies.
    let (_, ack) =
        tandem_tests::RawClient::connect_with(a, tandem_tests::connect_packet("nopass", true, 0))
            .await;
    assert_eq!(ack.reason, ConnectReason::NotAuthorized);
    assert!(
        broker
            .wait_log("every plugin abstained", DEADLINE)
            .is_some()
    );
    assert_eq!(broker.count_log("panicked"), 0);
}

#[tokio::test]
async fn claims_grant_topics_and_attributes_reach_other_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let es = EcKey::new("es-1");
    let broker = start(dir.path(), &es);
    let a = broker.addr;

    let watcher_token = hs256(
        SECRET,
        &claims("watcher", json!({"subscribe": ["#"], "receive": ["#"]})),
    );
    let mut watcher = connect_as(a, "watcher", "w", &watcher_token).await.unwrap();
    let ack = watcher.subscribe("dev/#", QoS::AtMostOnce).await;
    assert_eq!(ack.reasons, vec![SubscribeReason::Granted(QoS::AtMostOnce)]);

    let device_token = hs256(
        SECRET,
        &claims(
            "d1",
            json!({"publish": ["dev/d1/#"], "subscribe": ["cmd/d1/+"], "receive": ["cmd/d1/+"]}),
        ),
    );
    let mut device = connect_as(a, "d1", "d1", &device_token).await.unwrap();
    let ack = device
        .subscribe_many(&[
            ("cmd/d1/+", QoS::AtMostOnce),
            ("cmd/d1/#", QoS::AtMostOnce),
            ("cmd/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![
            SubscribeReason::Granted(QoS::AtMostOnce),
            SubscribeReason::FAILURE,
            SubscribeReason::FAILURE
        ],
        "a claim cmd/d1/+ grants itself, not cmd/d1/# nor cmd/#"
    );

    device
        .publish("dev/d1/temp", b"1", QoS::AtLeastOnce, false)
        .await;
    device
        .publish("dev/d2/temp", b"2", QoS::AtLeastOnce, false)
        .await;
    device
        .publish("dev/d1/end", b"3", QoS::AtLeastOnce, false)
        .await;
    let mut got = Vec::new();
    while got.last().map(Vec::as_slice) != Some(&b"3"[..]) {
        got.push(watcher.recv_publish().await.payload.to_vec());
    }
    assert_eq!(
        got,
        vec![b"1".to_vec(), b"3".to_vec()],
        "dev/d2 is outside d1's publish claim"
    );
    assert!(
        broker
            .wait_log_all(
                &[
                    "topic check denied",
                    "plugin=jwt",
                    "outside the token's jwt.publish list"
                ],
                DEADLINE
            )
            .is_some()
    );

    // No topic claims in this token: the JWT plugin abstains and the policy plugin decides,
    // with the `tenant` attribute the JWT plugin mapped from the token's claim.
    let tenant_token = hs256(SECRET, &claims("t1", json!({"tenant": "acme"})));
    let mut tenant = connect_as(a, "t1", "t1", &tenant_token).await.unwrap();
    let ack = tenant
        .subscribe_many(&[
            ("tenants/acme/#", QoS::AtMostOnce),
            ("tenants/bobco/#", QoS::AtMostOnce),
        ])
        .await;
    assert_eq!(
        ack.reasons,
        vec![
            SubscribeReason::Granted(QoS::AtMostOnce),
            SubscribeReason::FAILURE
        ]
    );
    tenant
        .publish("tenants/acme/x", b"hello", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&tenant.recv_publish().await.payload[..], b"hello");
}

/// A tiny HTTP server for the JWK set: answers every GET with the current status and body.
struct JwksServer {
    url: String,
    reply: Arc<Mutex<(u16, String)>>,
    /// Requests answered since the last `set`.
    served: Arc<AtomicUsize>,
}

impl JwksServer {
    fn start(body: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let reply = Arc::new(Mutex::new((200, body)));
        let shared = Arc::clone(&reply);
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                // Counted under the lock, so a request counts for the reply it gets.
                let (status, body) = {
                    let reply = shared.lock().unwrap();
                    counter.fetch_add(1, Ordering::SeqCst);
                    reply.clone()
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        JwksServer { url, reply, served }
    }

    fn set(&self, status: u16, body: String) {
        let mut reply = self.reply.lock().unwrap();
        *reply = (status, body);
        self.served.store(0, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn jwks_url_reloads_and_keeps_the_last_good_keys() {
    let first = EcKey::new("first");
    let second = EcKey::new("second");
    let server = JwksServer::start(jwks(&[&first]));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  jwt:
    endpoint: unix://{d}/jwt.sock
    command: [{jwt}, --roles, auth]
    config:
      algorithms: [ES256]
      jwks_url: {url}
      jwks_refresh: 1s
      jwks_min_refresh: 1h
auth:
  plugins: [jwt]
"##,
        d = dir.path().display(),
        jwt = binary("tandem-auth-jwt").display(),
        url = server.url,
    );
    let broker = Tandem::start_config(&yaml);
    let a = broker.addr;
    let token = |key: &EcKey| key.sign(&json!({"sub": "d", "exp": now() + 600}));

    // The first fetch happens in the background right after Describe.
    connect_eventually(a, &token(&first), true).await;

    // The issuer fails: reloads fail and the last good keys stay in use. Reloads run one
    // after the other, so a second request means the first failure has been handled.
    server.set(500, "oops".into());
    let deadline = Instant::now() + DEADLINE;
    while server.served.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the plugin stopped reloading");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connect_as(a, "still", "d", &token(&first)).await.is_ok());

    // The issuer rotates to a new key: a periodic reload picks it up (the unknown-kid reload
    // is rate-limited to once an hour here), and the old key stops working.
    server.set(200, jwks(&[&second]));
    connect_eventually(a, &token(&second), true).await;
    connect_eventually(a, &token(&first), false).await;
    assert!(
        broker
            .wait_log_all(
                &["authentication denied", "matches kid Some(\"first\")"],
                DEADLINE
            )
            .is_some()
    );
}

/// Connects with `token` until the outcome is `accepted`, within the deadline.
async fn connect_eventually(addr: std::net::SocketAddr, token: &str, accepted: bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if connect_as(addr, "rot", "d", token).await.is_ok() == accepted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "token never became {}",
            if accepted { "accepted" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_unreadable_key_file_stops_the_broker_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r##"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  jwt:
    endpoint: unix://{d}/jwt.sock
    command: [{jwt}]
    startup_timeout: 3s
    config:
      algorithms: [HS256]
      secret_file: {d}/missing.key
auth:
  plugins: [jwt]
"##,
        d = dir.path().display(),
        jwt = binary("tandem-auth-jwt").display(),
    );
    let err = Tandem::expect_startup_failure(&yaml, 3 * DEADLINE);
    assert!(
        err.contains(&format!(
            "secret_file {}/missing.key: cannot read",
            dir.path().display()
        )),
        "the message names the file:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
