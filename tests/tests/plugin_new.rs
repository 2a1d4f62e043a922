//! `tandem plugin new` end to end: in a temporary directory outside the workspace, the real
//! binary writes a Rust and a Python project; each is built and passes its own tests as its
//! README says, then runs behind the real broker (`command:`, on a unix socket), and Debian's
//! `mosquitto_pub`/`mosquitto_sub` see its decisions: a listed user connects and publishes under
//! its own topic, an unlisted one is refused at CONNACK, and a publish outside the user's topic
//! is not delivered.
//!
//! Cost: the Rust project is built with the workspace's `Cargo.lock` (the same versions) into the
//! workspace's target directory (already-built dependencies are reused where their features
//! match the workspace's) and `--offline` (the registry cache the workspace filled). The Python
//! project shares the virtualenv of `python_plugin.rs` (the same pins, by construction).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use tandem_tests::tooling::{cargo, grpc_python, grpc_requirements, run};
use tandem_tests::{DEADLINE, PluginProcess, Tandem, tandem_bin};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The workspace's target directory: this test runs from `<target>/<profile>/deps/`.
fn workspace_target() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// Runs `tandem plugin new NAME --lang LANG --dir DIR` and returns DIR.
fn plugin_new(tmp: &Path, name: &str, lang: &str) -> PathBuf {
    let dir = tmp.join(name);
    let out = run(
        "tandem plugin new",
        Command::new(tandem_bin())
            .args(["plugin", "new", name, "--lang", lang, "--dir"])
            .arg(&dir),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("README.md"), "{said}");
    dir
}

/// The broker's YAML: the project's plugin as the auth and topic chain, started by the broker.
fn broker_config(tmp: &Path, name: &str, command: &[&Path]) -> String {
    let users = tmp.join("users.txt");
    std::fs::write(&users, "# who may connect\nalice\n").unwrap();
    let command: Vec<String> = command.iter().map(|p| p.display().to_string()).collect();
    format!(
        "listeners: {{ default: {{ type: tcp, bind: 127.0.0.1:0 }} }}
plugins:
  {name}:
    endpoint: unix://{socket}
    command: [{command}]
    config: {{ users_file: {users} }}
auth: {{ plugins: [{name}] }}
topic-check: {{ enable: true, plugins: [{name}] }}
",
        socket = tmp.join(format!("{name}.sock")).display(),
        command = command.join(", "),
        users = users.display(),
    )
}

/// `mosquitto_pub` (or `_sub`) against the broker with these arguments.
fn mosquitto(tool: &str, broker: &Tandem, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .expect("mosquitto-clients are installed (apt-get install mosquitto-clients)")
}

