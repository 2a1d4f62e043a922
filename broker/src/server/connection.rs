//! One client connection: a single task that reads, routes and writes.
//!
//! The task owns its socket halves, its read and write buffers and (while connected)
//! its [`SessionState`]. Each turn of the loop waits for whichever comes first: bytes
//! from the socket (every whole packet in the buffer is handled before the next read),
//! messages from the session's queue (drained while the inflight window has room, up to
//! a write-buffer's worth), the keepalive deadline, a takeover or shutdown. Whatever the
//! turn encoded is written with one `write_all`, so a burst of deliveries costs one
//! system call, not one per packet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use tandem_proto::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, warn};

use super::Broker;
use crate::plugins::cache::{CachedAction, DecisionCache, Put};
use crate::plugins::events::EventHub;
use crate::plugins::{PluginSet, TopicOutcome};
use crate::protocol::{
    self, ConnAck, Connect, ConnectReason, LastWill, Packet, PacketType, ProtocolVersion, QoS,
    SubAck, SubscribeReason, UnsubAck, v4,
};
use crate::router::{Delivery, Message, Subscriber, topic};
use crate::session::registry::{Claim, ClaimError};
use crate::session::{Held, Offer, OutState, SessionState};
use crate::stats::TopicIn;

/// Encoded bytes past which a turn stops draining the queue and writes.
const WRITE_BATCH: usize = 64 * 1024;

/// First wait before a held check (see [`SessionState::held`]) is asked again; it
/// doubles per failure up to [`HOLD_BACKOFF_MAX`]. A plugin that is down answers at
/// once (circuit open), so retries cost little; the backoff keeps them from spinning.
const HOLD_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between two checks of a held delivery or will.
const HOLD_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a topic check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// Allowed: by a verdict, a cached one, `on_error: allow`, or no chain at all.
    Allowed,
    /// Denied by a verdict (or a cached one): final.
    Denied,
    /// Denied because a plugin failed (`on_error` applied): no verdict yet.
    Failed,
}

/// What becomes of one delivery after its RECEIVE check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receive {
    /// Write it to the client.
    Deliver,
    /// Skip it for this client: denied, or QoS 0 whose check failed (`on_error`).
    Skip,
    /// Hold it (and the queue behind it) and ask again: a QoS 1/2 delivery whose check
    /// failed with a plugin error.
    Hold,
    /// Drop it and count it: its check failed after a hold already ran out on this
    /// connection, and no verdict has come since.
    Expire,
}

/// A held delivery's next check, in a task of its own: waits out the backoff, then
/// asks the chain in force when it was scheduled. Yields that set's generation, the
/// outcome and when it asked. Aborted if the connection ends first.
type RetryCall = AbortOnDropHandle<(u64, TopicOutcome, Instant)>;

/// `$SYS/` belongs to the broker: no client publish, and no will, may write there.
fn reserved_for_broker(topic: &str) -> bool {
    topic.starts_with("$SYS/")
}

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT: the will is discarded.
    Disconnect,
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
}

impl Exit {
    fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Disconnect)
    }
}

/// Why CONNECT was not read.
enum ConnectError {
    Io(std::io::Error),
    Closed,
    Protocol(protocol::Error),
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
    let max_packet_size = limit;
    loop {
        let frame = match keep_frame {
            true => match protocol::check(buf, max_packet_size) {
                Ok(Some(h)) => Bytes::copy_from_slice(&buf[..h.frame_len()]),
                _ => Bytes::new(),
            },
            false => Bytes::new(),
        };
        match protocol::decode_connect(buf, max_packet_size) {
            Ok(Some(connect)) => return Ok((connect, frame)),
            Ok(None) => {}
            Err(e) => return Err(ConnectError::Protocol(e)),
        }
        // Never zero: a buffer of `limit` bytes holds a whole CONNECT of at most
        // `limit` bytes, which was decoded (or refused) above.
        let room = limit.saturating_sub(buf.len()) as u64;
        match rd.take(room).read_buf(buf).await {
            Ok(0) => return Err(ConnectError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ConnectError::Io(e)),
        }
    }
}

fn connack(reason: ConnectReason, session_present: bool) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason,
        properties: None,
    })
}

/// Writes one CONNACK refusal and closes.
async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: ProtocolVersion,
    reason: ConnectReason,
) {
    let mut out = BytesMut::with_capacity(4);
    protocol::encode(&connack(reason, false), version, &mut out);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = wr.write_all(&out).await;
        let _ = wr.shutdown().await;
    })
    .await;
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
    peer: SocketAddr,
    listener: Arc<str>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    handshake: OwnedSemaphorePermit,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut rbuf = BytesMut::with_capacity(4096);
    let mqtt = &broker.config.mqtt;

    let packet_events = broker
        .plugins
        .current()
        .events
        .wants(pb::EventKind::MqttPacketReceived);
    let (connect, connect_frame) = match tokio::time::timeout(
        mqtt.connect_timeout,
        read_connect(&mut rd, &mut rbuf, mqtt.connect_size_limit(), packet_events),
    )
    .await
    {
        Ok(Ok(read)) => read,
        Ok(Err(ConnectError::Protocol(protocol::Error::PacketTooLarge { size, max }))) => {
            broker.stats.connect_too_large();
            broker.stats.protocol_error();
            warn!(%peer, size, max, "closing connection: CONNECT larger than mqtt.max_connect_packet_size");
            return;
        }
        Ok(Err(ConnectError::Protocol(protocol::Error::UnsupportedProtocolLevel(level)))) => {
            broker.stats.protocol_error();
            info!(%peer, level, "refusing unsupported protocol level");
            refuse(
                &mut wr,
                ProtocolVersion::V3_1_1,
                ConnectReason::UnsupportedProtocolVersion,
            )
            .await;
            return;
        }
        Ok(Err(ConnectError::Protocol(err))) => {
            broker.stats.protocol_error();
            warn!(%peer, cause = %err, "closing connection: invalid CONNECT");
            return;
        }
        Ok(Err(ConnectError::Io(err))) => {
            debug!(%peer, cause = %err, "connection failed before CONNECT");
            return;
        }
        Ok(Err(ConnectError::Closed)) => {
            debug!(%peer, "connection closed before CONNECT");
            return;
        }
        Err(_) => {
            info!(%peer, timeout = ?mqtt.connect_timeout, "closing connection: no CONNECT in time");
            return;
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
        return;
    }
    let version = connect.protocol;
    let client_id = if connect.client_id.is_empty() {
        // 3.1.1 lets the server assign an id to a clean session only (MQTT-3.1.3-8);
        // 3.1 requires an id of 1 to 23 characters.
        if !connect.clean_start || version == ProtocolVersion::V3_1 {
            info!(%peer, "refusing empty client id for a persistent session");
            refuse(&mut wr, version, ConnectReason::ClientIdentifierNotValid).await;
            return;
        }
        generated_client_id()
    } else {
        connect.client_id.clone()
    };

    let span = tracing::info_span!("connection", client_id = %client_id, %peer);
    let connected = Connected {
        broker,
        rd,
        wr,
        rbuf,
        handshake,
        connect,
        connect_frame,
        client_id,
        peer,
        listener,
    };
    connected.serve(shutdown).instrument(span).await;
}

/// Queues an event for the plugins in `events` that want `kind` (nothing is built
/// otherwise).
async fn emit_to(
    events: &EventHub,
    client: Option<&Arc<pb::ClientRef>>,
    kind: pb::EventKind,
    topic: Option<&str>,
    build: impl Fn(bool) -> pb::event::Kind,
) {
    if events.wants(kind) {
        events.emit(kind, client, topic, build).await;
    }
}

