//! Why the plugin host could not start a plugin or apply a reload: one error type for
//! the whole host, each variant naming the plugin and the configuration key to fix.

use std::time::Duration;

use tandem_proto::v1 as pb;

/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The configuration of a plugin is unusable.
    #[error("plugin `{alias}`: {message}")]
    Config {
        /// The alias.
        alias: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin did not answer `Describe` in time.
    #[error(
        "plugin `{alias}` at {endpoint} did not answer Describe within {waited:?} (plugins.{alias}.startup_timeout): {cause}"
    )]
    Startup {
        /// The alias.
        alias: String,
        /// Its endpoint.
        endpoint: String,
        /// How long start-up waited.
        waited: Duration,
        /// The last failure seen.
        cause: String,
    },
    /// A plugin answered `Describe` with INVALID_ARGUMENT or FAILED_PRECONDITION: it
    /// refuses the `config:` pushed to it.
    #[error("plugin `{alias}` refused its configuration (plugins.{alias}.config): {cause}")]
    Refused {
        /// The alias.
        alias: String,
        /// The plugin's answer.
        cause: String,
    },
    /// A plugin in a chain does not declare the chain's role.
    #[error(
        "plugin `{alias}` ({name}) is listed in {section}.plugins but does not declare {role:?} in Describe"
    )]
    MissingRole {
        /// The alias.
        alias: String,
        /// The plugin's own name.
        name: String,
        /// `auth` or `topic-check`.
        section: &'static str,
        /// The missing role.
        role: pb::Role,
    },
    /// A plugin command could not be started.
    #[error("plugin `{alias}`: cannot start command {command:?}: {cause}")]
    Spawn {
        /// The alias.
        alias: String,
        /// The argv.
        command: Vec<String>,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Shutdown began during start-up.
    #[error("shutdown requested during plugin start-up")]
    Cancelled,
}

/// A gRPC status as an operator reads it: its code, its message and every source
/// under it, `: `-separated. tonic makes a status from a broken connection whose
/// message is only "transport error"; the cause (connection refused, a TLS alert, a
/// peer that does not speak HTTP/2) is in its sources.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    // tonic's placeholder says nothing when a cause follows.
    let mut causes = match status.message() {
        "transport error" if std::error::Error::source(status).is_some() => String::new(),
        message => message.to_owned(),
    };
    let mut tls = false;
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        tls |= is_tls(err);
        let part = err.to_string();
        // tonic's placeholder says nothing, and hyper and tonic repeat a cause at two
        // levels: each cause once.
        if part != "transport error" && !causes.contains(&part) {
            if !causes.is_empty() {
                causes.push_str(": ");
            }
            causes.push_str(&part);
        }
        source = err.source();
    }
    let tls = if tls { "TLS: " } else { "" };
    format!("{:?}: {tls}{causes}", status.code())
}

/// Whether `err` is a TLS failure: rustls's errors reach tonic wrapped in an I/O error,
/// whose text alone ("received corrupt message") does not say it was TLS.
fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<rustls::Error>().is_some()
        || err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>())
}
