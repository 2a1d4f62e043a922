//! Everything the SDK reads from the program's arguments and environment, in one place.
//!
//! Serving, TLS and the bearer token all take their settings by one rule (a flag, else its
//! variable, else nothing), and a binary that plays several roles picks them with `--roles`.
//! Reading argv and the variables here, and only here, keeps that rule in one spot and lets
//! `serve.rs`, `tls.rs` and `token.rs` depend on this file without it depending on them: they
//! turn the strings found here into checked values (and errors that name the flag to fix).

use crate::types::Role;

/// The environment variable read for the listen address when no `--listen` flag is given.
pub const LISTEN_ENV: &str = "TANDEM_PLUGIN_LISTEN";

/// The listen address used when neither `--listen` nor [`LISTEN_ENV`] is given.
pub const DEFAULT_LISTEN: &str = "tcp://127.0.0.1:50051";

/// The environment variable read for the server certificate chain when no `--tls-cert` flag is
/// given.
pub const TLS_CERT_ENV: &str = "TANDEM_PLUGIN_TLS_CERT";

/// The environment variable read for the server private key when no `--tls-key` flag is given.
pub const TLS_KEY_ENV: &str = "TANDEM_PLUGIN_TLS_KEY";

/// The environment variable read for the client CA when no `--tls-client-ca` flag is given.
pub const TLS_CLIENT_CA_ENV: &str = "TANDEM_PLUGIN_TLS_CLIENT_CA";

/// The environment variable read for the token file when no `--token-file` flag is given.
pub const TOKEN_FILE_ENV: &str = "TANDEM_PLUGIN_TOKEN_FILE";

/// The serving settings as the command line and environment give them, not yet checked: each
/// is a flag (`--flag VALUE` or `--flag=VALUE`, the last one wins), else its variable when set
/// and not empty. Other arguments are left alone for the plugin's own parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServeArgs {
    /// `--listen` or [`LISTEN_ENV`], else [`DEFAULT_LISTEN`].
    pub(crate) listen: String,
    /// `--tls-cert` or [`TLS_CERT_ENV`]: the PEM server certificate chain.
    pub(crate) tls_cert: Option<String>,
    /// `--tls-key` or [`TLS_KEY_ENV`]: its PEM private key.
    pub(crate) tls_key: Option<String>,
    /// `--tls-client-ca` or [`TLS_CLIENT_CA_ENV`]: the PEM CA client certificates must chain to.
    pub(crate) tls_client_ca: Option<String>,
    /// `--token-file` or [`TOKEN_FILE_ENV`]: the file holding the broker's bearer token.
    pub(crate) token_file: Option<String>,
    /// `--insecure` (a flag only): serve a non-loopback address with neither token nor mTLS.
    pub(crate) insecure: bool,
    /// `--help` or `-h`: print how to run the plugin instead of serving.
    pub(crate) help: bool,
}

impl ServeArgs {
    /// The settings of this process.
    pub(crate) fn from_process() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        ServeArgs {
            listen: setting(&args, "--listen", LISTEN_ENV)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            tls_cert: setting(&args, "--tls-cert", TLS_CERT_ENV),
            tls_key: setting(&args, "--tls-key", TLS_KEY_ENV),
            tls_client_ca: setting(&args, "--tls-client-ca", TLS_CLIENT_CA_ENV),
            token_file: setting(&args, "--token-file", TOKEN_FILE_ENV),
            insecure: args.iter().any(|a| a == "--insecure"),
            help: args.iter().any(|a| a == "--help" || a == "-h"),
        }
    }
}

/// What `--help` prints for a plugin named `name`: the serving flags every SDK plugin
/// takes. A plugin with flags of its own parses them first and says them itself.
pub(crate) fn usage(name: &str, version: &str) -> String {
    format!(
        "{name} {version}: a Tandem broker plugin (a gRPC server)

Usage: {name} [--listen ADDR] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
              [--token-file FILE] [--insecure]

  --listen ADDR          where to serve: unix:///path/plugin.sock or tcp://IP:PORT
                         [env {LISTEN_ENV}; default {DEFAULT_LISTEN}]
  --tls-cert FILE        serve TLS with this PEM certificate chain [env {TLS_CERT_ENV}]
  --tls-key FILE         and its PEM private key [env {TLS_KEY_ENV}]
  --tls-client-ca FILE   require client certificates signed by this CA (mTLS)
                         [env {TLS_CLIENT_CA_ENV}]
  --token-file FILE      require the broker's bearer token, read from FILE
                         [env {TOKEN_FILE_ENV}]
  --insecure             allow a non-loopback TCP address with neither token nor mTLS
  -h, --help             print this and exit

Logs go to stderr, filtered by RUST_LOG (default info). Point the broker at it with
`plugins: {{ ALIAS: {{ endpoint: ... }} }}`; `tandem plugin check ENDPOINT` checks it.
"
    )
}

/// A setting from the command line (`flag VALUE` or `flag=VALUE`, the last one wins), else from
/// the environment variable `env` when it is set and not empty.
fn setting(args: &[String], flag: &str, env: &str) -> Option<String> {
    flag_value(args, flag).or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

/// The value of the last `flag` on the command line, if any.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == flag {
            found = args.next().cloned();
        } else if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_owned());
        }
    }
    found
}

impl Role {
    /// The roles named by the program's `--roles auth,topic` argument (both when it is
    /// absent), for one binary that can play an auth-only or a topic-only plugin in a chain.
    /// Names other than `auth` and `topic` are ignored.
    pub fn from_args() -> Vec<Role> {
        let args: Vec<String> = std::env::args().collect();
        let value = args
            .iter()
            .position(|a| a == "--roles")
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
            .unwrap_or("auth,topic");
        value
            .split(',')
            .filter_map(|r| match r.trim() {
                "auth" => Some(Role::Authenticate),
                "topic" => Some(Role::TopicFilter),
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_flag_wins_and_other_args_are_ignored() {
        let args = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let listen = |v: &[&str]| flag_value(&args(v), "--listen");
        assert_eq!(listen(&["--verbose"]), None);
        assert_eq!(
            listen(&["--listen", "tcp://127.0.0.1:1", "-v"]).as_deref(),
            Some("tcp://127.0.0.1:1")
        );
        assert_eq!(
            listen(&["--listen=unix:///a.sock", "--listen", "tcp://127.0.0.1:2"]).as_deref(),
            Some("tcp://127.0.0.1:2")
        );
        // A flag is matched whole: `--listener=x` is not `--listen`.
        assert_eq!(listen(&["--listener=tcp://127.0.0.1:3"]), None);
        let tls = args(&["--tls-cert=c.pem", "--tls-key", "k.pem", "--tls-client-ca"]);
        assert_eq!(flag_value(&tls, "--tls-cert").as_deref(), Some("c.pem"));
        assert_eq!(flag_value(&tls, "--tls-key").as_deref(), Some("k.pem"));
        assert_eq!(
            flag_value(&tls, "--tls-client-ca"),
            None,
            "no value follows"
        );
    }
}