/// Routes a message that passed its checks, on behalf of `client`, and emits its
/// events: broadcast, retained store or clear, and one QUEUED per offline session it
/// was queued for.
async fn route_message(
    broker: &Broker,
    events: &EventHub,
    client: Option<&Arc<pb::ClientRef>>,
    m: Arc<Message>,
) {
    let mut offline: Vec<ByteString> = Vec::new();
    let matched = if events.wants(pb::EventKind::RetainedMessage) {
        broker
            .router
            .publish_noting_offline(m.clone(), |id| offline.push(id.clone()))
    } else {
        broker.router.publish(m.clone())
    };
    emit_to(
        events,
        client,
        pb::EventKind::MessageBroadcast,
        Some(&m.topic),
        |payloads| {
            pb::event::Kind::MessageBroadcast(pb::MessageBroadcast {
                message: Some(pb_message(&m.topic, &m.payload, m.qos, m.retain, payloads)),
                matched_subscriptions: matched as u32,
            })
        },
    )
    .await;
    if m.retain {
        let action = if m.payload.is_empty() {
            pb::RetainedAction::Cleared
        } else {
            pb::RetainedAction::Stored
        };
        emit_to(
            events,
            client,
            pb::EventKind::RetainedMessage,
            Some(&m.topic),
            |payloads| {
                pb::event::Kind::RetainedMessage(pb::RetainedMessage {
                    action: action as i32,
                    message: Some(pb_message(&m.topic, &m.payload, m.qos, m.retain, payloads)),
                    session_client_id: String::new(),
                })
            },
        )
        .await;
    }
    for session in &offline {
        emit_to(
            events,
            client,
            pb::EventKind::RetainedMessage,
            Some(&m.topic),
            |payloads| {
                pb::event::Kind::RetainedMessage(pb::RetainedMessage {
                    action: pb::RetainedAction::Queued as i32,
                    message: Some(pb_message(&m.topic, &m.payload, m.qos, m.retain, payloads)),
                    session_client_id: session.to_string(),
                })
            },
        )
        .await;
    }
}

/// The TopicFilter request for `client` doing `action` on `topic`.
fn topic_request(
    client: &ClientIdentity,
    version: ProtocolVersion,
    action: CachedAction,
    topic: &str,
    qos: QoS,
    retain: bool,
) -> pb::TopicFilterRequest {
    pb::TopicFilterRequest {
        topic: topic.to_owned(),
        action: match action {
            CachedAction::Publish => pb::Action::Publish,
            CachedAction::Subscribe => pb::Action::Subscribe,
            CachedAction::Receive => pb::Action::Receive,
        } as i32,
        client_id: client.client_id.clone(),
        username: client.identity.clone(),
        connect_username: client.connect_username.clone(),
        attributes: client.attributes.clone(),
        qos: qos as u32,
        retain,
        protocol_version: pb_version(version) as i32,
        user_properties: Vec::new(),
        listener: client.listener.clone(),
        remote_addr: client.remote_addr.clone(),
    }
}

/// A will whose PUBLISH check failed with a plugin error, after its connection ended:
/// asks the topic-check chain in force (read again for every attempt, so a reload
/// applies) with backoff until a verdict comes or `topic-check.hold` runs out, and
/// publishes it if allowed. Runs in its own task so the connection's slot and the
/// client id are free meanwhile; a broker shutdown drops it.
async fn hold_will(
    broker: Arc<Broker>,
    client: ClientIdentity,
    event_client: Option<Arc<pb::ClientRef>>,
    version: ProtocolVersion,
    will: LastWill,
    shutdown: CancellationToken,
) {
    let since = Instant::now();
    let mut backoff = HOLD_BACKOFF_MIN;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                info!(topic = ?will.topic, "dropping a held will: the broker is shutting down");
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        let plugins = broker.plugins.current();
        let outcome = match &plugins.topic_check {
            Some(chain) => {
                let request = topic_request(
                    &client,
                    version,
                    CachedAction::Publish,
                    &will.topic,
                    will.qos,
                    will.retain,
                );
                chain.topic_filter(request).await
            }
            None => TopicOutcome {
                allowed: true,
                ..Default::default()
            },
        };
        if outcome.allowed {
            info!(topic = ?will.topic, held = ?since.elapsed(), "publishing a held will");
            let message = Arc::new(Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
            });
            route_message(&broker, &plugins.events, event_client.as_ref(), message).await;
            return;
        }
        if !outcome.from_error {
            broker.stats.topic_denied();
            debug!(topic = ?will.topic, "held will denied");
            return;
        }
        if since.elapsed() >= plugins.hold {
            broker.stats.hold_expired();
            warn!(topic = ?will.topic, hold = ?plugins.hold,
                "dropping a will: its PUBLISH check kept failing for topic-check.hold");
            return;
        }
        backoff = (backoff * 2).min(HOLD_BACKOFF_MAX);
    }
}

/// A message as events carry it; the payload only when the plugin asked for it.
fn pb_message(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    with_payload: bool,
) -> pb::Message {
    pb::Message {
        topic: topic.to_owned(),
        qos: qos as u32,
        retain,
        payload: if with_payload {
            payload.to_vec()
        } else {
            Vec::new()
        },
        payload_size: payload.len() as u32,
        properties: None,
    }
}

/// The decoded header fields of a packet, for packet events. `frame` is the whole packet
/// as on the wire; it is copied into the event only for plugins that asked for raw bytes.
fn packet_header(packet: &Packet, frame: &[u8]) -> pb::MqttPacket {
    let (packet_id, topic, qos, retain, dup, reason_code) = match packet {
        Packet::Publish(p) => (
            p.pkid,
            p.topic.to_string(),
            p.qos as u32,
            p.retain,
            p.dup,
            0,
        ),
        Packet::ConnAck(c) => (0, String::new(), 0, false, false, c.reason.v4_code()),
        Packet::PubAck(a) => (a.pkid, String::new(), 0, false, false, 0),
        Packet::PubRec(a) => (a.pkid, String::new(), 0, false, false, 0),
        Packet::PubRel(a) => (a.pkid, String::new(), 0, false, false, 0),
        Packet::PubComp(a) => (a.pkid, String::new(), 0, false, false, 0),
        Packet::Subscribe(s) => (s.pkid, String::new(), 0, false, false, 0),
        Packet::SubAck(s) => (s.pkid, String::new(), 0, false, false, 0),
        Packet::Unsubscribe(u) => (u.pkid, String::new(), 0, false, false, 0),
        Packet::UnsubAck(u) => (u.pkid, String::new(), 0, false, false, 0),
        _ => (0, String::new(), 0, false, false, 0),
    };
    pb::MqttPacket {
        packet_type: packet.packet_type() as i32,
        flags: u32::from(frame.first().copied().unwrap_or(0) & 0x0F),
        size: frame.len() as u32,
        packet_id: u32::from(packet_id),
        topic,
        qos,
        retain,
        dup,
        reason_code: u32::from(reason_code),
        raw: Vec::new(),
    }
}

/// A packet event's body, with the raw bytes for plugins that asked for them.
fn with_raw(header: &pb::MqttPacket, frame: &[u8], raw: bool) -> pb::MqttPacket {
    let mut packet = header.clone();
    if raw {
        packet.raw = frame.to_vec();
    }
    packet
}

/// Every whole packet in `buf` (bytes the broker is about to write), decoded back with
/// the broker's own codec: what packet events report as sent is what goes on the wire,
/// whichever code path wrote it. Only called when a plugin wants `MQTT_PACKET_SENT`.
fn written_packets(buf: &[u8], version: ProtocolVersion) -> Vec<(pb::MqttPacket, Bytes)> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Ok(Some(header)) = protocol::check(rest, usize::MAX) {
        let (frame, tail) = rest.split_at(header.frame_len());
        rest = tail;
        let body = Bytes::copy_from_slice(&frame[header.header_len..]);
        let packet = match version {
            ProtocolVersion::V3_1 | ProtocolVersion::V3_1_1 => v4::decode(header, body),
        };
        match packet {
            Ok(packet) => out.push((packet_header(&packet, frame), Bytes::copy_from_slice(frame))),
            // The broker's own encoder wrote it: this would be a codec bug, never the
            // client's doing; the packet goes out regardless.
            Err(e) => warn!(cause = %e, "cannot decode a packet the broker wrote"),
        }
    }
    out
}

fn pb_version(v: ProtocolVersion) -> pb::ProtocolVersion {
    match v {
        ProtocolVersion::V3_1 => pb::ProtocolVersion::Mqtt31,
        ProtocolVersion::V3_1_1 => pb::ProtocolVersion::Mqtt311,
    }
}

