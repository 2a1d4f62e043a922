//! MQTT 5 topic aliases (section 3.3.2.3.4), both ways: a PUBLISH with a topic and an
//! alias sets the alias, one with an empty topic and an alias uses it.
//!
//! Inbound, a client sets at most `mqtt.topic_alias_maximum` aliases per connection
//! (announced in the CONNACK), each holding a copy of one topic (never a slice of the
//! read buffer, which a 1 MB PUBLISH would pin), all of them together at most
//! [`MAX_ALIAS_BYTES`]: past it the connection closes with DISCONNECT 0x97 "quota
//! exceeded". Without that bound 64 aliases of 64 KB topics held 4 MB per connection. Outbound, the broker gives the first topics it sends a client an alias
//! each, up to the maximum the client's CONNECT announced, and sends later messages on
//! them with the alias alone; topics past the maximum go out in full. Both live and die
//! with the connection (aliases are not part of the session).

use bytestring::ByteString;
use foldhash::HashMap;

use crate::protocol::{self, Publish};

/// The most bytes of topics one connection's aliases may hold together: plenty for
/// aliases' purpose (long topics sent often), far below what an alias map could pin.
pub(super) const MAX_ALIAS_BYTES: usize = 64 * 1024;

/// The aliases one connection's client has set.
#[derive(Debug, Default)]
pub(super) struct InboundAliases {
    /// `topics[alias - 1]`; grows up to the maximum as aliases are set.
    topics: Vec<Option<ByteString>>,
    /// Bytes of the topics held.
    bytes: usize,
    max: u16,
}

impl InboundAliases {
    /// No alias set yet; aliases above `max` (0: none at all) are refused.
    pub(super) fn new(max: u16) -> Self {
        Self {
            topics: Vec::new(),
            bytes: 0,
            max,
        }
    }

    /// Gives `p` its topic: sets the alias it carries, or takes the topic the alias
    /// stands for, then removes the alias from its properties (subscribers get the
    /// topic, never the publisher's alias). An alias of 0 or above the maximum, or an
    /// empty topic with an alias never set, is a protocol error.
    pub(super) fn resolve(&mut self, p: &mut Publish) -> Result<(), protocol::Error> {
        let Some(alias) = p
            .properties
            .as_mut()
            .and_then(|props| props.topic_alias.take())
        else {
            return Ok(());
        };
        if alias == 0 || alias > self.max {
            return Err(protocol::Error::TopicAliasInvalid(alias));
        }
        let slot = usize::from(alias) - 1;
        if p.topic.is_empty() {
            match self.topics.get(slot) {
                Some(Some(topic)) => p.topic = topic.clone(),
                _ => {
                    return Err(protocol::Error::Protocol(
                        "topic alias used before it was set",
                    ));
                }
            }
        } else {
            if self.topics.len() <= slot {
                self.topics.resize(slot + 1, None);
            }
            let replaced = self.topics[slot].as_ref().map_or(0, |t| t.len());
            let bytes = self.bytes - replaced + p.topic.len();
            if bytes > MAX_ALIAS_BYTES {
                return Err(protocol::Error::AliasQuota {
                    bytes,
                    max: MAX_ALIAS_BYTES,
                });
            }
            self.bytes = bytes;
            // A copy: the topic is a slice of the frame it was read in.
            self.topics[slot] = Some(ByteString::from(&*p.topic));
        }
        if p.properties.as_ref().is_some_and(|props| props.is_empty()) {
            p.properties = None;
        }
        Ok(())
    }
}

/// The aliases the broker has given topics it sent one client.
#[derive(Debug, Default)]
pub(super) struct OutboundAliases {
    given: HashMap<ByteString, u16>,
    max: u16,
}

impl OutboundAliases {
    /// No alias given yet; at most `max` (the client's topic alias maximum; 0: none).
    pub(super) fn new(max: u16) -> Self {
        Self {
            given: HashMap::default(),
            max,
        }
    }

    /// How to send a message on `topic`: `None` in full without an alias, `Some((alias,
    /// true))` in full setting a new alias, `Some((alias, false))` with the alias alone.
    pub(super) fn for_topic(&mut self, topic: &ByteString) -> Option<(u16, bool)> {
        if self.max == 0 {
            return None;
        }
        if let Some(alias) = self.given.get(topic) {
            return Some((*alias, false));
        }
        let next = u16::try_from(self.given.len() + 1).ok()?;
        if next > self.max {
            return None;
        }
        self.given.insert(topic.clone(), next);
        Some((next, true))
    }

