//! The command line: serve (no subcommand; the SDK reads `--listen` and the TLS flags itself),
//! or edit a password file with `passwd add|set|remove` (argon2id, or SCRAM-SHA-256 entries with
//! `--scram`).

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::hash::hash_argon2id;
use crate::passwd::{self, Edit};
use crate::scram;

/// Tandem authentication plugin: users and password hashes from a file, reloaded when it
/// changes.
///
/// Without a subcommand it serves the plugin; the broker pushes its configuration
/// (password_file, allow_anonymous, unknown_user) in Describe.
#[derive(Debug, Parser)]
#[command(name = "tandem-auth-file", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Where to serve: tcp://IP:PORT or unix:///path.sock [env: TANDEM_PLUGIN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// PEM certificate chain: serve TLS [env: TANDEM_PLUGIN_TLS_CERT]
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [env: TANDEM_PLUGIN_TLS_KEY]
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates it signed [env: TANDEM_PLUGIN_TLS_CLIENT_CA]
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// File with the bearer token every caller must present [env: TANDEM_PLUGIN_TOKEN_FILE]
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve a TCP address with no caller check (no client CA, no token)
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Edit a password file (writes argon2id hashes, or SCRAM-SHA-256 entries with --scram;
    /// keeps comments and other lines).
    #[command(subcommand)]
    Passwd(Passwd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum Passwd {
    /// Add a user (creates the file, mode 0600, if it does not exist).
    Add(WithPassword),
    /// Change the password of a user in the file.
    Set(WithPassword),
    /// Remove a user from the file.
    Remove(Target),
}

#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The password file.
    file: PathBuf,
    /// The user name.
    user: String,
}

#[derive(Debug, Args)]
pub(crate) struct WithPassword {
    #[command(flatten)]
    target: Target,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Write SCRAM-SHA-256 credentials (iterations, salt, StoredKey, ServerKey) instead of an
    /// argon2id hash: the user can then log in with MQTT 5 enhanced authentication
    /// SCRAM-SHA-256 as well as with a CONNECT password.
    #[arg(long)]
    scram: bool,
    /// PBKDF2 iterations of a --scram entry.
    #[arg(
        long,
        requires = "scram",
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(i64::from(scram::MIN_ITERATIONS)..=i64::from(scram::MAX_ITERATIONS)),
        help = format!("PBKDF2 iterations of a --scram entry [default: {}]", scram::DEFAULT_ITERATIONS),
    )]
    iterations: Option<u32>,
}

/// What `passwd add|set` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewHash {
    Argon2id,
    /// SCRAM-SHA-256 with this many iterations.
    Scram(u32),
}

impl WithPassword {
    fn new_hash(&self) -> NewHash {
        if self.scram {
            NewHash::Scram(self.iterations.unwrap_or(scram::DEFAULT_ITERATIONS))
        } else {
            NewHash::Argon2id
        }
    }
}

/// The password file entry (after `user:`) of `password`, with a random salt.
pub(crate) fn make_hash(password: &[u8], kind: NewHash) -> anyhow::Result<String> {
    Ok(match kind {
        NewHash::Argon2id => hash_argon2id(password).map_err(|e| anyhow::anyhow!("{e}"))?,
        NewHash::Scram(iterations) => scram::Credentials::generate(password, iterations).to_entry(),
    })
}

/// Runs a `passwd` subcommand; returns what to tell the user.
pub(crate) fn passwd(cmd: Passwd) -> anyhow::Result<String> {
    let (target, password) = match &cmd {
        Passwd::Add(w) | Passwd::Set(w) => (&w.target, Some((w.password_stdin, w.new_hash()))),
        Passwd::Remove(t) => (t, None),
    };
    passwd::check_user(&target.user)?;
    let text = read_existing(&target.file, matches!(cmd, Passwd::Add(_)))?;
    let hash = match password {
        Some((from_stdin, kind)) => Some(make_hash(read_password(from_stdin)?.as_bytes(), kind)?),
        None => None,
    };
    let (edit, done) = match (&cmd, hash.as_deref()) {
        (Passwd::Add(_), Some(hash)) => (Edit::Add { hash }, "added"),
        (Passwd::Set(_), Some(hash)) => (Edit::Set { hash }, "password changed for"),
        _ => (Edit::Remove, "removed"),
    };
    let new_text = passwd::edit(&text, &target.user, edit)
        .with_context(|| format!("{}", target.file.display()))?;
    passwd::write_atomically(&target.file, &new_text)
        .with_context(|| format!("cannot write {}", target.file.display()))?;
    let what = match password.map(|(_, kind)| kind) {
        Some(NewHash::Scram(iterations)) => {
            format!(" (SCRAM-SHA-256, {iterations} iterations)")
        }
        Some(NewHash::Argon2id) => " (argon2id)".to_owned(),
        None => String::new(),
    };
    Ok(format!(
        "{done} user {:?} in {}{what}",
        target.user,
        target.file.display()
    ))
}