/// The Authenticate request for a CONNECT.
fn authenticate_request(
    connect: &Connect,
    client_id: &str,
    peer: SocketAddr,
    listener: &str,
) -> pb::AuthenticateRequest {
    pb::AuthenticateRequest {
        client_id: client_id.to_owned(),
        username: connect.username.as_ref().map(|u| u.to_string()),
        password: connect.password.as_ref().map(|p| p.to_vec()),
        remote_addr: peer.to_string(),
        listener: listener.to_owned(),
        protocol_version: pb_version(connect.protocol) as i32,
        clean_start: connect.clean_start,
        keepalive_secs: u32::from(connect.keep_alive),
        will: connect.will.as_ref().map(|w| pb::Will {
            topic: w.topic.to_string(),
            qos: w.qos as u32,
            retain: w.retain,
            payload: w.payload.to_vec(),
            delay_interval_secs: 0,
            properties: None,
        }),
        ..Default::default()
    }
}

/// A client whose CONNECT was read and whose id is settled.
struct Connected<R, W> {
    broker: Arc<Broker>,
    rd: R,
    wr: W,
    /// Bytes read after the CONNECT (packets pipelined behind it): served once the
    /// client is allowed, dropped with the connection if it is refused.
    rbuf: BytesMut,
    /// The slot under `mqtt.max_handshakes`, held until the auth chain has answered.
    handshake: OwnedSemaphorePermit,
    connect: Connect,
    /// The CONNECT's wire bytes when a plugin wants packet events, else empty.
    connect_frame: Bytes,
    client_id: ByteString,
    peer: SocketAddr,
    listener: Arc<str>,
}

impl<R, W> Connected<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    async fn serve(self, shutdown: CancellationToken) {
        let Connected {
            broker,
            rd,
            mut wr,
            rbuf,
            handshake,
            connect,
            connect_frame,
            client_id,
            peer,
            listener,
        } = self;
        let mqtt = &broker.config.mqtt;
        let version = connect.protocol;
        let mut attributes = HashMap::new();
        let mut identity = None;
        let plugins = broker.plugins.current();
        if let Some(auth) = &plugins.auth {
            let request = authenticate_request(&connect, &client_id, peer, &listener);
            let outcome = auth.authenticate(request).await;
            if !outcome.allowed {
                broker.stats.auth_denied();
                refuse(&mut wr, version, ConnectReason::NotAuthorized).await;
                return;
            }
            attributes = outcome.attributes;
            identity = outcome.identity;
        }
        // Who the client is from here on: session, topic checks and events all read it.
        let client = ClientIdentity::new(
            client_id.to_string(),
            identity,
            connect.username.as_ref().map(|u| u.to_string()),
            attributes,
            listener.to_string(),
            peer.to_string(),
        );
        if client.identity() != client.connect_username() {
            debug!(identity = ?client.identity(), username = ?client.connect_username(),
                "identity established by the auth chain");
        }
        // Authenticated: no longer a handshake.
        drop(handshake);
        let (claim, previous) = match broker.registry.claim(&client_id, client.identity()).await {
            Ok(claimed) => claimed,
            Err(ClaimError::OwnedByAnother) => {
                broker.stats.takeover_refused();
                info!(
                    identity = ?client.identity(),
                    "refusing CONNECT: the client id's session belongs to another identity (mqtt.session_takeover: same_identity)"
                );
                refuse(&mut wr, version, ConnectReason::ClientIdentifierNotValid).await;
                return;
            }
        };
        let mut session_present = false;
        let mut state = match previous {
            Some(prev) if !connect.clean_start && prev.persistent => {
                session_present = true;
                prev
            }
            prev => {
                if let Some(prev) = prev {
                    broker.registry.discard(prev);
                }
                let mut fresh = SessionState::new(
                    client_id.clone(),
                    !connect.clean_start,
                    mqtt.max_queued_messages,
                );
                // Nothing to check yet: no subscription.
                fresh.checked_generation = plugins.generation;
                fresh
            }
        };
        // Subscriptions taken over from another identity (`session_takeover: any`) were
        // allowed for that identity: they are checked again for this one before anything
        // is delivered.
        if state.owner != client.identity() {
            state.owner = client.identity().into();
            state.checked_generation = 0;
        }
        state.mailbox.set_online(true);
        broker
            .registry
            .serving(&client_id, &claim, state.mailbox.clone());

        // Built whether or not a plugin wants events now: a reload may add one.
        let event_client = Some(Arc::new(client.client_ref()));
        let mut conn = Connection {
            event_client,
            max_packet_size: mqtt.max_packet_size,
            max_inflight: mqtt.max_inflight as usize,
            broker: broker.clone(),
            rd,
            wr,
            rbuf,
            wbuf: BytesMut::with_capacity(8 * 1024),
            version,
            state,
            will: connect.will.clone(),
            checks: Some(TopicChecks {
                cache: DecisionCache::new(&plugins.cache),
                client,
                full_logged: false,
            }),
            purge_revoked: false,
            recheck_after: None,
            messages_in: [0; 3],
            bytes_in: 0,
            messages_out: [0; 3],
            pending_connected: None,
            plugins,
            retry: None,
            hold_backoff: HOLD_BACKOFF_MIN,
            gave_up: false,
        };
        protocol::encode(
            &connack(ConnectReason::Success, session_present),
            version,
            &mut conn.wbuf,
        );
        conn.resend_inflight().await;
        conn.resume_held();
        broker.stats.client_connected();
        if conn.plugins.events.wants(pb::EventKind::MqttPacketReceived) {
            let packet = Packet::Connect(connect.clone());
            // Raw bytes never carry the password (see plugin.proto's MqttPacket.raw).
            let frame = protocol::redacted_connect_frame(&connect, &connect_frame);
            conn.emit_packet(pb::EventKind::MqttPacketReceived, &packet, &frame)
                .await;
        }
        if conn.plugins.events.wants(pb::EventKind::ClientConnected) {
            // Emitted once the CONNACK is written (see `Connection::connected_written`).
            conn.pending_connected = Some(pb::ClientConnected {
                remote_addr: peer.to_string(),
                listener: listener.to_string(),
                protocol_version: pb_version(version) as i32,
                clean_start: connect.clean_start,
                keepalive_secs: u32::from(connect.keep_alive),
                session_present,
                session_expiry_interval_secs: 0,
            });
        }
        debug!(
            clean = connect.clean_start,
            keep_alive = connect.keep_alive,
            session_present,
            "client connected"
        );

        let keep_alive = (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
        let exit = conn.run(keep_alive, &claim.stop, &shutdown).await;
        conn.finish(exit, claim, &shutdown).await;
    }
}

/// The client as plugins see it: fixed for the connection, built once in
/// [`Connected::serve`] after the auth chain allowed it.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    client_id: String,
    /// The established identity: what the allowing Authenticate plugins set, else the
    /// CONNECT username (empty when neither). Sent as `username` to plugins.
    identity: String,
    /// The username as typed in CONNECT (empty when none): for audit only.
    connect_username: String,
    /// Session attributes from the allowing Authenticate plugins.
    attributes: HashMap<String, String>,
    listener: String,
    remote_addr: String,
}

impl ClientIdentity {
    /// `identity` is what the auth chain established, `None` when it set none (or there
    /// is no chain): the CONNECT `username` then stands.
    fn new(
        client_id: String,
        identity: Option<String>,
        username: Option<String>,
        attributes: HashMap<String, String>,
        listener: String,
        remote_addr: String,
    ) -> Self {
        let connect_username = username.unwrap_or_default();
        Self {
            client_id,
            identity: identity.unwrap_or_else(|| connect_username.clone()),
            connect_username,
            attributes,
            listener,
            remote_addr,
        }
    }

    /// The established identity: who the auth chain says the client is (the CONNECT
    /// username only when no allowing plugin set one; empty when there is neither).
    /// Everything that acts per user (topic checks, events, session ownership) reads
    /// this, never the CONNECT username.
    pub(crate) fn identity(&self) -> &str {
        &self.identity
    }

