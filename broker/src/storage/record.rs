//! How records are laid out in the store: a version byte, fixed-width fields, and a
//! message as the MQTT 5 PUBLISH it would be on the wire.
//!
//! A message reuses the protocol codec rather than a second encoding of topics, payloads
//! and properties: that codec is fuzzed, and a PUBLISH already says everything a message
//! is. What a PUBLISH cannot say (when the message expires, which session's delivery it
//! is) sits in fixed fields before it. Times are wall-clock milliseconds since the Unix
//! epoch, the only clock that means anything after a restart.
//!
//! Every decoder checks lengths before it reads and answers [`Corrupt`] for anything
//! that does not add up: a record is input like any other.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, BytesMut};
use bytestring::ByteString;
use tokio::time::Instant;

use crate::protocol::{self, Packet, ProtocolVersion, Publish, QoS, Wire};
use crate::session::message::Message;

/// The layout version every record starts with. A newer one refuses the start (see
/// [`FORMAT`](super::FORMAT) for the store's own version).
const RECORD_VERSION: u8 = 1;

/// A record that does not decode: what it was meant to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {0} record")]
pub struct Corrupt(pub &'static str);

/// A subscription as a session holds it: what the router needs to route through it
/// again after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    /// QoS granted.
    pub qos: QoS,
    /// MQTT 5 subscription identifier; 0 for none.
    pub subscription_id: u32,
    /// MQTT 5 "no local".
    pub no_local: bool,
    /// MQTT 5 "retain as published".
    pub retain_as_published: bool,
}

/// A persistent session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Which life of the client id's session this is: a sequence number taken when it
    /// was created, so the remains of an older session under the same client id are told
    /// apart from this one (see [`Op::SessionGone`](super::Op::SessionGone)).
    pub incarnation: u64,
    /// The identity that owns it (empty: anonymous).
    pub owner: ByteString,
    /// The expiry the client asked for, when shorter than `mqtt.session_expiry`.
    pub expiry: Option<Duration>,
    /// When its last connection ended; `None` while one serves it.
    pub disconnected_at: Option<SystemTime>,
    /// Filters and their options.
    pub subscriptions: Vec<(ByteString, SubOptions)>,
}

/// One message queued for (or in flight to) one session, as stored.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// The message.
    pub message: Arc<Message>,
    /// QoS of this delivery.
    pub qos: QoS,
    /// The retain flag this delivery carries on the wire.
    pub retain: bool,
    /// MQTT 5 subscription identifiers it matched.
    pub subscription_ids: Vec<u32>,
    /// The shared subscription group it was routed through (`$share/{group}/{filter}`),
    /// so that after a restart it still goes to another member if this one leaves.
    pub share: Option<ByteString>,
}

/// Where an outbound QoS 2 message stood when it was last stored: which packet
/// identifier it went out with, and whether its PUBREC came (PUBREL sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The packet identifier it was sent with.
    pub pkid: u16,
    /// Whether the client's PUBREC came.
    pub released: bool,
}

/// An MQTT 5 will waiting out its delay interval, as stored: the will, when it is due,
/// and who the client was (what its PUBLISH check will be asked about when it is
/// published, perhaps after a restart). The client's TLS details are not kept.
#[derive(Debug, Clone)]
pub struct WillRecord {
    /// The will as a message (topic, payload, QoS, retain, will properties).
    pub will: Message,
    /// When its delay runs out.
    pub due: SystemTime,
    /// The identity the auth chain established.
    pub identity: String,
    /// The CONNECT username.
    pub username: String,
    /// Session attributes from the allowing Authenticate plugins.
    pub attributes: Vec<(String, String)>,
    /// The listener it connected through, and its transport's name.
    pub listener: String,
    /// The transport (`tcp`, `tls`, `ws`, `wss`).
    pub transport: String,
    /// The client's address.
    pub remote_addr: String,
}

