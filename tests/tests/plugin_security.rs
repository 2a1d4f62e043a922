//! Who may talk to a plugin, and what plugins are told: the broker proves itself with a bearer
//! token (`token_file`) that example plugins require (`--token-file`), so a stranger who
//! reaches a plugin's port can neither call it nor push it a configuration; the SDK refuses a
//! public address with no caller check; unix sockets are the user's alone; raw CONNECT bytes
//! reach event plugins with the password zeroed; and an event queue is bounded in bytes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_plugin::proto::v1 as pb;
use tandem_tests::{
    DEADLINE, PluginProcess, RawClient, Tandem, connect_as, event_logger_bin, policy_bin, wait_sys,
};

const USERS: &str = "{ users: { alice: { password: pa } } }";

fn auth_broker(endpoint: &str, extra: &str) -> Tandem {
    Tandem::start(&format!(
        "plugins:\n  users:\n    endpoint: {endpoint}\n    startup_timeout: 10s\n{extra}    config: {USERS}\nauth: {{ plugins: [users] }}\n"
    ))
}

/// `{ users: { mallory: { password: evil } } }` as the protobuf `Struct` Describe carries.
fn mallory_config() -> prost_types::Struct {
    use prost_types::value::Kind;
    let s = |fields: Vec<(&str, Kind)>| prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_owned(), prost_types::Value { kind: Some(v) }))
            .collect::<BTreeMap<_, _>>(),
    };
    let password = s(vec![("password", Kind::StringValue("evil".into()))]);
    let users = s(vec![("mallory", Kind::StructValue(password))]);
    s(vec![("users", Kind::StructValue(users))])
}

async fn stranger_channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("the plugin's port is reachable")
}

fn with_auth<T>(msg: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(value) = authorization {
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn a_token_protected_plugin_answers_only_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "k3y-only-the-broker-knows\n").unwrap();
    let token_arg = token.display().to_string();
    let (_plugin, port) = PluginProcess::start_tcp(
        &policy_bin(),
        &["--roles", "auth", "--token-file", &token_arg],
        "127.0.0.1",
    );

    // A stranger on the port: Describe (pushing a config that lets mallory in) and
    // Authenticate are refused, without a token and with a wrong one.
    let channel = stranger_channel(port).await;
    let mut client = pb::plugin_client::PluginClient::new(channel.clone());
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("k3y-only-the-broker-knows"),
    ] {
        let describe = pb::DescribeRequest {
            plugin_alias: "users".into(),
            config: Some(mallory_config()),
            config_generation: 99,
            ..Default::default()
        };
        let status = client
            .describe(with_auth(describe, authorization))
            .await
            .expect_err("Describe without the token");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{authorization:?}"
        );
        let auth = pb::AuthenticateRequest {
            client_id: "m".into(),
            username: Some("mallory".into()),
            password: Some(b"evil".to_vec()),
            ..Default::default()
        };
        let status = client
            .authenticate(with_auth(auth, authorization))
            .await
            .expect_err("Authenticate without the token");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    // Health stays open (probes send no token): it tells only whether the plugin serves.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers probes");
    assert_eq!(serving.into_inner().status, 1, "SERVING");

    // The broker with the token: described, and its configuration (not the stranger's)
    // decides.
    let broker = auth_broker(
        &format!("http://127.0.0.1:{port}"),
        &format!("    token_file: {token_arg}\n"),
    );
    assert!(connect_as(broker.addr, "a", "alice", "pa").await.is_ok());
    assert_eq!(
        connect_as(broker.addr, "m", "mallory", "evil").await.err(),
        Some(ConnectReason::NotAuthorized),
        "the stranger's Describe changed nothing"
    );

    // A broker without the token (or with another one) is refused too: it does not start.
    let other = dir.path().join("other-token");
    std::fs::write(&other, "not-the-key").unwrap();
    for extra in [
        String::new(),
        format!("    token_file: {}\n", other.display()),
    ] {
        let err = Tandem::expect_startup_failure(
            &format!(
                "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  users:\n    endpoint: http://127.0.0.1:{port}\n    startup_timeout: 2s\n{extra}    config: {USERS}\nauth: {{ plugins: [users] }}\n"
            ),
            Duration::from_secs(20),
        );
        assert!(
            err.contains("did not answer Describe") && err.contains("bearer token"),
            "{err}"
        );
    }
}

