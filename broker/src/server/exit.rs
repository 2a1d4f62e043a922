//! Why a connection ended, and what each ending tells the client and the plugins.

use crate::plugins::client_info::EndReason;
use crate::plugins::login::Refusal;
use crate::protocol;

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum Exit {
    /// The client sent DISCONNECT: the will is discarded.
    Disconnect,
    /// An MQTT 5 client sent DISCONNECT 0x04, "disconnect with will message": the will
    /// is published.
    DisconnectWithWill,
    /// The client closed the socket without DISCONNECT.
    Closed,
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The client broke the protocol or sent a malformed packet.
    Protocol(protocol::Error),
    /// Nothing was received for 1.5 times the keepalive.
    KeepAlive,
    /// Another connection claimed the client id.
    Takeover,
    /// The broker is shutting down.
    Shutdown,
    /// A re-authentication failed (MQTT 5).
    Refused(Refusal),
    /// The store could not commit what this connection's output acknowledges: the
    /// output is not written, the client sends again.
    Storage(crate::storage::writer::StoreFailed),
    /// A subscriber's queue stayed full past `mqtt.backpressure_timeout` under
    /// `mqtt.queue_full: backpressure`: the PUBLISH with this packet id is not
    /// acknowledged.
    QueueFull(u16),
}

impl Exit {
    /// How `client_disconnected` reports it.
    pub(super) fn reported(&self) -> (EndReason, String) {
        match self {
            Exit::Disconnect => (EndReason::Clean, String::new()),
            Exit::DisconnectWithWill => (EndReason::Clean, "with will message".into()),
            Exit::Closed => (EndReason::ConnectionLost, "closed by the client".into()),
            Exit::Io(e) => (EndReason::ConnectionLost, e.to_string()),
            Exit::Protocol(e) => (EndReason::ProtocolError, e.to_string()),
            Exit::KeepAlive => (EndReason::KeepaliveTimeout, String::new()),
            Exit::Takeover => (EndReason::Takeover, String::new()),
            Exit::Shutdown => (EndReason::Shutdown, String::new()),
            Exit::Refused(_) => (EndReason::NotAuthorized, "re-authentication failed".into()),
            Exit::Storage(e) => (EndReason::ConnectionLost, e.to_string()),
            Exit::QueueFull(_) => (
                EndReason::ConnectionLost,
                "a subscriber's queue stayed full (mqtt.queue_full: backpressure)".into(),
            ),
        }
    }

    /// The MQTT 5 DISCONNECT the broker sends for it, if any: the reason code and a
    /// reason string.
    pub(super) fn disconnect(&self) -> Option<(u8, String)> {
        match self {
            Exit::Protocol(e) => Some((e.disconnect_code(), e.to_string())),
            Exit::KeepAlive => Some((0x8D, "keep alive timeout".into())),
            Exit::Takeover => Some((0x8E, "session taken over".into())),
            Exit::Shutdown => Some((0x8B, "server shutting down".into())),
            Exit::Refused(refusal) => Some(refusal.disconnect()),
            Exit::QueueFull(_) => Some((
                0x97,
                "quota exceeded: a subscriber's queue stayed full; send again later".into(),
            )),
            Exit::Disconnect
            | Exit::DisconnectWithWill
            | Exit::Closed
            | Exit::Io(_)
            | Exit::Storage(_) => None,
        }
    }
}
