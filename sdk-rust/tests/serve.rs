//! The SDK's server over real sockets: TCP and unix, gRPC health, graceful shutdown, and the
//! socket file's life cycle.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tandem_plugin::proto::v1 as pb;
use tandem_plugin::proto::v1::plugin_client::PluginClient;
use tandem_plugin::{
    AuthDecision, AuthRequest, Authenticator, Context, Error, HandlerError, ListenAddr, Listener,
    Plugin,
};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct AllowAll;

impl Authenticator for AllowAll {
    async fn authenticate(
        &self,
        ctx: &Context,
        _req: AuthRequest,
    ) -> Result<AuthDecision, HandlerError> {
        Ok(AuthDecision::allow().with_attribute("alias", ctx.plugin_alias()))
    }
}

fn plugin() -> Plugin {
    Plugin::new("allow-all", "1.0").authenticate(AllowAll)
}

/// Starts serving; returns the address, the shutdown trigger and the server task.
async fn start(
    addr: ListenAddr,
) -> (
    ListenAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let listener = Listener::bind(&addr).await.expect("binds");
    let local = listener.local_addr().expect("has an address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(plugin().serve_on(listener, async {
        let _ = stopped.await;
    }));
    (local, stop, server)
}

async fn exercise(channel: Channel) {
    let mut client = PluginClient::new(channel.clone());
    let description = client
        .describe(pb::DescribeRequest {
            plugin_alias: "auth".into(),
            ..Default::default()
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(description.name, "allow-all");
    assert_eq!(
        description.roles().collect::<Vec<_>>(),
        [pb::Role::Authenticate]
    );

    let decision = client
        .authenticate(pb::AuthenticateRequest {
            client_id: "c1".into(),
            ..Default::default()
        })
        .await
        .expect("authenticate")
        .into_inner();
    assert_eq!(decision.verdict(), pb::Verdict::Allow);
    assert_eq!(decision.attributes["alias"], "auth");

    let status = client
        .topic_filter(pb::TopicFilterRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    let mut health = HealthClient::new(channel);
    for service in ["", "tandem.plugin.v1.Plugin"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
}

#[tokio::test]
async fn serves_over_tcp_and_stops_on_signal() {
    let (local, stop, server) = start("tcp://127.0.0.1:0".parse().unwrap()).await;
    let ListenAddr::Tcp(socket) = local else {
        panic!("tcp expected")
    };
    assert_ne!(socket.port(), 0, "the real port is reported");

    let channel = Endpoint::from_shared(format!("http://{socket}"))
        .unwrap()
        .connect()
        .await
        .expect("connects");
    exercise(channel).await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within the deadline")
        .expect("task")
        .expect("clean exit");
}

#[tokio::test]
async fn serves_over_a_unix_socket_replacing_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/plugin.sock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A previous run that was killed leaves its socket file behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let (local, stop, server) = start(ListenAddr::Unix(path.clone())).await;
    assert_eq!(local, ListenAddr::Unix(path.clone()));

    let connect_to = path.clone();
    let channel = Endpoint::from_static("http://plugin.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = connect_to.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .expect("connects");
    exercise(channel).await;

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops within the deadline")
        .expect("task")
        .expect("clean exit");
    assert!(!path.exists(), "the socket file is removed on shutdown");
}

#[tokio::test]
async fn refuses_to_delete_a_regular_file_in_the_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "important").unwrap();
    let err = Listener::bind(&ListenAddr::Unix(path.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::SocketPath { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "important");
}

struct Ignore;

impl tandem_plugin::EventHandler for Ignore {
    async fn on_event(
        &self,
        _ctx: &Context,
        _event: tandem_plugin::Event,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn an_open_event_stream_does_not_hold_up_shutdown() {
    let listener = Listener::bind(&"tcp://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let ListenAddr::Tcp(socket) = listener.local_addr().unwrap() else {
        panic!("tcp expected")
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let plugin = Plugin::new("events", "1").events(
        tandem_plugin::EventSubscription::new([tandem_plugin::EventKind::BrokerPreStart]),
        Ignore,
    );
    let server = tokio::spawn(plugin.serve_on(listener, async {
        let _ = stopped.await;
    }));

    let mut client = PluginClient::connect(format!("http://{socket}"))
        .await
        .unwrap();
    let (batches, rx) = tokio::sync::mpsc::channel(1);
    let mut acks = client
        .events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let event = pb::Event {
        sequence: 1,
        kind: Some(pb::event::Kind::BrokerPreStart(
            pb::BrokerPreStart::default(),
        )),
        ..Default::default()
    };
    batches
        .send(pb::EventBatch {
            events: vec![event],
            dropped_events: 0,
        })
        .await
        .unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().acked_sequence, 1);

    // The broker keeps its side open (`batches` is alive); the plugin must still stop promptly.
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    assert!(
        matches!(acks.message().await, Ok(None)),
        "the stream ends cleanly"
    );
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < tandem_plugin::DRAIN_TIMEOUT / 2,
        "stopped by closing the stream, not by the drain deadline: {:?}",
        started.elapsed()
    );
    drop(batches);
}