/// A listed user's subscriber, subscribed (the broker logged it) before it returns.
fn subscriber(broker: &Tandem) -> Child {
    let sub = mosquitto("mosquitto_sub", broker, &["-u", "alice", "-i", "alice-sub"])
        .args(["-t", "devices/#", "-q", "1", "-C", "1", "-W", "20", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed (apt-get install mosquitto-clients)");
    broker
        .wait_log_all(&["client_id=alice-sub", "subscribed"], DEADLINE)
        .unwrap_or_else(|| panic!("alice subscribed; logs:\n{}", broker.logs().join("\n")));
    sub
}

/// `mosquitto_pub -u alice` at QoS 1 (which waits for the PUBACK), which must succeed.
fn alice_publishes(broker: &Tandem, version: &[&str], topic: &str, message: &str) -> Output {
    let out = output(
        mosquitto("mosquitto_pub", broker, version)
            .args(["-u", "alice", "-q", "1", "-t", topic, "-m", message]),
    );
    assert!(out.status.success(), "{out:?}");
    out
}

/// `tandem plugin check` against an instance of the new plugin of its own (`command` on a
/// socket of its own, its `config:` from a file): the contract holds as written.
fn conformance(tmp: &Path, name: &str, command: &[&Path]) {
    let users = tmp.join("check-users.txt");
    std::fs::write(&users, "alice\n").unwrap();
    let config = tmp.join("check-config.yaml");
    std::fs::write(&config, format!("users_file: {}\n", users.display())).unwrap();
    let listen = format!(
        "unix://{}",
        tmp.join(format!("{name}-check.sock")).display()
    );
    let args: Vec<&str> = command[1..].iter().map(|p| p.to_str().unwrap()).collect();
    let plugin = PluginProcess::start(command[0], &args, &listen);
    let out = Command::new(tandem_bin())
        .args(["plugin", "check", &plugin.endpoint, "--plugin-config"])
        .arg(&config)
        .output()
        .expect("run tandem plugin check");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("0 failed"), "{table}");
    assert!(
        table.contains("roles") && table.contains("Authenticate and TopicFilter"),
        "{table}"
    );
}

/// The decisions of the allow-list plugin `name`, seen by MQTT clients through the broker.
fn check_behind_the_broker(tmp: &Path, name: &str, command: &[&Path]) {
    conformance(tmp, name, command);
    let broker = Tandem::start_config(&broker_config(tmp, name, command));
    let (plugin, named) = (format!("plugin={name}"), format!("name={name}"));
    assert!(
        broker
            .wait_log_all(
                &[
                    "plugin described",
                    &plugin,
                    &named,
                    "roles=[Authenticate, TopicFilter]"
                ],
                DEADLINE
            )
            .is_some(),
        "the broker described the plugin; logs:\n{}",
        broker.logs().join("\n")
    );

    // Not on the list: CONNACK refuses, with return code 5 (MQTT 3.1.1) and 0x87 (MQTT 5);
    // mosquitto_pub exits with the code it was given.
    let publish = ["-t", "devices/mallory/x", "-m", "hi", "-q", "1"];
    let mallory = output(mosquitto("mosquitto_pub", &broker, &["-u", "mallory"]).args(publish));
    assert_eq!(mallory.status.code(), Some(5), "{mallory:?}");
    assert!(
        String::from_utf8_lossy(&mallory.stderr).contains("Connection Refused: not authorised."),
        "{mallory:?}"
    );
    let mallory5 = output(
        mosquitto("mosquitto_pub", &broker, &["-V", "mqttv5", "-u", "mallory"]).args(publish),
    );
    assert_eq!(mallory5.status.code(), Some(0x87), "{mallory5:?}");
    let anonymous = output(&mut mosquitto("mosquitto_pub", &broker, &publish));
    assert_eq!(anonymous.status.code(), Some(5), "{anonymous:?}");

    // On the list: alice connects; her publish outside devices/alice/ is refused (MQTT 5:
    // PUBACK 0x87; MQTT 3.1.1: acknowledged and dropped), the one under it is delivered.
    let sub = subscriber(&broker);
    let stolen = alice_publishes(&broker, &["-V", "mqttv5"], "devices/bob/x", "stolen");
    assert!(
        String::from_utf8_lossy(&stolen.stderr).contains("Publish 1 failed: Not authorized."),
        "{stolen:?}"
    );
    alice_publishes(&broker, &[], "devices/bob/x", "stolen");
    // Each publish is acknowledged after routing, so a stolen message that got through would
    // reach the subscriber before this one.
    alice_publishes(&broker, &[], "devices/alice/temp", "21.5");
    let received = sub.wait_with_output().expect("mosquitto_sub output");
    assert!(received.status.success(), "{received:?}");
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        "devices/alice/temp 21.5",
        "only alice's own message is delivered"
    );
}

#[test]
fn a_new_rust_plugin_builds_passes_its_tests_and_decides_behind_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let project = plugin_new(tmp.path(), "allowlist", "rust");
    std::fs::copy(repo().join("Cargo.lock"), project.join("Cargo.lock"))
        .expect("copy the workspace's Cargo.lock");
    let target = workspace_target();
    let in_project = |args: &[&str]| {
        let mut cmd = cargo();
        cmd.args(args)
            .arg("--offline")
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", &target)
            // The workspace's dev profile, so the dependencies it built are reused.
            .env("CARGO_PROFILE_DEV_DEBUG", "line-tables-only");
        cmd
    };
    let started = Instant::now();
    run(
        "cargo build (the new Rust plugin)",
        &mut in_project(&["build"]),
    );
    eprintln!("cargo build of the new plugin: {:.1?}", started.elapsed());
    let started = Instant::now();
    let tested = run(
        "cargo test (the new Rust plugin)",
        &mut in_project(&["test"]),
    );
    eprintln!("cargo test of the new plugin: {:.1?}", started.elapsed());
    let said = String::from_utf8_lossy(&tested.stdout);
    assert!(said.contains("test result: ok. 3 passed"), "{said}");

    let started = Instant::now();
    check_behind_the_broker(tmp.path(), "allowlist", &[&target.join("debug/allowlist")]);
    eprintln!(
        "the new plugin behind the broker: {:.1?}",
        started.elapsed()
    );
}

#[test]
fn a_new_python_plugin_generates_passes_its_tests_and_decides_behind_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let project = plugin_new(tmp.path(), "py-allowlist", "python");
    // The virtualenv made for these pins serves this project only if it asks for the same.
    assert_eq!(
        std::fs::read_to_string(project.join("requirements.txt")).unwrap(),
        std::fs::read_to_string(grpc_requirements()).unwrap(),
    );
    let python = grpc_python();
    run(
        "generate.sh (the new Python plugin)",
        Command::new(project.join("generate.sh")).env("PYTHON", python),
    );
    let tested = run(
        "python -m unittest test_rules",
        Command::new(python)
            .args(["-m", "unittest", "-v", "test_rules"])
            .current_dir(&project),
    );
    let said = String::from_utf8_lossy(&tested.stderr);
    assert!(
        said.contains("Ran 3 tests") && said.contains("OK"),
        "{said}"
    );

    check_behind_the_broker(
        tmp.path(),
        "py-allowlist",
        &[python, &project.join("plugin.py")],
    );
}
