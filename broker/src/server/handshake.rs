//! From an accepted socket to a served client: read the CONNECT, settle the client id,
//! ask the auth chain, claim the session, then hand over to the [`Connection`] loop and,
//! when it ends, to its one way out.
//!
//! Each step that can refuse answers with a CONNACK refusal (when the client can be
//! told) and closes; nothing the client pipelined behind its CONNECT is served before the
//! auth chain has allowed it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::broker::Broker;
use crate::plugins::client::{ClientPlugins, wants_packet_events};
use crate::plugins::login::{Login, Refusal, Step, Verified};
use crate::protocol::{
    self, Auth, ConnAck, Connect, ConnectReason, Outbox, Packet, PacketSummary, Properties,
    ProtocolVersion, Wire,
};
use crate::router::topic;
use crate::server::connack::{client_max_packet, connack_properties};
use crate::server::connection::{Connection, session_expiry};
use crate::session::SessionState;
use crate::session::registry::{Claim, ClaimError};
use crate::stats::TopicIn;
use crate::transport::{MappedUsername, Origin};

/// Why CONNECT was not read.
enum ConnectError {
    Io(std::io::Error),
    Closed,
    Protocol(protocol::Error),
}

/// A CONNECT read and checked, with what came with it.
struct Hello {
    connect: Connect,
    /// The CONNECT's wire bytes when a plugin wants packet events, else empty.
    frame: Bytes,
    /// The client id: the CONNECT's, or one the broker assigned.
    client_id: ByteString,
    /// Whether the broker assigned it (an MQTT 5 CONNACK then says which).
    assigned: bool,
    /// Bytes read after the CONNECT (packets pipelined behind it): served once the
    /// client is allowed, dropped with the connection if it is refused.
    rbuf: BytesMut,
}

/// Reads bytes until a whole CONNECT is decoded.
///
/// `limit` bounds both the CONNECT (a larger one is an error as soon as its fixed header
/// is read) and the buffer: at most `limit` bytes are read in all, so what the client
/// pipelined behind its CONNECT (left in `buf` for the connection to serve once the
/// client is authenticated) is bounded too; the rest waits in the socket.
///
/// With `keep_frame`, the CONNECT's wire bytes are returned too (for packet events);
/// otherwise the returned bytes are empty.
async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    keep_frame: bool,
) -> Result<(Connect, Bytes), ConnectError> {
    read_until(rd, buf, limit, |buf| {
        Ok(protocol::decode_connect_frame(buf, limit)?
            .map(|(connect, frame)| (connect, if keep_frame { frame } else { Bytes::new() })))
    })
    .await
}

/// Reads into `buf` until `decode` takes a whole packet off it, reading no more than
/// `limit` bytes in all: a packet of at most `limit` bytes is whole within them (and one
/// that says it is larger is `decode`'s error as soon as its fixed header is read), so
/// what waits behind it stays in the socket.
async fn read_until<R: AsyncRead + Unpin, T>(
    rd: &mut R,
    buf: &mut BytesMut,
    limit: usize,
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, protocol::Error>,
) -> Result<T, ConnectError> {
    loop {
        match decode(buf) {
            Ok(Some(packet)) => return Ok(packet),
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e)),
        }
        // Never zero by the argument above; at least one byte all the same, so a
        // mistake there reads on rather than taking "no bytes" for a closed socket.
        let room = limit.saturating_sub(buf.len()).max(1) as u64;
        match rd.take(room).read_buf(buf).await {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}

/// Writes one CONNACK refusal and closes.
async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
) {
    refuse_with(wr, version, reason, None).await;
}

/// Writes one CONNACK refusal, with a Reason String for an MQTT 5 client, and closes.
async fn refuse_with<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
    reason_string: Option<ByteString>,
) {
    let mut out = Outbox::new(version, 4);
    out.packet(&Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: reason_string.filter(|_| version.is_v5()).map(|r| {
            Box::new(Properties {
                reason_string: Some(r),
                ..Properties::default()
            })
        }),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = wr.write_all(out.bytes()).await;
        let _ = wr.shutdown().await;
    })
    .await;
}

