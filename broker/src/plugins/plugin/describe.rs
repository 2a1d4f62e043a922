//! What a plugin is told and what it says: gRPC health, then `Describe` carrying the
//! plugin's `config:` (first at each probe, again when a reload pushes a new one), and
//! the answer kept as [`Described`].

use std::sync::Arc;
use std::time::Duration;

use tandem_proto::v1 as pb;
use tonic::transport::Channel;
use tracing::info;

use super::call::failure_kind;
use super::replicas::{Chan, Client};
use super::{Described, Plugin};
use crate::plugins::config::PluginConfig;
use crate::plugins::error::{PluginError, status_text};
use crate::plugins::rpc::ErrorKind;

type Health = tonic_health::pb::health_client::HealthClient<Chan>;

/// Converts a YAML/JSON value to a protobuf `Struct` value.
fn to_pb_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_pb_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_pb_struct(o: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_pb_value(v))).collect(),
    }
}

/// The `config:` section as the protobuf `Struct` that `Describe` carries.
fn pushed_struct(
    alias: &str,
    config: Option<&serde_json::Value>,
) -> Result<Option<prost_types::Struct>, PluginError> {
    match config {
        Some(serde_json::Value::Object(o)) => Ok(Some(to_pb_struct(o))),
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(_) => Err(PluginError::Config {
            alias: alias.to_owned(),
            message: "config: must be a map".into(),
        }),
    }
}

/// One gRPC health check of the whole server (service ""), bounded by `timeout` both as
/// the gRPC deadline and locally.
pub(super) async fn health_check(
    channel: Chan,
    timeout: Duration,
) -> Result<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>, tokio::time::error::Elapsed>
{
    let mut req = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    req.set_timeout(timeout);
    let checked = tokio::time::timeout(timeout, Health::new(channel).check(req)).await?;
    Ok(checked.map(tonic::Response::into_inner))
}

impl Plugin {
    /// The first `Describe` request: the broker, the alias, the `config:` to push and
    /// generation 1.
    pub(crate) fn first_describe_request(
        alias: &str,
        config: &PluginConfig,
        broker_instance_id: &str,
    ) -> Result<pb::DescribeRequest, PluginError> {
        Ok(pb::DescribeRequest {
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            plugin_alias: alias.to_owned(),
            config: pushed_struct(alias, config.config.as_ref())?,
            broker_instance_id: broker_instance_id.to_owned(),
            config_generation: 1,
        })
    }

    /// gRPC health (a plugin without the health service passes), then `Describe`.
    pub(super) async fn describe_on(&self, channel: Channel) -> Result<Described, String> {
        let timeout = self.config.timeout.max(Duration::from_secs(1));
        let silent = || {
            format!("no answer to a gRPC health check within {timeout:?} (is it a gRPC server?)")
        };
        match health_check(self.authed(channel.clone()), timeout).await {
            Err(_) => return Err(silent()),
            // tonic's own deadline (the request's grpc-timeout) fired first.
            Ok(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                ) =>
            {
                return Err(silent());
            }
            Ok(Ok(resp)) => {
                let status = resp.status;
                if status != tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return Err(format!("health status {status} is not SERVING"));
                }
            }
            Ok(Err(s)) if s.code() == tonic::Code::Unimplemented => {}
            Ok(Err(s)) => {
                let mut why = format!("health check failed: {}", status_text(&s));
                if why.contains("h2 protocol error") {
                    why.push_str(" (it does not speak gRPC: HTTP/2)");
                }
                return Err(why);
            }
        }
        let mut client = Client::new(self.authed(channel));
        let request = self.describe_request.read().clone();
        let mut req = tonic::Request::new(request);
        req.set_timeout(timeout);
        let resp = match tokio::time::timeout(timeout, client.describe(req)).await {
            Err(_) => return Err("Describe timed out".into()),
            Ok(Err(s)) => {
                let message = format!("Describe failed: {}", status_text(&s));
                // The plugin is up and says no to its configuration: retrying the same
                // request cannot help, so start-up fails at once with its reason.
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ) {
                    *self.refused.lock() = Some(message.clone());
                }
                return Err(message);
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        Ok(Described::from(resp))
    }

    /// Pushes a new `config:` with `Describe` (a reload): the first up replica decides
    /// whether the plugin accepts it (a refusal is an error and nothing changes); the
    /// other replicas get it too, and one that fails is marked down, so its probe
    /// describes it again with the new configuration before it serves.
    pub async fn push_config(
        self: &Arc<Self>,
        config: Option<serde_json::Value>,
    ) -> Result<(), PluginError> {
        let fail = |message: String| PluginError::Config {
            alias: self.alias.clone(),
            message,
        };
        let body = pushed_struct(&self.alias, config.as_ref())?;
        let (previous, request) = {
            let mut current = self.describe_request.write();
            let previous = current.clone();
            current.config = body;
            current.config_generation += 1;
            (previous, current.clone())
        };
        let up = self.up_replicas();
        if up.is_empty() {
            // Nothing to push to now: every probe describes with the new request.
            *self.pushed.write() = config;
            return Ok(());
        }
        let timeout = self.config.timeout.max(Duration::from_secs(1));
        for (i, replica) in up.iter().enumerate() {
            let mut client = Client::new(self.authed(replica.channel.read().clone()));
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(timeout);
            let answer = tokio::time::timeout(timeout, client.describe(req)).await;
            match answer {
                Ok(Ok(resp)) => {
                    let resp = resp.into_inner();
                    if let Some(d) = self.described.write().as_mut() {
                        d.event_kinds = resp
                            .event_kinds()
                            .filter(|k| *k != pb::EventKind::Unspecified)
                            .collect();
                        d.roles = resp.roles().collect();
                        d.message_topic_filters = resp.message_topic_filters;
                        d.want_message_payloads = resp.want_message_payloads;
                        d.want_raw_packets = resp.want_raw_packets;
                    }
                }
                // A refusal is the plugin's own answer; a status the client built from
                // a transport error (a replica restarting under a reload) is no answer.
                Ok(Err(status)) if i == 0 && failure_kind(&status, false) == ErrorKind::Status => {
                    *self.describe_request.write() = previous;
                    return Err(fail(format!(
                        "refused the new config: {}",
                        status_text(&status)
                    )));
                }
                // No answer (or a later replica refusing): probed again, and the probe
                // describes it with the new request before it serves.
                _ => self.mark_down(replica, "no answer to the new configuration"),
            }
        }
        info!(plugin = %self.alias, generation = request.config_generation, "configuration pushed");
        *self.pushed.write() = config;
        Ok(())
    }
}
