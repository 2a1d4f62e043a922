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
    use std::io::{Read, Write};
    // The embedded default binds 127.0.0.1:1883 and nothing else can show that it
    // does; a port held by something else is a failure to fix, not a pass. Another run
    // of this very test may hold it for a moment: wait for it, within the deadline.
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    while let Err(e) = std::net::TcpListener::bind("127.0.0.1:1883") {
        assert!(
            std::time::Instant::now() < deadline,
            "127.0.0.1:1883 is held by another process ({e}); this test needs it free \
             (stop the local MQTT broker, e.g. `ss -ltnp 'sport = :1883'` shows which)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut child = Command::new(tandem_bin())
        .env_remove("RUST_LOG")
        .env_remove("TANDEM_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + tandem_tests::DEADLINE;
    let mut ack = [0u8; 4];
    let served = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("tandem with no arguments exited at once ({status}):\n{err}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect("127.0.0.1:1883") {
            s.write_all(&[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 1, b'd',
            ])
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            break s.read_exact(&mut ack).map(|()| ack);
        }
        if std::time::Instant::now() > deadline {
            break Err(std::io::Error::other("nothing listening on 127.0.0.1:1883"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let ack =
        served.unwrap_or_else(|e| panic!("the default config serves 127.0.0.1:1883: {e}\n{err}"));
    assert_eq!(ack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted\n{err}");
    assert!(
        err.contains("listening") && err.contains("127.0.0.1:1883"),
        "it says where it listens:\n{err}"
    );
    assert!(status.success(), "{status:?}\n{err}");
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
