//! `tandem plugin check ENDPOINT`, the conformance kit, run as a plugin author runs it: the
//! real `tandem` binary against real plugin processes. Every example plugin passes (the
//! Python one included, events and all); plugins broken on purpose here (raw tonic servers
//! of the contract) fail with a line naming what is wrong; and an endpoint where nothing
//! listens, or where something listens that never speaks HTTP/2, fails within a bound
//! instead of hanging.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_proto::v1 as pb;
use tandem_tests::jwt::{hs256, now};
use tandem_tests::passwd::argon2id;
use tandem_tests::pki::Pki;
use tandem_tests::tooling::{python_acl, python_acl_dir};
use tandem_tests::{
    DEADLINE, PluginProcess, binary, event_logger_bin, free_port, policy_bin, tandem_bin,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::{Request, Response, Status};

/// What one run printed and how it ended.
struct Checked {
    output: Output,
    took: Duration,
}

impl Checked {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// The row of `check`: its word (`pass`, `FAIL`, `skip`) and its text.
    fn row(&self, check: &str) -> (String, String) {
        let stdout = self.stdout();
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(check))
            .unwrap_or_else(|| panic!("no `{check}` row in:\n{stdout}{}", self.stderr()));
        let rest = line[check.len()..].trim_start();
        let (word, text) = rest.split_once("  ").unwrap_or((rest, ""));
        (word.to_owned(), text.trim().to_owned())
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Exit 0 and no failed row.
    fn assert_passes(&self) {
        let stdout = self.stdout();
        assert!(
            self.output.status.success() && !stdout.contains(" FAIL "),
            "expected every check to pass ({}):\n{stdout}{}",
            self.output.status,
            self.stderr()
        );
        assert!(
            stdout.contains(" failed, ") && stdout.trim_end().ends_with(": ok"),
            "{stdout}"
        );
    }

    /// Exit 1 and the row of `check` failed with a text containing `why`.
    fn assert_fails(&self, check: &str, why: &str) {
        let (word, text) = self.row(check);
        assert_eq!(
            (word.as_str(), self.output.status.code()),
            ("FAIL", Some(1)),
            "expected `{check}` to fail:\n{}{}",
            self.stdout(),
            self.stderr()
        );
        assert!(text.contains(why), "`{check}` says `{text}`, not `{why}`");
    }

    fn assert_row(&self, check: &str, word: &str) {
        let (got, text) = self.row(check);
        assert_eq!(got, word, "`{check}`: {text}\n{}", self.stdout());
    }
}

/// Runs `tandem plugin check ENDPOINT ARGS...`; a run that outlives [`DEADLINE`] is a hang
/// and fails the test.
async fn plugin_check(endpoint: &str, args: &[&str]) -> Checked {
    plugin_check_with(endpoint, args, &[]).await
}

/// [`plugin_check`] with environment variables `env` set.
async fn plugin_check_with(endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Checked {
    let started = Instant::now();
    let run = tokio::process::Command::new(tandem_bin())
        .args(["plugin", "check", endpoint])
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(DEADLINE, run)
        .await
        .unwrap_or_else(|_| panic!("tandem plugin check {endpoint} ran past {DEADLINE:?}"))
        .expect("run tandem plugin check");
    Checked {
        output,
        took: started.elapsed(),
    }
}

/// Writes `text` to `dir/name`, returning the path as a string.
fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn socket(dir: &Path, name: &str) -> String {
    format!("unix://{}/{name}.sock", dir.display())
}

// ---- the example plugins pass ----

#[tokio::test]
async fn the_policy_example_passes_and_its_test_user_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = PluginProcess::start(&policy_bin(), &[], &socket(dir.path(), "policy"));
    let config = write(
        dir.path(),
        "policy.yaml",
        "users: { alice: { password: secret } }\nauth_default: deny\n",
    );
    let config = ["--plugin-config", config.as_str()];

    let checked = plugin_check(
        &plugin.endpoint,
        &[
            &config[..],
            &["--username", "alice", "--password", "secret"],
        ]
        .concat(),
    )
    .await;
    checked.assert_passes();
    let (_, text) = checked.row("credentials");
    assert_eq!(
        text,
        "alice is allowed with the --password and denied with a wrong one"
    );
    checked.assert_row("roles", "pass");
    checked.assert_row("events-acks", "skip");

    // The password may come from the environment instead of the command line.
    let from_env = [&config[..], &["--username", "alice"]].concat();
    let checked = plugin_check_with(
        &plugin.endpoint,
        &from_env,
        &[("TANDEM_CHECK_PASSWORD", "secret")],
    )
    .await;
    checked.assert_passes();
    checked.assert_row("credentials", "pass");

    // Without credentials that check is skipped, not passed.
    let checked = plugin_check(&plugin.endpoint, &config).await;
    checked.assert_passes();
    checked.assert_row("credentials", "skip");

    // Credentials the plugin does not accept are the author's mistake, and said so.
    let wrong = [&config[..], &["--username", "alice", "--password", "oops"]].concat();
    plugin_check(&plugin.endpoint, &wrong).await.assert_fails(
        "credentials",
        "Authenticate(alice, the --password) answered DENY",
    );
}

#[tokio::test]
async fn the_event_logger_example_passes_and_receives_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let plugin = PluginProcess::start(
        &event_logger_bin(),
        &["--output", log.to_str().unwrap()],
        &socket(dir.path(), "logger"),
    );
    let checked = plugin_check(&plugin.endpoint, &[]).await;
    checked.assert_passes();
    for row in ["events-acks", "events-unknown-kind", "events-reconnect"] {
        checked.assert_row(row, "pass");
    }
    checked.assert_row("verdicts", "skip");
    // The events reached the plugin: the last one the check sends is logged.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"seq\":9"), "{logged}");
}