/// Lets the client in, or not: asks the auth chain about the CONNECT and, while a
/// plugin leads an MQTT 5 enhanced authentication exchange, sends the client each
/// challenge (AUTH 0x18) and reads its answer, within `mqtt.connect_timeout` for the
/// whole exchange and `mqtt.max_connect_packet_size` per packet. `Err(Some(_))`: refuse
/// with that CONNACK; `Err(None)`: just close (logged here).
async fn log_in<R, W>(
    login: &mut Login,
    rd: &mut R,
    wr: &mut W,
    rbuf: &mut BytesMut,
    broker: &Broker,
) -> Result<Verified, Option<Refusal>>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mqtt = &broker.config.mqtt;
    let deadline = tokio::time::Instant::now() + mqtt.connect_timeout;
    let wire = Wire::new(ProtocolVersion::V5, mqtt.connect_size_limit());
    let mut step = login.start().await;
    loop {
        let challenge = match step {
            Step::Allowed(verified) => return Ok(verified),
            Step::Refused(refusal) => return Err(Some(refusal)),
            Step::Challenge(challenge) => challenge,
        };
        let mut out = Outbox::new(ProtocolVersion::V5, 64);
        out.packet(&Packet::Auth(Auth {
            reason: Auth::CONTINUE,
            properties: Some(Box::new(Properties {
                authentication_method: Some(challenge.method),
                authentication_data: Some(challenge.data),
                user_properties: challenge.user_properties,
                ..Properties::default()
            })),
        }));
        let answer = tokio::time::timeout_at(deadline, async {
            wr.write_all(out.bytes()).await.map_err(ConnectError::Io)?;
            read_until(rd, rbuf, wire.max_packet_size(), |buf| {
                Ok(wire.decode(buf, false)?.map(|(packet, _)| packet))
            })
            .await
        })
        .await;
        let protocol_error = |what: &str| {
            broker.stats.protocol_error();
            warn!(
                what,
                "refusing CONNECT: the client broke the authentication exchange"
            );
            Err(Some(Refusal {
                code: ConnectReason::ProtocolError,
                reason: None,
            }))
        };
        step = match answer {
            Ok(Ok(Packet::Auth(auth))) if auth.reason == Auth::CONTINUE => {
                if !login.same_method(auth.properties.as_deref()) {
                    return protocol_error("an AUTH with another authentication method");
                }
                login.answer(auth.properties.as_deref()).await
            }
            Ok(Ok(Packet::Disconnect(_))) => {
                debug!("the client gave up the authentication exchange");
                return Err(None);
            }
            Ok(Ok(_)) => return protocol_error("a packet other than AUTH 0x18 before CONNACK"),
            Ok(Err(ConnectError::Protocol(err))) => {
                broker.stats.protocol_error();
                warn!(cause = %err, "closing connection: invalid packet in the authentication exchange");
                let code = match err {
                    protocol::Error::PacketTooLarge { .. } => ConnectReason::PacketTooLarge,
                    _ => ConnectReason::MalformedPacket,
                };
                return Err(Some(Refusal { code, reason: None }));
            }
            Ok(Err(_)) => {
                debug!("connection closed during the authentication exchange");
                return Err(None);
            }
            Err(_) => {
                info!(timeout = ?mqtt.connect_timeout,
                    "closing connection: the authentication exchange did not finish in time");
                return Err(None);
            }
        };
    }
}

/// A fresh client id for a clean client that sent none.
fn generated_client_id() -> ByteString {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("tandem-{:016x}", h.finish()).into()
}

/// Answers a connection over the connection limit: reads its CONNECT (briefly), sends
/// CONNACK "server unavailable" and closes, so the client learns at once instead of
/// hanging.
pub(crate) async fn refuse_over_limit(stream: TcpStream, connect_size_limit: usize) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(256);
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        read_connect(&mut rd, &mut buf, connect_size_limit, false),
    )
    .await;
    if let Ok(Ok((connect, _))) = read {
        refuse(&mut wr, connect.protocol, ConnectReason::ServerUnavailable).await;
    }
}

