//! The command line: `--rules FILE` (else `TANDEM_X509_RULES`), by the SDK's rule for its own
//! settings (a flag, else its variable). Every other argument is the SDK's (`--listen`, the TLS
//! flags, `--token-file`, `--insecure`) or `--roles`, so they are left alone rather than parsed
//! here.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The environment variable read for the rules file when no `--rules` flag is given.
pub(crate) const RULES_ENV: &str = "TANDEM_X509_RULES";

/// The rules file of the command line, used by every `Describe` whose `config:` names none.
static DEFAULT_RULES: OnceLock<PathBuf> = OnceLock::new();

pub(crate) const USAGE: &str = "\
tandem-auth-x509: Tandem plugin authenticating MQTT clients by their TLS client certificate,
with per-identity topic ACLs. See examples/auth-x509/README.md.

Usage: tandem-auth-x509 [--rules FILE] [--roles auth,topic] [SDK flags]

  --rules FILE        the rules file (YAML), reloaded when it changes [env: TANDEM_X509_RULES];
                      the broker's `config: { rules_file: ... }` takes precedence
  --roles LIST        roles to declare: auth, topic or both (default auth,topic)
  --listen ADDR       tcp://IP:PORT or unix:///path.sock [env: TANDEM_PLUGIN_LISTEN]
  --tls-cert FILE, --tls-key FILE, --tls-client-ca FILE, --token-file FILE, --insecure
                      serving options of the SDK (see the tandem-plugin docs)
  -h, --help          this text
  -V, --version       the version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Help,
    Version,
    /// Serve, with this default rules file.
    Serve(Option<PathBuf>),
}

/// Reads `args` (without the program name) and the value of [`RULES_ENV`].
pub(crate) fn parse(args: &[String], env: Option<String>) -> Result<Command, String> {
    let mut rules = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--rules" => match args.next() {
                Some(value) if !value.is_empty() => rules = Some(value.clone()),
                _ => return Err("--rules needs a file".into()),
            },
            _ => {
                if let Some(value) = arg.strip_prefix("--rules=") {
                    if value.is_empty() {
                        return Err("--rules needs a file".into());
                    }
                    rules = Some(value.to_owned());
                }
            }
        }
    }
    let rules = rules.or(env.filter(|v| !v.is_empty()));
    Ok(Command::Serve(rules.map(PathBuf::from)))
}

/// Sets the command line's rules file (once, at start).
pub(crate) fn set_default_rules(path: PathBuf) {
    let _ = DEFAULT_RULES.set(path);
}

/// The command line's rules file, if any.
pub(crate) fn default_rules() -> Option<&'static PathBuf> {
    DEFAULT_RULES.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str], env: Option<&str>) -> Result<Command, String> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        parse(&args, env.map(str::to_owned))
    }

    #[test]
    fn the_flag_wins_over_the_variable_and_sdk_flags_pass() {
        let serve = |p: &str| Ok(Command::Serve(Some(PathBuf::from(p))));
        assert_eq!(
            parse_args(
                &["--listen", "unix:///x.sock", "--rules", "a.yaml"],
                Some("b.yaml")
            ),
            serve("a.yaml")
        );
        assert_eq!(parse_args(&["--rules=a.yaml"], None), serve("a.yaml"));
        assert_eq!(
            parse_args(&["--rules", "a.yaml", "--rules", "c.yaml"], None),
            serve("c.yaml"),
            "the last one wins, as with the SDK's flags"
        );
        assert_eq!(parse_args(&["--insecure"], Some("b.yaml")), serve("b.yaml"));
        assert_eq!(parse_args(&[], Some("")), Ok(Command::Serve(None)));
        assert_eq!(parse_args(&[], None), Ok(Command::Serve(None)));
        assert!(parse_args(&["--rules"], None).is_err());
        assert!(parse_args(&["--rules="], None).is_err());
        assert_eq!(parse_args(&["--rules", "a", "-h"], None), Ok(Command::Help));
        assert_eq!(parse_args(&["--version"], None), Ok(Command::Version));
        // `--rulesx` is not `--rules`.
        assert_eq!(parse_args(&["--rulesx=a"], None), Ok(Command::Serve(None)));
    }
}
