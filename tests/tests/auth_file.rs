//! The `tandem-auth-file` plugin, started by the broker (`command:`), with real MQTT clients:
//! each hash format, anonymous clients, unknown users in a chain, skipped lines in the log,
//! reloading after `tandem-auth-file passwd` edits the file under a running broker, and a
//! missing file or a bad key refusing the broker's start.
//!
//! Uses Debian's `mosquitto_passwd` (package `mosquitto`) as the outside witness for its own
//! `$7$` format; the test fails, not skips, without it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tandem_broker::protocol::ConnectReason;
use tandem_tests::{DEADLINE, RawClient, Tandem, binary, connect_as, connect_packet, policy_bin};

/// `openssl passwd -6 -salt saltsalt 'crypt pw'`.
const SHA512_CRYPT: &str = "$6$saltsalt$Wt1GYnk2Hz1IYROUpFhJB.kMh5e28HCzY2lY3OkzOrK9X4fN7Jf43VtPqz3jlrXn8xuzsmo/GTkQLUGXy2ae//";
/// `mosquitto_passwd -b -H sha512 FILE mosq6 pw6` (mosquitto 2.0.11).
const MOSQUITTO_SHA512: &str = "$6$fLBYk1YW1mWVcj44$XE1mJHjpvPWqJJNwdBjf3jqoE776hoNIW4jUjFgyvDuDcDluJN9DP6AUvKBeXctkfyaHvEqt07OxcA/d6YEzuA==";

fn auth_file_bin() -> PathBuf {
    binary("tandem-auth-file")
}

/// `tandem-auth-file passwd <args>` with `password` on stdin (with `--password-stdin` unless
/// the subcommand is `remove`); returns (success, stderr).
fn passwd(args: &[&str], password: &str) -> (bool, String) {
    let stdin_flag = (args[0] != "remove").then_some("--password-stdin");
    let mut child = Command::new(auth_file_bin())
        .arg("passwd")
        .args(args)
        .args(stdin_flag)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem-auth-file passwd");
    // It may refuse before reading (a bad user name): a closed pipe is not an error here.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn passwd_ok(args: &[&str], password: &str) {
    let (ok, err) = passwd(args, password);
    assert!(ok, "tandem-auth-file passwd {args:?} failed: {err}");
}

/// A `mosquitto_passwd` line for `user`, made by mosquitto itself.
fn mosquitto_line(dir: &Path, user: &str, password: &str) -> String {
    let file = dir.join("mosquitto.passwd");
    std::fs::write(&file, "").unwrap();
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd is installed (apt-get install mosquitto)");
    assert!(status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(&format!("{user}:$7$")), "{text}");
    text
}

/// The broker's YAML: the plugin as `file` (the whole auth chain unless `extra` has its own
/// `auth:`), its `config:` lines, then `extra`. The timeout leaves room for argon2 on a busy
/// machine.
fn config(dir: &Path, plugin_config: &str, extra: &str) -> String {
    let bin = auth_file_bin();
    let auth = if extra.contains("\nauth:") {
        ""
    } else {
        "auth:\n  plugins: [file]\n"
    };
    format!(
        r#"listeners:
  default: {{ type: tcp, bind: 127.0.0.1:0 }}
plugins:
  file:
    endpoint: unix://{d}/auth.sock
    command: [{bin}]
    timeout: 5s
    config:
      password_file: {d}/passwd
{plugin_config}{extra}{auth}"#,
        d = dir.display(),
        bin = bin.display(),
    )
}

async fn anonymous(broker: &Tandem, client_id: &str) -> ConnectReason {
    let (_, ack) = RawClient::connect_with(broker.addr, connect_packet(client_id, true, 0)).await;
    ack.reason
}

async fn refused(broker: &Tandem, client_id: &str, user: &str, password: &str) -> ConnectReason {
    match connect_as(broker.addr, client_id, user, password).await {
        Ok(_) => panic!("{user} with password {password:?} was let in"),
        Err(reason) => reason,
    }
}

fn assert_no_panic(broker: &Tandem) {
    let logs = broker.logs();
    assert!(
        !logs.iter().any(|l| l.contains("panicked")),
        "a panic in the logs:\n{}",
        logs.join("\n")
    );
}

