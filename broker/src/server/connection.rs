//! One client connection, once let in: a single task that reads, decodes, applies and
//! writes.
//!
//! The task owns its socket halves, its read buffer and [`Outbox`], its
//! [`SessionState`] and its [`ClientPlugins`]. Each turn of the loop waits for whichever
//! comes first: bytes from the socket (every whole packet in the buffer is handled before
//! the next read), messages from the session's queue (drained while the inflight window
//! has room, up to a write-buffer's worth), the answer of a held check, the keepalive
//! deadline, a takeover or shutdown. Whatever the turn encoded is written with one
//! `write_all`, so a burst of deliveries costs one system call, not one per packet.
//!
//! What a packet does lives beside this file: [`publish`](super::publish) (PUBLISH in,
//! routing), [`subscribe`](super::subscribe) (SUBSCRIBE, UNSUBSCRIBE, re-checks after a
//! reload), [`deliver`](super::deliver) (messages out, holds, resends) and
//! [`will`](super::will).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::Broker;
use crate::plugins::client::{Backoff, ClientPlugins, PendingCheck};
use crate::plugins::client_info::{ConnectedInfo, DisconnectedInfo};
use crate::plugins::login::Login;
use crate::protocol::{
    self, ConnAck, Connect, ConnectReason, Disconnect, KEEP_CAPACITY, LastWill, Outbox, Packet,
    PacketSummary, Properties, Wire,
};
use crate::server::alias::{InboundAliases, OutboundAliases};
use crate::server::exit::Exit;
use crate::session::SessionState;
use crate::session::registry::Claim;

/// Encoded bytes past which a turn stops draining the queue and writes.
pub(super) const WRITE_BATCH: usize = 64 * 1024;

/// Traffic not yet added to the shared counters: added once per batch of input or
/// write, not once per packet.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    /// Messages received, by QoS.
    pub(super) messages_in: [u64; 3],
    pub(super) bytes_in: u64,
    /// Messages sent, by QoS.
    pub(super) messages_out: [u64; 3],
}

/// A connected client.
pub(super) struct Connection<R, W> {
    pub(super) broker: Arc<Broker>,
    rd: R,
    wr: W,
    rbuf: BytesMut,
    /// What this turn encoded, in the negotiated wire form.
    pub(super) out: Outbox,
    /// Bytes of `out` already written when the loop ended mid-write: the end writes
    /// the rest, never the beginning again.
    out_sent: usize,
    wire: Wire,
    pub(super) state: SessionState,
    /// The will, until DISCONNECT discards it or the end publishes it.
    will: Option<LastWill>,
    /// Checks, the decision cache and events, through the plugin set in force.
    pub(super) plugins: ClientPlugins,
    pub(super) traffic: Traffic,
    /// `mqtt.max_inflight`, or the MQTT 5 client's smaller receive maximum, read once:
    /// the window is compared on every delivery.
    pub(super) max_inflight: usize,
    /// The largest packet the client accepts (its MQTT 5 maximum packet size): a
    /// message that would be larger is dropped for it and counted.
    pub(super) client_max_packet: usize,
    /// The MQTT 5 topic aliases the client set.
    pub(super) aliases: InboundAliases,
    /// The MQTT 5 topic aliases the broker gave topics it sent the client.
    pub(super) out_aliases: OutboundAliases,
    /// Whether the session expiry the CONNECT asked for was 0: an MQTT 5 DISCONNECT
    /// may then not set one.
    expiry_was_zero: bool,
    /// The next check of the held delivery (`state.held`), polled by the run loop
    /// beside the socket, so the connection keeps reading and acknowledging meanwhile.
    pub(super) retry: Option<PendingCheck>,
    /// The wait before the next retry of the held delivery.
    pub(super) hold_backoff: Backoff,
    /// Set when subscriptions were revoked: messages already queued through them are
    /// dropped instead of delivered, until the queue has been seen empty.
    pub(super) purge_revoked: bool,
    /// When a re-check of the subscriptions that failed (a plugin error) may be tried
    /// again.
    pub(super) recheck_after: Option<Instant>,
    /// The MQTT 5 authentication method of the CONNECT: only a client that had one may
    /// re-authenticate, with the same.
    pub(super) auth_method: Option<ByteString>,
    /// A re-authentication waiting for the client's next AUTH.
    pub(super) reauth: Option<Login>,
    /// Whether Reason Strings may go on acknowledgements (the MQTT 5 client did not set
    /// Request Problem Information to 0).
    pub(super) problem_information: bool,
    /// Whether what this turn encoded waits for the store (see [`durable`](super::durable)).
    pub(super) store_due: bool,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// A connection for a client the auth chain allowed, with its session taken.
    pub(super) fn new(
        broker: Arc<Broker>,
        rd: R,
        wr: W,
        rbuf: BytesMut,
        connect: &Connect,
        state: SessionState,
        plugins: ClientPlugins,
    ) -> Self {
        let mqtt = &broker.config.mqtt;
        let wire = Wire::new(connect.protocol, mqtt.max_packet_size);
        let asked = connect.properties.as_deref();
        let receive_maximum = asked.and_then(|p| p.receive_maximum);
        let max_inflight = receive_maximum.map_or(usize::MAX, usize::from);
        let max_inflight = max_inflight.min(usize::from(mqtt.max_inflight));
        let client_max_packet = asked
            .and_then(|p| p.maximum_packet_size)
            .map_or(usize::MAX, |m| m as usize);
        let (aliases, out_aliases) = if connect.protocol.is_v5() {
            let client_max = asked.and_then(|p| p.topic_alias_maximum).unwrap_or(0);
            (
                InboundAliases::new(mqtt.topic_alias_maximum),
                OutboundAliases::new(client_max),
            )
        } else {
            Default::default()
        };
        let expiry_was_zero = asked.and_then(|p| p.session_expiry_interval).unwrap_or(0) == 0;
        Self {
            // Empty until there is something to send: it grows with the first packets
            // and an idle connection holds only what its last turn needed.
            out: Outbox::new(connect.protocol, 0),
            out_sent: 0,
            broker,
            rd,
            wr,
            rbuf,
            wire,
            state,
            will: connect.will.clone(),
            plugins,
            traffic: Traffic::default(),
            max_inflight,
            client_max_packet,
            aliases,
            out_aliases,
            expiry_was_zero,
            retry: None,
            hold_backoff: Backoff::default(),
            purge_revoked: false,
            recheck_after: None,
            auth_method: asked.and_then(|p| p.authentication_method.clone()),
            reauth: None,
            problem_information: connect.protocol.is_v5()
                && asked.and_then(|p| p.request_problem_information) != Some(0),
            store_due: false,
        }
    }

