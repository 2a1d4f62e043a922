//! The command line: serve (no subcommand; the SDK reads `--listen` and the TLS flags itself),
//! or edit a password file with `passwd add|set|remove`.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::hash::hash_argon2id;
use crate::passwd::{self, Edit};

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
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Edit a password file (writes argon2id hashes; keeps comments and other lines).
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
}

/// Runs a `passwd` subcommand; returns what to tell the user.
pub(crate) fn passwd(cmd: Passwd) -> anyhow::Result<String> {
    let (target, password_stdin) = match &cmd {
        Passwd::Add(w) | Passwd::Set(w) => (&w.target, Some(w.password_stdin)),
        Passwd::Remove(t) => (t, None),
    };
    passwd::check_user(&target.user)?;
    let text = read_existing(&target.file, matches!(cmd, Passwd::Add(_)))?;
    let hash = match password_stdin {
        Some(from_stdin) => {
            let password = read_password(from_stdin)?;
            Some(hash_argon2id(password.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
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
    Ok(format!(
        "{done} user {:?} in {}",
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
