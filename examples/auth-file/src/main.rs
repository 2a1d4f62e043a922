//! `tandem-auth-file`: aMQTT's `FileAuthPlugin` and `AnonymousAuthPlugin` as one Tandem
//! authentication plugin. Users and password hashes come from a file (argon2id, mosquitto's
//! `$7$`/`$6$`, sha512-crypt, SCRAM-SHA-256 credentials) that is reloaded when it changes;
//! `passwd` edits such a file. MQTT 5 clients can also log in with SCRAM-SHA-256.
//!
//! # Layout
//! - `config.rs`: the configuration pushed in `Describe`, which opens the file.
//! - `store.rs`: the loaded file and reloading; `watch.rs`: noticing changes.
//! - `passwd.rs`: the file format (reading, editing, atomic writes); `hash.rs`: the hashes.
//! - `scram.rs`: SCRAM-SHA-256 credentials and the exchange's messages (MQTT 5 enhanced
//!   authentication).
//! - `auth.rs`: the decision; `cache.rs`: recent successful verifications; `throttle.rs`:
//!   failed-login throttling per username and per address.
//! - `cli.rs`: the command line.

mod auth;
mod cache;
mod cli;
mod config;
mod hash;
mod passwd;
mod scram;
mod store;
mod throttle;
mod watch;

use std::process::ExitCode;

use clap::Parser as _;
use tandem_plugin::Plugin;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Command::Passwd(cmd)) => cli::passwd(cmd).map(|done| eprintln!("{done}")),
        None => serve(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-auth-file: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve() -> anyhow::Result<()> {
    // Logs go to stderr, as with the SDK's default subscriber: the broker passes a plugin's
    // stderr through to its own. Set up here to show a plugin choosing its own filter.
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Plugin::new("tandem-auth-file", env!("CARGO_PKG_VERSION"))
        .config::<config::Config>()
        .authenticate(auth::FileAuth::new())
        .run()?;
    Ok(())
}
