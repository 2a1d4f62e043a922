//! The `tandem` command line: default config, check-config, graceful shutdown.

use std::process::Command;
use std::time::Duration;

use tandem_tests::{RawClient, Tandem, tandem_bin};

#[test]
fn print_default_config_is_valid_and_checkable() {
    let out = Command::new(tandem_bin())
        .arg("print-default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("bind: 127.0.0.1:1883"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("default.yaml");
    std::fs::write(&file, &text).unwrap();
    let check = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn check_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:1883\nmqtt:\n  max_inflight: 10\n  max_queued: 5\n",
    )
    .unwrap();
    let out = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("line 7"), "{err}");
    assert!(err.contains("unknown field `max_queued`"), "{err}");

    std::fs::write(
        &file,
        "listeners:\n  default:\n    type: tcp\n    bind: not-an-address\n",
    )
    .unwrap();
    let out = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("line 4") && err.contains("listeners.default.bind"),
        "{err}"
    );
}

#[test]
fn serving_a_bad_config_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "sys:\n  interval: soon\n").unwrap();
    let out = Command::new(tandem_bin())
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("sys.interval") && err.contains("line 2"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_within_the_deadline() {
    let mut broker = Tandem::start("shutdown_timeout: 3s\n");
    let mut c = RawClient::connect(broker.addr, "stays").await;
    c.ping().await;
    let started = std::time::Instant::now();
    let status = broker
        .terminate(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    c.expect_closed().await;
    assert!(
        broker
            .wait_log("shutting down", Duration::from_secs(1))
            .is_some()
    );
}

#[test]
fn no_arguments_serves_the_embedded_default_on_1883() {
    // Skip only if something else already holds the default port.
    if std::net::TcpListener::bind("127.0.0.1:1883").is_err() {
        eprintln!("127.0.0.1:1883 is busy; skipping");
        return;
    }
    let mut child = Command::new(tandem_bin())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    let mut ok = false;
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:1883") {
            use std::io::{Read, Write};
            s.write_all(&[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'd',
            ])
            .unwrap();
            let mut ack = [0u8; 4];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.read_exact(&mut ack).unwrap();
            assert_eq!(ack, [0x20, 0x02, 0x00, 0x00]);
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(ok, "the default config serves 127.0.0.1:1883");
    assert!(status.success());
}

#[test]
fn check_config_contacts_plugins_and_checks_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let policy = tandem_tests::policy_bin();
    let yaml = |roles: &str| {
        format!(
            "plugins:\n  p:\n    endpoint: unix://{d}/p.sock\n    command: [{b}, --roles, {roles}]\n    startup_timeout: 10s\ntopic-check:\n  plugins: [p]\n",
            d = dir.path().display(),
            b = policy.display()
        )
    };
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, yaml("topic")).unwrap();
    let out = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("plugin p: tandem-policy") && text.contains("TopicFilter"),
        "{text}"
    );

    std::fs::write(&file, yaml("auth")).unwrap();
    let out = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("plugin `p`") && err.contains("does not declare TopicFilter"),
        "{err}"
    );
    // --offline checks only the file.
    let out = Command::new(tandem_bin())
        .args(["check-config", "--offline"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
}
