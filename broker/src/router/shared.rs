//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 section 4.8.2, served to
//! 3.1.1 clients too): every member of a group subscribes to the same filter, and each
//! matching message goes to one member, not to all.
//!
//! The strategy is round robin: each message starts one place further along the
//! group's members and takes the first that is online with room in its queue; when
//! none is, it goes to the member whose turn it was (queued if that session is
//! persistent and the message is QoS 1/2, else skipped like any message to an offline
//! session). Members are kept in the subscription tree beside ordinary subscribers,
//! each holding its group; the group itself (its name and turn counter) is shared by
//! its members and named here only while one of them holds it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytestring::ByteString;
use foldhash::HashMap;
use parking_lot::Mutex;

/// One shared subscription group: its full filter and whose turn it is.
#[derive(Debug)]
pub struct ShareGroup {
    /// `$share/{group}/{filter}`, as subscribed.
    name: ByteString,
    next: AtomicUsize,
}

impl ShareGroup {
    /// The full filter, `$share/{group}/{filter}`.
    pub fn name(&self) -> &ByteString {
        &self.name
    }

    /// The member a message goes to (see the module docs): from the one whose turn it
    /// is, the first that is `ready` (online with room), else the one whose turn it
    /// was. `members` is not empty.
    pub fn pick<'m, T>(&self, members: &'m [T], ready: impl Fn(&T) -> bool) -> &'m T {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        (0..n)
            .map(|i| &members[(start + i) % n])
            .find(|m| ready(m))
            .unwrap_or(&members[start % n])
    }
}

/// The groups some member holds, by full filter.
#[derive(Default)]
pub(super) struct ShareGroups {
    groups: Mutex<HashMap<ByteString, Weak<ShareGroup>>>,
}

impl ShareGroups {
    /// The group named `name`, made if no member holds it.
    pub(super) fn get(&self, name: &str) -> Arc<ShareGroup> {
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get(name).and_then(Weak::upgrade) {
            return group;
        }
        let group = Arc::new(ShareGroup {
            name: name.into(),
            next: AtomicUsize::new(0),
        });
        groups.insert(name.into(), Arc::downgrade(&group));
        group
    }

    /// Forgets `name` once no member holds it (after a member left).
    pub(super) fn prune(&self, name: &str) {
        let mut groups = self.groups.lock();
        if groups.get(name).is_some_and(|g| g.strong_count() == 0) {
            groups.remove(name);
        }
    }
}
