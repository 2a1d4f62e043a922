//! Certificate identity end to end: `mosquitto_pub`/`mosquitto_sub` present client
//! certificates on a mutual TLS listener, the broker verifies them and hands the
//! subject, SANs and fingerprint to `tandem-auth-x509`, which lets clients in by common
//! name or SAN, names their identity and keys topic ACLs on it.

use std::process::{Command, Output, Stdio};

use rcgen::{DnType, ExtendedKeyUsagePurpose};
use tandem_tests::pki::Pki;
use tandem_tests::{DEADLINE, Tandem, binary};

const RULES: &str = r#"
clients:
  - match: { common_name: "device-*" }
    identity: "{cn}"
  - match: { san: "dns:sensor-*.example.com" }
    identity: "{san}"
  - match: { common_name: ops }
    identity: ops
acl:
  - identity: "device-*"
    publish: ["devices/{identity}/telemetry/#"]
    subscribe: ["devices/{identity}/commands/#"]
  - identity: "sensor-*.example.com"
    publish: ["sensors/{identity}/#"]
  - identity: ops
    subscribe: ["devices/#", "sensors/#"]
"#;

fn p(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn publish(port: u16, topic: &str, message: &str, tls: &[String]) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", topic])
        .args(["-q", "1", "-m", message, "-V", "5"])
        .args(tls)
        .output()
        .expect("mosquitto_pub is installed")
}

#[test]
fn clients_by_certificate_with_acls_on_their_identity() {
    let pki = Pki::new("devices CA");
    let (cert, key) = pki.server("server");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x509.yaml"), RULES).unwrap();
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n  secure: {{ type: tls, bind: 127.0.0.1:0, tls: {{ cert: {}, key: {}, client_ca: {} }} }}\nplugins:\n  x509:\n    endpoint: unix://{d}/x509.sock\n    command: [{bin}, --rules, {d}/x509.yaml]\nauth: {{ plugins: [x509] }}\ntopic-check: {{ plugins: [x509] }}\n",
        p(&cert),
        p(&key),
        p(&pki.ca()),
        d = dir.path().display(),
        bin = binary("tandem-auth-x509").display(),
    ));
    let port = broker.listener_addr("secure").port();
    let with = |stem: &str| {
        vec![
            "--cafile".to_owned(),
            p(&pki.ca()),
            "--cert".to_owned(),
            p(&pki.path(&format!("{stem}.pem"))),
            "--key".to_owned(),
            p(&pki.path(&format!("{stem}.key"))),
        ]
    };
    pki.client("ops", "ops", &[]);
    pki.client("device-17", "device-17", &[]);
    pki.client("intruder", "intruder", &[]);
    pki.sign_as(
        "sensor",
        &[(DnType::CommonName, "not-a-device")],
        &["sensor-5.example.com"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    // ops watches everything it may.
    let watcher = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "ops-watch",
        ])
        .args([
            "-t",
            "devices/#",
            "-t",
            "sensors/#",
            "-q",
            "1",
            "-C",
            "2",
            "-W",
            "20",
            "-v",
        ])
        .args(with("ops"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed");
    broker
        .wait_log_all(&["client_id=ops-watch", "subscribed"], DEADLINE)
        .expect("ops subscribed");

    // device-17 may publish its own telemetry, not another device's.
    let out = publish(
        port,
        "devices/device-18/telemetry/t",
        "spoofed",
        &with("device-17"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Not authorized"),
        "PUBACK 0x87 (mosquitto_pub warns and exits 0): {out:?}"
    );
    broker
        .wait_log_all(
            &["topic check denied", "devices/device-18/telemetry/t"],
            DEADLINE,
        )
        .expect("the spoofed publish is denied by the plugin");
    let out = publish(
        port,
        "devices/device-17/telemetry/t",
        "mine",
        &with("device-17"),
    );
    assert!(out.status.success(), "{out:?}");
    // A certificate allowed by its SAN, with the SAN as its identity.
    let out = publish(
        port,
        "sensors/sensor-5.example.com/t",
        "by san",
        &with("sensor"),
    );
    assert!(out.status.success(), "{out:?}");

    // A certificate the CA signed, that no rule names: refused at CONNECT.
    let out = publish(port, "devices/intruder/telemetry/t", "x", &with("intruder"));
    assert!(!out.status.success());
    broker
        .wait_log_all(
            &["authentication denied", "plugin=x509", "CN=intruder"],
            DEADLINE,
        )
        .expect("the unnamed certificate is refused by the plugin, which logs its subject");

    let out = watcher.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "devices/device-17/telemetry/t mine\nsensors/sensor-5.example.com/t by san"
    );
}