/// Serves one accepted connection until it ends.
///
/// Generic over the byte stream's halves: the listeners pass a TCP socket's owned halves
/// (one monomorphic copy, no indirection); tests and the fuzz target pass in-memory
/// streams. `handshake` is the connection's slot under `mqtt.max_handshakes`, given back
/// once the auth chain has answered.
pub(crate) async fn serve<R, W>(
    mut rd: R,
    mut wr: W,
    origin: Origin,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    handshake: OwnedSemaphorePermit,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let peer = origin.peer;
    let Some(mut hello) = hello(&mut rd, &mut wr, peer, &broker).await else {
        return;
    };
    let span = tracing::info_span!("connection", client_id = %hello.client_id, %peer, listener = %origin.listener);
    async move {
        match &origin.username {
            MappedUsername::Keep => {}
            MappedUsername::Replace(name) => {
                hello.connect.username = Some(name.as_str().into());
            }
            MappedUsername::Refuse(why) => {
                info!("refusing CONNECT: tls.use_identity_as_username is on and {why}");
                refuse(
                    &mut wr,
                    hello.connect.protocol,
                    ConnectReason::NotAuthorized,
                )
                .await;
                return;
            }
        }
        let mut login = Login::connect(
            &broker.plugins,
            &broker.stats,
            &hello.connect,
            &hello.client_id,
            &origin,
        );
        let version = hello.connect.protocol;
        // Boxed: the auth chain's plugin calls make this future about 11 KB, and inline it
        // would size every connection's task for its whole life, not only its login.
        let logging_in = Box::pin(log_in(
            &mut login,
            &mut rd,
            &mut wr,
            &mut hello.rbuf,
            &broker,
        ));
        let verified = match logging_in.await {
            Ok(verified) => {
                // Authenticated: the MQTT layer's own limits bound what it may send.
                if let Some(limit) = &origin.pre_auth {
                    limit.lift();
                }
                verified
            }
            Err(refusal) => {
                if let Some(refusal) = refusal {
                    // A Reason String only when it keeps the CONNACK within the
                    // client's maximum packet size (MQTT-3.2.2-19).
                    let room = client_max_packet(&hello.connect);
                    let reason = refusal.reason.filter(|r| r.len() + 16 <= room);
                    refuse_with(&mut wr, version, refusal.code, reason).await;
                }
                return;
            }
        };
        let grant = verified.grant.clone();
        let username = hello.connect.username.as_ref().map(|u| u.to_string());
        let plugins = login.client(&broker.plugins, verified, username, version);
        // Authenticated: no longer a handshake.
        drop(handshake);
        let Some((claim, state, session_present)) = take_session(&broker, &hello, &plugins).await
        else {
            refuse(
                &mut wr,
                hello.connect.protocol,
                ConnectReason::ClientIdentifierNotValid,
            )
            .await;
            return;
        };
        let assigned = hello.assigned.then_some(&hello.client_id);
        let connack = connack_properties(&broker, &hello.connect, assigned, grant);
        let Hello {
            connect,
            frame,
            rbuf,
            ..
        } = hello;
        let received = plugins.wants_packets_received().then(|| {
            // Raw bytes never carry the password (see plugin.proto's MqttPacket.raw).
            let frame = protocol::redacted_connect_frame(&connect, &frame);
            PacketSummary::of(
                &Packet::Connect(Box::new(connect.clone())),
                connect.protocol,
                frame,
            )
        });
        let (keep_alive, _) = broker
            .config
            .mqtt
            .keep_alive_for(connect.keep_alive, connect.protocol.is_v5());
        let mut conn = Connection::new(broker, rd, wr, rbuf, &connect, state, plugins);
        conn.start(&connect, session_present, connack, received)
            .await;
        let exit = conn.run(keep_alive, &claim.stop, &shutdown).await;
        // Boxed, as `log_in`: the ending (will, events, parking) runs once and its
        // future is about 9 KB.
        Box::pin(conn.finish(exit, claim, &shutdown)).await;
    }
    .instrument(span)
    .await;
}