/// Runs a plugin and expects it to exit (failing) within the deadline; returns its stderr.
fn expect_exit(args: &[&str]) -> String {
    let mut child = Command::new(policy_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(!status.success(), "{err}");
            return err;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the plugin served {args:?} instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_sdk_refuses_a_public_address_with_no_caller_check() {
    let listen = |port: u16| format!("tcp://0.0.0.0:{port}");
    // The refusals bind port 0 (the SDK binds, then looks at what it bound): a port
    // picked free beforehand can be taken meanwhile by another test's connection, and
    // the plugin would then fail to bind instead of refusing.
    let err = expect_exit(&["--roles", "auth", "--listen", &listen(0)]);
    assert!(
        err.contains("refusing to serve on tcp://0.0.0.0")
            && err.contains("--token-file")
            && err.contains("--insecure"),
        "{err}"
    );
    // TLS without client certificates authenticates the plugin, not its caller: refused too.
    let pki = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (pki.path().join("c.pem"), pki.path().join("k.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let (c, k) = (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    );
    let err = expect_exit(&[
        "--roles",
        "auth",
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
        "--listen",
        &listen(0),
    ]);
    assert!(err.contains("refusing to serve"), "{err}");

    // With a token, or with --insecure said out loud, it serves.
    let token = pki.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let t = token.display().to_string();
    let _with_token = PluginProcess::start_tcp(
        &policy_bin(),
        &["--roles", "auth", "--token-file", &t],
        "0.0.0.0",
    );
    let _insecure =
        PluginProcess::start_tcp(&policy_bin(), &["--roles", "auth", "--insecure"], "0.0.0.0");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn unix_sockets_are_the_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("run/tandem");
    let sock = nested.join("users.sock");
    let plugin = PluginProcess::start(
        &policy_bin(),
        &["--roles", "auth"],
        &format!("unix://{}", sock.display()),
    );
    assert_eq!(mode(&sock), 0o600, "the socket file is 0600");
    assert_eq!(mode(&nested), 0o700, "a directory the SDK makes is 0700");
    // Nothing else was left beside it (the socket is bound aside, then renamed in).
    let entries: Vec<_> = std::fs::read_dir(&nested)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("users.sock")]);
    // The broker (same user) still reaches it.
    let broker = auth_broker(&plugin.endpoint, "");
    assert!(connect_as(broker.addr, "a", "alice", "pa").await.is_ok());
}

/// Every JSON object in `v` (depth first) that has `key`.
fn objects_with<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.contains_key(key) {
                out.push(v);
            }
            for child in o.values() {
                objects_with(child, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| objects_with(c, key, out)),
        _ => {}
    }
}

fn connect_packets(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut found = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let mut objs = Vec::new();
        objects_with(&v, "packet_type", &mut objs);
        found.extend(
            objs.into_iter()
                .filter(|o| o["packet_type"] == "connect")
                .cloned(),
        );
    }
    found
}

#[tokio::test]
async fn raw_connect_bytes_reach_plugins_with_the_password_zeroed() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("packets.jsonl");
    let yaml = format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  log:\n    endpoint: unix://{d}/log.sock\n    command: [{b}, --kinds, mqtt_packet_received, --raw-packets, --output, {o}]\n",
        d = dir.path().display(),
        b = event_logger_bin().display(),
        o = out.display()
    );
    let broker = Tandem::start_config(&yaml);
    let password = "hunter2-correct-horse";
    let _c = connect_as(broker.addr, "raw-1", "alice", password)
        .await
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let connect = loop {
        if let Some(c) = connect_packets(&out).into_iter().next() {
            break c;
        }
        assert!(Instant::now() < deadline, "no CONNECT packet event logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(connect["raw"].as_str().expect("raw bytes were asked for"))
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.contains(password),
        "the password is not in the raw bytes"
    );
    assert!(
        text.contains("raw-1") && text.contains("alice"),
        "the rest is intact"
    );
    assert_eq!(
        raw.len() as u64,
        connect["size"].as_u64().unwrap(),
        "same length"
    );
    let n = password.len();
    assert_eq!(
        &raw[raw.len() - n - 2..raw.len() - n],
        &(n as u16).to_be_bytes(),
        "the password's length prefix is kept"
    );
    assert!(
        raw[raw.len() - n..].iter().all(|b| *b == 0),
        "zeroed: {raw:?}"
    );
    assert!(
        !std::fs::read_to_string(&out)
            .unwrap()
            .contains(&base64::engine::general_purpose::STANDARD.encode(password)),
        "nor anywhere in the log"
    );
}

fn sequences(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["kind"] == "message_received")
        .filter_map(|l| l["seq"].as_u64())
        .collect()
}

