//! What the broker says when something happens, read as an operator reads it: a plugin
//! that cannot be reached says why, a reload that opens the broker says so everywhere
//! an operator looks, log fields are values, and `$SYS` never retains start-up zeros.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use tandem_broker::protocol::{ConnectReason, QoS};
use tandem_tests::probe::{ADMIN, http_get, wait_series};
use tandem_tests::{
    DEADLINE, RawClient, Tandem, connect_as, kill_pid, log_field, policy_bin, tandem_bin,
};

/// Runs `tandem check-config` on a config whose only plugin is at `endpoint`; returns
/// its stderr, asserting it failed.
fn check_config_error(endpoint: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        format!(
            "plugins:\n  gate:\n    endpoint: {endpoint}\n    startup_timeout: 2s\nauth: {{ plugins: [gate] }}\n"
        ),
    )
    .unwrap();
    let out = Command::new(tandem_bin())
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("see the warnings above"), "{err}");
    assert!(err.contains("plugin `gate`"), "{err}");
    err
}

/// A TCP server that answers whatever it is sent with an HTTP/1.1 error, as a web
/// server mistaken for a plugin would.
fn http1_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut first = String::new();
                let _ = BufReader::new(&stream).read_line(&mut first);
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
                // Open until the client gives up, so that it reads this answer, not a
                // broken pipe.
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            });
        }
    });
    port
}

#[test]
fn check_config_says_why_a_plugin_is_unreachable() {
    // Nothing listens: the connection is refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = check_config_error(&format!("http://127.0.0.1:{port}"));
    assert!(err.contains("Connection refused"), "{err}");

    // A socket that accepts and never speaks.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let err = check_config_error(&format!("http://127.0.0.1:{port}"));
    assert!(err.contains("is it a gRPC server?"), "{err}");
    drop(silent);

    // A web server, not a gRPC one; and TLS asked of a server that does not speak it.
    let port = http1_server();
    let err = check_config_error(&format!("http://127.0.0.1:{port}"));
    assert!(err.contains("it does not speak gRPC"), "{err}");
    let err = check_config_error(&format!("https://127.0.0.1:{port}"));
    assert!(err.contains("TLS: "), "{err}");
    assert!(!err.contains(": transport error"), "{err}");
}

fn policy(dir: &std::path::Path, chains: &str) -> String {
    format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n{ADMIN}plugins:\n  policy:\n    endpoint: unix://{}/p.sock\n    command: [{}]\n    config: {{ users: {{ alice: {{ password: s3cret-pw }} }}, auth_default: deny }}\n{chains}",
        dir.display(),
        policy_bin().display()
    )
}

#[tokio::test]
async fn a_reload_that_removes_the_chains_says_so_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let chains = "auth: { plugins: [policy] }\ntopic-check: { plugins: [policy] }\n";
    let broker = Tandem::start_config(&policy(dir.path(), chains));
    let admin = broker.admin_addr();
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    wait_series(admin, r#"tandem_chain_enforced{chain="auth"}"#, |v| {
        v == 1.0
    })
    .await;

    // A denial names the user and never the password.
    let denied = connect_as(broker.addr, "c1", "alice", "wrong-pw").await;
    assert_eq!(denied.err(), Some(ConnectReason::BadUserNameOrPassword));
    let line = broker
        .wait_log("authentication denied", DEADLINE)
        .expect("denial logged");
    assert_eq!(
        log_field(&line, "username").as_deref(),
        Some("alice"),
        "{line}"
    );
    assert!(
        !line.contains("wrong-pw") && !line.contains("s3cret"),
        "{line}"
    );

    // The reload drops both chains: `tandem reload` warns, the log warns, /readyz and the
    // metric show it.
    let said = broker.reload(&policy(dir.path(), ""));
    assert!(
        said.contains(
            "warning: the reload removed the auth section: every client is allowed to connect now"
        ),
        "{said}"
    );
    assert!(
        said.contains(
            "warning: the reload removed the topic-check section: every topic is allowed"
        ),
        "{said}"
    );
    let warned = broker
        .wait_log(
            "the reload removed the auth section: every client is allowed to connect now",
            DEADLINE,
        )
        .expect("logged");
    assert!(warned.contains("WARN"), "{warned}");
    let (status, body) = http_get(admin, "/readyz").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("note: no auth chain: every client is allowed to connect")
            && body.contains("note: no topic-check chain: every topic is allowed"),
        "{body}"
    );
    wait_series(admin, r#"tandem_chain_enforced{chain="auth"}"#, |v| {
        v == 0.0
    })
    .await;
    wait_series(
        admin,
        r#"tandem_chain_enforced{chain="topic-check"}"#,
        |v| v == 0.0,
    )
    .await;
    connect_as(broker.addr, "c2", "alice", "wrong-pw")
        .await
        .expect("the broker is open now");
    // The same reload again removes nothing more: no warning this time.
    let said = broker.reload(&policy(dir.path(), ""));
    assert!(!said.contains("warning"), "{said}");
}

