//! The local control socket: how `tandem reload --pid N` asks broker N to reload and
//! hears whether it did.
//!
//! A signal carries no answer: after `kill -HUP` the outcome is only in the broker's
//! log, so a script (or an operator at a prompt) cannot tell a refused reload from an
//! applied one. The broker therefore also listens on a Linux *abstract* unix socket
//! named after its pid, `@tandem/<pid>/control`: nothing on disk to clean up or to
//! collide with, gone with the process, and found by anyone who knows the pid, which
//! `kill` needs anyway. Only a peer running as the broker's own user (or root) is
//! served, checked with the socket's peer credentials, the same bound `kill` has.
//!
//! The protocol is one request line, `reload`, and one answer line: `ok <summary>` or
//! `refused <reason>`, then the broker closes. One request is served at a time, each
//! bounded in size and time, so a stuck client cannot hold the socket.

use std::io::{BufRead as _, Write as _};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::Broker;

/// The longest request line read.
const MAX_REQUEST: u64 = 64;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens under that pid's name: no such process, not a Tandem broker, or
    /// one in another network namespace (abstract sockets belong to one).
    #[error(
        "process {pid} has no Tandem control socket (no such broker, or it runs in another network namespace); `kill -HUP {pid}` reloads by signal, with the outcome only in its log"
    )]
    NotFound {
        /// The pid asked for.
        pid: u32,
    },
    /// The exchange failed.
    #[error("control socket of process {pid}: {source}")]
    Io {
        /// The pid asked for.
        pid: u32,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The broker answered something this client does not understand.
    #[error("control socket of process {pid}: unexpected answer `{answer}`")]
    Answer {
        /// The pid asked for.
        pid: u32,
        /// The answer.
        answer: String,
    },
}

/// What the broker answered to `reload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAnswer {
    /// Applied: the summary, as logged.
    Applied(String),
    /// Refused, with the reason; the configuration in force keeps serving.
    Refused(String),
}

/// The socket's address for the broker with `pid`.
fn address(pid: u32) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("tandem/{pid}/control"))
}

/// Listens on this process's control socket and serves reload requests until
/// `shutdown`. A socket that cannot be bound (another broker in this process, as
/// tests run several) is logged and left out: SIGHUP still reloads.
pub async fn serve(broker: Arc<Broker>, shutdown: CancellationToken) {
    let listener = match address(std::process::id())
        .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            UnixListener::from_std(l)
        }) {
        Ok(l) => l,
        Err(err) => {
            warn!(cause = %err, "no control socket: `tandem reload` cannot reach this broker (SIGHUP still reloads)");
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    warn!(cause = %err, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(err) = answer(&broker, stream).await {
            warn!(cause = %err, "control socket: request failed");
        }
    }
}

/// Serves one request on `stream`.
async fn answer(broker: &Broker, mut stream: UnixStream) -> std::io::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    let peer = stream.peer_cred()?;
    if peer.uid() != me && peer.uid() != 0 {
        warn!(
            uid = peer.uid(),
            "control socket: refusing a client of another user"
        );
        return stream.write_all(b"refused not permitted\n").await;
    }
    let mut line = String::new();
    let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(read) => {
            read?;
        }
        Err(_) => return stream.write_all(b"refused no request in time\n").await,
    }
    let reply = match line.trim_end() {
        "reload" => {
            info!("control socket: reload requested");
            match crate::reload::reload(broker).await {
                Ok(summary) => format!("ok {}", crate::reload::describe(&summary)),
                Err(err) => {
                    tracing::error!(
                        "reload refused; the configuration in force keeps serving: {err}"
                    );
                    format!("refused {err}")
                }
            }
        }
        other => format!("refused unknown request `{}`", other.escape_debug()),
    };
    // One line each way: a reason spanning lines is joined.
    let reply = reply.replace('\n', " ");
    stream.write_all(format!("{reply}\n").as_bytes()).await
}

/// Asks the broker with `pid` to reload, waiting up to `timeout` for the answer (a
/// reload that starts plugins takes their start-up time). Blocking: for the CLI.
pub fn request_reload(pid: u32, timeout: Duration) -> Result<ReloadAnswer, ControlError> {
    let io = |source| ControlError::Io { pid, source };
    let addr = address(pid).map_err(io)?;
    let mut stream = match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(ControlError::NotFound { pid });
        }
        Err(err) => return Err(io(err)),
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(b"reload\n").map_err(io)?;
    let mut line = String::new();
    std::io::BufReader::new(std::io::Read::take(stream, 64 * 1024))
        .read_line(&mut line)
        .map_err(io)?;
    let line = line.trim_end();
    if let Some(summary) = line.strip_prefix("ok ") {
        Ok(ReloadAnswer::Applied(summary.to_owned()))
    } else if let Some(reason) = line.strip_prefix("refused ") {
        Ok(ReloadAnswer::Refused(reason.to_owned()))
    } else {
        Err(ControlError::Answer {
            pid,
            answer: line.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_without_a_broker_is_not_found() {
        // Pid 0 is never a process: nothing listens under its name.
        let err = request_reload(0, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, ControlError::NotFound { pid: 0 }), "{err}");
        assert!(err.to_string().contains("kill -HUP 0"), "{err}");
    }
}