    /// Takes back the alias just given to `topic` (its PUBLISH was not sent, so the
    /// client never learnt it).
    pub(super) fn forget(&mut self, topic: &ByteString) {
        self.given.remove(topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Properties, QoS};

    fn publish(topic: &str, alias: Option<u16>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            pkid: 0,
            payload: Default::default(),
            properties: alias.map(|a| {
                Box::new(Properties {
                    topic_alias: Some(a),
                    ..Default::default()
                })
            }),
        }
    }

    #[test]
    fn an_alias_set_then_used_gives_the_topic_and_leaves_no_property() {
        let mut aliases = InboundAliases::new(4);
        let mut set = publish("a/b", Some(2));
        aliases.resolve(&mut set).unwrap();
        assert_eq!(set.topic, "a/b");
        assert!(set.properties.is_none());
        let mut used = publish("", Some(2));
        aliases.resolve(&mut used).unwrap();
        assert_eq!(used.topic, "a/b");
        let mut reset = publish("c", Some(2));
        aliases.resolve(&mut reset).unwrap();
        let mut used = publish("", Some(2));
        aliases.resolve(&mut used).unwrap();
        assert_eq!(used.topic, "c");
    }

    #[test]
    fn outbound_aliases_are_given_up_to_the_client_maximum() {
        let mut out = OutboundAliases::new(2);
        let (a, b, c): (ByteString, ByteString, ByteString) = ("a".into(), "b".into(), "c".into());
        assert_eq!(out.for_topic(&a), Some((1, true)));
        assert_eq!(out.for_topic(&a), Some((1, false)));
        assert_eq!(out.for_topic(&b), Some((2, true)));
        assert_eq!(out.for_topic(&c), None, "past the maximum: in full");
        assert_eq!(out.for_topic(&b), Some((2, false)));
        out.forget(&b);
        assert_eq!(
            out.for_topic(&c),
            Some((2, true)),
            "a forgotten alias is given again"
        );
        assert_eq!(OutboundAliases::new(0).for_topic(&a), None);
    }

    #[test]
    fn alias_topics_are_copies_and_bounded_in_bytes() {
        let mut aliases = InboundAliases::new(64);
        // The topic is a slice of a (pretend) read buffer: the alias keeps its own copy.
        let frame = bytes::Bytes::from(vec![b'x'; 40 * 1024]);
        let topic = ByteString::try_from(frame.slice(..30 * 1024)).unwrap();
        let mut p = publish("", Some(1));
        p.topic = topic;
        aliases.resolve(&mut p).unwrap();
        let held = aliases.topics[0].as_ref().unwrap();
        assert_ne!(held.as_ptr(), p.topic.as_ptr(), "not a slice of the frame");
        // 30 KiB + 30 KiB fit; a third would not (64 KiB in all).
        let big = "y".repeat(30 * 1024);
        aliases.resolve(&mut publish(&big, Some(2))).unwrap();
        assert!(matches!(
            aliases.resolve(&mut publish(&big, Some(3))),
            Err(protocol::Error::AliasQuota { .. })
        ));
        assert_eq!(
            protocol::Error::AliasQuota { bytes: 1, max: 0 }.disconnect_code(),
            0x97
        );
        // Replacing an alias's topic counts the new one instead of the old.
        aliases.resolve(&mut publish("short", Some(2))).unwrap();
        aliases.resolve(&mut publish(&big, Some(3))).unwrap();
        assert_eq!(aliases.bytes, 30 * 1024 + 5 + 30 * 1024);
    }

    #[test]
    fn aliases_out_of_range_or_unset_are_refused() {
        let mut aliases = InboundAliases::new(4);
        assert_eq!(
            aliases.resolve(&mut publish("t", Some(5))),
            Err(protocol::Error::TopicAliasInvalid(5))
        );
        assert!(matches!(
            aliases.resolve(&mut publish("", Some(3))),
            Err(protocol::Error::Protocol(_))
        ));
        let mut none = InboundAliases::new(0);
        assert_eq!(
            none.resolve(&mut publish("t", Some(1))),
            Err(protocol::Error::TopicAliasInvalid(1))
        );
        // Without an alias nothing changes.
        let mut plain = publish("t", None);
        none.resolve(&mut plain).unwrap();
        assert_eq!(plain.topic, "t");
    }
}
