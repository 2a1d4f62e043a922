//! The plugin service driven through the testing harness ([`tandem_plugin::testing::TestBroker`]),
//! as a plugin's own tests drive it: registration and `Describe`, the pushed configuration, topic
//! checks, and events.
//!
//! # Layout
//! - `fixtures.rs`: the handlers the tests register.
//! - `registration.rs`: declared roles and event kinds; `UNIMPLEMENTED` for the rest.
//! - `config.rs`: the configuration pushed by `Describe`, replaced and refused.
//! - `checks.rs`: topic decisions and handler errors.
//! - `events.rs`: ordering, filtering, acks, unknown kinds and trace context.

mod checks;
mod config;
mod events;
mod fixtures;
mod registration;
