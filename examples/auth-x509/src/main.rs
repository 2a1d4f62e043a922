//! `tandem-auth-x509`: clients authenticated by their TLS client certificate, which the broker
//! has already verified against the listener's `tls.client_ca` (aMQTT's certificate auth,
//! Mosquitto's `use_identity_as_username`), with per-identity topic ACLs, from one YAML rules
//! file that is reloaded when it changes:
//!
//! ```yaml
//! clients:                                   # first match wins
//!   - match: { common_name: "device-*" }
//!     identity: "{cn}"
//! acl:
//!   - identity: "device-*"
//!     publish: ["devices/{identity}/telemetry/#"]
//!     subscribe: ["devices/{identity}/commands/#"]
//! ```
//!
//! # Layout
//! - `main.rs`: the two handlers (authenticate, topic filter) and `main`.
//! - `cli.rs`: `--rules` / `TANDEM_X509_RULES`, help and version.
//! - `cert.rs`: the certificate as rules see it (CN, typed SANs, fingerprint, subject).
//! - `clients.rs`: the `clients` entries, their matchers, identity and attributes.
//! - `acl.rs`: the `acl` entries and the topic decision; `glob.rs`: name globs;
//!   `template.rs`: `{placeholder}` text.
//! - `rules.rs`: the rules file's YAML form and checked form.
//! - `config.rs`: the `config:` pushed by `Describe`, which loads the rules (fail closed);
//!   `live.rs`: the rules in force; `watch.rs`: reloads on change.
//! - `tests/`: the plugin through the SDK's in-process test broker, with real certificates.
//!
//! See `README.md` for the rules file and a broker configuration.

mod acl;
mod cert;
mod cli;
mod clients;
mod config;
mod glob;
mod live;
mod rules;
mod template;
mod watch;

use std::process::ExitCode;

use tandem_plugin::{
    AuthDecision, AuthRequest, Authenticator, Context, HandlerError, Plugin, Role, TlsInfo,
    TopicDecision, TopicFilter, TopicRequest,
};

use crate::acl::Access;
use crate::cert::{Certificate, Missing};
use crate::clients::Connect;
use crate::config::Config;
use crate::rules::{Fallback, Rules};

/// Told to a client without a certificate (an MQTT 5 Reason String): what to fix, nothing more.
const CERTIFICATE_REQUIRED: &str = "a client certificate is required";
/// Told to a client whose certificate the rules refuse: nothing about the rules.
const NOT_AUTHORIZED: &str = "the client certificate is not authorized";

/// Both roles: the rules in force decide.
struct X509;

impl Authenticator for X509 {
    async fn authenticate(
        &self,
        ctx: &Context,
        req: AuthRequest,
    ) -> Result<AuthDecision, HandlerError> {
        // A re-authentication (MQTT 5 AUTH) carries the connection's TLS details again and is
        // decided the same way, so rules edited since the CONNECT apply to it.
        let config = ctx.config::<Config>()?;
        Ok(connect(
            &config.rules.current(),
            req.tls.as_ref(),
            &req.listener,
        ))
    }
}

impl TopicFilter for X509 {
    async fn topic_filter(
        &self,
        ctx: &Context,
        req: TopicRequest,
    ) -> Result<TopicDecision, HandlerError> {
        let config = ctx.config::<Config>()?;
        Ok(topic(&config.rules.current(), &req))
    }
}

/// The answer to a connection with these TLS details, on `listener`.
fn connect(rules: &Rules, tls: Option<&TlsInfo>, listener: &str) -> AuthDecision {
    let cert = match Certificate::from_tls(tls, listener) {
        Ok(cert) => cert,
        Err(Missing::Unreadable(err)) => {
            return AuthDecision::deny(format!("the client certificate cannot be read: {err}"))
                .with_client_reason(NOT_AUTHORIZED);
        }
        Err(missing) => {
            let why = match missing {
                Missing::NoTls => "not a TLS connection",
                _ => "no client certificate",
            };
            return match rules.no_certificate {
                Fallback::Deny => AuthDecision::deny(why).with_client_reason(CERTIFICATE_REQUIRED),
                Fallback::Ignore => AuthDecision::abstain().with_reason(why),
            };
        }
    };
    match clients::decide(&rules.clients, &cert) {
        Connect::Allow {
            rule,
            identity,
            attributes,
        } => {
            let mut decision = AuthDecision::allow()
                .with_identity(identity)
                .with_reason(format!("clients[{rule}]"));
            for (name, value) in attributes {
                decision = decision.with_attribute(name, value);
            }
            decision
        }
        Connect::Deny { reason, .. } => {
            AuthDecision::deny(reason).with_client_reason(NOT_AUTHORIZED)
        }
        Connect::Unmatched => {
            let why = format!(
                "no clients entry matches the certificate (CN {:?}, subject {:?}, fingerprint {})",
                cert.common_name.as_deref().unwrap_or(""),
                cert.subject.as_deref().unwrap_or(""),
                cert.fingerprint
            );
            match rules.unmatched_certificate {
                Fallback::Deny => AuthDecision::deny(why).with_client_reason(NOT_AUTHORIZED),
                Fallback::Ignore => AuthDecision::abstain().with_reason(why),
            }
        }
    }
}

/// The answer to a topic check.
fn topic(rules: &Rules, req: &TopicRequest) -> TopicDecision {
    let identity = req.client.identity();
    let decision = match acl::decide(&rules.acl, req.action, identity, &req.topic) {
        Access::Allow => TopicDecision::allow(),
        Access::Deny(reason) => TopicDecision::deny(reason),
        Access::Unmatched => {
            let why = match identity {
                Some(identity) => format!("no acl entry names `{identity}`"),
                None => "the client has no identity".to_owned(),
            };
            match rules.unmatched_identity {
                Fallback::Deny => TopicDecision::deny(why),
                Fallback::Ignore => TopicDecision::abstain().with_reason(why),
            }
        }
    };
    // The answer depends only on the identity, the action and the topic (and the rules, which
    // a reload changes: hence a bounded TTL).
    decision.cache_for(rules.cache_ttl)
}

/// The plugin with the roles `roles` (both unless `--roles` says otherwise).
fn plugin(roles: &[Role]) -> Plugin {
    let mut plugin = Plugin::new("tandem-auth-x509", env!("CARGO_PKG_VERSION")).config::<Config>();
    if roles.contains(&Role::Authenticate) {
        plugin = plugin.authenticate(X509);
    }
    if roles.contains(&Role::TopicFilter) {
        plugin = plugin.topic_filter(X509);
    }
    plugin
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args, std::env::var(cli::RULES_ENV).ok()) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("tandem-auth-x509: error: {err}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let rules = match command {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        cli::Command::Version => {
            println!("tandem-auth-x509 {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        cli::Command::Serve(rules) => rules,
    };
    if let Some(path) = rules {
        // Checked now, so a bad file stops the plugin at start with the reason; it is loaded
        // (and watched) at each `Describe`.
        if let Err(err) = live::read_file(&path) {
            eprintln!("tandem-auth-x509: error: {err}");
            return ExitCode::FAILURE;
        }
        cli::set_default_rules(path);
    }
    match plugin(&Role::from_args()).run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tandem-auth-x509: error: {err}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
