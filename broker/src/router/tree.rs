//! The subscription tree: filters split on `/`, one node per level.
//!
//! Matching walks the topic's levels once, following the exact level, `+` and `#` at
//! each node, so its cost grows with the topic's depth and the number of matching
//! filters, not with the number of subscriptions.
//!
//! No walk recurses: insert, remove, match and even dropping a node use loops and
//! explicit stacks, so a filter of any depth costs heap, never stack (a 10,000-level
//! filter once overflowed the stack on removal and aborted the broker).
//! `mqtt.max_topic_levels` bounds the depth the connection accepts in the first place.

use std::sync::Arc;

use foldhash::HashMap;

use crate::protocol::QoS;
use crate::router::shared::ShareGroup;
use crate::session::id::SessionId;
use crate::session::mailbox::Mailbox;

/// A session's subscription to one filter.
#[derive(Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: SessionId,
    /// Maximum QoS granted.
    pub qos: QoS,
    /// The MQTT 5 subscription identifier of the SUBSCRIBE that made it; 0: none.
    pub subscription_id: u32,
    /// MQTT 5 "no local": messages the session published itself are not sent to it.
    pub no_local: bool,
    /// MQTT 5 "retain as published": deliveries keep the retain flag they were
    /// published with (otherwise it is cleared, as 3.1.1 does).
    pub retain_as_published: bool,
    /// Where its messages go.
    pub mailbox: Arc<Mailbox>,
    /// The shared subscription group it is a member of; `None` for an ordinary
    /// subscription.
    pub share: Option<Arc<ShareGroup>>,
}

impl Subscriber {
    /// Whether it is `session`'s subscription in the group named `share` (`None`: its
    /// ordinary one): a session holds at most one subscription per filter and group.
    fn is(&self, session: SessionId, share: Option<&str>) -> bool {
        self.session == session && self.share.as_ref().map(|g| &g.name()[..]) == share
    }
}

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
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty()
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

