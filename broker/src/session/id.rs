//! A session's identity in the router.

use std::sync::atomic::{AtomicU64, Ordering};

/// A session's identity in the router: unique for the life of the process, so a new
/// session under a reused client id never collides with the remains of an old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl SessionId {
    /// The next unused identifier.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SessionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}