/// Milliseconds since the Unix epoch; 0 stands for "none" where a time is optional.
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(1, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// A stored time; `None` for 0, and for one past what the clock can hold (a damaged
/// record must not panic the start-up).
fn from_millis(ms: u64) -> Option<SystemTime> {
    (ms != 0)
        .then(|| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .flatten()
}

/// A message's expiry as wall-clock time, for the store.
fn expiry_to_wall(at: Option<Instant>) -> u64 {
    at.map_or(0, |at| {
        let left = at.saturating_duration_since(Instant::now());
        millis(SystemTime::now() + left)
    })
}

/// A stored expiry as a deadline on the monotonic clock (already past when it ran out
/// while the broker was down).
fn expiry_from_wall(ms: u64) -> Option<Instant> {
    from_millis(ms).and_then(|at| {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        // Too far ahead for the monotonic clock: it never expires.
        Instant::now().checked_add(left)
    })
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&s.as_bytes()[..usize::from(len)]);
}

/// A cursor over a record that answers [`Corrupt`] instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Result<Self, Corrupt> {
        let mut r = Self { buf, what };
        if r.u8()? != RECORD_VERSION {
            return Err(Corrupt(what));
        }
        Ok(r)
    }
    fn need(&self, n: usize) -> Result<(), Corrupt> {
        if self.buf.len() < n {
            Err(Corrupt(self.what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, Corrupt> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, Corrupt> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self) -> Result<u32, Corrupt> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }
    fn flag(&mut self) -> Result<bool, Corrupt> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Corrupt(self.what)),
        }
    }
    fn qos(&mut self) -> Result<QoS, Corrupt> {
        QoS::from_bits(self.u8()?).ok_or(Corrupt(self.what))
    }
    fn str16(&mut self) -> Result<ByteString, Corrupt> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        let s = std::str::from_utf8(&self.buf[..len]).map_err(|_| Corrupt(self.what))?;
        let s = ByteString::from(s);
        self.buf.advance(len);
        Ok(s)
    }
    fn rest(self) -> &'a [u8] {
        self.buf
    }
}

/// Encodes a session record.
pub fn encode_session(r: &SessionRecord) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(32 + r.owner.len() + r.subscriptions.len() * 24);
    buf.put_u8(RECORD_VERSION);
    buf.put_u64(r.incarnation);
    buf.put_u64(r.expiry.map_or(u64::MAX, |d| d.as_secs()));
    buf.put_u64(r.disconnected_at.map_or(0, millis));
    put_str16(&mut buf, &r.owner);
    buf.put_u32(u32::try_from(r.subscriptions.len()).unwrap_or(u32::MAX));
    for (filter, o) in &r.subscriptions {
        put_str16(&mut buf, filter);
        buf.put_u8(o.qos as u8);
        buf.put_u8(u8::from(o.no_local) | (u8::from(o.retain_as_published) << 1));
        buf.put_u32(o.subscription_id);
    }
    buf.to_vec()
}

/// Decodes a session record.
pub fn decode_session(bytes: &[u8]) -> Result<SessionRecord, Corrupt> {
    let mut r = Reader::new(bytes, "session")?;
    let incarnation = r.u64()?;
    let expiry = match r.u64()? {
        u64::MAX => None,
        secs => Some(Duration::from_secs(secs)),
    };
    let disconnected_at = from_millis(r.u64()?);
    let owner = r.str16()?;
    let n = r.u32()? as usize;
    // Each subscription takes at least 8 bytes: a count past what is left is a lie.
    r.need(n.saturating_mul(8))?;
    let mut subscriptions = Vec::with_capacity(n);
    for _ in 0..n {
        let filter = r.str16()?;
        let qos = r.qos()?;
        let flags = r.u8()?;
        if flags > 3 {
            return Err(Corrupt("session"));
        }
        let subscription_id = r.u32()?;
        subscriptions.push((
            filter,
            SubOptions {
                qos,
                subscription_id,
                no_local: flags & 1 != 0,
                retain_as_published: flags & 2 != 0,
            },
        ));
    }
    if !r.rest().is_empty() {
        return Err(Corrupt("session"));
    }
    Ok(SessionRecord {
        incarnation,
        owner,
        expiry,
        disconnected_at,
        subscriptions,
    })
}

/// Appends `message` as an MQTT 5 PUBLISH.
fn put_message(buf: &mut BytesMut, m: &Message) {
    buf.put_u64(expiry_to_wall(m.expires_at));
    let publish = Publish {
        dup: false,
        qos: m.qos,
        retain: m.retain,
        topic: m.topic.clone(),
        pkid: if m.qos == QoS::AtMostOnce { 0 } else { 1 },
        payload: m.payload.clone(),
        properties: m.properties.clone(),
    };
    protocol::v5::encode(&Packet::Publish(publish), buf);
}

