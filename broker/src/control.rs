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
//! Abstract names have no owner, so the client checks the other way too: the process
//! that answers must be pid N itself, of the client's user or root. A stranger who
//! binds the name first (or a broker of another pid namespace sharing the network
//! namespace, where every broker is pid 1) cannot pass for the broker asked. The broker
//! binds its name before it starts plugins and listeners, and says loudly when it
//! cannot.
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
use tracing::{error, info, warn};

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
    /// Something answered under that pid's name that is not that process, or not of
    /// this user: nothing it says is believed.
    #[error(
        "the control socket of process {pid} is held by another process ({holder}): nothing it answers is believed; `kill -HUP {pid}` reloads by signal"
    )]
    Impostor {
        /// The pid asked for.
        pid: u32,
        /// Who holds it: its pid (0 when in another pid namespace) and uid.
        holder: String,
    },
    /// No answer within the timeout: the broker may still apply the reload.
    #[error(
        "no answer from process {pid} within {waited:?}: the reload may still be applied (see the broker's log)"
    )]
    NoAnswer {
        /// The pid asked for.
        pid: u32,
        /// How long the client waited.
        waited: Duration,
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

/// Binds this process's control socket. Call it first thing, before plugins and
/// listeners start, so that the name is the broker's before anyone else can take it.
/// A name already taken is logged as an error and left out: `tandem reload` then
/// refuses to believe whoever holds it, and SIGHUP still reloads.
pub fn bind() -> Option<std::os::unix::net::UnixListener> {
    match address(std::process::id())
        .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => Some(l),
        Err(err) => {
            error!(cause = %err, "no control socket: `tandem reload` cannot reach this broker (SIGHUP still reloads)");
            None
        }
    }
}

/// Serves reload requests on `listener` (from [`bind`]) until `shutdown`.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let listener = match UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            error!(cause = %err, "no control socket: `tandem reload` cannot reach this broker (SIGHUP still reloads)");
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
        return reply(&mut stream, "refused not permitted").await;
    }
    let mut line = String::new();
    let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST));
    let request = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    if !matches!(request, Ok(Ok(_))) {
        return reply(&mut stream, "refused no readable request in time").await;
    }
    let answer = match line.trim_end() {
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
    reply(&mut stream, &answer).await
}

/// Writes one answer line (a reason spanning lines is joined), bounded in time: a
/// client that does not read cannot hold the socket.
async fn reply(stream: &mut UnixStream, answer: &str) -> std::io::Result<()> {
    let line = format!("{}\n", answer.replace('\n', " "));
    match tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(line.as_bytes())).await {
        Ok(written) => written,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
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
    // Whoever answers must be that very process, of this user or root.
    let holder = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| io(e.into()))?;
    let me = nix::unistd::geteuid().as_raw();
    let (holder_pid, holder_uid) = (holder.pid(), holder.uid());
    if u32::try_from(holder_pid).ok() != Some(pid) || (holder_uid != me && holder_uid != 0) {
        return Err(ControlError::Impostor {
            pid,
            holder: format!("pid {holder_pid}, uid {holder_uid}"),
        });
    }
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.write_all(b"reload\n").map_err(io)?;
    let mut line = String::new();
    let read = std::io::BufReader::new(std::io::Read::take(stream, 64 * 1024)).read_line(&mut line);
    match read {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(ControlError::NoAnswer {
                pid,
                waited: timeout,
            });
        }
        Err(e) => return Err(io(e)),
    }
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
