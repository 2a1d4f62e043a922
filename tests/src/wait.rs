//! Waiting with a deadline: a test waits for a condition to hold, never for a fixed time
//! that passes on a fast machine and fails on a slow one.
//!
//! Waiting on a `$SYS` value, [`wait_sys`](crate::wait_sys), is a subscriber's doing and
//! lives with [`RawClient`](crate::RawClient) in `client.rs`, which imports [`DEADLINE`]
//! from here: this file imports nothing of its siblings, so no two files import each other.

use std::time::{Duration, Instant};

/// How long a test waits for anything it expects before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Waits until `cond` holds, polling every 20 ms, up to [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
