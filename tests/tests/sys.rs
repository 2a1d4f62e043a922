//! `$SYS/broker/...` statistics.

use tandem_broker::protocol::QoS;
use tandem_tests::{RawClient, Tandem};

#[tokio::test]
async fn sys_topics_report_broker_statistics() {
    let broker = Tandem::start("sys:\n  interval: 1s\n");
    let mut s = RawClient::connect(broker.addr, "watcher").await;
    s.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut seen = std::collections::BTreeMap::new();
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    let wanted = [
        "version",
        "uptime",
        "clients/connected",
        "clients/total",
        "clients/maximum",
        "messages/received",
        "messages/sent",
        "bytes/received",
        "bytes/sent",
        "subscriptions/count",
        "retained messages/count",
    ];
    let counted = |seen: &std::collections::BTreeMap<String, String>, key: &str| {
        seen.get(key)
            .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1))
    };
    // The first values are retained from before this client connected; later ones count it.
    while !wanted.iter().all(|w| seen.contains_key(*w))
        || !counted(&seen, "clients/connected")
        || !counted(&seen, "subscriptions/count")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "missing: {wanted:?} vs {seen:?}"
        );
        let m = s.recv_publish().await;
        let name = m.topic.strip_prefix("$SYS/broker/").unwrap().to_owned();
        seen.insert(name, String::from_utf8(m.payload.to_vec()).unwrap());
    }
    assert!(seen["version"].starts_with("tandem "));
    assert!(seen["uptime"].ends_with(" seconds"));
    // A plain `#` subscriber does not see $SYS.
    let mut all = RawClient::connect(broker.addr, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    // Wait for a round of $SYS publishes made after `all` subscribed: its snapshot counts
    // the new subscription (the watcher's and this one), and each round is routed
    // after its snapshot is taken.
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    loop {
        let m = s.recv_publish().await;
        if &m.topic[..] == "$SYS/broker/subscriptions/count"
            && std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n >= 2)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no $SYS round counted the `#` subscription"
        );
    }
    // That round did not reach `all`: a marker published after it is the first thing it gets.
    all.expect_nothing_before_own_marker("marker/end").await;
}