    /// Encodes the CONNACK and what a resumed session owes the client, and tells the
    /// plugins: the CONNECT as a packet event (`received`, when wanted) now,
    /// `client_connected` once the CONNACK is written.
    pub(super) async fn start(
        &mut self,
        connect: &Connect,
        session_present: bool,
        connack: Option<Box<Properties>>,
        received: Option<PacketSummary>,
    ) {
        self.out.summarize(self.plugins.wants_packets_sent());
        self.out.packet(&Packet::ConnAck(ConnAck {
            session_present,
            reason: ConnectReason::Success,
            properties: connack,
        }));
        self.resend_inflight().await;
        self.resume_held();
        self.broker
            .stats
            .client_connected(connect.protocol, self.plugins.client().transport());
        if let Some(connect_packet) = &received {
            self.plugins.packet_received(connect_packet).await;
        }
        self.plugins.connected(&ConnectedInfo {
            version: connect.protocol,
            clean_start: connect.clean_start,
            keep_alive: connect.keep_alive,
            session_present,
        });
        debug!(
            clean = connect.clean_start,
            keep_alive = connect.keep_alive,
            session_present,
            "client connected"
        );
    }

    /// Serves the connection until it ends.
    ///
    /// Keepalive (MQTT 3.1.1 section 3.1.2.10): every byte read from the client counts
    /// as activity, and only 1.5 times the client's `keep_alive` (seconds; 0 is none)
    /// without any closes. The timer is a deadline checked against the last read
    /// whenever it fires, so a busy client never meets it; while a write is blocked
    /// (the client reads slowly) the socket is still read, up to `max_packet_size` bytes
    /// buffered, so a client that keeps sending is not mistaken for a silent one.
    pub(super) async fn run(
        &mut self,
        keep_alive: u16,
        stop: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> Exit {
        let keep_alive =
            (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
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
            if eof && self.out.is_empty() {
                return Exit::Closed;
            }
            if !self.out.is_empty() {
                if let Err(exit) = self.settle_store().await {
                    return exit;
                }
                // Write what the turn encoded, reading ahead meanwhile.
                let bytes = self.out.len() as u64;
                self.out_sent = 0;
                while self.out_sent < self.out.len() {
                    let room = self.wire.max_packet_size().saturating_sub(self.rbuf.len()) as u64;
                    let read_ahead = !eof && room > 0;
                    let mut ahead = (&mut self.rd).take(room);
                    tokio::select! {
                        res = self.wr.write(&self.out.bytes()[self.out_sent..]) => match res {
                            Ok(0) => return Exit::Io(std::io::ErrorKind::WriteZero.into()),
                            Ok(n) => self.out_sent += n,
                            Err(e) => return Exit::Io(e),
                        },
                        read = ahead.read_buf(&mut self.rbuf), if read_ahead => match read {
                            Ok(0) => eof = true,
                            Ok(n) => {
                                last_read = Instant::now();
                                self.traffic.bytes_in += n as u64;
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
                self.out_sent = 0;
                self.written(bytes).await;
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
                        self.traffic.bytes_in += n as u64;
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
                answer = next_answer(&mut self.retry), if self.retry.is_some() => {
                    self.retry = None;
                    self.retry_done(answer).await;
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

    /// After the outbox's `bytes` were written: counts them, reports the packets to the
    /// plugins that want them, and lets `client_connected` go (the CONNACK is out).
    async fn written(&mut self, bytes: u64) {
        let sent = self.out.written();
        self.broker.stats.add_sent(self.traffic.messages_out, bytes);
        self.traffic.messages_out = [0; 3];
        if !sent.is_empty() {
            self.plugins.packets_sent(sent).await;
        }
        self.plugins.connected_written().await;
        self.out.summarize(self.plugins.wants_packets_sent());
    }

    /// Decodes and handles every whole packet buffered, then adds the traffic to the
    /// counters.
    async fn handle_input(&mut self) -> Result<(), Exit> {
        self.follow_reload().await;
        let report = self.plugins.wants_packets_received();
        // The events of this read's packets are queued together, after them.
        self.plugins.batch_events();
        let result = loop {
            match self.wire.decode(&mut self.rbuf, report) {
                Ok(Some((packet, frame))) => {
                    if report {
                        let summary = PacketSummary::of(&packet, self.wire.version(), frame);
                        self.plugins.packet_received(&summary).await;
                    }
                    if let Err(exit) = self.handle(packet).await {
                        break Err(exit);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(Exit::Protocol(e)),
            }
        };
        self.plugins.flush_events().await;
        // Every whole packet is out: a read buffer a burst of large packets grew is
        // given back (the next read starts a small one), as the outbox does.
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            self.rbuf = BytesMut::with_capacity(4096);
        }
        self.broker
            .stats
            .add_received(self.traffic.messages_in, self.traffic.bytes_in);
        self.traffic.messages_in = [0; 3];
        self.traffic.bytes_in = 0;
        result
    }

    /// Applies one packet from the client.
    async fn handle(&mut self, packet: Packet) -> Result<(), Exit> {
        match packet {
            Packet::Publish(p) => return self.on_publish(p).await,
            Packet::PubAck(a) => {
                self.state.inflight.ack(a.pkid);
            }
            Packet::PubRec(a) => self.on_pubrec(a.pkid),
            Packet::PubRel(a) => self.on_pubrel(a.pkid),
            Packet::PubComp(a) => {
                self.state.inflight.complete(a.pkid);
            }
            Packet::Subscribe(s) => self.on_subscribe(s).await,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Packet::PingReq => self.out.packet(&Packet::PingResp),
            Packet::Disconnect(d) => return Err(self.on_disconnect(d)),
            // Boxed: re-authentication is rare and its plugin call's future is large (see
            // `log_in` in handshake.rs).
            Packet::Auth(a) => return Box::pin(self.on_auth(a)).await,
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

    /// The client's DISCONNECT: how the connection ends, and the session expiry it may
    /// change (MQTT 5, section 3.14.2.2.2).
    fn on_disconnect(&mut self, d: Disconnect) -> Exit {
        if let Some(interval) = d
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
        {
            if self.expiry_was_zero && interval != 0 {
                return Exit::Protocol(protocol::Error::Protocol(
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                ));
            }
            let cap = self.broker.config.mqtt.session_expiry;
            let (persistent, expiry) = session_expiry(interval, cap);
            self.state.persistent = persistent;
            self.state.expiry = expiry;
        }
        if d.reason == 0x04 {
            Exit::DisconnectWithWill
        } else {
            Exit::Disconnect
        }
    }

    /// Ends the connection: logs why, publishes the will unless DISCONNECT discarded it,
    /// flushes what can be flushed, and hands the session back to the registry.
    pub(super) async fn finish(mut self, exit: Exit, claim: Claim, shutdown: &CancellationToken) {
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
            // Bytes the transport refused (a WebSocket text frame, a bad TLS record):
            // the client broke the protocol; a plain loss of the socket is routine.
            Exit::Io(err) if err.kind() == std::io::ErrorKind::InvalidData => {
                info!(cause = %err, "closing connection: transport error");
            }
            Exit::Io(err) => debug!(cause = %err, "connection lost"),
            Exit::Takeover => info!("closing connection: client id taken over"),
            Exit::Refused(_) => info!("closing connection: re-authentication failed"),
            Exit::Storage(err) => {
                warn!(cause = %err, "closing connection: what it acknowledges could not be stored")
            }
            Exit::QueueFull(pkid) => warn!(
                pkid,
                timeout = ?self.broker.config.mqtt.backpressure_timeout,
                "closing connection without acknowledging a PUBLISH: a subscriber's queue stayed full (mqtt.queue_full: backpressure)"
            ),
            other => debug!(reason = ?other, "connection closed"),
        }
        if !matches!(exit, Exit::Takeover | Exit::Shutdown) {
            // Its client is not coming back on another connection at once: another
            // member of its share groups takes what it left unacknowledged.
            self.hand_over_shared();
        }
        let mut will_published = false;
        if !matches!(exit, Exit::Disconnect)
            && let Some(will) = self.will.take()
        {
            will_published = self.publish_will(will, shutdown).await;
        }
        if self.wire.version().is_v5()
            && let Some((code, why)) = exit.disconnect()
        {
            // A reason string only when it cannot push the packet past the client's
            // maximum (a few bytes of header, the code, the string).
            let properties = (why.len() + 16 <= self.client_max_packet).then(|| {
                Box::new(Properties {
                    reason_string: Some(why.into()),
                    ..Properties::default()
                })
            });
            self.out.packet(&Packet::Disconnect(Disconnect {
                reason: code,
                properties,
            }));
        }
        let (reason, detail) = exit.reported();
        self.plugins
            .disconnected(&DisconnectedInfo {
                reason,
                detail,
                will_published,
                session_kept: self.state.persistent,
            })
            .await;
        let mut flush = match exit {
            Exit::Disconnect | Exit::DisconnectWithWill | Exit::Shutdown => true,
            // What is owed, then the DISCONNECT that says why.
            Exit::Protocol(_)
            | Exit::KeepAlive
            | Exit::Takeover
            | Exit::Refused(_)
            | Exit::QueueFull(_) => self.wire.version().is_v5(),
            Exit::Closed | Exit::Io(_) | Exit::Storage(_) => false,
        };
        // Acknowledgements of what the store has not committed never go out.
        if flush && self.settle_store().await.is_err() {
            flush = false;
        }
        if self.out.len() > self.out_sent && flush {
            let written = tokio::time::timeout(
                Duration::from_millis(500),
                self.wr.write_all(&self.out.bytes()[self.out_sent..]),
            )
            .await;
            let sent = self.out.written();
            if matches!(written, Ok(Ok(()))) && !sent.is_empty() {
                self.plugins.packets_sent(sent).await;
            }
        }
        // The session is handed back before the client can see its socket close, so a
        // client that reconnects at once finds it released.
        self.broker.stats.client_disconnected();
        self.broker.registry.release(claim, self.state);
        let _ = tokio::time::timeout(Duration::from_millis(500), self.wr.shutdown()).await;
        if flush && !matches!(exit, Exit::Disconnect | Exit::DisconnectWithWill) {
            // The broker ended it, with a DISCONNECT (MQTT 5) or what it owed: closing
            // with the client's packets unread would answer them with a TCP reset, which
            // can destroy those last bytes before the client reads them. Read and drop
            // what the client still sends until it closes, for a moment at most.
            linger(&mut self.rd).await;
        }
    }
}

/// Reads and drops what a client sends after the broker's last packet, until it closes
/// its side, for at most [`LINGER`] and [`LINGER_BYTES`].
async fn linger<R: AsyncRead + Unpin>(rd: &mut R) {
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while read < LINGER_BYTES {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// How long a connection the broker ended waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);
/// How much it reads (and drops) meanwhile.
const LINGER_BYTES: usize = 256 * 1024;

/// The held check's answer (pending forever when none is scheduled; the run loop polls
/// it only when one is). `None` if its task did not finish (panicked).
async fn next_answer(
    retry: &mut Option<PendingCheck>,
) -> Option<crate::plugins::client::LaterAnswer> {
    match retry {
        Some(call) => call.await.ok(),
        None => std::future::pending().await,
    }
}

/// Whether a session with an MQTT 5 session expiry `interval` (seconds) outlives its
/// connection, and for how long when shorter than `cap` (`mqtt.session_expiry`):
/// 0 ends it with the connection, 0xFFFFFFFF ("never") is held to the cap.
pub(super) fn session_expiry(interval: u32, cap: Option<Duration>) -> (bool, Option<Duration>) {
    match interval {
        0 => (false, None),
        u32::MAX => (true, None),
        secs => {
            let asked = Duration::from_secs(u64::from(secs));
            (true, cap.is_none_or(|cap| asked < cap).then_some(asked))
        }
    }
}
