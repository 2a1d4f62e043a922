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
//! The command is `tandem plugin check ENDPOINT` (see `docs/plugins.md`); from code:
//! ```no_run
//! use tandem_broker::conformance::{Outcome, Settings, check};
//! use tandem_broker::plugins::config::PluginConfig;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings {
//!     alias: "acl".into(),
//!     plugin: PluginConfig::new("unix:///run/tandem/acl.sock".parse()?),
//!     credentials: None,
//! };
//! let report = check(&settings).await?;
//! assert_eq!(report.outcome("credentials").map(|o| matches!(o, Outcome::Skip(_))), Some(true));
//! println!("{report}");
//! # Ok(()) }
//! ```
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
//! - [`run`](mod@run): [`check`], every check in order, and [`run()`], the command.
//!
//! Files depend one way: `error`, `report` and `unknown` import nothing from their
//! siblings; `samples` builds on `unknown`, `args` on `error`, `conn` on the three; the checks
//! (`decisions`, `events`) on `conn`, `report` and `samples`; `run` on all of them.
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
