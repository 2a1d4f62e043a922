//! Every conversion between the protobuf types of `tandem-proto` and the SDK's domain types.
//!
//! Broker to plugin (requests, events): lenient, as the contract says what each zero value means.
//! Plugin to broker (decisions): exact. The reverse directions exist for the testing harness,
//! which talks to the plugin through the real gRPC codec as the broker does.
//!
//! Each file converts one family both ways, so a field added to the contract changes one file.
//!
//! # Layout
//! - `scalars.rs`: how the wire writes absence, durations and small numbers.
//! - `types.rs`: the shared domain types of the crate's `types.rs`: verdicts, actions, the
//!   client, message properties, wills, TLS details.
//! - `requests.rs`: `Authenticate` and `TopicFilter` requests.
//! - `responses.rs`: the decisions answering them.
//! - `event_parts.rs` and `events.rs`: what events are made of, and whole events.
//! - `described.rs`: the roles declared in `Describe`, and the pushed configuration as JSON.

mod described;
mod event_parts;
mod events;
mod requests;
mod responses;
mod scalars;
mod types;

pub(crate) use described::{json_to_struct, struct_to_json};
pub(crate) use events::event_from;