/// The file's text; a missing file reads as empty only for `add`.
fn read_existing(path: &Path, may_create: bool) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && may_create => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let first = rpassword::prompt_password("Password: ")
            .context("cannot prompt for the password (no terminal? use --password-stdin)")?;
        let again = rpassword::prompt_password("Reenter password: ")
            .context("cannot prompt for the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tandem-auth-file").chain(args.iter().copied()))
    }

    fn new_hash(args: &[&str]) -> NewHash {
        match parse(args).unwrap().command {
            Some(Command::Passwd(Passwd::Add(w) | Passwd::Set(w))) => w.new_hash(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_sdk_serving_flags_are_accepted() {
        // The SDK reads them itself; clap must not refuse them.
        let cli = parse(&[
            "--listen",
            "tcp://127.0.0.1:1",
            "--token-file",
            "/run/token",
            "--insecure",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert!(parse(&["--token-fil", "x"]).is_err());
    }

    #[test]
    fn scram_flags() {
        assert_eq!(new_hash(&["passwd", "add", "f", "u"]), NewHash::Argon2id);
        assert_eq!(
            new_hash(&["passwd", "add", "f", "u", "--scram"]),
            NewHash::Scram(4096)
        );
        assert_eq!(
            new_hash(&[
                "passwd",
                "set",
                "f",
                "u",
                "--scram",
                "--iterations",
                "10000"
            ]),
            NewHash::Scram(10_000)
        );
        for bad in [
            &["passwd", "add", "f", "u", "--scram", "--iterations", "4095"][..],
            &[
                "passwd",
                "add",
                "f",
                "u",
                "--scram",
                "--iterations",
                "10000001",
            ],
            &["passwd", "add", "f", "u", "--iterations", "5000"],
            &["passwd", "remove", "f", "u", "--scram"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    /// What `passwd add --scram` writes reads back as a SCRAM entry that verifies the password,
    /// runs the exchange, and leaves the file's other lines alone.
    #[test]
    fn passwd_scram_output_round_trips() {
        let entry = make_hash(b"pencil", NewHash::Scram(5000)).unwrap();
        assert!(entry.starts_with("$scram-sha-256$5000$"), "{entry}");
        let text = passwd::edit("# users\n", "user", Edit::Add { hash: &entry }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        passwd::write_atomically(&path, &text).unwrap();
        let parsed = passwd::parse(&std::fs::read_to_string(&path).unwrap());
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert_eq!(parsed.users.scram_iterations(), Some(5000));
        let Some(Ok(hash @ Hash::Scram(credentials))) = parsed.users.get("user") else {
            panic!("{:?}", parsed.users.get("user"));
        };
        assert!(hash.verify(b"pencil"));
        assert!(!hash.verify(b"pencil!"));
        assert_eq!(credentials.salt.len(), scram::SALT_LEN);
        assert_eq!(credentials.to_entry(), entry);
        // A client that derives its keys from the password (as RFC 5802 §3 says) gets in.
        let first = scram::parse_client_first(b"n,,n=user,r=clientnonce").unwrap();
        let exchange = scram::Exchange::start(first, "servernonce", &credentials.salt, 5000);
        let fin = scram::tests::client_final(b"pencil", &exchange);
        let fin = exchange.parse_client_final(fin.as_bytes()).unwrap();
        assert!(exchange.verify(&fin, credentials).is_some());
        // And the argon2id default still is one.
        let argon = make_hash(b"pencil", NewHash::Argon2id).unwrap();
        assert!(matches!(Hash::parse(&argon), Ok(Hash::Argon2(_))));
    }
}
