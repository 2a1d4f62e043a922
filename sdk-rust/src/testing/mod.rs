//! Drive a plugin in-process exactly as the broker does, without sockets.
//!
//! [`TestBroker`] holds the plugin's real gRPC service and calls it through a `tonic` client over
//! an in-memory transport: requests and answers go through the same protobuf encoding, status
//! codes and streaming as with the real broker. Use it in unit tests:
//!
//! ```
//! use tandem_plugin::testing::TestBroker;
//! use tandem_plugin::{AuthRequest, AuthDecision, Authenticator, Context, HandlerError, Plugin, Verdict};
//!
//! struct Tokens;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { token: String }
//!
//! impl Authenticator for Tokens {
//!     async fn authenticate(&self, ctx: &Context, req: AuthRequest) -> Result<AuthDecision, HandlerError> {
//!         let config = ctx.config::<Config>()?;
//!         Ok(if req.password_str() == Some(config.token.as_str()) {
//!             AuthDecision::allow()
//!         } else {
//!             AuthDecision::deny("bad token")
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let broker = TestBroker::new(Plugin::new("tokens", "1.0").authenticate(Tokens).config::<Config>());
//! broker.describe(serde_json::json!({"token": "s3cret"})).await.unwrap();
//!
//! let ok = broker.authenticate(AuthRequest::new("c1").with_password("s3cret")).await.unwrap();
//! assert_eq!(ok.verdict, Verdict::Allow);
//! let ko = broker.authenticate(AuthRequest::new("c1").with_password("guess")).await.unwrap();
//! assert_eq!(ko.verdict, Verdict::Deny);
//! # });
//! ```
//!
//! # Layout
//! - `broker.rs`: [`TestBroker`], the stand-in broker: `Describe`, `Authenticate`, `TopicFilter`.
//! - `stream.rs`: [`EventStream`], an open `Events` stream: send batches, read acks.
//! - `description.rs`: [`Description`], the plugin's `Describe` answer in domain types.
//!
//! The harness's own tests (which are the plugin service's tests too) are in
//! `sdk-rust/tests/service/`: they use the harness from outside, as a plugin's tests do.

mod broker;
mod description;
mod stream;

pub use broker::{TEST_BROKER_VERSION, TestBroker};
pub use description::Description;
pub use stream::EventStream;
