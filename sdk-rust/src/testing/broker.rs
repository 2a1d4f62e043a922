//! [`TestBroker`]: calls one plugin's real gRPC service in-process, through a `tonic` client
//! over an in-memory transport, so requests and answers take the same protobuf encoding, status
//! codes and streaming as with the real broker.

use std::sync::atomic::{AtomicU64, Ordering};

use tandem_proto::v1 as pb;
use tandem_proto::v1::plugin_client::PluginClient;
use tandem_proto::v1::plugin_server::PluginServer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::description::Description;
use super::stream::EventStream;
use crate::auth::{AuthDecision, AuthRequest};
use crate::convert::json_to_struct;
use crate::error::Error;
use crate::events::Event;
use crate::plugin::{Plugin, PluginService};
use crate::topic::{TopicDecision, TopicRequest};

/// The broker version the harness reports in `Describe`.
pub const TEST_BROKER_VERSION: &str = "0.0.0-test";

type Channel = PluginServer<PluginService>;

fn invalid(err: Error) -> Status {
    Status::internal(format!("the plugin broke the contract: {err}"))
}

/// A stand-in broker for tests: calls one plugin's gRPC service in-process.
#[derive(Debug)]
pub struct TestBroker {
    client: PluginClient<Channel>,
    generation: AtomicU64,
    alias: String,
}

impl TestBroker {
    /// A test broker in front of this plugin (not yet described: call [`describe`](Self::describe)
    /// first, as the broker does, when the plugin reads its configuration).
    pub fn new(plugin: Plugin) -> Self {
        TestBroker {
            client: PluginClient::new(PluginServer::new(plugin.into_service())),
            generation: AtomicU64::new(0),
            alias: "test".to_owned(),
        }
    }

    /// Sets the plugin alias sent in `Describe` (default `test`).
    pub fn with_alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = alias.into();
        self
    }

    /// Sends `Describe` with this configuration (the plugin's `config:` section, as JSON; use
    /// `serde_json::json!({})` for none). Call it again to simulate a configuration reload.
    pub async fn describe(&self, config: serde_json::Value) -> Result<Description, Status> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let request = pb::DescribeRequest {
            broker_version: TEST_BROKER_VERSION.to_owned(),
            plugin_alias: self.alias.clone(),
            config: Some(json_to_struct(config)),
            broker_instance_id: "test-broker".to_owned(),
            config_generation: generation,
        };
        let response = self.client.clone().describe(request).await?.into_inner();
        Description::try_from(response).map_err(invalid)
    }

    /// Calls `Authenticate`. A status error is what the broker would see as a plugin error (and
    /// map to the plugin's `on_error` verdict); `UNIMPLEMENTED` when the plugin has no
    /// authenticate handler.
    pub async fn authenticate(&self, request: AuthRequest) -> Result<AuthDecision, Status> {
        let response = self
            .client
            .clone()
            .authenticate(pb::AuthenticateRequest::from(request))
            .await?;
        AuthDecision::try_from(response.into_inner()).map_err(invalid)
    }

    /// Calls `TopicFilter`.
    pub async fn topic_filter(&self, request: TopicRequest) -> Result<TopicDecision, Status> {
        let response = self
            .client
            .clone()
            .topic_filter(pb::TopicFilterRequest::from(request))
            .await?;
        TopicDecision::try_from(response.into_inner()).map_err(invalid)
    }

    /// Opens an `Events` stream, as the broker does once per plugin connection.
    pub async fn open_events(&self) -> Result<EventStream, Status> {
        let (batches, rx) = mpsc::channel(16);
        let acks = self
            .client
            .clone()
            .events(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(EventStream::new(batches, acks))
    }

    /// Sends these events in one batch on a new stream (numbering them from 1 when their
    /// sequence is 0) and returns the ack.
    pub async fn send_events(&self, events: Vec<Event>) -> Result<u64, Status> {
        let mut stream = self.open_events().await?;
        stream.send(events).await
    }
}