impl SubscriptionTree {
    /// Number of (session, filter) subscriptions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces the subscription of `sub.session` to `filter` (in `sub`'s
    /// share group, if any). Returns whether it replaced an existing one.
    pub fn insert(&mut self, filter: &str, sub: Subscriber) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let share = sub.share.clone();
        let share = share.as_ref().map(|g| &g.name()[..]);
        if let Some(existing) = node
            .subscribers
            .iter_mut()
            .find(|s| s.is(sub.session, share))
        {
            *existing = sub;
            true
        } else {
            node.subscribers.push(sub);
            self.count += 1;
            false
        }
    }

    /// Removes the subscription of `session` to `filter` in the share group named
    /// `share` (`None`: its ordinary one); returns whether there was one. Nodes left
    /// empty are pruned.
    pub fn remove(&mut self, filter: &str, session: SessionId, share: Option<&str>) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        // First pass, read-only: find the subscription and the shallowest level from
        // which the path holds nothing but it (a chain of nodes with no subscriber and
        // one child), which is the subtree to cut off once it goes.
        let mut node = &self.root;
        let mut chain_start = None;
        for (depth, level) in levels.iter().enumerate() {
            let Some(child) = node.children.get(*level) else {
                return false;
            };
            node = child;
            let last = depth + 1 == levels.len();
            if !last {
                if node.subscribers.is_empty() && node.children.len() == 1 {
                    chain_start.get_or_insert(depth);
                } else {
                    chain_start = None;
                }
            }
        }
        if !node.subscribers.iter().any(|s| s.is(session, share)) {
            return false;
        }
        let leaf_goes = node.children.is_empty() && node.subscribers.len() == 1;
        // Second pass: cut the subtree at `cut`, or remove the subscriber from the leaf.
        let cut = leaf_goes.then(|| chain_start.unwrap_or(levels.len() - 1));
        let stop = cut.unwrap_or(levels.len());
        let mut node = &mut self.root;
        for level in &levels[..stop] {
            let Some(child) = node.children.get_mut(*level) else {
                return false;
            };
            node = child;
        }
        match cut {
            Some(depth) => {
                node.children.remove(levels[depth]);
            }
            None => node.subscribers.retain(|s| !s.is(session, share)),
        }
        self.count -= 1;
        true
    }

    /// Calls `f` for every subscription whose filter matches `topic`. A session with
    /// several matching filters is reported once per filter; the caller deduplicates.
    pub fn for_each_match<'a>(&'a self, topic: &str, f: &mut impl FnMut(&'a Subscriber)) {
        // A topic starting with `$` is not matched by a first-level wildcard (MQTT-4.7.2-1).
        let dollar = topic.starts_with('$');
        // (node, the topic's levels still to match, whether `node` is the root)
        let mut stack: Vec<(&'a Node, Option<&str>, bool)> = vec![(&self.root, Some(topic), true)];
        while let Some((node, rest, first)) = stack.pop() {
            let wildcards = !(first && dollar);
            // `a/#` also matches `a` itself: the parent level (MQTT-4.7.1-2).
            if wildcards && let Some(hash) = node.children.get("#") {
                hash.subscribers.iter().for_each(&mut *f);
            }
            let Some(rest) = rest else {
                node.subscribers.iter().for_each(&mut *f);
                continue;
            };
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            if wildcards && let Some(plus) = node.children.get("+") {
                stack.push((plus, next, false));
            }
            if let Some(child) = node.children.get(level) {
                stack.push((child, next, false));
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
            subscription_id: 0,
            no_local: false,
            retain_as_published: false,
            mailbox,
            share: None,
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
        assert!(tree.remove("a/b", SessionId(1), None));
        assert!(!tree.remove("a/b", SessionId(1), None));
        assert!(!tree.remove("a/x", SessionId(2), None));
        assert!(tree.remove("a/b", SessionId(2), None));
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty nodes are pruned");
    }

    #[test]
    fn remove_prunes_only_what_it_empties() {
        let mut tree = SubscriptionTree::default();
        tree.insert("a/b/c/d", sub(1));
        tree.insert("a/b", sub(2));
        tree.insert("a/x/y", sub(3));
        tree.insert("a/b/c/d/e", sub(4));
        // A leaf with children stays, without the subscriber.
        assert!(tree.remove("a/b/c/d", SessionId(1), None));
        assert_eq!(matched(&tree, "a/b/c/d"), Vec::<u64>::new());
        assert_eq!(matched(&tree, "a/b/c/d/e"), vec![4]);
        // The chain c/d/e below a/b (which has a subscriber) is cut.
        assert!(tree.remove("a/b/c/d/e", SessionId(4), None));
        assert!(
            !tree.root.children["a"].children["b"]
                .children
                .contains_key("c")
        );
        assert_eq!(matched(&tree, "a/b"), vec![2]);
        assert!(tree.remove("a/x/y", SessionId(3), None));
        assert!(!tree.root.children["a"].children.contains_key("x"));
        assert!(tree.remove("a/b", SessionId(2), None));
        assert!(tree.root.is_empty());
        assert!(tree.is_empty());
    }

    #[test]
    fn deep_filters_need_no_stack() {
        // Far deeper than mqtt.max_topic_levels allows, to prove no walk recurses.
        let deep = format!("a{}", "/".repeat(50_000));
        let deep_hash = format!("{deep}#");
        let mut tree = SubscriptionTree::default();
        tree.insert(&deep, sub(1));
        tree.insert(&deep_hash, sub(2));
        tree.insert("#", sub(3));
        assert_eq!(matched(&tree, &deep), vec![1, 2, 3]);
        assert!(tree.remove(&deep, SessionId(1), None));
        assert_eq!(matched(&tree, &deep), vec![2, 3]);
        // Dropping the tree with a deep path left in it must not recurse either.
        drop(tree);
        let mut tree = SubscriptionTree::default();
        tree.insert(&deep, sub(1));
        assert!(tree.remove(&deep, SessionId(1), None));
        assert!(tree.root.is_empty());
    }
}