#[tokio::test]
async fn every_hash_format_and_skipped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("passwd");
    let file_arg = file.to_str().unwrap();
    passwd_ok(&["add", file_arg, "alice"], "argon secret");
    let mut text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$argon2id$v=19$"), "{text}");
    text.push_str("# migrated from mosquitto\n");
    text.push_str(&mosquitto_line(d, "mosq", "mosquitto secret"));
    text.push_str(&format!("mosq6:{MOSQUITTO_SHA512}\n"));
    text.push_str(&format!("crypt:{SHA512_CRYPT}\n"));
    text.push_str("bcrypt:$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW\n");
    text.push_str("this line has no colon\n");
    text.push_str("alice:$6$saltsalt$duplicate\n");
    std::fs::write(&file, text).unwrap();

    let broker = Tandem::start_config(&config(d, "", ""));
    let addr = broker.addr;
    assert!(
        connect_as(addr, "c1", "alice", "argon secret")
            .await
            .is_ok()
    );
    assert!(
        connect_as(addr, "c2", "mosq", "mosquitto secret")
            .await
            .is_ok()
    );
    assert!(connect_as(addr, "c3", "mosq6", "pw6").await.is_ok());
    assert!(connect_as(addr, "c4", "crypt", "crypt pw").await.is_ok());

    for (user, password) in [
        ("alice", "wrong"),
        ("alice", ""),
        ("mosq", "mosquitto"),
        ("crypt", "crypt"),
        ("bcrypt", "anything"),
        ("nobody", "x"),
    ] {
        // The plugin's 0x86 (unknown users alike), as 3.1.1's return code 4.
        assert_eq!(
            refused(&broker, "bad", user, password).await,
            ConnectReason::BadUserNameOrPassword,
            "{user}"
        );
    }
    // A username without a password.
    let mut connect = connect_packet("nopw", true, 0);
    connect.username = Some("alice".into());
    let (_, ack) = RawClient::connect_with(addr, connect).await;
    assert_eq!(ack.reason, ConnectReason::BadUserNameOrPassword);
    // allow_anonymous defaults to false.
    assert_eq!(
        anonymous(&broker, "anon").await,
        ConnectReason::NotAuthorized
    );

    // Skipped lines are in the plugin's log with file:line; denials in the broker's, with why.
    let at = |line: usize| format!("{}:{line}", file.display());
    for (line, what) in [
        (6, "unknown hash format"),
        (7, "no ':' between user and hash"),
        (8, "duplicate user (first defined on line 1)"),
    ] {
        assert!(
            broker.wait_log_all(&[&at(line), what], DEADLINE).is_some(),
            "line {line}: {what}"
        );
    }
    assert!(
        broker
            .wait_log_all(&["password file loaded", "users=4", "skipped=3"], DEADLINE)
            .is_some()
    );
    for reason in [
        "bad password",
        "unknown user",
        "no password",
        "allow_anonymous is false",
    ] {
        assert!(
            broker
                .wait_log_all(&["plugin=file", reason], DEADLINE)
                .is_some(),
            "{reason}"
        );
    }
    assert_no_panic(&broker);
}

#[tokio::test]
async fn anonymous_allowed_and_unknown_users_left_to_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("passwd");
    passwd_ok(&["add", file.to_str().unwrap(), "alice"], "pa");
    let policy = policy_bin();
    let extra = format!(
        r#"
  others:
    endpoint: unix://{d}/others.sock
    command: [{policy}, --roles, auth]
    config:
      users:
        bob: {{ password: pb }}
        alice: {{ password: pa }}
auth:
  plugins: [file, others]
"#,
        d = d.display(),
        policy = policy.display()
    );
    let plugin = "      allow_anonymous: true\n      unknown_user: abstain\n";
    let broker = Tandem::start_config(&config(d, plugin, &extra));
    let addr = broker.addr;
    // No username: allowed by allow_anonymous (the policy plugin abstains).
    assert_eq!(anonymous(&broker, "anon").await, ConnectReason::Success);
    // Not in the file: this plugin abstains, the next one decides.
    assert!(connect_as(addr, "b", "bob", "pb").await.is_ok());
    assert_eq!(
        refused(&broker, "b2", "bob", "wrong").await,
        ConnectReason::BadUserNameOrPassword
    );
    assert!(connect_as(addr, "a", "alice", "pa").await.is_ok());
    // In the file with the wrong password: denied, whatever the others say and whatever
    // allow_anonymous is (aMQTT lets any username in when it is false: not here).
    assert_eq!(
        refused(&broker, "a2", "alice", "pb").await,
        ConnectReason::BadUserNameOrPassword
    );
    assert_no_panic(&broker);
}

