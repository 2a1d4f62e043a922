//! The subscription tree: filters split on `/`, one node per level.
//!
//! Matching walks the topic's levels once, following the exact level, `+` and `#` at
//! each node, so its cost grows with the topic's depth and the number of matching
//! filters, not with the number of subscriptions.

use foldhash::HashMap;

use super::Subscriber;
use crate::session::SessionId;

/// All subscriptions of the broker.
#[derive(Default)]
pub struct SubscriptionTree {
    root: Node,
    count: usize,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// Subscribers whose filter ends at this node.
    subscribers: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty()
    }
}

impl SubscriptionTree {
    /// Number of (session, filter) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces the subscription of `sub.session` to `filter`. Returns whether
    /// it replaced an existing one.
    pub fn insert(&mut self, filter: &str, sub: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if let Some(existing) = node
            .subscribers
            .iter_mut()
            .find(|s| s.session == sub.session)
        {
            *existing = sub;
            true
        } else {
            node.subscribers.push(sub);
            self.count += 1;
            false
        }
    }

    /// Removes the subscription of `session` to `filter`; returns whether there was one.
    pub fn remove(&mut self, filter: &str, session: SessionId) -> bool {
        fn walk<'a>(
            node: &mut Node,
            mut levels: impl Iterator<Item = &'a str>,
            session: SessionId,
        ) -> bool {
            match levels.next() {
                None => {
                    let before = node.subscribers.len();
                    node.subscribers.retain(|s| s.session != session);
                    node.subscribers.len() != before
                }
                Some(level) => {
                    let Some(child) = node.children.get_mut(level) else {
                        return false;
                    };
                    let removed = walk(child, levels, session);
                    if child.is_empty() {
                        node.children.remove(level);
                    }
                    removed
                }
            }
        }
        let removed = walk(&mut self.root, filter.split('/'), session);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Calls `f` for every subscription whose filter matches `topic`. A session with
    /// several matching filters is reported once per filter; the caller deduplicates.
    pub fn for_each_match<'a>(&'a self, topic: &str, f: &mut impl FnMut(&'a Subscriber)) {
        let dollar = topic.starts_with('$');
        walk(&self.root, Some(topic), true, dollar, f);

        fn walk<'a>(
            node: &'a Node,
            rest: Option<&str>,
            first: bool,
            dollar: bool,
            f: &mut impl FnMut(&'a Subscriber),
        ) {
            let wildcards = !(first && dollar);
            // `a/#` also matches `a` itself: the parent level (MQTT-4.7.1-2).
            if wildcards && let Some(hash) = node.children.get("#") {
                hash.subscribers.iter().for_each(&mut *f);
            }
            let Some(rest) = rest else {
                node.subscribers.iter().for_each(f);
                return;
            };
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            if wildcards && let Some(plus) = node.children.get("+") {
                walk(plus, next, false, dollar, f);
            }
            if let Some(child) = node.children.get(level) {
                walk(child, next, false, dollar, f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;
    use crate::router::topic;
    use crate::session::Mailbox;

    fn sub(session: u64) -> Subscriber {
        let (mailbox, _rx) = Mailbox::new("t".into(), 1);
        Subscriber {
            session: SessionId(session),
            qos: QoS::AtMostOnce,
            mailbox,
        }
    }

    fn matched(tree: &SubscriptionTree, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        tree.for_each_match(topic, &mut |s| out.push(s.session.0));
        out.sort();
        out
    }

    #[test]
    fn tree_agrees_with_reference_matcher() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "/+", "+/+", "$SYS/#", "$SYS/+", "a/b/c", "a//b",
            "a/+/c", "+/#",
        ];
        let topics = [
            "a", "a/b", "a/c", "a/b/c", "/a", "a/", "$SYS/x", "$SYS", "b", "a//b", "x/b",
        ];
        let mut tree = SubscriptionTree::default();
        for (i, f) in filters.iter().enumerate() {
            tree.insert(f, sub(i as u64));
        }
        for t in topics {
            let want: Vec<u64> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| topic::matches(f, t))
                .map(|(i, _)| i as u64)
                .collect();
            assert_eq!(matched(&tree, t), want, "topic {t}");
        }
    }

    #[test]
    fn insert_replace_remove_prunes() {
        let mut tree = SubscriptionTree::default();
        assert!(!tree.insert("a/b", sub(1)));
        assert!(tree.insert("a/b", sub(1)));
        assert!(!tree.insert("a/b", sub(2)));
        assert_eq!(tree.len(), 2);
        assert!(tree.remove("a/b", SessionId(1)));
        assert!(!tree.remove("a/b", SessionId(1)));
        assert!(!tree.remove("a/x", SessionId(2)));
        assert!(tree.remove("a/b", SessionId(2)));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty nodes are pruned");
    }
}