async fn wait_seqs(path: &Path, ok: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = sequences(path);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "events so far: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ten thousand events may be allowed, but not ten thousand 1 MiB payloads: at
/// `events.max_bytes` the oldest events go (counted), however few they are.
#[tokio::test]
async fn an_event_queue_is_bounded_in_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix://{}/log.sock", dir.path().display());
    let first = dir.path().join("first.jsonl");
    let args = |out: &Path| {
        vec![
            "--kinds".to_owned(),
            "message_received".to_owned(),
            "--payload".to_owned(),
            "base64".to_owned(),
            "--output".to_owned(),
            out.display().to_string(),
        ]
    };
    let a = args(&first);
    let mut logger = PluginProcess::start(
        &event_logger_bin(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &sock,
    );
    let broker = Tandem::start(&format!(
        "sys: {{ interval: 1s }}\nplugins:\n  log:\n    endpoint: {sock}\n    events: {{ queue: 10000, max_bytes: 51200 }}\n"
    ));
    let mut p = RawClient::connect(broker.addr, "pub").await;
    p.publish("big/x", &[1; 100], QoS::AtLeastOnce, false).await;
    wait_seqs(&first, |s| s == [1]).await;

    // The plugin goes away; 30 publishes of 10 KiB each: about five fit in 50 KiB.
    logger.kill();
    for _ in 0..30 {
        p.publish("big/x", &[7; 10 * 1024], QoS::AtLeastOnce, false)
            .await;
    }
    let mut sys = RawClient::connect(broker.addr, "sys").await;
    let dropped = wait_sys(&mut sys, "$SYS/broker/plugins/log/events/dropped", |v| {
        v.parse::<u64>().is_ok_and(|n| n >= 25)
    })
    .await;
    let dropped: u64 = dropped.parse().unwrap();
    assert!(
        dropped <= 26,
        "far below `queue`, only bytes dropped: {dropped}"
    );
    assert!(
        broker
            .wait_log(
                "event queue full (events.queue or events.max_bytes)",
                DEADLINE
            )
            .is_some(),
        "the drops are logged"
    );

    // It comes back: it gets the newest events only, as many as 50 KiB holds.
    let second = dir.path().join("second.jsonl");
    let a = args(&second);
    let _logger = PluginProcess::start(
        &event_logger_bin(),
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &sock,
    );
    let got = wait_seqs(&second, |s| s.contains(&31)).await;
    let n = got.len() as u64;
    assert!(
        (1..=5).contains(&n) && got == ((32 - n)..=31).collect::<Vec<u64>>(),
        "the newest events that fit in 50 KiB, in order: {got:?}"
    );
    assert!(n + dropped <= 30, "{n} kept + {dropped} dropped of 30");
}

/// A `command:` plugin's socket directory is the broker's user's alone: created 0700 when
/// missing, refused when others may write it (they could put their own socket there).
#[tokio::test]
async fn plugin_sockets_live_in_a_directory_only_the_broker_can_write() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("sockets");
    let yaml = |sockets: &Path| {
        format!(
            "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}\nplugins:\n  users:\n    endpoint: unix://{}/users.sock\n    command: [{}, --roles, auth]\n    startup_timeout: 10s\n    config: {USERS}\nauth: {{ plugins: [users] }}\n",
            sockets.display(),
            policy_bin().display()
        )
    };
    let broker = Tandem::start_config(&yaml(&sockets));
    assert_eq!(mode(&sockets), 0o700, "created for the broker's user only");
    assert_eq!(mode(&sockets.join("users.sock")), 0o600);
    assert!(connect_as(broker.addr, "a", "alice", "pa").await.is_ok());
    drop(broker);

    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Tandem::expect_startup_failure(&yaml(&open), Duration::from_secs(20));
    assert!(
        err.contains("is writable by others") && err.contains(&open.display().to_string()),
        "{err}"
    );
    assert!(
        !open.join("users.sock").exists(),
        "the plugin was not started"
    );
}

/// The quick start's plugins listen on unix sockets in a directory of their own (which the
/// broker makes 0700), not in /tmp itself nor on TCP.
#[test]
fn the_quick_start_keeps_its_sockets_in_a_private_directory() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/tandem.yaml");
    let config =
        tandem_broker::config::Config::from_yaml(&std::fs::read_to_string(&path).unwrap(), &path)
            .expect("the quick start's config loads");
    assert!(!config.plugins.is_empty());
    for (alias, plugin) in &config.plugins {
        let tandem_broker::plugins::endpoint::Endpoint::Unix(sock) = &plugin.endpoint else {
            panic!("{alias}: the quick start uses unix sockets, not TCP");
        };
        let parent = sock.parent().unwrap();
        assert_ne!(parent, Path::new("/tmp"), "{alias}: not in /tmp itself");
        assert!(
            plugin.command.is_some(),
            "{alias}: the broker runs it, so it makes the directory"
        );
    }
}
