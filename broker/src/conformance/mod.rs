//! `tandem plugin check`: a conformance kit for plugin servers in any language.
//!
//! It dials a running plugin as the broker dials a `plugins:` entry (the same endpoint
//! syntax, TLS, bearer token and connect-once channels) and asks what the broker relies
//! on: gRPC health, a `Describe` whose roles are really served, verdicts that are never
//! `VERDICT_UNSPECIFIED`, requests and events carrying what a newer broker would send
//! (unknown fields, an unknown event kind), cumulative acks on `Events` that survive a
//! reconnect with events sent again, and, given test credentials, a wrong password
//! refused. Every call and every ack waited for has the deadline of `--timeout`, so a
//! check never hangs, whatever listens at the endpoint.
//!
//! # Layout
//! - [`args`]: [`CheckArgs`] (the command line) and the [`Settings`] they stand for.
//! - `conn`: the plugin as the check reaches it, and each call under its deadline.
//! - `unknown`: messages carrying fields the contract does not define.
//! - `samples`: the requests and events the checks send.
//! - `decisions`: `Describe` and the decision RPCs (rows `describe`, `roles`,
//!   `verdicts`, `unknown-fields`, `credentials`).
//! - `events`: the `Events` stream (rows `events-acks`, `events-unknown-kind`,
//!   `events-reconnect`).
//! - [`report`]: the rows and the table they print as.
//! - [`error`]: [`CheckError`], why a run could not start.
//! - [`run`]: [`check`], every check in order, and [`run()`], the command.
//!
//! Files depend one way: `error`, `report`, `unknown` and `samples` import nothing from
//! their siblings; `args` and `conn` build on `error`; the checks on `conn`; `run` on all.
//! This file only declares the modules and re-exports.

pub mod args;
mod conn;
mod decisions;
pub mod error;
mod events;
pub mod report;
pub mod run;
mod samples;
mod unknown;

pub use args::{CheckArgs, DialArgs, Settings};
pub use error::CheckError;
pub use report::{Outcome, Report, Row};
pub use run::{check, run};
