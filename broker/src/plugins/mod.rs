//! The plugin host: out-of-process plugins called over gRPC.
//!
//! Plugins are named in `plugins:` and referenced by the `auth:` chain (Authenticate)
//! and the `topic-check:` chain (TopicFilter). Every call has a deadline; every failure
//! becomes the plugin's `on_error` verdict (deny by default); a plugin that keeps failing
//! is skipped until a probe finds it again; a plugin at its concurrency bound sheds. The
//! broker never lets a client through because a plugin failed, unless the operator
//! wrote `on_error: allow`.
//!
//! # Layout
//! - [`config`]: the YAML sections (`plugins:`, `auth:`, `topic-check:`, and each
//!   plugin's `events:`), handed to the host as [`PluginSections`].
//! - [`endpoint`]: endpoint parsing (`unix://`, `http://`, `https://`, `dns:///`).
//! - [`rpc`]: the decision RPCs, verdicts and error kinds every part shares.
//! - [`error`]: [`PluginError`], why the host could not start or reload.
//! - [`plugin`]: one plugin: replicas, the call path, probes, counters.
//! - [`chain`]: how several plugins' verdicts combine.
//! - [`cache`]: the per-session TopicFilter decision cache.
//! - [`events`]: per-plugin event queues and `Events` streams.
//! - [`supervisor`]: plugins the broker starts itself (`command:`).
//! - [`login`]: letting a client in: the auth chain on CONNECT and MQTT 5 enhanced
//!   authentication exchanges, re-authentication included.
//! - [`decision`]: what a topic check decided, as the connection sees it.
//! - [`client`]: one client's handle on the plugins: checks, cache, events, in the
//!   broker's types; [`client_info`] the facts it reports; [`wire`] every conversion
//!   of those to the plugin contract's messages.
//! - [`lifecycle`]: the broker's own lifecycle events.
//! - [`set`]: [`PluginSet`], the plugins and chains in force.
//! - [`host`]: [`PluginHost`]: start, stop, and the set in force.
//! - [`reload`]: [`PluginHost::reload`] and its [`ReloadSummary`].
//!
//! Files depend one way: `rpc`, `error`, `endpoint` and `config` import nothing from
//! the host; `plugin` builds on them; `chain`, `events` and `set` on `plugin`; `host`
//! and `reload` on all of them (`client`, `lifecycle` and `wire` serve the rest of the
//! broker from above). This file only declares the modules and re-exports what
//! the rest of the broker names, so no file here imports it back.

pub mod cache;
pub mod chain;
pub mod client;
pub mod client_info;
pub mod config;
pub mod decision;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod host;
pub mod lifecycle;
pub mod login;
pub mod plugin;
pub mod reload;
pub mod rpc;
pub mod set;
pub mod supervisor;
pub mod wire;

pub use chain::{AuthOutcome, Chain, TopicOutcome};
pub use config::PluginSections;
pub use error::PluginError;
pub use host::PluginHost;
pub use plugin::Plugin;
pub use reload::ReloadSummary;
pub use rpc::{ErrorKind, Rpc, Verdict};
pub use set::{OpenChain, PluginSet};