#[tokio::test]
async fn the_auth_jwt_example_passes_with_a_token_as_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"a shared secret for plugin check";
    let secret_file = dir.path().join("jwt.key");
    std::fs::write(&secret_file, secret).unwrap();
    let config = write(
        dir.path(),
        "jwt.yaml",
        &format!(
            "algorithms: [HS256]\nsecret_file: {}\n",
            secret_file.display()
        ),
    );
    let plugin = PluginProcess::start(
        &binary("tandem-auth-jwt"),
        &["--roles", "auth,topic"],
        &socket(dir.path(), "jwt"),
    );
    let token = hs256(secret, &json!({"sub": "device-1", "exp": now() + 600}));
    let args = [
        "--plugin-config",
        &config,
        "--username",
        "device-1",
        "--password",
        &token,
    ];
    let checked = plugin_check(&plugin.endpoint, &args).await;
    checked.assert_passes();
    checked.assert_row("credentials", "pass");
}

#[tokio::test]
async fn the_auth_file_example_passes_with_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let line = format!(
        "alice:{}\n",
        argon2id("alice pw", b"saltsaltsaltsalt", 1024, 1)
    );
    let passwd = write(dir.path(), "passwd", &line);
    let config = write(
        dir.path(),
        "file.yaml",
        &format!("password_file: {passwd}\n"),
    );
    let plugin = PluginProcess::start(
        &binary("tandem-auth-file"),
        &[],
        &socket(dir.path(), "file"),
    );
    let args = [
        "--plugin-config",
        &config,
        "--username",
        "alice",
        "--password",
        "alice pw",
    ];
    let checked = plugin_check(&plugin.endpoint, &args).await;
    checked.assert_passes();
    checked.assert_row("credentials", "pass");
}

#[tokio::test]
async fn the_topic_acl_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "acl.yaml",
        "publish-acl: { alice: [\"tandem/#\"] }\nsubscribe-acl: { alice: [\"tandem/#\"] }\n",
    );
    let plugin = PluginProcess::start(&binary("tandem-topic-acl"), &[], &socket(dir.path(), "acl"));
    let checked = plugin_check(&plugin.endpoint, &["--plugin-config", &config]).await;
    checked.assert_passes();
    checked.assert_row("verdicts", "pass");
}

/// The certificate plugin decides on the TLS peer certificate the broker verified, which a
/// check cannot present over gRPC: its credentials row is skipped, and everything else,
/// its refusals of clients without a certificate included, is checked.
#[tokio::test]
async fn the_auth_x509_example_passes_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let rules = write(
        dir.path(),
        "x509.yaml",
        "clients:\n  - match: { common_name: \"device-*\" }\nacl:\n  - identity: \"device-*\"\n    publish: [\"devices/{identity}/#\"]\n",
    );
    let plugin = PluginProcess::start(
        &binary("tandem-auth-x509"),
        &["--rules", &rules],
        &socket(dir.path(), "x509"),
    );
    let checked = plugin_check(&plugin.endpoint, &[]).await;
    checked.assert_passes();
    checked.assert_row("credentials", "skip");
    let (_, verdicts) = checked.row("verdicts");
    assert!(
        verdicts.contains("Authenticate(no credentials) DENY"),
        "{verdicts}"
    );
}

