//! Tests of the plugin: the matching and ACL logic with hostile inputs (`logic.rs`), the rules
//! file's errors (`rules.rs`), and the plugin as the broker sees it, through the SDK's
//! in-process test broker with real certificates (`broker.rs`).

mod broker;
mod certs;
mod logic;
mod rules;