/// Reads a message written by [`put_message`]: the rest of the record.
fn take_message(mut r: Reader<'_>) -> Result<Message, Corrupt> {
    let what = r.what;
    let expires_at = expiry_from_wall(r.u64()?);
    let mut frame = BytesMut::from(r.rest());
    let wire = Wire::new(ProtocolVersion::V5, protocol::MAX_REMAINING_LENGTH + 5);
    match wire.decode(&mut frame, false) {
        Ok(Some((Packet::Publish(p), _))) if frame.is_empty() => {
            Ok(Message::of_publish(p, expires_at, None))
        }
        _ => Err(Corrupt(what)),
    }
}

/// Encodes a queued delivery.
pub fn encode_delivery(d: &StoredDelivery) -> Vec<u8> {
    let m = &d.message;
    let mut buf = BytesMut::with_capacity(64 + m.topic.len() + m.payload.len());
    buf.put_u8(RECORD_VERSION);
    buf.put_u8(d.qos as u8);
    buf.put_u8(u8::from(d.retain));
    buf.put_u16(u16::try_from(d.subscription_ids.len()).unwrap_or(u16::MAX));
    for id in d.subscription_ids.iter().take(usize::from(u16::MAX)) {
        buf.put_u32(*id);
    }
    // Empty for none: a group's name is never empty.
    put_str16(&mut buf, d.share.as_deref().unwrap_or(""));
    put_message(&mut buf, m);
    buf.to_vec()
}

/// Decodes a queued delivery.
pub fn decode_delivery(bytes: &[u8]) -> Result<StoredDelivery, Corrupt> {
    let mut r = Reader::new(bytes, "queued message")?;
    let qos = r.qos()?;
    let retain = r.flag()?;
    let n = usize::from(r.u16()?);
    r.need(n * 4)?;
    let subscription_ids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
    let share = Some(r.str16()?).filter(|s| !s.is_empty());
    let message = Arc::new(take_message(r)?);
    Ok(StoredDelivery {
        message,
        qos,
        retain,
        subscription_ids,
        share,
    })
}

/// Encodes a retained message.
pub fn encode_retained(m: &Message) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(48 + m.topic.len() + m.payload.len());
    buf.put_u8(RECORD_VERSION);
    put_message(&mut buf, m);
    buf.to_vec()
}

/// Decodes a retained message.
pub fn decode_retained(bytes: &[u8]) -> Result<Message, Corrupt> {
    take_message(Reader::new(bytes, "retained message")?)
}

/// Encodes a delayed will.
pub fn encode_will(w: &WillRecord) -> Vec<u8> {
    let mut buf = BytesMut::with_capacity(128 + w.will.topic.len() + w.will.payload.len());
    buf.put_u8(RECORD_VERSION);
    buf.put_u64(millis(w.due));
    for s in [
        &w.identity,
        &w.username,
        &w.listener,
        &w.transport,
        &w.remote_addr,
    ] {
        put_str16(&mut buf, s);
    }
    let n = w.attributes.len().min(usize::from(u16::MAX));
    buf.put_u16(n as u16);
    for (k, v) in w.attributes.iter().take(n) {
        put_str16(&mut buf, k);
        put_str16(&mut buf, v);
    }
    put_message(&mut buf, &w.will);
    buf.to_vec()
}

/// Decodes a delayed will.
pub fn decode_will(bytes: &[u8]) -> Result<WillRecord, Corrupt> {
    let mut r = Reader::new(bytes, "will")?;
    let due = from_millis(r.u64()?).unwrap_or(UNIX_EPOCH);
    let mut text = || r.str16().map(String::from);
    let (identity, username, listener, transport, remote_addr) =
        (text()?, text()?, text()?, text()?, text()?);
    let n = usize::from(r.u16()?);
    r.need(n * 4)?;
    let mut attributes = Vec::with_capacity(n);
    for _ in 0..n {
        attributes.push((String::from(r.str16()?), String::from(r.str16()?)));
    }
    Ok(WillRecord {
        will: take_message(r)?,
        due,
        identity,
        username,
        attributes,
        listener,
        transport,
        remote_addr,
    })
}

