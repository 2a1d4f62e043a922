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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::Broker;
use crate::plugins::cache::{CachedAction, DecisionCache};
use crate::plugins::{PluginSet, TopicOutcome};
use crate::protocol::{
    self, ConnAck, Connect, ConnectReason, LastWill, Packet, PacketType, ProtocolVersion, QoS,
    SubAck, SubscribeReason, UnsubAck, v4,
};
use crate::router::{Delivery, Message, Subscriber, topic};
use crate::session::registry::{Claim, ClaimError};
use crate::session::{Offer, OutState, SessionState};
use crate::stats::TopicIn;

/// Encoded bytes past which a turn stops draining the queue and writes.
const WRITE_BATCH: usize = 64 * 1024;

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
/// With `keep_frame`, the CONNECT's wire bytes are returned too (for packet events);
/// otherwise the returned bytes are empty.
async fn read_connect(
    rd: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max_packet_size: usize,
    keep_frame: bool,
) -> Result<(Connect, Bytes), ConnectError> {
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
        match rd.read_buf(buf).await {
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
async fn refuse(wr: &mut OwnedWriteHalf, version: ProtocolVersion, reason: ConnectReason) {
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
pub(crate) async fn refuse_over_limit(stream: TcpStream, max_packet_size: usize) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(256);
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        read_connect(&mut rd, &mut buf, max_packet_size, false),
    )
    .await;
    if let Ok(Ok((connect, _))) = read {
        refuse(&mut wr, connect.protocol, ConnectReason::ServerUnavailable).await;
    }
}

/// Serves one accepted connection until it ends.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut rbuf = BytesMut::with_capacity(4096);
    let mqtt = &broker.config.mqtt;

    let packet_events = broker
        .plugins
        .current()
        .events
        .wants(pb::EventKind::MqttPacketReceived);
    let (connect, connect_frame) = match tokio::time::timeout(
        mqtt.connect_timeout,
        read_connect(&mut rd, &mut rbuf, mqtt.max_packet_size, packet_events),
    )
    .await
    {
        Ok(Ok(read)) => read,
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
        connect,
        connect_frame,
        client_id,
        peer,
        listener,
    };
    connected.serve(shutdown).instrument(span).await;
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
struct Connected {
    broker: Arc<Broker>,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rbuf: BytesMut,
    connect: Connect,
    /// The CONNECT's wire bytes when a plugin wants packet events, else empty.
    connect_frame: Bytes,
    client_id: ByteString,
    peer: SocketAddr,
    listener: Arc<str>,
}

impl Connected {
    async fn serve(self, shutdown: CancellationToken) {
        let Connected {
            broker,
            rd,
            mut wr,
            rbuf,
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
                now: Instant::now(),
            }),
            purge_revoked: false,
            recheck_after: None,
            messages_in: [0; 3],
            bytes_in: 0,
            messages_out: [0; 3],
            pending_connected: None,
            plugins,
        };
        protocol::encode(
            &connack(ConnectReason::Success, session_present),
            version,
            &mut conn.wbuf,
        );
        conn.resend_inflight().await;
        broker.stats.client_connected();
        if conn.plugins.events.wants(pb::EventKind::MqttPacketReceived) {
            let packet = Packet::Connect(connect.clone());
            conn.emit_packet(pb::EventKind::MqttPacketReceived, &packet, &connect_frame)
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
        conn.finish(exit, claim).await;
    }
}

/// The client as plugins see it: fixed for the connection, built once in
/// [`Connected::serve`] after the auth chain allowed it.
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
    /// The clock for cache expiry, read once per loop turn rather than per message:
    /// decision TTLs are milliseconds at least, a turn is microseconds.
    now: Instant,
}

/// A connected client.
struct Connection {
    broker: Arc<Broker>,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
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
    /// Set when subscriptions were revoked: messages already queued through them are
    /// dropped instead of delivered, until the queue has been seen empty.
    purge_revoked: bool,
    /// When a re-check of the subscriptions that failed (a plugin error) may be tried
    /// again.
    recheck_after: Option<Instant>,
}

