//! Interoperability with Debian's `mosquitto_pub` and `mosquitto_sub`: clients nobody
//! here wrote. Installed by `.ci/run`; the test fails (not skips) without them.

use std::process::{Command, Stdio};

use tandem_tests::Tandem;

#[test]
fn mosquitto_pub_to_mosquitto_sub_at_every_qos_and_retained() {
    let broker = Tandem::start("");
    let port = broker.addr.port().to_string();
    for qos in ["0", "1", "2"] {
        let sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", "interop/#", "-q", qos])
            .args(["-C", "1", "-W", "10", "-v", "-i", &format!("msub{qos}")])
            .stdout(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)");
        // Publish once the broker has the subscription in place.
        let client = format!("client_id=msub{qos}");
        broker
            .wait_log_all(&[&client, "subscribed"], tandem_tests::DEADLINE)
            .expect("mosquitto_sub subscribed");
        let message = format!("hello at qos {qos}");
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-t", "interop/x", "-q", qos])
            .args(["-m", &message])
            .status()
            .expect("mosquitto_pub is installed");
        assert!(status.success());
        let output = sub.wait_with_output().expect("sub output");
        assert!(output.status.success(), "mosquitto_sub failed at qos {qos}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert_eq!(text.trim(), format!("interop/x {message}"));
    }

    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "interop/kept",
            "-r",
            "-m",
            "kept",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "interop/kept"])
        .args(["-C", "1", "-W", "10", "-v", "--retained-only"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "interop/kept kept"
    );
}