/// Encodes where an outbound QoS 2 message stands.
pub fn encode_sent(s: Sent) -> [u8; 4] {
    let [a, b] = s.pkid.to_be_bytes();
    [RECORD_VERSION, a, b, u8::from(s.released)]
}

/// Decodes where an outbound QoS 2 message stands.
pub fn decode_sent(bytes: &[u8]) -> Result<Sent, Corrupt> {
    let mut r = Reader::new(bytes, "inflight state")?;
    let pkid = r.u16()?;
    let released = r.flag()?;
    if pkid == 0 || !r.rest().is_empty() {
        return Err(Corrupt("inflight state"));
    }
    Ok(Sent { pkid, released })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::Properties;

    fn message() -> Message {
        let mut m = Message::new(
            "a/b".into(),
            Bytes::from_static(b"hello"),
            QoS::ExactlyOnce,
            true,
        );
        m.properties = Some(Box::new(Properties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        }));
        m.expires_at = Some(Instant::now() + Duration::from_secs(60));
        m
    }

    #[test]
    fn a_delivery_round_trips() {
        let d = StoredDelivery {
            message: Arc::new(message()),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![7, 9],
            share: Some("$share/g/a/#".into()),
        };
        let back = decode_delivery(&encode_delivery(&d)).unwrap();
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.subscription_ids, vec![7, 9]);
        assert_eq!(back.share.as_deref(), Some("$share/g/a/#"));
        assert_eq!(back.message.payload, Bytes::from_static(b"hello"));
        assert_eq!(back.message.topic, "a/b");
        assert_eq!(back.message.properties, d.message.properties);
        let left = back.message.expires_at.unwrap() - Instant::now();
        assert!(left > Duration::from_secs(58) && left <= Duration::from_secs(60));
    }

    #[test]
    fn a_session_round_trips() {
        let r = SessionRecord {
            incarnation: 42,
            owner: "alice".into(),
            expiry: Some(Duration::from_secs(300)),
            disconnected_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            subscriptions: vec![(
                "$share/g/x/#".into(),
                SubOptions {
                    qos: QoS::ExactlyOnce,
                    subscription_id: 5,
                    no_local: true,
                    retain_as_published: true,
                },
            )],
        };
        assert_eq!(decode_session(&encode_session(&r)).unwrap(), r);
    }

    #[test]
    fn a_will_round_trips_and_every_truncation_is_refused() {
        let w = WillRecord {
            will: message(),
            due: UNIX_EPOCH + Duration::from_millis(1_800_000_000_000),
            identity: "alice".into(),
            username: "al".into(),
            attributes: vec![("tenant".into(), "t1".into())],
            listener: "default".into(),
            transport: "tls".into(),
            remote_addr: "10.0.0.1:5000".into(),
        };
        let bytes = encode_will(&w);
        let back = decode_will(&bytes).unwrap();
        assert_eq!(back.due, w.due);
        assert_eq!(back.attributes, w.attributes);
        assert_eq!(
            (back.identity.as_str(), back.transport.as_str()),
            ("alice", "tls")
        );
        assert_eq!(back.will.payload, w.will.payload);
        for cut in 0..bytes.len() {
            assert!(decode_will(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_truncation_and_a_newer_version_are_refused_without_panic() {
        let session = encode_session(&SessionRecord {
            incarnation: 1,
            owner: "o".into(),
            expiry: None,
            disconnected_at: None,
            subscriptions: vec![("t".into(), SubOptions::default())],
        });
        let delivery = encode_delivery(&StoredDelivery {
            message: Arc::new(message()),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            share: None,
        });
        for cut in 0..session.len() {
            assert!(decode_session(&session[..cut]).is_err(), "cut at {cut}");
        }
        for cut in 0..delivery.len() {
            assert!(decode_delivery(&delivery[..cut]).is_err(), "cut at {cut}");
        }
        let mut newer = session.clone();
        newer[0] = RECORD_VERSION + 1;
        assert_eq!(decode_session(&newer), Err(Corrupt("session")));
        assert!(
            decode_sent(&encode_sent(Sent {
                pkid: 3,
                released: true
            }))
            .is_ok()
        );
        assert!(decode_sent(&[RECORD_VERSION, 0, 0, 0]).is_err(), "pkid 0");
    }
}