#[tokio::test]
async fn the_python_example_passes_with_events() {
    let env = python_acl();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let script = python_acl_dir().join("plugin.py");
    let stubs = env.stubs.display().to_string();
    let plugin = PluginProcess::start(
        &env.python,
        &[
            script.to_str().unwrap(),
            "--stubs",
            &stubs,
            "--events-log",
            log.to_str().unwrap(),
        ],
        &socket(dir.path(), "python"),
    );
    let config = write(
        dir.path(),
        "acl.yaml",
        "default: deny\npublish: { allow: [\"tandem/#\"] }\n",
    );
    let checked = plugin_check(&plugin.endpoint, &["--plugin-config", &config]).await;
    checked.assert_passes();
    for row in [
        "verdicts",
        "unknown-fields",
        "events-acks",
        "events-unknown-kind",
        "events-reconnect",
    ] {
        checked.assert_row(row, "pass");
    }
}

/// An `https://` plugin with mutual TLS is dialled with the broker's TLS settings.
#[tokio::test]
async fn a_plugin_behind_mutual_tls_is_checked_over_tls() {
    let pki = Pki::new("plugin check CA");
    let (_plugin, port) = pki.start_mtls_plugin(&policy_bin(), &[]);
    let p = |file: &str| pki.path(file).display().to_string();
    let (ca, client_cert, client_key) = (p("ca.pem"), p("broker.pem"), p("broker.key"));
    let endpoint = format!("https://127.0.0.1:{port}");
    let tls = ["--tls-ca", &ca, "--tls-domain", "localhost"];
    let mutual = [
        &tls[..],
        &["--tls-cert", &client_cert, "--tls-key", &client_key],
    ]
    .concat();
    plugin_check(&endpoint, &mutual).await.assert_passes();
    // Without the client certificate the plugin's TLS refuses the connection.
    plugin_check(&endpoint, &tls)
        .await
        .assert_fails("connect", "cannot reach it: transport error");
}

/// A plugin that requires the broker's bearer token is checked with `--token-file`.
#[tokio::test]
async fn a_plugin_requiring_a_token_is_checked_with_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "plugin-check-token\n");
    let plugin = PluginProcess::start(
        &policy_bin(),
        &["--token-file", &token],
        &socket(dir.path(), "policy"),
    );
    plugin_check(&plugin.endpoint, &["--token-file", &token])
        .await
        .assert_passes();
    // Without it the plugin refuses the calls (health stays open), and the line says what to do.
    plugin_check(&plugin.endpoint, &[]).await.assert_fails(
        "describe",
        "give the broker's bearer token with --token-file FILE",
    );
}

// ---- broken plugins fail, naming the check ----

/// How a plugin of this file breaks the contract.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// TopicFilter answers VERDICT_UNSPECIFIED.
    UnspecifiedVerdict,
    /// Asks for events and never acks one.
    NeverAcks,
    /// Declares ROLE_AUTHENTICATE and answers Authenticate UNIMPLEMENTED.
    UndeclaredRole,
    /// Serves no gRPC health (and the contract otherwise).
    NoHealth,
}

struct Broken(Fault);

#[tonic::async_trait]
impl pb::plugin_server::Plugin for Broken {
    async fn describe(
        &self,
        _: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let (roles, kinds) = match self.0 {
            Fault::UnspecifiedVerdict | Fault::NoHealth => (vec![pb::Role::TopicFilter], vec![]),
            Fault::NeverAcks => (vec![], vec![pb::EventKind::ClientConnected]),
            Fault::UndeclaredRole => (vec![pb::Role::Authenticate, pb::Role::TopicFilter], vec![]),
        };
        Ok(Response::new(pb::DescribeResponse {
            name: "broken".into(),
            roles: roles.into_iter().map(|r| r as i32).collect(),
            event_kinds: kinds.into_iter().map(|k| k as i32).collect(),
            ..Default::default()
        }))
    }

