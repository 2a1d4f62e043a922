//! The retained message store: the last retained message per topic, in a tree of
//! topic levels.
//!
//! A new subscription looks its retained messages up by walking the tree along the
//! filter, so the cost follows the filter's matches (and, for `+`, the levels it fans
//! out over), not the size of the store: a `#` subscription over 2,000 topics visits
//! those 2,000 nodes once, and an exact filter is one lookup per level. Like the
//! subscription tree, no walk recurses.
//!
//! The store is bounded by count (`mqtt.max_retained_messages`) and bytes
//! (`mqtt.max_retained_bytes`, topic plus payload). What happens at the bound:
//! - a retained message on a topic not in the store is not stored when either bound
//!   would be passed (it is still routed to current subscribers);
//! - a replacement is stored when the bytes still fit (the count does not change);
//!   when the new payload does not fit, the old message is removed too, so the store
//!   never answers with a value older than the last one published;
//! - clearing (an empty payload) always works;
//! - `$SYS/` topics, which only the broker publishes, are stored regardless of the
//!   bounds (their number is fixed by the broker), and counted in them.

use std::sync::Arc;

use foldhash::HashMap;

use crate::session::message::Message;

/// Why a retained message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Storing it would pass `mqtt.max_retained_messages`.
    Count,
    /// Storing it would pass `mqtt.max_retained_bytes`.
    Bytes,
}

/// What [`RetainedStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Stored on a topic that had no retained message.
    Stored,
    /// Replaced the topic's retained message.
    Replaced,
    /// Cleared the topic (empty payload).
    Cleared,
    /// An empty payload on a topic that had nothing retained.
    Unchanged,
    /// Not stored at a bound; a replaced message was removed (see the module docs).
    Refused(Refused),
}

/// The bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Retained topics at most.
    pub max_messages: usize,
    /// Topic plus payload bytes at most.
    pub max_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_messages: usize::MAX,
            max_bytes: usize::MAX,
        }
    }
}

/// Retained messages by topic level.
#[derive(Default)]
pub struct RetainedStore {
    root: Node,
    count: usize,
    bytes: usize,
    bounds: Bounds,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

impl Node {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }
}

impl Drop for Node {
    /// Drops the subtree with a loop: the derived drop would recurse once per level.
    fn drop(&mut self) {
        let mut stack: Vec<Node> = self.children.drain().map(|(_, n)| n).collect();
        while let Some(mut node) = stack.pop() {
            stack.extend(node.children.drain().map(|(_, n)| n));
        }
    }
}

