//! The retained message store: the last retained message per topic.

use std::sync::Arc;

use bytestring::ByteString;
use foldhash::HashMap;

use super::{Message, topic};

/// Retained messages by topic.
#[derive(Default)]
pub struct RetainedStore {
    by_topic: HashMap<ByteString, Arc<Message>>,
}

impl RetainedStore {
    /// Stores `msg` for its topic, or clears the topic when the payload is empty
    /// (MQTT-3.3.1-10). Returns whether the store changed.
    pub fn apply(&mut self, msg: &Arc<Message>) -> bool {
        if msg.payload.is_empty() {
            self.by_topic.remove(&msg.topic).is_some()
        } else {
            self.by_topic.insert(msg.topic.clone(), msg.clone());
            true
        }
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// Retained messages whose topic matches `filter`. A filter without wildcards is
    /// a single lookup; a wildcard filter scans the store (subscriptions are rare
    /// next to publishes, and the scan holds only a read lock).
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        if !topic::has_wildcard(filter) {
            return self.by_topic.get(filter).cloned().into_iter().collect();
        }
        self.by_topic
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .cloned()
            .collect()
    }
}