impl Connection {
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
        loop {
            self.follow_reload().await;
            if !self.wbuf.is_empty() {
                let bytes = self.wbuf.len() as u64;
                let sent = self
                    .plugins
                    .events
                    .wants(pb::EventKind::MqttPacketSent)
                    .then(|| written_packets(&self.wbuf, self.version));
                // A client that stops reading blocks this write; its keepalive still
                // applies, as it can send nothing we would read meanwhile.
                tokio::select! {
                    res = self.wr.write_all(&self.wbuf) => {
                        if let Err(e) = res {
                            return Exit::Io(e);
                        }
                    }
                    _ = stop.cancelled() => return Exit::Takeover,
                    _ = shutdown.cancelled() => return Exit::Shutdown,
                    _ = &mut idle, if keep_alive.is_some() => return Exit::KeepAlive,
                }
                self.wbuf.clear();
                self.broker.stats.add_sent(self.messages_out, bytes);
                self.messages_out = [0; 3];
                for (header, frame) in sent.into_iter().flatten() {
                    self.emit_packet_header(pb::EventKind::MqttPacketSent, &header, &frame)
                        .await;
                }
                self.connected_written().await;
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
                        if let Some(checks) = &mut self.checks {
                            checks.now = last_read;
                        }
                        self.bytes_in += n as u64;
                        if let Err(exit) = self.handle_input().await {
                            return exit;
                        }
                    }
                    Err(e) => return Exit::Io(e),
                },
                Some(delivery) = self.state.queue.recv(), if window_open => {
                    self.follow_reload().await;
                    if let Some(checks) = &mut self.checks {
                        checks.now = Instant::now();
                    }
                    if !self.through_revoked(&delivery) {
                        self.deliver(delivery).await;
                    }
                    self.drain_queue().await;
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
                if route && p.topic.starts_with("$SYS/") {
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
        let events = &self.plugins.events;
        if events.wants(kind) {
            events
                .emit(kind, self.event_client.as_ref(), topic, build)
                .await;
        }
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
        if self.broker.plugins.generation() != self.plugins.generation {
            self.plugins = self.broker.plugins.current();
            if let Some(checks) = &mut self.checks {
                checks.cache = DecisionCache::new(&self.plugins.cache);
            }
            debug!(generation = self.plugins.generation, "plugin set reloaded");
        }
        if self.state.checked_generation != self.plugins.generation {
            self.recheck_subscriptions().await;
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
        if let Some(checks) = &mut self.checks {
            checks.now = now;
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
            let allowed = match self.quick_check(CachedAction::Subscribe, &filter) {
                Some(decided) => decided,
                None => {
                    let outcome = self
                        .ask_chain_outcome(CachedAction::Subscribe, &filter, qos, false)
                        .await;
                    if !outcome.allowed && outcome.from_error {
                        failed = true;
                        continue;
                    }
                    outcome.allowed
                }
            };
            if !allowed {
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
        let events = &self.plugins.events;
        let mut offline = Vec::new();
        let matched = if events.wants(pb::EventKind::RetainedMessage) {
            self.broker
                .router
                .publish_noting_offline(message.clone(), |id| offline.push(id.clone()))
        } else {
            self.broker.router.publish(message.clone())
        };
        self.emit_routed(&message, matched, &offline).await;
    }

    /// Events of a message that passed its checks and was routed: broadcast, retained
    /// store or clear, and one QUEUED per offline session it was queued for.
    async fn emit_routed(&self, m: &Message, matched: usize, queued_offline: &[ByteString]) {
        self.emit(
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
            self.emit(pb::EventKind::RetainedMessage, Some(&m.topic), |payloads| {
                pb::event::Kind::RetainedMessage(pb::RetainedMessage {
                    action: action as i32,
                    message: Some(pb_message(&m.topic, &m.payload, m.qos, m.retain, payloads)),
                    session_client_id: String::new(),
                })
            })
            .await;
        }
        for session in queued_offline {
            self.emit(pb::EventKind::RetainedMessage, Some(&m.topic), |payloads| {
                pb::event::Kind::RetainedMessage(pb::RetainedMessage {
                    action: pb::RetainedAction::Queued as i32,
                    message: Some(pb_message(&m.topic, &m.payload, m.qos, m.retain, payloads)),
                    session_client_id: session.to_string(),
                })
            })
            .await;
        }
    }

    /// The decision without asking a plugin: `Some(true)` without a topic-check chain,
    /// the cached decision on a hit, `None` when the chain must be asked.
    fn quick_check(&mut self, action: CachedAction, topic: &str) -> Option<bool> {
        if self.plugins.topic_check.is_none() {
            return Some(true);
        }
        let Some(checks) = &mut self.checks else {
            return Some(true);
        };
        let decided = checks.cache.get(action, topic, checks.now);
        if decided == Some(false) {
            debug!(%topic, ?action, "topic check denied (cached)");
        }
        decided
    }

    /// Whether the client may perform `action` on `topic`: the cache first, then the
    /// topic-check chain. Always true without a chain.
    async fn allowed(
        &mut self,
        action: CachedAction,
        topic: &ByteString,
        qos: QoS,
        retain: bool,
    ) -> bool {
        match self.quick_check(action, topic) {
            Some(decided) => decided,
            None => self.ask_chain(action, topic, qos, retain).await,
        }
    }

    /// Asks the topic-check chain and caches the answer as the plugins allow.
    async fn ask_chain(
        &mut self,
        action: CachedAction,
        topic: &ByteString,
        qos: QoS,
        retain: bool,
    ) -> bool {
        self.ask_chain_outcome(action, topic, qos, retain)
            .await
            .allowed
    }

    /// [`ask_chain`](Self::ask_chain), telling a DENY from a plugin failure.
    async fn ask_chain_outcome(
        &mut self,
        action: CachedAction,
        topic: &ByteString,
        qos: QoS,
        retain: bool,
    ) -> TopicOutcome {
        let plugins = self.plugins.clone();
        let (Some(chain), Some(checks)) = (&plugins.topic_check, &self.checks) else {
            return TopicOutcome {
                allowed: true,
                ..Default::default()
            };
        };
        let request = pb::TopicFilterRequest {
            topic: topic.to_string(),
            action: match action {
                CachedAction::Publish => pb::Action::Publish,
                CachedAction::Subscribe => pb::Action::Subscribe,
                CachedAction::Receive => pb::Action::Receive,
            } as i32,
            client_id: checks.client.client_id.clone(),
            username: checks.client.identity.clone(),
            connect_username: checks.client.connect_username.clone(),
            attributes: checks.client.attributes.clone(),
            qos: qos as u32,
            retain,
            protocol_version: pb_version(self.version) as i32,
            user_properties: Vec::new(),
            listener: checks.client.listener.clone(),
            remote_addr: checks.client.remote_addr.clone(),
        };
        let asked_at = tokio::time::Instant::now();
        let outcome = chain.topic_filter(request).await;
        if !outcome.allowed {
            self.broker.stats.topic_denied();
        }
        if let (Some(ttl), Some(checks)) = (outcome.cache_ttl, &mut self.checks) {
            checks
                .cache
                .put(action, topic.clone(), outcome.allowed, ttl, asked_at);
        }
        outcome
    }

    /// Encodes one delivery, entering it into the inflight window if QoS > 0. A
    /// delivery the topic-check chain refuses (RECEIVE) is skipped for this client.
    async fn deliver(&mut self, delivery: Delivery) {
        let allowed = match self.quick_check(CachedAction::Receive, &delivery.message.topic) {
            Some(decided) => decided,
            None => {
                let topic = delivery.message.topic.clone();
                self.ask_chain(CachedAction::Receive, &topic, delivery.qos, delivery.retain)
                    .await
            }
        };
        if !allowed {
            return;
        }
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

    /// Moves queued messages into the write buffer while the window and batch allow.
    async fn drain_queue(&mut self) {
        while self.wbuf.len() < WRITE_BATCH && self.state.inflight.len() < self.max_inflight {
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
                    if !self
                        .allowed(
                            CachedAction::Receive,
                            &m.topic,
                            delivery.qos,
                            delivery.retain,
                        )
                        .await
                    {
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
    async fn finish(mut self, exit: Exit, claim: Claim) {
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
            && self
                .allowed(CachedAction::Publish, &will.topic, will.qos, will.retain)
                .await
        {
            debug!(topic = %will.topic, "publishing will");
            let message = Arc::new(Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
            });
            self.route_with_events(message).await;
            will_published = true;
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
