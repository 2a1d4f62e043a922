//! The plugin as the check reaches it: dialled with the broker's own plumbing (the same
//! endpoint template, TLS, bearer token and connect-once channels as a `plugins:` entry),
//! every call under the deadline both as the gRPC deadline and locally, and every call's
//! time kept for the `deadlines` row.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;
use tandem_proto::v1 as pb;
use tonic::codegen::http::uri::PathAndQuery;

use super::args::Settings;
use super::error::CheckError;
use super::unknown::Encoded;
use crate::plugins::plugin::replicas::{Bearer, Target, channel, dial_template, read_token};
use crate::plugins::plugin::{Chan, Plugin};

/// Why a call got no answer from the plugin.
#[derive(Debug)]
pub(super) enum CallError {
    /// Nothing came back within the deadline.
    Timeout(Duration),
    /// A gRPC status: the plugin's own, or one the client made from a transport error.
    Status(tonic::Status),
}

impl CallError {
    /// Whether the plugin answered UNIMPLEMENTED itself.
    pub(super) fn unimplemented(&self) -> bool {
        matches!(self, CallError::Status(s) if s.code() == tonic::Code::Unimplemented && !from_transport(s))
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "no answer within {}", humantime(*d)),
            CallError::Status(s) => f.write_str(&describe_status(s)),
        }
    }
}

/// A status the client made from a transport error carries that error as its source
/// (the rule the broker's call path uses too); a plugin's own status has none.
pub(super) fn from_transport(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

/// `status CODE: message` for a plugin's status; for one the client made from a
/// transport error, that error's deepest cause (what the operator can act on).
pub(super) fn describe_status(status: &tonic::Status) -> String {
    let mut cause = std::error::Error::source(status);
    let mut deepest = None;
    while let Some(c) = cause {
        deepest = Some(c.to_string());
        cause = c.source();
    }
    match deepest {
        Some(cause) => format!("transport error: {cause}"),
        None => format!("status {:?}: {}", status.code(), status.message()),
    }
}

/// A duration as the options take it (`2s`, `150ms`).
pub(super) fn humantime(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

/// One call's time, for the `deadlines` row.
#[derive(Debug, Clone)]
pub(super) struct Timed {
    /// The call, for example `TopicFilter(publish)`.
    pub(super) what: String,
    /// How long it took (the deadline when it got no answer).
    pub(super) took: Duration,
    /// Whether it got no answer within the deadline.
    pub(super) timed_out: bool,
}

/// The plugin being checked.
pub(super) struct Conn {
    /// What every channel is built from (scheme, host, TLS, timeouts).
    template: tonic::transport::Endpoint,
    /// The address reached (the first one of a `dns:///` name).
    target: Target,
    /// The address, for the report.
    pub(super) label: String,
    /// The token every call carries, if `--token-file` was given.
    bearer: Bearer,
    /// The deadline of every call.
    pub(super) timeout: Duration,
    /// What `Describe` sends: the alias, the `config:` and this run's instance id.
    pub(super) describe: pb::DescribeRequest,
    /// Every call made so far.
    calls: Mutex<Vec<Timed>>,
}

impl Conn {
    /// Reads the TLS files and token, and resolves the endpoint (within the deadline).
    /// A name that does not resolve is an `Err` with why.
    pub(super) async fn dial(settings: &Settings) -> Result<Result<Self, String>, CheckError> {
        let alias = &settings.alias;
        let plugin = &settings.plugin;
        let setup = |e: crate::plugins::PluginError| CheckError::Setup(e.to_string());
        let template = dial_template(alias, plugin).map_err(setup)?;
        let token = match &plugin.token_file {
            Some(path) => Some(read_token(alias, path).map_err(setup)?),
            None => None,
        };
        let instance = format!(
            "tandem-plugin-check-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let describe = Plugin::first_describe_request(alias, plugin, &instance).map_err(setup)?;
        let timeout = plugin.timeout;
        let resolved = tokio::time::timeout(
            timeout,
            crate::plugins::plugin::replicas::resolve(&plugin.endpoint),
        )
        .await;
        let (label, target) = match resolved {
            Err(_) => {
                return Ok(Err(format!(
                    "name not resolved within {}",
                    humantime(timeout)
                )));
            }
            Ok(Err(e)) => return Ok(Err(e)),
            Ok(Ok(targets)) => match targets.into_iter().next() {
                Some(first) => first,
                None => return Ok(Err("the name resolves to no address".into())),
            },
        };
        Ok(Ok(Self {
            template,
            target,
            label,
            bearer: Bearer::new(token),
            timeout,
            describe,
            calls: Mutex::default(),
        }))
    }

    /// A new connection to the plugin (made at its first call), as the broker makes one
    /// for each replica it probes: it never reconnects by itself.
    pub(super) fn channel(&self) -> Chan {
        let channel = channel(&self.template, &self.target);
        tonic::service::interceptor::InterceptedService::new(channel, self.bearer.clone())
    }

    /// Keeps a call's time.
    pub(super) fn record(&self, what: &str, took: Duration, timed_out: bool) {
        self.calls.lock().push(Timed {
            what: what.to_owned(),
            took,
            timed_out,
        });
    }

    /// Every call made so far.
    pub(super) fn timings(&self) -> Vec<Timed> {
        self.calls.lock().clone()
    }

    /// A unary call of the `Plugin` service sending `body` as the request, under the
    /// deadline; `what` names it in the report.
    pub(super) async fn unary<R: Message + Default + 'static>(
        &self,
        chan: &Chan,
        rpc: &str,
        what: &str,
        body: Encoded,
    ) -> Result<R, CallError> {
        let path = rpc_path(rpc);
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        let mut grpc = tonic::client::Grpc::new(chan.clone());
        let call = async {
            grpc.ready().await.map_err(|e| {
                tonic::Status::from_error(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            })?;
            let codec = tonic_prost::ProstCodec::<Encoded, R>::default();
            grpc.unary(request, path, codec).await
        };
        self.timed(what, call)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Runs `call` under the deadline and records its time.
    pub(super) async fn timed<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call).await;
        let took = started.elapsed();
        let outcome = match result {
            Err(_) => Err(CallError::Timeout(self.timeout)),
            // The client's own timer for the gRPC deadline, a hair before ours.
            Ok(Err(s))
                if took >= self.timeout
                    && matches!(
                        s.code(),
                        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                    ) =>
            {
                Err(CallError::Timeout(self.timeout))
            }
            Ok(r) => r.map_err(CallError::Status),
        };
        self.record(what, took, matches!(outcome, Err(CallError::Timeout(_))));
        outcome
    }
}

/// `/tandem.plugin.v1.Plugin/<rpc>`.
pub(super) fn rpc_path(rpc: &str) -> PathAndQuery {
    let service = pb::plugin_server::SERVICE_NAME;
    PathAndQuery::try_from(format!("/{service}/{rpc}")).expect("an RPC name is a valid path")
}