/// Reads and checks the CONNECT (within `mqtt.connect_timeout`) and settles the client
/// id; `None` when the connection is to close (logged and counted here).
async fn hello<R, W>(rd: &mut R, wr: &mut W, peer: SocketAddr, broker: &Broker) -> Option<Hello>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mqtt = &broker.config.mqtt;
    let mut rbuf = BytesMut::with_capacity(4096);
    let keep_frame = wants_packet_events(&broker.plugins);
    let read = tokio::time::timeout(
        mqtt.connect_timeout,
        read_connect(rd, &mut rbuf, mqtt.connect_size_limit(), keep_frame),
    )
    .await;
    let (connect, frame) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(ConnectError::Protocol(protocol::Error::PacketTooLarge { size, max }))) => {
            broker.stats.connect_too_large();
            broker.stats.protocol_error();
            warn!(%peer, size, max, "closing connection: CONNECT larger than mqtt.max_connect_packet_size");
            return None;
        }
        Ok(Err(ConnectError::Protocol(protocol::Error::UnsupportedProtocolLevel(level)))) => {
            broker.stats.protocol_error();
            info!(%peer, level, "refusing unsupported protocol level");
            refuse(
                wr,
                ProtocolVersion::V3_1_1,
                ConnectReason::UnsupportedProtocolVersion,
            )
            .await;
            return None;
        }
        Ok(Err(ConnectError::Protocol(err))) => {
            broker.stats.protocol_error();
            warn!(%peer, cause = %err, "closing connection: invalid CONNECT");
            return None;
        }
        Ok(Err(ConnectError::Io(err))) => {
            debug!(%peer, cause = %err, "connection failed before CONNECT");
            return None;
        }
        Ok(Err(ConnectError::Closed)) => {
            debug!(%peer, "connection closed before CONNECT");
            return None;
        }
        Err(_) => {
            info!(%peer, timeout = ?mqtt.connect_timeout, "closing connection: no CONNECT in time");
            return None;
        }
    };
    if let Some(will) = &connect.will
        && let Err(levels) = topic::check_levels(&will.topic, mqtt.max_topic_levels)
    {
        broker.stats.protocol_error();
        broker.stats.limits.topic_levels(TopicIn::Will);
        warn!(
            %peer,
            levels,
            max = mqtt.max_topic_levels,
            "closing connection: will topic deeper than mqtt.max_topic_levels"
        );
        return None;
    }
    let assigned = connect.client_id.is_empty();
    let client_id = if assigned {
        // 3.1.1 lets the server assign an id to a clean session only (MQTT-3.1.3-8);
        // 3.1 requires an id of 1 to 23 characters; MQTT 5 allows it always (the
        // CONNACK says which id was assigned).
        let v5 = connect.protocol.is_v5();
        if (!connect.clean_start && !v5) || connect.protocol == ProtocolVersion::V3_1 {
            info!(%peer, "refusing empty client id for a persistent session");
            refuse(
                wr,
                connect.protocol,
                ConnectReason::ClientIdentifierNotValid,
            )
            .await;
            return None;
        }
        generated_client_id()
    } else {
        connect.client_id.clone()
    };
    Some(Hello {
        connect,
        frame,
        client_id,
        assigned,
        rbuf,
    })
}

/// Claims the client id for the identity the auth chain established and takes its
/// session: the stored one when the client resumes (session present), else a fresh one.
/// `None` when the id's session belongs to another identity
/// (`mqtt.session_takeover: same_identity`).
async fn take_session(
    broker: &Broker,
    hello: &Hello,
    plugins: &ClientPlugins,
) -> Option<(Claim, SessionState, bool)> {
    let identity = plugins.client().identity();
    let (claim, previous) = match broker.registry.claim(&hello.client_id, identity).await {
        Ok(claimed) => claimed,
        Err(ClaimError::OwnedByAnother) => {
            broker.stats.takeover_refused();
            info!(
                identity = ?identity,
                "refusing CONNECT: the client id's session belongs to another identity (mqtt.session_takeover: same_identity)"
            );
            return None;
        }
    };
    let clean_start = hello.connect.clean_start;
    // 3.1.1: clean session 0 is a persistent session. MQTT 5: the session expiry
    // interval decides, and clean start only whether a stored session is resumed.
    let (persistent, expiry) = match &hello.connect.protocol {
        ProtocolVersion::V5 => session_expiry(
            hello
                .connect
                .properties
                .as_ref()
                .and_then(|p| p.session_expiry_interval)
                .unwrap_or(0),
            broker.config.mqtt.session_expiry,
        ),
        _ => (!clean_start, None),
    };
    let (mut state, session_present) = match previous {
        Some(mut prev) if !clean_start && prev.persistent => {
            if let Some(will) = prev.pending_will.take() {
                // Back before its will's delay ran out: the will is not sent.
                let _ = will.send(false);
            }
            (prev, true)
        }
        prev => {
            if let Some(prev) = prev {
                broker.registry.discard(prev);
            }
            // A persistent session is written to the store (if any) from its first message.
            let mut fresh = SessionState::with_queue(
                hello.client_id.clone(),
                persistent,
                broker.config.mqtt.queue_bound(),
                broker.store.as_ref(),
            );
            // Nothing to check yet: no subscription.
            fresh.checked_generation = plugins.generation();
            (fresh, false)
        }
    };
    state.persistent = persistent;
    state.expiry = expiry;
    // Subscriptions taken over from another identity (`session_takeover: any`) were
    // allowed for that identity: they are checked again for this one before anything
    // is delivered.
    if state.owner != identity {
        state.owner = identity.into();
        state.checked_generation = 0;
    }
    state.mailbox.set_online(true);
    state.save(None);
    broker
        .registry
        .serving(&hello.client_id, &claim, state.mailbox.clone());
    Some((claim, state, session_present))
}
