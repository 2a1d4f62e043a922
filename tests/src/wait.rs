//! Waiting with a deadline: a test waits for a condition to hold, never for a fixed time
//! that passes on a fast machine and fails on a slow one.

use std::time::{Duration, Instant};

use tandem_broker::protocol::QoS;

use crate::client::RawClient;

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

/// Subscribes `client` to the `$SYS` topic and waits until its value satisfies `ok`;
/// returns the value.
pub async fn wait_sys(client: &mut RawClient, topic: &str, ok: impl Fn(&str) -> bool) -> String {
    client.subscribe(topic, QoS::AtMostOnce).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let p = client.recv_publish().await;
        if &p.topic[..] == topic {
            let value = String::from_utf8_lossy(&p.payload).into_owned();
            if ok(&value) {
                return value;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{topic} never satisfied the condition"
        );
    }
}
