//! End-to-end test harness for Tandem.
//!
//! Tests here run the real `tandem` binary as a child process on an ephemeral port and
//! talk to it over real sockets: with [`RawClient`] when a test needs byte-level
//! control (DUP flags, malformed packets, exact packet order), with a client crate or
//! Debian's `mosquitto_pub`/`mosquitto_sub` when a peer nobody here wrote is the better
//! witness.
//!
//! # Layout
//! - `broker.rs`: [`Tandem`], the broker process: start with a YAML config, read its logs,
//!   reload, terminate, and find the plugin processes it started.
//! - `client.rs`: [`RawClient`], an MQTT 3.1.1 client over a raw TCP socket, the
//!   CONNECT packets tests log in with ([`connect_packet`], [`connect_as`]), and
//!   [`wait_sys`] (a `$SYS` value, waited for as a subscriber).
//! - `crash.rs`: publishers and subscribers that outlive their broker, and the ledger of
//!   what it acknowledged and delivered (the storage crash tests).
//! - `wire.rs`: the packet framing [`RawClient`] and the soak binary share.
//! - `plugin.rs`: plugin processes: the workspace's [`binary`]s, [`PluginProcess`] for a
//!   plugin a test starts itself, [`free_port`], [`kill_pid`], and `/proc` lookups.
//! - `wait.rs`: waiting on conditions with a deadline ([`DEADLINE`], [`eventually`]).
//! - `replicas.rs`: the `dns:///` name that resolves to two loopback replicas.
//! - `marker.rs`: negative checks with a positive end ("nothing before the marker").
//! - `probe.rs`: the admin listener over HTTP (`/metrics` series) and a process's RSS.
//! - `source.rs`: clients connecting from a chosen source address.
//! - `jwt.rs`: signing the tokens the JWT plugin tests present.
//! - `passwd.rs`: argon2id lines for `tandem-auth-file` password files.
//! - `pki.rs`: a CA and the server and client certificates it signs (TLS listener tests),
//!   and a plugin serving mutual TLS with them.
//! - `tooling.rs`: tools the tests install for themselves once per target dir (virtualenvs,
//!   Node modules).
//! - `scram.rs`: a SCRAM-SHA-256 client for MQTT 5 enhanced authentication, and the
//!   `tandem-auth-file` password file lines it logs in with.

mod broker;
mod client;
pub mod crash;
pub mod jwt;
pub mod marker;
pub mod passwd;
pub mod pki;
mod plugin;
pub mod probe;
mod replicas;
pub mod scram;
pub mod source;
pub mod tooling;
mod wait;
pub mod wire;

pub use broker::{Tandem, log_event, log_field};
pub use client::{
    RawClient, Recv, connect_as, connect_packet, connect_packet_as, connect_packet_v5,
    connect_user, wait_sys,
};
pub use plugin::{
    PluginProcess, binary, children, cmdline, event_logger_bin, free_port, kill_pid, policy_bin,
    tandem_bin,
};
pub use replicas::{REPLICAS_HOST, ensure_replica_hosts};
pub use wait::{DEADLINE, eventually};
