//! The Rust SDK for Tandem plugins: write what the plugin decides, and serve it in one call.
//!
//! A Tandem plugin is a gRPC server that the broker calls to authenticate clients, to check topic
//! actions (publish, subscribe, receive) and to stream broker events to (the contract is
//! `tandem.plugin.v1.Plugin`, in the `tandem-proto` crate). With this crate a plugin author
//! implements only the hooks the plugin needs ([`Authenticator`], [`TopicFilter`],
//! [`EventHandler`]), registers them on a [`Plugin`], and calls [`Plugin::serve`]. The SDK does
//! the rest: the `Describe` handshake (the roles and event kinds declared are exactly the handlers
//! registered), typed access to the configuration the broker pushes ([`Context::config`]),
//! event acks, `UNIMPLEMENTED` for what was not registered, gRPC health, listening on TCP (with
//! optional TLS or mTLS) or a unix socket, graceful shutdown on SIGTERM, and the broker's trace
//! context on every call.
//!
//! # Layout
//! - [`Plugin`] (`plugin.rs`): the builder that registers handlers, and [`PluginService`], the gRPC
//!   service built from it.
//! - [`Authenticator`] and its [`AuthRequest`]/[`AuthDecision`] (`auth.rs`); [`TopicFilter`] and
//!   its [`TopicRequest`]/[`TopicDecision`] (`topic.rs`); [`EventHandler`], [`EventSubscription`],
//!   [`Event`] and [`EventData`] (`events/`); shared domain types such as [`Verdict`],
//!   [`Action`], [`Client`] and [`MessageProperties`] (`types.rs`).
//! - [`filter`]: MQTT topic matching and filter coverage, for topic-check plugins.
//! - [`Context`] (`context.rs`): the pushed configuration and the call's trace.
//! - `convert/`: every conversion between these types and the protobuf ones, in one place.
//! - `args.rs`: everything read from the command line and environment ([`LISTEN_ENV`] and the
//!   other variables, [`Role::from_args`]).
//! - [`ListenAddr`], [`Listener`], [`Plugin::serve`] (`serve.rs`): serving; `socket.rs`: the unix
//!   socket file; [`shutdown_signal`] and [`DRAIN_TIMEOUT`] (`shutdown.rs`): how serving ends;
//!   `logging.rs`: the default log setup (stderr).
//! - [`TlsConfig`] (`tls.rs`): TLS and mTLS for TCP listeners; [`BearerToken`] (`token.rs`): the
//!   broker's token.
//! - `telemetry` (feature `otel`): the handler spans continue the broker's OpenTelemetry trace,
//!   and spans are exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`testing`]: a stand-in broker that drives a plugin in-process, for unit tests.
//! - [`Error`], [`HandlerError`] (`error.rs`).
//!
//! Files depend one way: `serve.rs` on `tls.rs` and `token.rs`, which read their settings from
//! `args.rs`, which depends on none of them; and no file imports what `lib.rs` re-exports (each
//! names the file that defines it), so `lib.rs` is only ever the top of the graph.
//!
//! # A complete plugin
//! An ACL plugin configured from the broker's YAML (`config: { admins: [alice] }`): admins may do
//! anything, others may not publish under `admin/`, and every connection is logged. Its only
//! dependency is this crate (re-exported `serde` and `tokio` included).
//!
//! ```no_run
//! use std::time::Duration;
//! use tandem_plugin::serde::Deserialize;
//! use tandem_plugin::{
//!     Action, Context, Event, EventData, EventHandler, EventKind, EventSubscription, HandlerError,
//!     Plugin, TopicDecision, TopicFilter, TopicRequest,
//! };
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "tandem_plugin::serde")]
//! struct Config {
//!     admins: Vec<String>,
//! }
//!
//! struct Acl;
//!
//! impl TopicFilter for Acl {
//!     async fn topic_filter(&self, ctx: &Context, req: TopicRequest) -> Result<TopicDecision, HandlerError> {
//!         let config = ctx.config::<Config>()?; // deserialized once per Describe, then shared
//!         let is_admin = req.client.username.as_ref().is_some_and(|u| config.admins.contains(u));
//!         let decision = if is_admin {
//!             TopicDecision::allow()
//!         } else if req.action == Action::Publish && req.topic.starts_with("admin/") {
//!             TopicDecision::deny("admin/ is for admins")
//!         } else {
//!             TopicDecision::abstain() // let the other plugins of the chain decide
//!         };
//!         Ok(decision.cache_for(Duration::from_secs(30)))
//!     }
//! }
//!
//! struct Log;
//!
//! impl EventHandler for Log {
//!     async fn on_event(&self, _ctx: &Context, event: Event) -> Result<(), HandlerError> {
//!         if let (EventData::ClientConnected(c), Some(client)) = (&event.data, &event.client) {
//!             println!("{} connected from {:?}", client.client_id, c.remote_addr);
//!         }
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> Result<(), tandem_plugin::Error> {
//!     Plugin::new("acl", env!("CARGO_PKG_VERSION"))
//!         .config::<Config>() // a config that does not fit fails the broker's start-up, loudly
//!         .topic_filter(Acl)
//!         .events(EventSubscription::new([EventKind::ClientConnected]), Log)
//!         .run() // --listen tcp://127.0.0.1:50051 | unix:///run/tandem/acl.sock, or TANDEM_PLUGIN_LISTEN
//! }
//! ```
//!
//! Test it without sockets through [`testing::TestBroker`], which calls the same service the
//! broker calls:
//!
//! ```
//! # use tandem_plugin::{Context, HandlerError, Plugin, TopicDecision, TopicFilter, TopicRequest};
//! # struct Acl;
//! # impl TopicFilter for Acl {
//! #     async fn topic_filter(&self, _: &Context, req: TopicRequest) -> Result<TopicDecision, HandlerError> {
//! #         Ok(if req.topic.starts_with("admin/") { TopicDecision::deny("no") } else { TopicDecision::abstain() })
//! #     }
//! # }
//! use tandem_plugin::testing::TestBroker;
//! use tandem_plugin::{Action, Client, Role, Verdict};
//!
//! # tandem_plugin::tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let broker = TestBroker::new(Plugin::new("acl", "1.0").topic_filter(Acl));
//! let description = broker.describe(tandem_plugin::serde_json::json!({})).await.unwrap();
//! assert_eq!(description.roles, [Role::TopicFilter]);
//!
//! let request = TopicRequest::new(Action::Publish, "admin/reboot", Client::new("device-1"));
//! assert_eq!(broker.topic_filter(request).await.unwrap().verdict, Verdict::Deny);
//!
//! // Not registered, so not declared, and answered UNIMPLEMENTED (the broker counts an error).
//! let status = broker.authenticate(tandem_plugin::AuthRequest::new("device-1")).await.unwrap_err();
//! assert_eq!(status.code(), tandem_plugin::tonic::Code::Unimplemented);
//! # });
//! ```
//!
//! # Serving
//! [`Plugin::run`] (or [`Plugin::serve`] inside a runtime) takes its settings from flags, else
//! from environment variables; other arguments are left for the plugin:
//!
//! | flag | variable | |
//! |---|---|---|
//! | `--listen ADDR` | [`TANDEM_PLUGIN_LISTEN`](LISTEN_ENV) | `tcp://IP:PORT` (default `tcp://127.0.0.1:50051`) or `unix:///path.sock` |
//! | `--tls-cert FILE` | [`TANDEM_PLUGIN_TLS_CERT`](TLS_CERT_ENV) | PEM server certificate chain: serve TLS |
//! | `--tls-key FILE` | [`TANDEM_PLUGIN_TLS_KEY`](TLS_KEY_ENV) | PEM private key of that certificate |
//! | `--tls-client-ca FILE` | [`TANDEM_PLUGIN_TLS_CLIENT_CA`](TLS_CLIENT_CA_ENV) | PEM CA: require client certificates it signed (mTLS) |
//!
//! | `--token-file FILE` | [`TANDEM_PLUGIN_TOKEN_FILE`](TOKEN_FILE_ENV) | the broker's bearer token: every plugin RPC without it answers `UNAUTHENTICATED` (health stays open to probes) |
//! | `--insecure` | | serve a non-loopback TCP address with neither token nor mTLS |
//!
//! A plugin is only as safe as who can call it: whoever reaches it can push it a configuration
//! with `Describe`. So the SDK refuses to listen on a TCP address that is not loopback unless the
//! caller must prove itself, with a bearer token ([`BearerToken`], the broker's
//! `plugins.<alias>.token_file`) or mTLS, or `--insecure` says to serve anyway. Unix sockets are
//! created mode 0600 (put them in a directory only the broker's user can write).
//!
//! With TLS the broker reaches the plugin at `https://host:port` (its `tls:` names the CA, the
//! client certificate for mTLS, and the name the certificate is checked against). TLS is for TCP
//! only. A certificate without its key, a client CA without both, an unusable PEM file, or TLS
//! with a unix socket stops the plugin at start with an [`Error`] that says which setting to fix.
//!
//! [`Listener::bind`] then [`Plugin::serve_on`] do the same with an address, TLS ([`TlsConfig`],
//! attached by [`Listener::with_tls`]) and a shutdown signal of your choice, for tests and
//! embedders:
//!
//! ```no_run
//! # async fn example() -> Result<(), tandem_plugin::Error> {
//! use tandem_plugin::{Listener, Plugin, TlsConfig, shutdown_signal};
//!
//! let tls = TlsConfig::from_files("/etc/acl/tls.crt", "/etc/acl/tls.key")?
//!     .with_client_ca_file("/etc/acl/broker-ca.crt")?; // mTLS: only the broker gets in
//! let listener = Listener::bind(&"tcp://0.0.0.0:50051".parse()?).await?.with_tls(tls)?;
//! // or, with a token the broker sends: `.with_token(BearerToken::from_file("/etc/acl/token")?)`
//! Plugin::new("acl", "1.0").serve_on(listener, shutdown_signal()).await
//! # }
//! ```

mod args;
mod auth;
mod context;
mod convert;
mod error;
mod events;
pub mod filter;
mod logging;
mod plugin;
mod serve;
mod shutdown;
mod socket;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod testing;
mod tls;
mod token;
mod topic;
mod types;

pub use args::{
    DEFAULT_LISTEN, LISTEN_ENV, TLS_CERT_ENV, TLS_CLIENT_CA_ENV, TLS_KEY_ENV, TOKEN_FILE_ENV,
};
pub use auth::{AuthContinue, AuthDecision, AuthRequest, Authenticator};
pub use context::Context;
pub use error::{Error, HandlerError};
pub use events::{
    ClientConnected, ClientDisconnected, DisconnectReason, Event, EventData, EventHandler,
    EventKind, EventSubscription, ListenerInfo, Message, MessageBroadcast, MessageReceived,
    MqttPacket, PacketType, RetainedAction, RetainedMessage, Subscription, UnknownEventKind,
};
pub use plugin::{Plugin, PluginService};
pub use serve::{ListenAddr, Listener};
pub use shutdown::{DRAIN_TIMEOUT, shutdown_signal};
pub use tls::TlsConfig;
pub use token::BearerToken;
pub use topic::{TopicDecision, TopicFilter, TopicRequest};
pub use types::{
    Action, Attributes, Client, MessageProperties, ProtocolVersion, Role, TlsInfo, UserProperties,
    Verdict, Will,
};

/// Re-exported so a plugin needs no direct dependency: derive with
/// `#[serde(crate = "tandem_plugin::serde")]`.
pub use serde;
/// Re-exported for tests and raw configuration values.
pub use serde_json;
/// The wire contract (generated protobuf types and gRPC code), for what the domain types do not
/// cover.
pub use tandem_proto as proto;
/// Re-exported for [`Plugin::serve_on`] and async tests.
pub use tokio;
/// Re-exported for [`tonic::Status`] (handlers may return one to choose the gRPC code).
pub use tonic;
/// Re-exported for logging from handlers.
pub use tracing;