    /// The username as the client typed it in CONNECT (empty when none): for audit.
    pub(crate) fn connect_username(&self) -> &str {
        &self.connect_username
    }

    /// The client as events name it.
    fn client_ref(&self) -> pb::ClientRef {
        pb::ClientRef {
            client_id: self.client_id.clone(),
            username: self.identity.clone(),
            attributes: self.attributes.clone(),
            connect_username: self.connect_username.clone(),
        }
    }
}

/// Between revoked subscriptions and a retry of a re-check that failed.
const RECHECK_RETRY: Duration = Duration::from_secs(1);

/// What a connection needs to run topic checks.
struct TopicChecks {
    /// TopicFilter decisions of this session.
    cache: DecisionCache,
    /// Who the client is, as sent to plugins.
    client: ClientIdentity,
    /// Whether "cache full" was logged for this connection (it is counted every time).
    full_logged: bool,
}

/// A connected client.
struct Connection<R, W> {
    broker: Arc<Broker>,
    rd: R,
    wr: W,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    state: SessionState,
    will: Option<LastWill>,
    /// The session's decision cache and identity; `None` without a topic-check chain.
    checks: Option<TopicChecks>,
    /// The client as events name it; `None` when no plugin wants events.
    event_client: Option<Arc<pb::ClientRef>>,
    max_packet_size: usize,
    max_inflight: usize,
    /// Traffic not yet added to the shared counters (messages by QoS).
    messages_in: [u64; 3],
    bytes_in: u64,
    messages_out: [u64; 3],
    /// The `client_connected` event, held until the CONNACK has been written.
    pending_connected: Option<pb::ClientConnected>,
    /// The plugin set this connection uses, replaced after a reload at the next loop
    /// turn (see [`Connection::follow_reload`]).
    plugins: Arc<PluginSet>,
    /// The next check of the held delivery (`state.held`), polled by the run loop
    /// beside the socket, so the connection keeps reading and acknowledging meanwhile.
    retry: Option<RetryCall>,
    /// The wait before the next retry of the held delivery.
    hold_backoff: Duration,
    /// Set when a held delivery ran out of `topic-check.hold` with no verdict; cleared
    /// by the next verdict. Meanwhile a QoS 1/2 delivery whose check fails is dropped
    /// and counted at once instead of being held again, so a long outage costs one
    /// hold per connection, not one per message.
    gave_up: bool,
    /// Set when subscriptions were revoked: messages already queued through them are
    /// dropped instead of delivered, until the queue has been seen empty.
    purge_revoked: bool,
    /// When a re-check of the subscriptions that failed (a plugin error) may be tried
    /// again.
    recheck_after: Option<Instant>,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Serves the connection until it ends.
    ///
    /// Keepalive (MQTT 3.1.1 section 3.1.2.10): every byte read from the client counts
    /// as activity, and only `keep_alive` (1.5 times the client's value) without any
    /// closes. The timer is a deadline checked against the last read whenever it fires,
    /// so a busy client never meets it; while a write is blocked (the client reads
    /// slowly) the socket is still read, up to `max_packet_size` bytes buffered, so a
    /// client that keeps sending is not mistaken for a silent one.
    async fn run(
        &mut self,
        keep_alive: Option<Duration>,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Exit {
        let idle_limit = keep_alive.unwrap_or(Duration::from_secs(3600));
        let mut last_read = Instant::now();
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(idle);
        // Packets the client pipelined behind its CONNECT are served first, in order,
        // after the CONNACK already encoded.
        let mut input_pending = !self.rbuf.is_empty();
        // The client closed its side: what it sent is served, what was encoded for it
        // is written, then the connection ends.
        let mut eof = false;
        loop {
            self.follow_reload().await;
            if input_pending {
                input_pending = false;
                if let Err(exit) = self.handle_input().await {
                    return exit;
                }
            }
            if eof && self.wbuf.is_empty() {
                return Exit::Closed;
            }
            if !self.wbuf.is_empty() {
                let bytes = self.wbuf.len() as u64;
                let sent = self
                    .plugins
                    .events
                    .wants(pb::EventKind::MqttPacketSent)
                    .then(|| written_packets(&self.wbuf, self.version));
                let mut written = 0;
                while written < self.wbuf.len() {
                    let room = self.max_packet_size.saturating_sub(self.rbuf.len()) as u64;
                    let read_ahead = !eof && room > 0;
                    let mut ahead = (&mut self.rd).take(room);
                    tokio::select! {
                        res = self.wr.write(&self.wbuf[written..]) => match res {
                            Ok(0) => return Exit::Io(std::io::ErrorKind::WriteZero.into()),
                            Ok(n) => written += n,
                            Err(e) => return Exit::Io(e),
                        },
                        read = ahead.read_buf(&mut self.rbuf), if read_ahead => match read {
                            Ok(0) => eof = true,
                            Ok(n) => {
                                last_read = Instant::now();
                                self.bytes_in += n as u64;
                                input_pending = true;
                            }
                            Err(e) => return Exit::Io(e),
                        },
                        _ = stop.cancelled() => return Exit::Takeover,
                        _ = shutdown.cancelled() => return Exit::Shutdown,
                        _ = &mut idle => {
                            if keep_alive.is_some() && last_read.elapsed() >= idle_limit {
                                return Exit::KeepAlive;
                            }
                            idle.as_mut().reset(last_read + idle_limit);
                        }
                    }
                }
                self.wbuf.clear();
                self.broker.stats.add_sent(self.messages_out, bytes);
                self.messages_out = [0; 3];
                for (header, frame) in sent.into_iter().flatten() {
                    self.emit_packet_header(pb::EventKind::MqttPacketSent, &header, &frame)
                        .await;
                }
                self.connected_written().await;
                if input_pending || eof {
                    continue;
                }
            }
            let window_open = self.state.inflight.len() < self.max_inflight;
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Exit::Takeover,
                _ = shutdown.cancelled() => return Exit::Shutdown,
                read = self.rd.read_buf(&mut self.rbuf) => match read {
                    Ok(0) => return Exit::Closed,
                    Ok(n) => {
                        last_read = Instant::now();
                        self.bytes_in += n as u64;
                        if let Err(exit) = self.handle_input().await {
                            return exit;
                        }
                    }
                    Err(e) => return Exit::Io(e),
                },
                // Nothing is taken from the queue while a delivery is held: it keeps
                // its place, and the order of the session's messages with it.
                Some(delivery) = self.state.queue.recv(), if window_open && self.state.held.is_none() => {
                    self.follow_reload().await;
                    if !self.through_revoked(&delivery) {
                        self.deliver(delivery).await;
                    }
                    self.drain_queue().await;
                }
                done = Self::next_retry(&mut self.retry), if self.retry.is_some() => {
                    self.retry = None;
                    self.retry_done(done).await;
                }
                _ = &mut idle => {
                    if keep_alive.is_some() && last_read.elapsed() >= idle_limit {
                        return Exit::KeepAlive;
                    }
                    idle.as_mut().reset(last_read + idle_limit);
                }
            }
        }
    }