/// Connects until `user` gets the `want` answer, up to the harness deadline.
async fn eventually_connect(broker: &Tandem, user: &str, password: &str, want: bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let got = connect_as(broker.addr, "poll", user, password)
            .await
            .is_ok();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} still {} after the file changed",
            if got { "allowed" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn edits_while_running_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("passwd");
    let f = file.to_str().unwrap();
    std::fs::write(&file, "# empty to start with\n").unwrap();
    let broker = Tandem::start_config(&config(d, "", ""));
    assert_eq!(
        refused(&broker, "c", "carol", "one").await,
        ConnectReason::BadUserNameOrPassword
    );

    passwd_ok(&["add", f, "carol"], "one");
    eventually_connect(&broker, "carol", "one", true).await;

    passwd_ok(&["set", f, "carol"], "two");
    eventually_connect(&broker, "carol", "one", false).await;
    assert!(connect_as(broker.addr, "c", "carol", "two").await.is_ok());

    // An editor's in-place rewrite (no rename) is seen too.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}dave:{SHA512_CRYPT}\n")).unwrap();
    eventually_connect(&broker, "dave", "crypt pw", true).await;

    passwd_ok(&["remove", f, "carol"], "");
    eventually_connect(&broker, "carol", "two", false).await;
    assert!(
        connect_as(broker.addr, "d", "dave", "crypt pw")
            .await
            .is_ok()
    );

    // The file gone: the last users are kept, and that is logged.
    std::fs::remove_file(&file).unwrap();
    assert!(
        broker
            .wait_log(
                "cannot reload the password file; keeping the users loaded last",
                DEADLINE
            )
            .is_some()
    );
    assert!(
        connect_as(broker.addr, "d", "dave", "crypt pw")
            .await
            .is_ok()
    );
    assert_no_panic(&broker);
}

#[test]
fn passwd_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let f = file.to_str().unwrap();
    std::fs::write(&file, "# keep me\nalice:$6$saltsalt$x\n").unwrap();
    let (ok, err) = passwd(&["add", f, "alice"], "pw");
    assert!(!ok && err.contains("already in the file"), "{err}");
    let (ok, err) = passwd(&["set", f, "bob"], "pw");
    assert!(!ok && err.contains("not in the file"), "{err}");
    let (ok, err) = passwd(&["add", f, "bad:name"], "pw");
    assert!(!ok && err.contains("invalid user name"), "{err}");
    let (ok, err) = passwd(&["add", f, "bob"], "");
    assert!(!ok && err.contains("password is empty"), "{err}");
    let (ok, err) = passwd(&["remove", f, "bob"], "");
    assert!(!ok && err.contains("not in the file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "# keep me\nalice:$6$saltsalt$x\n",
        "untouched after the failures"
    );
    passwd_ok(&["add", f, "bob"], "pw");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# keep me\nalice:$6$saltsalt$x\nbob:$argon2id$"),
        "{text}"
    );
}

/// The broker's YAML for a start that must fail: the broker retries `Describe` until the
/// plugin's `startup_timeout`, so a short one keeps the test short.
fn failing_config(dir: &Path, plugin_config: &str) -> String {
    config(dir, plugin_config, "").replace(
        "    timeout: 5s\n",
        "    timeout: 5s\n    startup_timeout: 3s\n",
    )
}

#[test]
fn a_missing_password_file_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = Tandem::expect_startup_failure(&failing_config(dir.path(), ""), 3 * DEADLINE);
    let missing = format!(
        "cannot read the password file {}/passwd",
        dir.path().display()
    );
    assert!(err.contains(&missing), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_unknown_configuration_key_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("passwd"), "").unwrap();
    let yaml = failing_config(dir.path(), "      allow_anonymus: true\n");
    let err = Tandem::expect_startup_failure(&yaml, 3 * DEADLINE);
    assert!(err.contains("unknown field `allow_anonymus`"), "{err}");
}