    async fn authenticate(
        &self,
        _: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        Err(Status::unimplemented("no Authenticate here"))
    }

    async fn topic_filter(
        &self,
        _: Request<pb::TopicFilterRequest>,
    ) -> Result<Response<pb::TopicFilterResponse>, Status> {
        let verdict = match self.0 {
            Fault::UnspecifiedVerdict => pb::Verdict::Unspecified,
            _ => pb::Verdict::Allow,
        };
        Ok(Response::new(pb::TopicFilterResponse {
            verdict: verdict as i32,
            ..Default::default()
        }))
    }

    type EventsStream = ReceiverStream<Result<pb::EventAck, Status>>;

    async fn events(
        &self,
        request: Request<tonic::Streaming<pb::EventBatch>>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let mut batches = request.into_inner();
        let (acks, stream) = mpsc::channel(1);
        // Reads every batch and holds the ack sender, sending nothing, while the stream lasts.
        tokio::spawn(async move {
            let _acks = acks;
            while let Ok(Some(_)) = batches.message().await {}
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// Serves a [`Broken`] plugin (with gRPC health unless that is its fault, so only its fault
/// fails) on a unix socket in `dir`, until the test's runtime ends; returns its endpoint.
fn serve_broken(fault: Fault, dir: &Path) -> String {
    let path = dir.join("broken.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (_, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .add_optional_service((fault != Fault::NoHealth).then_some(health))
        .add_service(pb::plugin_server::PluginServer::new(Broken(fault)))
        .serve_with_incoming(UnixListenerStream::new(listener));
    tokio::spawn(server);
    format!("unix://{}", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_answering_verdict_unspecified_fails_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = serve_broken(Fault::UnspecifiedVerdict, dir.path());
    let checked = plugin_check(&endpoint, &[]).await;
    checked.assert_fails(
        "verdicts",
        "TopicFilter(publish tandem/check/topic) answered VERDICT_UNSPECIFIED",
    );
    checked.assert_row("roles", "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_acks_fails_events_acks() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = serve_broken(Fault::NeverAcks, dir.path());
    let checked = plugin_check(&endpoint, &["--timeout", "1s"]).await;
    checked.assert_fails(
        "events-acks",
        "no ack of sequence 3 within 1s (last ack: none)",
    );
    checked.assert_row("events-reconnect", "skip");
    checked.assert_fails("deadlines", "Events ack of 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_declaring_a_role_it_does_not_serve_fails_roles() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = serve_broken(Fault::UndeclaredRole, dir.path());
    let checked = plugin_check(&endpoint, &[]).await;
    checked.assert_fails(
        "roles",
        "declares ROLE_AUTHENTICATE but Authenticate answers UNIMPLEMENTED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_without_grpc_health_fails_health() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = serve_broken(Fault::NoHealth, dir.path());
    let checked = plugin_check(&endpoint, &[]).await;
    checked.assert_fails("health", "grpc.health.v1 is not served (UNIMPLEMENTED)");
    // It is reached all the same, and the rest is checked.
    checked.assert_row("connect", "pass");
    checked.assert_row("verdicts", "pass");
}

// ---- a stranger's endpoint never hangs the check ----

#[tokio::test]
async fn nothing_listening_fails_at_once_with_the_reason() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let checked = plugin_check(&endpoint, &["--timeout", "1s"]).await;
    checked.assert_fails(
        "connect",
        "cannot reach it: transport error: Connection refused",
    );
    checked.assert_row("health", "skip");
    assert!(
        checked.took < Duration::from_secs(5),
        "took {:?}",
        checked.took
    );

    let dir = tempfile::tempdir().unwrap();
    let checked = plugin_check(&socket(dir.path(), "absent"), &[]).await;
    checked.assert_fails("connect", "No such file or directory");
}

#[tokio::test]
async fn a_listener_that_never_speaks_http2_fails_within_the_timeout() {
    // The kernel completes TCP handshakes into the backlog: connections succeed, and
    // nothing is ever read or written.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let checked = plugin_check(&endpoint, &["--timeout", "1s"]).await;
    checked.assert_fails("connect", "no gRPC answer within 1s");
    assert!(
        checked.took >= Duration::from_secs(1) && checked.took < Duration::from_secs(5),
        "took {:?}",
        checked.took
    );
    drop(silent);
}
