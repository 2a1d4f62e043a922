//! The broker under soak: its config and ACL files (written again, changed, for each
//! reload), its process, and the plugin processes it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::state::{password, team};

/// Writes the ACL file: team members publish, subscribe and receive their team; they may
/// subscribe to every team's `msg` (RECEIVE filters it); slow readers may read every team.
pub(crate) fn write_acl(path: &Path, clients: usize, slow: usize) -> Result<()> {
    let mut sub = String::from("subscribe-acl:\n");
    let mut publ = String::from("publish-acl:\n");
    let mut recv = String::from("receive-acl:\n");
    for i in 0..clients {
        let t = team(i);
        sub += &format!("  u{i}: [\"teams/{t}/#\", \"teams/+/msg/#\"]\n");
        publ += &format!("  u{i}: [\"teams/{t}/#\"]\n");
        recv += &format!("  u{i}: [\"teams/{t}/#\"]\n");
    }
    for k in 0..slow {
        sub += &format!("  slow{k}: [\"teams/+/msg/#\"]\n");
        recv += &format!("  slow{k}: [\"teams/+/msg/#\"]\n");
    }
    std::fs::write(path, format!("{sub}{publ}{recv}"))?;
    Ok(())
}

/// Writes the broker's config; `generation` changes the plugin config, so a reload
/// pushes it again.
pub(crate) fn write_config(
    dir: &Path,
    bin: &Path,
    clients: usize,
    slow: usize,
    generation: u64,
) -> Result<PathBuf> {
    let mut users = String::new();
    for u in (0..clients)
        .map(|i| format!("u{i}"))
        .chain((0..slow).map(|k| format!("slow{k}")))
    {
        users += &format!("        {u}: {{ password: {} }}\n", password(&u));
    }
    let yaml = format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
mqtt:
  max_connections: 5000
plugins:
  users:
    endpoint: unix://{d}/users.sock
    command: [{bin}/tandem-policy, --roles, auth]
    config:
      # Changed by each reload, so Describe is pushed again: {generation}
      auth_default: deny
      users:
{users}  acl:
    endpoint: unix://{d}/acl.sock
    command: [{bin}/tandem-topic-acl]
    config:
      acl_file: {d}/acl.yaml
      cache_ttl_ms: {ttl}
auth:
  plugins: [users]
topic-check:
  enable: true
  plugins: [acl]
"#,
        d = dir.display(),
        bin = bin.display(),
        ttl = 1000 + generation % 2,
    );
    let path = dir.join("tandem.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// The plugin process the broker started from `bin`: its child (as `/proc` lists the
/// children of each of its threads) whose command line names `bin`.
pub(crate) fn plugin_pid(broker: u32, bin: &str) -> Option<u32> {
    tandem_tests::children(broker).into_iter().find(|&pid| {
        tandem_tests::cmdline(pid)
            .iter()
            .any(|arg| arg.contains(bin))
    })
}

/// The `tandem` process, stopped (SIGTERM, then SIGKILL after 20 s) on drop.
pub(crate) struct Broker {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the broker on `config`, logging to `dir`; returns it once it listens.
pub(crate) fn start_broker(bin: &Path, config: &Path, dir: &Path) -> Result<(Broker, SocketAddr)> {
    let log = dir.join("tandem.log");
    let child = Command::new(bin.join("tandem"))
        .arg("--config")
        .arg(config)
        .env("TANDEM_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("plugins.log"))?)
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("start tandem")?;
    let mut broker = Broker { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter(|l| l.contains("listening listener=default"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        {
            return Ok((broker, addr.parse()?));
        }
        if let Ok(Some(status)) = broker.child.try_wait() {
            bail!("tandem exited at start ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("tandem did not listen within 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