#[test]
fn plugin_process_log_fields_are_values() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tandem::start_config(&policy(dir.path(), "auth: { plugins: [policy] }\n"));
    let started = broker
        .wait_log("plugin process started", DEADLINE)
        .expect("started");
    let pid = log_field(&started, "pid").expect("pid=");
    assert!(pid.parse::<u32>().is_ok(), "pid is a number: {started}");
    assert!(
        started.contains(&format!("command={}", policy_bin().display())),
        "{started}"
    );
    kill_pid(pid.parse().unwrap());
    let exited = broker
        .wait_log("plugin process exited; restarting", DEADLINE)
        .expect("exit logged");
    assert!(exited.contains("status=signal 9 (SIGKILL)"), "{exited}");
    let restarted = broker
        .wait_log("plugin process restarted", DEADLINE)
        .expect("restarted");
    let again = log_field(&restarted, "pid").expect("pid=");
    assert!(again.parse::<u32>().is_ok() && again != pid, "{restarted}");
}

#[test]
fn an_sdk_plugin_logs_plain_text_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix://{}/p.sock", dir.path().display());
    let mut child = Command::new(policy_bin())
        .args(["--listen", &listen])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("plugin serving"), "{line}");
    assert!(!line.contains('\u{1b}'), "colour codes in a pipe: {line:?}");
}

#[tokio::test]
async fn sys_retains_no_start_up_zeros() {
    let broker = Tandem::start("sys: { enable: true, interval: 3s }\n");
    let mut client = RawClient::connect(broker.addr, "watcher").await;
    client.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    // The version is there at once; the statistics come one interval after the
    // listeners opened, and describe the broker serving (this client is connected).
    let deadline = Instant::now() + DEADLINE;
    let (mut version, mut connected, mut uptime) = (None, None, None);
    while connected.is_none() || uptime.is_none() {
        assert!(Instant::now() < deadline, "no $SYS round");
        let p = client.recv_publish().await;
        let value = String::from_utf8_lossy(&p.payload).into_owned();
        match &p.topic[..] {
            "$SYS/broker/version" => version = version.or(Some(value)),
            "$SYS/broker/clients/connected" => connected = connected.or(Some(value)),
            "$SYS/broker/uptime" => uptime = uptime.or(Some(value)),
            _ => {}
        }
    }
    assert!(version.is_some_and(|v| v.starts_with("tandem ")));
    assert_eq!(connected.as_deref(), Some("1"));
    assert_ne!(uptime.as_deref(), Some("0 seconds"));
}