/// The bytes a message holds against `mqtt.max_retained_bytes`.
fn size(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

impl RetainedStore {
    /// An empty store with `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            ..Self::default()
        }
    }

    /// Stores `msg` for its topic, or clears the topic when the payload is empty
    /// (MQTT-3.3.1-10), within the bounds (see the module docs).
    pub fn apply(&mut self, msg: &Arc<Message>) -> Applied {
        if msg.payload.is_empty() {
            return match self.remove(&msg.topic) {
                Some(_) => Applied::Cleared,
                None => Applied::Unchanged,
            };
        }
        let exempt = msg.topic.starts_with("$SYS/");
        let old = self.get(&msg.topic).map(|m| size(m));
        let bytes_after = self.bytes - old.unwrap_or(0) + size(msg);
        if !exempt {
            let refused = if bytes_after > self.bounds.max_bytes {
                Some(Refused::Bytes)
            } else if old.is_none() && self.count >= self.bounds.max_messages {
                Some(Refused::Count)
            } else {
                None
            };
            if let Some(why) = refused {
                self.remove(&msg.topic);
                return Applied::Refused(why);
            }
        }
        let mut node = &mut self.root;
        for level in msg.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        node.message = Some(msg.clone());
        self.bytes = bytes_after;
        match old {
            Some(_) => Applied::Replaced,
            None => {
                self.count += 1;
                Applied::Stored
            }
        }
    }

    fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.as_ref()
    }

    /// Removes the topic's message, pruning the nodes it leaves empty.
    fn remove(&mut self, topic: &str) -> Option<Arc<Message>> {
        let levels: Vec<&str> = topic.split('/').collect();
        // Read-only pass: the shallowest level from which the path holds nothing but
        // this message (see `SubscriptionTree::remove`).
        let mut node = &self.root;
        let mut chain_start = None;
        for (depth, level) in levels.iter().enumerate() {
            node = node.children.get(*level)?;
            if depth + 1 < levels.len() {
                if node.message.is_none() && node.children.len() == 1 {
                    chain_start.get_or_insert(depth);
                } else {
                    chain_start = None;
                }
            }
        }
        node.message.as_ref()?;
        let cut = node
            .children
            .is_empty()
            .then(|| chain_start.unwrap_or(levels.len() - 1));
        let mut node = &mut self.root;
        for level in &levels[..cut.unwrap_or(levels.len())] {
            node = node.children.get_mut(*level)?;
        }
        let removed = match cut {
            Some(depth) => {
                let mut subtree = node.children.remove(levels[depth])?;
                let mut leaf = &mut subtree;
                for level in &levels[depth + 1..] {
                    leaf = leaf.children.get_mut(*level)?;
                }
                leaf.message.take()
            }
            None => node.message.take(),
        }?;
        self.count -= 1;
        self.bytes -= size(&removed);
        Some(removed)
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Topic plus payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Calls `f` with each retained message whose topic matches the (valid) `filter`
    /// until `f` returns `false`. A topic starting with `$` is not matched by a filter
    /// whose first level is a wildcard (MQTT-4.7.2-1).
    pub fn for_each_matching(&self, filter: &str, f: &mut impl FnMut(&Arc<Message>) -> bool) {
        // (node, the filter's levels still to match, whether `node` is the root)
        let mut stack: Vec<(&Node, Option<&str>, bool)> = vec![(&self.root, Some(filter), true)];
        while let Some((node, rest, root)) = stack.pop() {
            let Some(rest) = rest else {
                if let Some(m) = &node.message
                    && !f(m)
                {
                    return;
                }
                continue;
            };
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            let visible = |key: &str| !(root && key.starts_with('$'));
            match level {
                "#" => {
                    // `a/#` matches `a` itself (MQTT-4.7.1-2), and everything below.
                    if !root
                        && let Some(m) = &node.message
                        && !f(m)
                    {
                        return;
                    }
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(k, _)| visible(k))
                        .map(|(_, n)| n)
                        .collect();
                    while let Some(n) = below.pop() {
                        if let Some(m) = &n.message
                            && !f(m)
                        {
                            return;
                        }
                        below.extend(n.children.values());
                    }
                }
                "+" => stack.extend(
                    node.children
                        .iter()
                        .filter(|(k, _)| visible(k))
                        .map(|(_, n)| (n, next, false)),
                ),
                exact => {
                    if let Some(child) = node.children.get(exact) {
                        stack.push((child, next, false));
                    }
                }
            }
        }
    }

    /// Retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let mut out = Vec::new();
        self.for_each_matching(filter, &mut |m| {
            out.push(m.clone());
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use crate::router::topic;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            topic.into(),
            payload.to_owned().into(),
            QoS::AtMostOnce,
            true,
        ))
    }

    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out: Vec<String> = store
            .matching(filter)
            .iter()
            .map(|m| m.topic.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn tree_agrees_with_reference_matcher() {
        let all = [
            "a",
            "a/b",
            "a/c",
            "a/b/c",
            "/a",
            "a/",
            "$SYS/x",
            "$SYS",
            "b",
            "a//b",
            "x/b",
            "/",
            "$other/a/b",
        ];
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "/+", "+/+", "$SYS/#", "$SYS/+", "a/b/c", "a//b",
            "a/+/c", "+/#", "/#", "$SYS", "+/+/+", "$other/#", "+/a/b", "a/b/#",
        ];
        let mut store = RetainedStore::default();
        for t in all {
            assert_eq!(store.apply(&msg(t, "x")), Applied::Stored);
        }
        for f in filters {
            let mut want: Vec<String> = all
                .iter()
                .filter(|t| topic::matches(f, t))
                .map(|t| t.to_string())
                .collect();
            want.sort();
            assert_eq!(topics(&store, f), want, "filter {f}");
        }
    }

    #[test]
    fn replace_clear_and_prune() {
        let mut store = RetainedStore::default();
        assert_eq!(store.apply(&msg("a/b/c", "1")), Applied::Stored);
        assert_eq!(store.apply(&msg("a/b/c", "22")), Applied::Replaced);
        assert_eq!(store.apply(&msg("a", "3")), Applied::Stored);
        assert_eq!((store.len(), store.bytes()), (2, 5 + 2 + 1 + 1));
        assert_eq!(store.matching("a/b/c")[0].payload, "22");
        assert_eq!(store.apply(&msg("a/b/c", "")), Applied::Cleared);
        assert_eq!(store.apply(&msg("a/b/c", "")), Applied::Unchanged);
        assert!(store.root.children["a"].children.is_empty(), "pruned");
        assert_eq!(store.apply(&msg("a", "")), Applied::Cleared);
        assert!(store.root.is_empty() && store.is_empty() && store.bytes() == 0);
    }

    #[test]
    fn bounds_refuse_new_topics_and_keep_replacing() {
        let mut store = RetainedStore::new(Bounds {
            max_messages: 2,
            max_bytes: 20,
        });
        assert_eq!(store.apply(&msg("t/1", "aaaa")), Applied::Stored); // 7 bytes
        assert_eq!(store.apply(&msg("t/2", "bbbb")), Applied::Stored); // 14
        assert_eq!(
            store.apply(&msg("t/3", "c")),
            Applied::Refused(Refused::Count)
        );
        assert_eq!(topics(&store, "#"), ["t/1", "t/2"]);
        // At the count bound, replacing and clearing still work.
        assert_eq!(store.apply(&msg("t/1", "a")), Applied::Replaced); // 11
        assert_eq!(store.apply(&msg("t/2", "")), Applied::Cleared); // 4
        assert_eq!(store.apply(&msg("t/3", "ccccccccc")), Applied::Stored); // 16
        assert_eq!((store.len(), store.bytes()), (2, 16));
        // A replacement past the bytes bound removes the stale value.
        assert_eq!(
            store.apply(&msg("t/3", "cccccccccccccc")),
            Applied::Refused(Refused::Bytes)
        );
        assert_eq!(topics(&store, "#"), ["t/1"]);
        assert_eq!((store.len(), store.bytes()), (1, 4));
        // The broker's own $SYS topics are stored regardless.
        assert_eq!(store.apply(&msg("$SYS/x", "y")), Applied::Stored);
        assert_eq!(
            store.apply(&msg("$SYS/broker/long", "yyyyyyyyyyyyyy")),
            Applied::Stored
        );
    }

    #[test]
    fn deep_topics_need_no_stack() {
        let deep = format!("a{}", "/".repeat(50_000));
        let mut store = RetainedStore::default();
        assert_eq!(store.apply(&msg(&deep, "x")), Applied::Stored);
        assert_eq!(store.matching("#").len(), 1);
        assert_eq!(store.matching(&deep).len(), 1);
        assert_eq!(store.matching(&format!("{deep}#")).len(), 1);
        assert_eq!(store.apply(&msg(&deep, "")), Applied::Cleared);
        assert!(store.root.is_empty());
        assert_eq!(store.apply(&msg(&deep, "x")), Applied::Stored);
        drop(store);
    }
}