    /// Handles every whole packet buffered, then adds the traffic to the counters.
    async fn handle_input(&mut self) -> Result<(), Exit> {
        self.follow_reload().await;
        let packet_events = self.plugins.events.wants(pb::EventKind::MqttPacketReceived);
        let result = loop {
            // The frame's bytes, kept only for packet events, before decoding consumes them.
            let frame = match packet_events {
                true => match protocol::check(&self.rbuf, self.max_packet_size) {
                    Ok(Some(h)) => Bytes::copy_from_slice(&self.rbuf[..h.frame_len()]),
                    _ => Bytes::new(),
                },
                false => Bytes::new(),
            };
            match protocol::decode(&mut self.rbuf, self.version, self.max_packet_size) {
                Ok(Some(packet)) => {
                    if packet_events {
                        self.emit_packet(pb::EventKind::MqttPacketReceived, &packet, &frame)
                            .await;
                    }
                    if let Err(exit) = self.handle(packet).await {
                        break Err(exit);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Exit::Protocol(e)),
            }
        };
        self.broker
            .stats
            .add_received(self.messages_in, self.bytes_in);
        self.messages_in = [0; 3];
        self.bytes_in = 0;
        result
    }

    async fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(p) => {
                let max_levels = self.broker.config.mqtt.max_topic_levels;
                if let Err(levels) = topic::check_levels(&p.topic, max_levels) {
                    self.broker.stats.limits.topic_levels(TopicIn::Publish);
                    return Err(Exit::Protocol(protocol::Error::TooManyTopicLevels {
                        what: "PUBLISH topic",
                        levels,
                        max: max_levels,
                    }));
                }
                self.messages_in[p.qos as usize] += 1;
                self.emit(pb::EventKind::MessageReceived, Some(&p.topic), |payloads| {
                    pb::event::Kind::MessageReceived(pb::MessageReceived {
                        message: Some(pb_message(&p.topic, &p.payload, p.qos, p.retain, payloads)),
                        packet_id: u32::from(p.pkid),
                        dup: p.dup,
                    })
                })
                .await;
                let route = match p.qos {
                    QoS::AtMostOnce => true,
                    QoS::AtLeastOnce => {
                        v4::ack::write(PacketType::PubAck, p.pkid, &mut self.wbuf);
                        true
                    }
                    QoS::ExactlyOnce => {
                        v4::ack::write(PacketType::PubRec, p.pkid, &mut self.wbuf);
                        // A redelivered PUBLISH whose PUBREL has not come is not routed again.
                        self.state.incoming_qos2.insert(p.pkid)
                    }
                };
                // `$SYS/` belongs to the broker: clients cannot publish there.
                if route && reserved_for_broker(&p.topic) {
                    debug!(topic = %p.topic, "dropping a client publish to $SYS");
                    return Ok(());
                }
                // A denied publish is dropped; 3.1.1 has no way to tell the publisher, so
                // the acknowledgement above stands.
                if route
                    && self
                        .allowed(CachedAction::Publish, &p.topic, p.qos, p.retain)
                        .await
                {
                    let message = Arc::new(Message {
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos,
                        retain: p.retain,
                    });
                    // The message is kept for events only when a plugin wants them: no
                    // extra reference count on the hot path otherwise.
                    if self.plugins.events.any() {
                        self.route_with_events(message).await;
                    } else {
                        self.broker.router.publish(message);
                    }
                }
            }
            Packet::PubAck(a) => {
                self.state.inflight.ack(a.pkid);
            }
            Packet::PubRec(a) => {
                self.state.inflight.received(a.pkid);
                v4::ack::write(PacketType::PubRel, a.pkid, &mut self.wbuf);
            }
            Packet::PubRel(a) => {
                self.state.incoming_qos2.remove(&a.pkid);
                v4::ack::write(PacketType::PubComp, a.pkid, &mut self.wbuf);
            }
            Packet::PubComp(a) => {
                self.state.inflight.complete(a.pkid);
            }
            Packet::Subscribe(s) => {
                let mqtt = &self.broker.config.mqtt;
                let (max_levels, max_subscriptions) =
                    (mqtt.max_topic_levels, mqtt.max_subscriptions_per_client);
                // Copies of one filter are decided once, with the QoS of the last copy
                // (as if applied in order); each copy still gets its own SUBACK code.
                let mut slot_of = Vec::with_capacity(s.filters.len());
                let mut distinct: Vec<(ByteString, QoS)> = Vec::new();
                let mut index: foldhash::HashMap<&str, usize> = Default::default();
                for f in &s.filters {
                    let slot = *index.entry(&f.filter).or_insert_with(|| {
                        distinct.push((f.filter.clone(), f.options.qos));
                        distinct.len() - 1
                    });
                    distinct[slot].1 = f.options.qos;
                    slot_of.push(slot);
                }
                drop(index);
                let (mut invalid, mut too_deep, mut over_limit) = (0u64, 0u64, 0u64);
                let mut decided = Vec::with_capacity(distinct.len());
                let mut granted = Vec::new();
                for (filter, qos) in distinct {
                    if !topic::valid_filter(&filter) {
                        if invalid == 0 {
                            info!(filter = ?filter, "refusing invalid topic filter");
                        }
                        invalid += 1;
                        decided.push(Some(SubscribeReason::FILTER_INVALID));
                        continue;
                    }
                    if let Err(levels) = topic::check_levels(&filter, max_levels) {
                        self.broker.stats.limits.topic_levels(TopicIn::Subscribe);
                        if too_deep == 0 {
                            info!(
                                levels,
                                max = max_levels,
                                "refusing a topic filter deeper than mqtt.max_topic_levels"
                            );
                        }
                        too_deep += 1;
                        decided.push(Some(SubscribeReason::FILTER_INVALID));
                        continue;
                    }
                    if self.state.subscriptions.len() >= max_subscriptions
                        && !self.state.subscriptions.contains_key(&filter)
                    {
                        over_limit += 1;
                        // MQTT 5 "quota exceeded"; 0x80 under 3.1.1.
                        decided.push(Some(SubscribeReason::Failure(0x97)));
                        continue;
                    }
                    if !self
                        .allowed(CachedAction::Subscribe, &filter, qos, false)
                        .await
                    {
                        decided.push(Some(SubscribeReason::NOT_AUTHORIZED));
                        continue;
                    }
                    self.broker.router.subscribe(
                        &filter,
                        Subscriber {
                            session: self.state.id,
                            qos,
                            mailbox: self.state.mailbox.clone(),
                        },
                    );
                    self.state.subscriptions.insert(filter.clone(), qos);
                    debug!(filter = ?filter, ?qos, "subscribed");
                    decided.push(None);
                    granted.push((filter, qos));
                }
                if too_deep > 1 || invalid > 1 {
                    info!(invalid, too_deep, "refused topic filters in one SUBSCRIBE");
                }
                if over_limit > 0 {
                    self.broker.stats.limits.subscriptions_refused(over_limit);
                    info!(
                        refused = over_limit,
                        max = max_subscriptions,
                        "refusing subscriptions past mqtt.max_subscriptions_per_client"
                    );
                }
                let requested: Vec<(ByteString, QoS)> = s
                    .filters
                    .into_iter()
                    .map(|f| (f.filter, f.options.qos))
                    .collect();
                let reasons: Vec<SubscribeReason> = requested
                    .iter()
                    .zip(&slot_of)
                    .map(|((_, qos), slot)| {
                        decided[*slot].unwrap_or(SubscribeReason::Granted(*qos))
                    })
                    .collect();
                self.emit(pb::EventKind::ClientSubscribed, None, |_| {
                    pb::event::Kind::ClientSubscribed(pb::ClientSubscribed {
                        subscriptions: requested
                            .iter()
                            .zip(&reasons)
                            .map(|((filter, qos), reason)| pb::Subscription {
                                topic_filter: filter.to_string(),
                                requested_qos: *qos as u32,
                                reason_code: match reason {
                                    SubscribeReason::Granted(q) => *q as u32,
                                    SubscribeReason::Failure(code) => u32::from(*code),
                                },
                                ..Default::default()
                            })
                            .collect(),
                        user_properties: Vec::new(),
                    })
                })
                .await;
                let ack = Packet::SubAck(SubAck {
                    pkid: s.pkid,
                    reasons,
                    properties: None,
                });
                protocol::encode(&ack, self.version, &mut self.wbuf);
                // Retained messages follow the SUBACK through the session's own queue,
                // behind the inflight window like any other message: each once, however
                // many granted filters match it, and no more than the queue has room for.
                if !granted.is_empty() {
                    let room = self
                        .broker
                        .config
                        .mqtt
                        .max_queued_messages
                        .saturating_sub(self.state.mailbox.queued());
                    let (retained, full) =
                        self.broker.router.retained_for_subscribe(&granted, room);
                    if full {
                        info!(
                            queued = retained.len(),
                            "retained messages past the session queue's room not sent (mqtt.max_queued_messages)"
                        );
                    }
                    for (message, qos) in retained {
                        let offer = self.state.mailbox.offer(Delivery {
                            message,
                            qos,
                            retain: true,
                        });
                        if offer == Offer::Dropped {
                            self.broker.stats.add_dropped(1);
                        }
                    }
                }
            }
            Packet::Unsubscribe(u) => {
                for f in &u.filters {
                    self.broker.router.unsubscribe(f, self.state.id);
                    self.state.subscriptions.remove(f);
                }
                self.emit(pb::EventKind::ClientUnsubscribed, None, |_| {
                    pb::event::Kind::ClientUnsubscribed(pb::ClientUnsubscribed {
                        topic_filters: u.filters.iter().map(|f| f.to_string()).collect(),
                        user_properties: Vec::new(),
                    })
                })
                .await;
                let ack = Packet::UnsubAck(UnsubAck {
                    pkid: u.pkid,
                    reasons: Vec::new(),
                    properties: None,
                });
                protocol::encode(&ack, self.version, &mut self.wbuf);
            }
            Packet::PingReq => protocol::encode(&Packet::PingResp, self.version, &mut self.wbuf),
            Packet::Disconnect(_) => return Err(Exit::Disconnect),
            other @ (Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                return Err(Exit::Protocol(protocol::Error::Unexpected(
                    other.packet_type(),
                )));
            }
        }
        Ok(())
    }

    /// Queues an event for the plugins that want `kind` (nothing is built otherwise).
    async fn emit(
        &self,
        kind: pb::EventKind,
        topic: Option<&str>,
        build: impl Fn(bool) -> pb::event::Kind,
    ) {
        emit_to(
            &self.plugins.events,
            self.event_client.as_ref(),
            kind,
            topic,
            build,
        )
        .await;
    }

    /// If a reload put a new plugin set in force, uses it from now on. Cached topic
    /// decisions were made by the old chains (or old plugin configuration), so they go.
    /// Called before anything the set decides: each loop turn, each batch of input and
    /// each delivery, so no packet read after a reload is checked by the old set.
    ///
    /// The session's subscriptions are then checked again (SUBSCRIBE) by the set in
    /// force, once per generation: what it denies now is revoked before anything more
    /// is delivered (see [`Connection::recheck_subscriptions`]).
    async fn follow_reload(&mut self) {
        self.refresh_plugins();
        if self.state.checked_generation != self.plugins.generation {
            self.recheck_subscriptions().await;
        }
    }

    /// The plugin-set half of [`follow_reload`](Self::follow_reload), for one decision
    /// (a retried check, the will) that must use the set in force but has no reason to
    /// re-check every subscription.
    fn refresh_plugins(&mut self) {
        if self.broker.plugins.generation() != self.plugins.generation {
            self.plugins = self.broker.plugins.current();
            if let Some(checks) = &mut self.checks {
                checks.cache = DecisionCache::new(&self.plugins.cache);
            }
            debug!(generation = self.plugins.generation, "plugin set reloaded");
        }
    }

    /// Checks every subscription of the session with SUBSCRIBE against the topic-check
    /// chain in force and revokes those it denies: removed from the router and the
    /// session, counted, logged, reported as `client_unsubscribed`, and messages already
    /// queued through them are not delivered. A check that fails (a plugin error, not a
    /// DENY) keeps the subscription and is tried again after [`RECHECK_RETRY`]:
    /// deliveries stay subject to RECEIVE meanwhile.
    async fn recheck_subscriptions(&mut self) {
        let generation = self.plugins.generation;
        let now = Instant::now();
        if self.recheck_after.is_some_and(|at| now < at) {
            return;
        }
        let plugins = self.plugins.clone();
        if plugins.topic_check.is_none() || self.state.subscriptions.is_empty() {
            self.state.checked_generation = generation;
            return;
        }
        let mut subscriptions: Vec<(ByteString, QoS)> = self
            .state
            .subscriptions
            .iter()
            .map(|(f, q)| (f.clone(), *q))
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut revoked = Vec::new();
        let mut failed = false;
        for (filter, qos) in subscriptions {
            let checked = self
                .check(CachedAction::Subscribe, &filter, qos, false)
                .await;
            if checked == Checked::Failed {
                failed = true;
                continue;
            }
            if checked == Checked::Denied {
                self.broker.router.unsubscribe(&filter, self.state.id);
                self.state.subscriptions.remove(&filter);
                self.broker.stats.subscription_revoked();
                info!(
                    filter = ?filter,
                    generation,
                    "subscription revoked: the topic-check chain in force denies it"
                );
                revoked.push(filter);
            }
        }
        if failed {
            self.recheck_after = Some(now + RECHECK_RETRY);
            warn!(
                generation,
                retry_in = ?RECHECK_RETRY,
                "could not re-check every subscription (plugin error); kept until a check answers"
            );
        } else {
            self.recheck_after = None;
            self.state.checked_generation = generation;
        }
        if !revoked.is_empty() {
            self.purge_revoked = true;
            self.emit(pb::EventKind::ClientUnsubscribed, None, |_| {
                pb::event::Kind::ClientUnsubscribed(pb::ClientUnsubscribed {
                    topic_filters: revoked.iter().map(|f| f.to_string()).collect(),
                    user_properties: Vec::new(),
                })
            })
            .await;
        }
    }

    /// Whether a queued delivery came through a subscription revoked since (it matches
    /// none of the session's filters now); only looked at after a revocation.
    fn through_revoked(&self, delivery: &Delivery) -> bool {
        self.purge_revoked
            && !self
                .state
                .subscriptions
                .keys()
                .any(|f| topic::matches(f, &delivery.message.topic))
    }

    /// Emits `client_connected` if it is still held: after the first write (which
    /// carries the CONNACK), or at the end of a connection whose CONNACK could not be
    /// written, so that every `client_disconnected` follows a `client_connected`.
    async fn connected_written(&mut self) {
        if let Some(connected) = self.pending_connected.take() {
            self.emit(pb::EventKind::ClientConnected, None, |_| {
                pb::event::Kind::ClientConnected(connected.clone())
            })
            .await;
        }
    }

    /// A packet event (`MQTT_PACKET_RECEIVED` or `MQTT_PACKET_SENT`) for `packet`, whose
    /// wire form is `frame`.
    async fn emit_packet(&self, kind: pb::EventKind, packet: &Packet, frame: &[u8]) {
        let header = packet_header(packet, frame);
        self.emit_packet_header(kind, &header, frame).await;
    }

    async fn emit_packet_header(&self, kind: pb::EventKind, header: &pb::MqttPacket, frame: &[u8]) {
        self.emit(kind, None, |raw| {
            let packet = Some(with_raw(header, frame, raw));
            match kind {
                pb::EventKind::MqttPacketSent => {
                    pb::event::Kind::MqttPacketSent(pb::MqttPacketSent { packet })
                }
                _ => pb::event::Kind::MqttPacketReceived(pb::MqttPacketReceived { packet }),
            }
        })
        .await;
    }

    /// Routes a message that passed its checks and emits its events.
    async fn route_with_events(&self, message: Arc<Message>) {
        route_message(
            &self.broker,
            &self.plugins.events,
            self.event_client.as_ref(),
            message,
        )
        .await;
    }

    /// The decision without asking a plugin: `Some(true)` without a topic-check chain,
    /// the cached decision on a hit, `None` when the chain must be asked. Reads the
    /// clock itself: a decision made after idle time (a will, a delivery to a client
    /// that sends nothing) must not see a cached entry past its TTL.
    fn quick_check(&mut self, action: CachedAction, topic: &str) -> Option<bool> {
        if self.plugins.topic_check.is_none() {
            return Some(true);
        }
        let Some(checks) = &mut self.checks else {
            return Some(true);
        };
        let decided = checks.cache.get(action, topic, Instant::now());
        if decided == Some(false) {
            debug!(topic = ?topic, ?action, "topic check denied (cached)");
        }
        decided
    }

    /// Whether the client may perform `action` on `topic`: the cache first, then the
    /// topic-check chain. Always true without a chain. A plugin failure denies (its
    /// `on_error`), as a verdict would.
    async fn allowed(
        &mut self,
        action: CachedAction,
        topic: &ByteString,
        qos: QoS,
        retain: bool,
    ) -> bool {
        self.check(action, topic, qos, retain).await == Checked::Allowed
    }

    /// The cache first, then the topic-check chain; tells a verdict from a failure.
    async fn check(
        &mut self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Checked {
        match self.quick_check(action, topic) {
            Some(true) => Checked::Allowed,
            Some(false) => Checked::Denied,
            None => self.ask_chain(action, topic, qos, retain).await,
        }
    }

    /// The TopicFilter request for this client.
    fn topic_request(
        &self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Option<pb::TopicFilterRequest> {
        let checks = self.checks.as_ref()?;
        Some(topic_request(
            &checks.client,
            self.version,
            action,
            topic,
            qos,
            retain,
        ))
    }

    /// Asks the topic-check chain and caches the answer as the plugins allow.
    async fn ask_chain(
        &mut self,
        action: CachedAction,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Checked {
        let plugins = self.plugins.clone();
        let (Some(chain), Some(request)) = (
            &plugins.topic_check,
            self.topic_request(action, topic, qos, retain),
        ) else {
            return Checked::Allowed;
        };
        let asked_at = Instant::now();
        let outcome = chain.topic_filter(request).await;
        self.settle_check(action, topic, outcome, asked_at)
    }

    /// Counts a chain's outcome, caches it as the plugins allow, and says what it was.
    fn settle_check(
        &mut self,
        action: CachedAction,
        topic: &str,
        outcome: TopicOutcome,
        asked_at: Instant,
    ) -> Checked {
        if !outcome.allowed {
            self.broker.stats.topic_denied();
        }
        if !outcome.from_error {
            // A verdict: the chain answers again.
            self.gave_up = false;
        }
        if let (Some(ttl), Some(checks)) = (outcome.cache_ttl, &mut self.checks)
            && checks
                .cache
                .put(action, topic, outcome.allowed, ttl, asked_at)
                == Put::Full
        {
            self.broker.stats.topic_cache_full();
            if !checks.full_logged {
                checks.full_logged = true;
                info!(
                    entries = checks.cache.len(),
                    bytes = checks.cache.bytes(),
                    max_entries = self.plugins.cache.max_entries,
                    max_bytes = self.plugins.cache.max_bytes,
                    "topic decision cache full; further decisions are not cached until entries expire"
                );
            }
        }
        match (outcome.allowed, outcome.from_error) {
            (true, _) => Checked::Allowed,
            (false, false) => Checked::Denied,
            (false, true) => Checked::Failed,
        }
    }

    /// What a check's result means for a delivery of `qos`.
    fn receive(&self, checked: Checked, qos: QoS) -> Receive {
        match checked {
            Checked::Allowed => Receive::Deliver,
            Checked::Denied => Receive::Skip,
            // QoS 0 promises nothing: `on_error` stands.
            Checked::Failed if qos == QoS::AtMostOnce => Receive::Skip,
            Checked::Failed if self.gave_up => Receive::Expire,
            Checked::Failed => Receive::Hold,
        }
    }

    /// The RECEIVE decision for one delivery to this client: the one place it is made
    /// (queued messages, resumed sessions, anything resent). A delivery is never
    /// written unchecked: a QoS 1/2 delivery whose check fails with a plugin error is
    /// to be held (see [`Connection::hold`]), not written and not lost.
    async fn check_receive(&mut self, delivery: &Delivery) -> Receive {
        let m = &delivery.message;
        let checked = self
            .check(
                CachedAction::Receive,
                &m.topic,
                delivery.qos,
                delivery.retain,
            )
            .await;
        self.receive(checked, delivery.qos)
    }

    /// Checks one delivery (RECEIVE) and writes, skips, holds or drops it.
    async fn deliver(&mut self, delivery: Delivery) {
        match self.check_receive(&delivery).await {
            Receive::Deliver => self.write_delivery(delivery),
            Receive::Skip => {}
            Receive::Hold => self.hold(delivery),
            Receive::Expire => self.expire(&delivery),
        }
    }

    /// Encodes one checked delivery, entering it into the inflight window if QoS > 0.
    fn write_delivery(&mut self, delivery: Delivery) {
        self.messages_out[delivery.qos as usize] += 1;
        let pkid = match delivery.qos {
            QoS::AtMostOnce => 0,
            _ => self.state.inflight.push(delivery.clone()),
        };
        let m = &delivery.message;
        v4::publish::write_parts(
            &m.topic,
            &m.payload,
            delivery.qos,
            pkid,
            false,
            delivery.retain,
            &mut self.wbuf,
        );
    }

    /// Holds a delivery whose RECEIVE check failed with a plugin error: nothing more is
    /// taken from the queue until it is decided, and its check is asked again with
    /// backoff beside the connection's other work.
    fn hold(&mut self, delivery: Delivery) {
        self.broker.stats.message_held();
        info!(topic = ?delivery.message.topic, qos = ?delivery.qos, hold = ?self.plugins.hold,
            "RECEIVE check failed (plugin error); holding the delivery and the queue behind it");
        self.state.held = Some(Held {
            delivery,
            since: Instant::now(),
        });
        self.hold_backoff = HOLD_BACKOFF_MIN;
        self.schedule_retry(self.hold_backoff);
    }

    /// Drops a delivery whose check kept failing past `topic-check.hold`, and counts it.
    fn expire(&mut self, delivery: &Delivery) {
        self.broker.stats.hold_expired();
        if self.gave_up {
            debug!(topic = ?delivery.message.topic, "dropping a delivery: RECEIVE check failing since the hold ran out");
        } else {
            self.gave_up = true;
            warn!(topic = ?delivery.message.topic, hold = ?self.plugins.hold,
                "dropping a delivery: its RECEIVE check kept failing for topic-check.hold; \
                 further deliveries whose check fails are dropped until a plugin answers");
        }
    }

    /// After a session resumed with a held delivery: the hold starts again for this
    /// connection, and the check is asked at once.
    fn resume_held(&mut self) {
        if let Some(held) = &mut self.state.held {
            held.since = Instant::now();
            self.hold_backoff = HOLD_BACKOFF_MIN;
            self.schedule_retry(Duration::ZERO);
        }
    }

    /// Schedules the next check of the held delivery, `after` from now, against the
    /// plugin set in force now.
    fn schedule_retry(&mut self, after: Duration) {
        let Some(held) = &self.state.held else {
            return;
        };
        let d = &held.delivery;
        let request = self.topic_request(CachedAction::Receive, &d.message.topic, d.qos, d.retain);
        let plugins = self.plugins.clone();
        let at = Instant::now() + after;
        let call = async move {
            tokio::time::sleep_until(at).await;
            let asked_at = Instant::now();
            let outcome = match (&plugins.topic_check, request) {
                (Some(chain), Some(request)) => chain.topic_filter(request).await,
                _ => TopicOutcome {
                    allowed: true,
                    ..Default::default()
                },
            };
            (plugins.generation, outcome, asked_at)
        }
        .instrument(tracing::Span::current());
        self.retry = Some(AbortOnDropHandle::new(tokio::spawn(call)));
    }

    /// The scheduled retry's outcome (pending forever when none is scheduled; the run
    /// loop polls it only when one is). `None` if its task did not finish (panicked).
    async fn next_retry(retry: &mut Option<RetryCall>) -> Option<(u64, TopicOutcome, Instant)> {
        match retry {
            Some(call) => call.await.ok(),
            None => std::future::pending().await,
        }
    }

    /// A retried check of the held delivery answered: deliver it, drop it, or ask again.
    async fn retry_done(&mut self, done: Option<(u64, TopicOutcome, Instant)>) {
        self.refresh_plugins();
        let Some(held) = self.state.held.take() else {
            return;
        };
        let d = &held.delivery;
        let checked = match done {
            Some((generation, outcome, asked_at)) if generation == self.plugins.generation => {
                self.settle_check(CachedAction::Receive, &d.message.topic, outcome, asked_at)
            }
            Some(_) => {
                // A reload replaced the set that was asked: ask the set in force, at once.
                self.state.held = Some(held);
                self.schedule_retry(Duration::ZERO);
                return;
            }
            // The retry's task failed: no verdict, like a plugin failure.
            None => Checked::Failed,
        };
        match checked {
            Checked::Failed if held.since.elapsed() < self.plugins.hold => {
                self.hold_backoff = (self.hold_backoff * 2).min(HOLD_BACKOFF_MAX);
                self.state.held = Some(held);
                self.schedule_retry(self.hold_backoff);
                return;
            }
            Checked::Failed => self.expire(&held.delivery),
            Checked::Allowed => {
                debug!(topic = ?d.message.topic, held = ?held.since.elapsed(), "held delivery allowed");
                self.write_delivery(held.delivery);
            }
            Checked::Denied => {
                debug!(topic = ?d.message.topic, "held delivery denied");
            }
        }
        self.drain_queue().await;
    }

    /// Moves queued messages into the write buffer while the window and batch allow,
    /// and no delivery is held.
    async fn drain_queue(&mut self) {
        while self.wbuf.len() < WRITE_BATCH
            && self.state.inflight.len() < self.max_inflight
            && self.state.held.is_none()
        {
            match self.state.queue.try_recv() {
                Ok(delivery) if self.through_revoked(&delivery) => {}
                Ok(delivery) => self.deliver(delivery).await,
                Err(_) => {
                    // Nothing queued through a revoked subscription is left.
                    self.purge_revoked = false;
                    break;
                }
            }
        }
    }

    /// Publishes the will if the topic-check chain in force allows it now (checked
    /// like a PUBLISH: the set after any reload, the real clock for the cache). A will
    /// to `$SYS/` is dropped. One whose check fails with a plugin error is handed to
    /// [`hold_will`]; it is not published now, so the result is false.
    async fn publish_will(&mut self, will: LastWill, shutdown: &CancellationToken) -> bool {
        // The set in force, not the one an idle connection last looked at.
        self.refresh_plugins();
        if reserved_for_broker(&will.topic) {
            info!(topic = ?will.topic, "dropping the will: $SYS/ topics belong to the broker");
            return false;
        }
        match self
            .check(CachedAction::Publish, &will.topic, will.qos, will.retain)
            .await
        {
            Checked::Allowed => {
                debug!(topic = ?will.topic, "publishing will");
                let message = Arc::new(Message {
                    topic: will.topic,
                    payload: will.payload,
                    qos: will.qos,
                    retain: will.retain,
                });
                self.route_with_events(message).await;
                true
            }
            Checked::Denied => {
                debug!(topic = ?will.topic, "will denied by the topic-check chain");
                false
            }
            Checked::Failed => {
                let Some(checks) = &self.checks else {
                    return false;
                };
                self.broker.stats.message_held();
                info!(topic = ?will.topic, hold = ?self.plugins.hold,
                    "will check failed (plugin error); holding the will and asking again");
                let task = hold_will(
                    self.broker.clone(),
                    checks.client.clone(),
                    self.event_client.clone(),
                    self.version,
                    will,
                    shutdown.child_token(),
                );
                tokio::spawn(task.instrument(tracing::Span::current()));
                false
            }
        }
    }

    /// After a resumed session's CONNACK: resends what was in flight, in order, with DUP
    /// for publishes and PUBREL for released QoS 2 messages (MQTT-4.4.0-1).
    ///
    /// A publish is resent only if RECEIVE allows it for this client now, as any
    /// delivery: the session may have been taken over by another identity
    /// (`session_takeover: any`) or the rules may have changed since it was first sent.
    /// A denied one leaves the window, counted and logged. A released QoS 2 message
    /// carries no payload: its PUBREL goes out as it is.
    async fn resend_inflight(&mut self) {
        let pending: Vec<(u16, OutState, Delivery)> = self
            .state
            .inflight
            .iter()
            .map(|out| (out.pkid, out.state, out.delivery.clone()))
            .collect();
        for (pkid, state, delivery) in pending {
            match state {
                OutState::Published => {
                    let m = &delivery.message;
                    let checked = self
                        .check(
                            CachedAction::Receive,
                            &m.topic,
                            delivery.qos,
                            delivery.retain,
                        )
                        .await;
                    if checked == Checked::Failed {
                        // Acknowledged to its publisher: never dropped for a plugin
                        // failure, never sent unchecked. It keeps its slot in the
                        // window and is resent, checked again, on the next resume.
                        warn!(
                            topic = ?m.topic,
                            pkid,
                            "not resending an inflight message now: its RECEIVE check failed (plugin error); kept for the next resume"
                        );
                        continue;
                    }
                    if checked == Checked::Denied {
                        self.state.inflight.remove(pkid);
                        self.broker.stats.resend_denied();
                        info!(
                            topic = ?m.topic,
                            pkid,
                            "not resending an inflight message: RECEIVE denies it"
                        );
                        continue;
                    }
                    v4::publish::write_parts(
                        &m.topic,
                        &m.payload,
                        delivery.qos,
                        pkid,
                        true,
                        delivery.retain,
                        &mut self.wbuf,
                    );
                }
                OutState::Released => v4::ack::write(PacketType::PubRel, pkid, &mut self.wbuf),
            }
        }
    }

    /// Ends the connection: logs why, publishes the will unless DISCONNECT discarded it,
    /// flushes what can be flushed, and hands the session back to the registry.
    async fn finish(mut self, exit: Exit, claim: Claim, shutdown: &CancellationToken) {
        // Offline from now on: what arrives while the connection winds down is queued as
        // for an offline session (QoS 0 skipped), before the client can see the socket
        // close.
        self.state.mailbox.set_online(false);
        match &exit {
            Exit::Protocol(err) => {
                self.broker.stats.protocol_error();
                warn!(cause = %err, "closing connection: protocol error");
            }
            Exit::KeepAlive => info!("closing connection: keepalive expired"),
            Exit::Io(err) => debug!(cause = %err, "connection lost"),
            Exit::Takeover => info!("closing connection: client id taken over"),
            other => debug!(reason = ?other, "connection closed"),
        }
        let mut will_published = false;
        if exit.publishes_will()
            && let Some(will) = self.will.take()
        {
            will_published = self.publish_will(will, shutdown).await;
        }
        let (reason, detail) = match &exit {
            Exit::Disconnect => (pb::DisconnectReason::Clean, String::new()),
            Exit::Closed => (
                pb::DisconnectReason::ConnectionLost,
                "closed by the client".into(),
            ),
            Exit::Io(e) => (pb::DisconnectReason::ConnectionLost, e.to_string()),
            Exit::Protocol(e) => (pb::DisconnectReason::ProtocolError, e.to_string()),
            Exit::KeepAlive => (pb::DisconnectReason::KeepaliveTimeout, String::new()),
            Exit::Takeover => (pb::DisconnectReason::Takeover, String::new()),
            Exit::Shutdown => (pb::DisconnectReason::Shutdown, String::new()),
        };
        let session_kept = self.state.persistent;
        self.connected_written().await;
        self.emit(pb::EventKind::ClientDisconnected, None, |_| {
            pb::event::Kind::ClientDisconnected(pb::ClientDisconnected {
                reason: reason as i32,
                reason_code: 0,
                detail: detail.clone(),
                will_published,
                session_kept,
            })
        })
        .await;
        if !self.wbuf.is_empty() && matches!(exit, Exit::Disconnect | Exit::Shutdown) {
            let sent = self
                .plugins
                .events
                .wants(pb::EventKind::MqttPacketSent)
                .then(|| written_packets(&self.wbuf, self.version));
            let written =
                tokio::time::timeout(Duration::from_millis(500), self.wr.write_all(&self.wbuf))
                    .await;
            if matches!(written, Ok(Ok(()))) {
                for (header, frame) in sent.into_iter().flatten() {
                    self.emit_packet_header(pb::EventKind::MqttPacketSent, &header, &frame)
                        .await;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), self.wr.shutdown()).await;
        self.broker.stats.client_disconnected();
        self.broker.registry.release(claim, self.state);
    }
}
