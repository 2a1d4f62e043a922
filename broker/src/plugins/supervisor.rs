//! Plugins the broker runs itself (`command:`): started before the first `Describe`,
//! restarted with backoff when they exit, stopped (SIGTERM, then SIGKILL after a grace
//! period) on shutdown. The local way to run a sidecar without Kubernetes.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::endpoint::Endpoint;
use super::error::PluginError;

/// A supervised plugin process.
pub struct Supervisor {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

fn spawn_child(alias: &str, command: &[String], endpoint: &Endpoint) -> std::io::Result<Child> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        // The SDK reads its listen address from here when no flag is given.
        .env("TANDEM_PLUGIN_LISTEN", endpoint.to_string())
        .env("TANDEM_PLUGIN_ALIAS", alias)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd.spawn()
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Makes sure the directory of a plugin's unix socket is writable by the broker's user
/// alone: created 0700 when missing; refused when another user owns it or when group or
/// others may write it. Whoever can write there could put their own socket in the
/// plugin's place and be asked to check every client's password.
fn private_socket_dir(alias: &str, socket: &std::path::Path) -> Result<(), PluginError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    let fail = |message: String| PluginError::Config {
        alias: alias.to_owned(),
        message,
    };
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                fail(format!(
                    "cannot create the socket directory {}: {e}",
                    dir.display()
                ))
            })?;
        info!(plugin = %alias, dir = %dir.display(), "socket directory created (0700)");
    }
    let meta = std::fs::metadata(dir)
        .map_err(|e| fail(format!("socket directory {}: {e}", dir.display())))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(format!(
            "the socket directory {} belongs to uid {}, not to the broker's user (uid {me}): \
             whoever owns it could put their own socket there; use a directory only the \
             broker's user can write (a missing one is created 0700)",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(fail(format!(
            "the socket directory {} is writable by others (mode {:o}): anyone could put \
             their own socket there; chmod 700 it, or use a directory only the broker's user \
             can write (a missing one is created 0700)",
            dir.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

impl Supervisor {
    /// Starts `command` and supervises it until `stop` is cancelled.
    pub fn spawn(
        alias: &str,
        command: &[String],
        endpoint: &Endpoint,
        stop: CancellationToken,
    ) -> Result<Self, PluginError> {
        if command.is_empty() {
            return Err(PluginError::Config {
                alias: alias.to_owned(),
                message: "command: must name a program".into(),
            });
        }
        if let Endpoint::Unix(path) = endpoint {
            private_socket_dir(alias, path)?;
        }
        let first = spawn_child(alias, command, endpoint).map_err(|cause| PluginError::Spawn {
            alias: alias.to_owned(),
            command: command.to_vec(),
            cause,
        })?;
        info!(plugin = %alias, pid = %pid_text(first.id()), command = %command.join(" "), "plugin process started");
        let (alias, command, endpoint) = (alias.to_owned(), command.to_vec(), endpoint.clone());
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut child = Some(first);
            let mut backoff = Duration::from_millis(100);
            loop {
                let started = std::time::Instant::now();
                if let Some(mut running) = child.take() {
                    let status = tokio::select! {
                        status = running.wait() => status,
                        _ = token.cancelled() => {
                            terminate(&running);
                            let _ = running.wait().await;
                            return;
                        }
                    };
                    warn!(plugin = %alias, status = %exit_text(&status), "plugin process exited; restarting");
                    if started.elapsed() > Duration::from_secs(10) {
                        backoff = Duration::from_millis(100);
                    }
                }
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                match spawn_child(&alias, &command, &endpoint) {
                    Ok(c) => {
                        info!(plugin = %alias, pid = %pid_text(c.id()), "plugin process restarted");
                        child = Some(c);
                    }
                    Err(e) => {
                        warn!(plugin = %alias, cause = %e, "cannot restart plugin process; will retry")
                    }
                }
            }
        });
        Ok(Self { stop, task })
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace`; it is killed after.
    pub async fn stop(self, grace: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            // Aborting drops the child, and kill_on_drop sends SIGKILL.
            task.abort();
            let _ = task.await;
        }
    }
}

/// A child's pid for the log: tokio has none for a child that was already reaped.
fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "none (already exited)".into(), |p| p.to_string())
}

/// How a child ended, as an operator reads it: `exit code 3`, `signal 9 (SIGKILL)`.
fn exit_text(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Err(err) => format!("unknown (waiting for it failed: {err})"),
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => match nix::sys::signal::Signal::try_from(signal) {
                Ok(name) => format!("signal {signal} ({name})"),
                Err(_) => format!("signal {signal}"),
            },
            (None, None) => status.to_string(),
        },
    }
}