#[tokio::test]
async fn bind_and_port_override_the_default_listener() {
    let port = tandem_tests::free_port();
    let mut broker = Command::new(tandem_bin())
        .args(["-p", &port.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(broker.stderr.take().unwrap());
    let listening = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening listener=default"))
        .expect("listening line");
    assert!(
        listening.contains(&format!("addr=127.0.0.1:{port}")),
        "{listening}"
    );
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect(addr, "on-the-port").await;
    client.ping().await;
    let _ = broker.kill();
    let _ = broker.wait();

    let out = Command::new(tandem_bin())
        .args(["--bind", "localhost:1883"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(
            "<embedded default>: --bind: `localhost:1883` is neither IP:PORT nor an IP address"
        ),
        "{err}"
    );
}

/// `tandem reload --pid PID --timeout TIMEOUT`, run to its end.
fn tandem_reload(pid: u32, timeout: &str) -> std::process::Output {
    Command::new(tandem_bin())
        .args(["reload", "--pid", &pid.to_string(), "--timeout", timeout])
        .output()
        .unwrap()
}

#[test]
fn reload_by_pid_reports_refusal_and_strangers() {
    let broker = Tandem::start("");
    let said = broker.reload_refused("listeners: [\n");
    assert!(
        said.contains("error: reload refused; the configuration in force keeps serving"),
        "{said}"
    );
    assert!(said.contains("tandem.yaml"), "{said}");
    // A pid that is no broker: a clear error, and no signal sent to it.
    let out = tandem_reload(1, "2s");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("process 1 has no Tandem control socket"),
        "{err}"
    );

    // No answer within --timeout (a new plugin that never starts holds the reload for
    // its startup_timeout): exit 2, the outcome unknown; the broker then refuses it.
    let ghost = format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\nplugins:\n  ghost:\n    endpoint: unix://{}/ghost.sock\n    startup_timeout: 3s\n",
        broker.dir.path().display()
    );
    std::fs::write(broker.dir.path().join("tandem.yaml"), ghost).unwrap();
    let out = tandem_reload(broker.pid(), "500ms");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the reload may still be applied"), "{err}");
    broker
        .wait_log_all(&["reload refused", "ghost"], DEADLINE)
        .expect("the broker refused it in the end");
}

#[test]
fn reload_believes_only_the_broker_it_asked() {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::{SocketAddr, UnixListener};
    // A process that is no broker, and a stranger holding its control socket's name who
    // answers that the reload was applied.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let name = format!("tandem/{}/control", bystander.id());
    let squatter = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap();
    std::thread::spawn(move || {
        for stream in squatter.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.write_all(b"ok configuration reloaded: generation 99\n");
        }
    });
    let out = tandem_reload(bystander.id(), "2s");
    let _ = bystander.kill();
    let _ = bystander.wait();
    let (said, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{said}{err}");
    assert!(!said.contains("generation 99"), "{said}");
    assert!(err.contains("is held by another process"), "{err}");
}

#[test]
fn an_sdk_plugin_answers_help_instead_of_serving() {
    let out = Command::new(policy_bin())
        .arg("--help")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Usage: tandem-policy [--listen ADDR]"),
        "{text}"
    );
    assert!(text.contains("TANDEM_PLUGIN_LISTEN"), "{text}");
    // It printed and left: nothing was served.
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("plugin serving"), "{err}");
}

/// Connects to broker `pid`'s control socket from this process.
fn control_socket(pid: u32) -> std::os::unix::net::UnixStream {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("tandem/{pid}/control");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    std::os::unix::net::UnixStream::connect_addr(&addr).expect("the broker's control socket")
}

#[test]
fn the_control_socket_refuses_strangers_garbage_and_silence() {
    let broker = Tandem::start("");
    let pid = broker.pid();

    // Another user (uid 65534) asks for a reload: refused, nothing reloaded. Perl is in
    // every Debian base system and reachable by any user, unlike this test's binaries.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "perl",
            "-MSocket",
            "-e",
        ])
        .arg(format!(
            // The broker answers a stranger without reading: the write may meet a
            // closed socket, which must not kill the client before it reads the answer.
            r#"$SIG{{PIPE}} = "IGNORE";
               socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
               connect($s, pack_sockaddr_un("\0tandem/{pid}/control")) or die "connect: $!";
               syswrite($s, "reload\n"); my $answer = <$s>; print $answer;"#
        ))
        .output()
        .expect("run setpriv perl");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(said.trim(), "refused not permitted", "{out:?}");
    broker
        .wait_log(
            "control socket: refusing a client of another user",
            DEADLINE,
        )
        .expect("the refusal is logged");

    // A line longer than a request may be: read up to the bound, answered, not applied.
    let mut garbage = control_socket(pid);
    garbage.write_all(&[b'x'; 4096]).unwrap();
    let mut answer = String::new();
    BufReader::new(&garbage).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("refused unknown request"), "{answer}");
    assert!(answer.len() < 200, "the echo is bounded: {answer}");

    // A client that connects and says nothing holds the socket only until the request
    // timeout (5 s): a real `tandem reload` behind it is still answered.
    let _silent = control_socket(pid);
    let started = Instant::now();
    let out = tandem_reload(pid, "20s");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration reloaded"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Only that one reached the reload: the stranger and the garbage did not.
    assert_eq!(broker.count_log("reloading the configuration"), 1);
}
