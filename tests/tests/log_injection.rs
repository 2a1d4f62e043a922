//! A client cannot forge log lines: control characters in what it sends (client id,
//! topics) are escaped in the broker's text logs.

use tandem_broker::protocol::QoS;
use tandem_tests::{DEADLINE, RawClient, Tandem};

const FORGED: &str = "ERROR tandem_broker: admin connected from 10.0.0.1";

#[tokio::test]
async fn newlines_in_client_strings_do_not_start_log_lines() {
    let broker = Tandem::start("");
    let client_id = format!("evil\n{FORGED}\x1b[2J");
    let mut c = RawClient::connect(broker.addr, &client_id).await;
    // A publish to $SYS is dropped with a debug line naming the topic.
    let topic = format!("$SYS/x\n{FORGED}");
    c.publish(&topic, b"p", QoS::AtMostOnce, false).await;
    c.ping().await;

    let connected = broker
        .wait_log_all(&["client connected", "evil"], DEADLINE)
        .expect("the connect is logged");
    assert!(
        connected.contains(&format!(r"client_id=evil\n{FORGED}\u{{1b}}[2J")),
        "escaped in the span field: {connected}"
    );
    let dropped = broker
        .wait_log("dropping a client publish to $SYS", DEADLINE)
        .expect("the $SYS publish is logged");
    assert!(dropped.contains(r"$SYS/x\n"), "{dropped}");

    let logs = broker.logs();
    for line in &logs {
        assert!(!line.starts_with(FORGED), "a forged line: {line}");
        assert!(!line.contains('\x1b'), "a raw escape sequence: {line:?}");
    }
}
