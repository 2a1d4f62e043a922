//! End-to-end test harness for Tandem.
//!
//! Tests here run the real `tandem` binary as a child process on an ephemeral port and
//! talk to it over real sockets: with [`RawClient`] when a test needs byte-level
//! control (DUP flags, malformed packets, exact packet order), with a client crate or
//! Debian's `mosquitto_pub`/`mosquitto_sub` when a peer nobody here wrote is the better
//! witness.
//!
//! # Layout
//! - [`Tandem`]: start the broker with a YAML config, read its logs, stop it.
//! - [`RawClient`]: an MQTT 3.1.1 client over a raw TCP socket, using the broker's
//!   codec only to frame packets (byte-exact cases are written out as bytes).
//! - [`binary`]: builds and locates the workspace's binaries.

pub mod sessions;
pub mod source;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{
    self, ConnAck, Connect, Packet, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
    SubAck, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod marker;
pub mod probe;
pub mod scrape;

/// How long a test waits for anything it expects before failing.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Builds (once per test process) and returns the path of a workspace binary, in the
/// same profile as the running test. `TANDEM_BIN_DIR` overrides the directory.
///
/// It builds the whole workspace with `--all-targets`, which resolves features exactly as
/// `cargo test --workspace` did, so this is a no-op after `cargo test` built everything
/// (building one package alone would pick other features and rebuild half the tree).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    if let Ok(dir) = std::env::var("TANDEM_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--workspace", "--all-targets"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --workspace --all-targets failed"
        );
    });
    profile_dir.join(name)
}

/// The `tandem` binary.
pub fn tandem_bin() -> PathBuf {
    binary("tandem")
}

#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running `tandem` process. Stopped (SIGKILL) on drop unless stopped before.
pub struct Tandem {
    child: Child,
    /// Address of the listener named `default`.
    pub addr: SocketAddr,
    logs: Arc<LogBuf>,
    /// Holds the config file (and anything a test puts there) for the broker's life.
    pub dir: tempfile::TempDir,
}

impl Tandem {
    /// Starts the broker with `yaml` as its whole config file. Use `127.0.0.1:0` as the
    /// bind address; the harness reads the bound port from the broker's log.
    pub fn start_config(yaml: &str) -> Self {
        Self::start_config_env(yaml, &[])
    }

    /// Like [`start_config`](Self::start_config), with extra environment variables (the
    /// plugin processes the broker starts inherit them).
    pub fn start_config_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tandem.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(tandem_bin())
            .arg("--config")
            .arg(&path)
            .envs(env.iter().copied())
            .env("TANDEM_LOG", "info,tandem_broker=debug")
            // RUST_LOG would override TANDEM_LOG, and the harness reads info lines.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem");
        let logs = Arc::new(LogBuf::default());
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("TANDEM_TEST_ECHO").is_some() {
                    eprintln!("[tandem] {line}");
                }
                sink.lines.lock().unwrap().push(line);
                sink.changed.notify_all();
            }
            // EOF: wake waiters so they can see the process is gone.
            sink.changed.notify_all();
        });
        let mut tandem = Self {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
            dir,
        };
        // Start-up includes starting and describing every plugin: allow for a busy machine.
        let line = tandem
            .wait_log_where(
                |l| log_event(l, "listening", Some(("listener", "default"))),
                3 * DEADLINE,
            )
            .unwrap_or_else(|| {
                panic!(
                    "tandem did not start listening; exit: {:?}; logs:\n{}",
                    tandem.child.try_wait(),
                    tandem.logs().join("\n")
                )
            });
        let addr = log_field(&line, "addr").expect("listening line has addr=");
        tandem.addr = addr.parse().expect("addr parses");
        tandem
    }

    /// Starts the broker with one listener on an ephemeral port plus `extra` YAML.
    pub fn start(extra: &str) -> Self {
        Self::start_config(&format!(
            "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:0\n{extra}"
        ))
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_log_all(&[needle], timeout)
    }

    /// Waits until one log line contains every one of `needles`; returns it.
    pub fn wait_log_all(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.wait_log_where(|l| needles.iter().all(|n| l.contains(n)), timeout)
    }

    /// Waits until a log line satisfies `matches`; returns it.
    pub fn wait_log_where(
        &self,
        matches: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.logs.lines.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| matches(l)) {
                return Some(l.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.logs.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// The admin listener's address (`admin.bind` with port 0 is resolved here), read
    /// from its `admin listening addr=...` log line; panics if it does not come.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self
            .wait_log_where(|l| log_event(l, "admin listening", None), DEADLINE)
            .unwrap_or_else(|| {
                panic!(
                    "no `admin listening` line; is admin.bind set? logs:\n{}",
                    self.logs().join("\n")
                )
            });
        log_field(&line, "addr")
            .expect("admin listening line has addr=")
            .parse()
            .expect("admin addr parses")
    }

    /// Number of log lines containing `needle`.
    pub fn count_log(&self, needle: &str) -> usize {
        self.logs
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Sends SIGTERM and waits for the process to exit, up to `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the broker's config file with `yaml` and asks it to reload, the way an
    /// operator would: `tandem reload --pid <pid>`.
    pub fn reload(&self, yaml: &str) {
        std::fs::write(self.dir.path().join("tandem.yaml"), yaml).expect("write config");
        let status = Command::new(tandem_bin())
            .args(["reload", "--pid", &self.pid().to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("run tandem reload");
        assert!(status.success(), "tandem reload failed: {status:?}");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Tandem {
    /// SIGTERM first, so the broker stops the plugin processes it started; SIGKILL if
    /// it has not exited within a few seconds.
    fn drop(&mut self) {
        if self.is_running() && self.terminate(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whether `line` is the log event `message` (with `field` = value, if given), in either
/// log format: `message key=value` text, or a JSON object with `fields.message`.
pub fn log_event(line: &str, message: &str, field: Option<(&str, &str)>) -> bool {
    if line.starts_with('{') {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        v["fields"]["message"] == message && field.is_none_or(|(k, val)| v["fields"][k] == val)
    } else {
        match field {
            Some((k, v)) => line.contains(&format!("{message} {k}={v}")),
            None => line.contains(&format!("{message} ")),
        }
    }
}

/// The value of field `key` of a log line: `key=value` in text, `fields.key` in JSON.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        return match &v["fields"][key] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
}

/// A CONNECT for 3.1.1 with the given client id, clean flag and keepalive.
pub fn connect_packet(client_id: &str, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        clean_start: clean,
        keep_alive,
        client_id: client_id.into(),
        username: None,
        password: None,
        will: None,
        properties: None,
    }
}

/// What [`RawClient::recv_within`] saw.
#[derive(Debug)]
pub enum Recv {
    /// A packet.
    Packet(Packet),
    /// The broker closed the connection.
    Closed,
    /// Nothing within the time.
    Nothing,
}

/// An MQTT 3.1.1 client over a raw TCP socket.
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
    /// PUBLISH packets that arrived while an acknowledgement was awaited.
    stashed: std::collections::VecDeque<Packet>,
}

impl RawClient {
    /// Opens a TCP connection without sending anything.
    pub async fn tcp(addr: SocketAddr) -> Self {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("tcp connect");
        Self {
            stream,
            buf: BytesMut::new(),
            next_pkid: 0,
            stashed: Default::default(),
        }
    }

    /// Connects and completes CONNECT/CONNACK with `connect`; returns the CONNACK.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut c = Self::tcp(addr).await;
        c.send(&Packet::Connect(connect)).await;
        match c.recv().await {
            Packet::ConnAck(ack) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects a clean session with keepalive 0 and asserts it was accepted.
    pub async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        let (c, ack) = Self::connect_with(addr, connect_packet(client_id, true, 0)).await;
        assert_eq!(ack.reason, protocol::ConnectReason::Success);
        c
    }

    /// Sends a packet.
    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, ProtocolVersion::V3_1_1, &mut out);
        self.send_raw(&out).await;
    }

    /// Sends raw bytes. A write error is ignored: the broker may have closed already,
    /// which the next read will show.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Waits up to `within` for the next packet, the connection closing, or nothing.
    pub async fn recv_within(&mut self, within: Duration) -> Recv {
        if let Some(p) = self.stashed.pop_front() {
            return Recv::Packet(p);
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match protocol::decode(&mut self.buf, ProtocolVersion::V3_1_1, usize::MAX) {
                Ok(Some(p)) => return Recv::Packet(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent a malformed packet: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Recv::Nothing,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next packet; panics if none comes within [`DEADLINE`].
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(DEADLINE).await {
            Recv::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    /// The next packet that is not a PUBLISH; PUBLISH packets before it are kept for
    /// later [`recv`](Self::recv) calls, in order.
    async fn recv_control(&mut self) -> Packet {
        let mut held = Vec::new();
        let packet = loop {
            match self.recv().await {
                p @ Packet::Publish(_) => held.push(p),
                other => break other,
            }
        };
        for p in held.into_iter().rev() {
            self.stashed.push_front(p);
        }
        packet
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts the broker closes the connection within [`DEADLINE`], ignoring packets
    /// it sends first.
    pub async fn expect_closed(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_within(left).await {
                Recv::Closed => return,
                Recv::Packet(_) => continue,
                Recv::Nothing => panic!("connection still open after {DEADLINE:?}"),
            }
        }
    }

    /// Asserts no packet arrives (and the connection stays open) for `within`.
    pub async fn expect_nothing(&mut self, within: Duration) {
        match self.recv_within(within).await {
            Recv::Nothing => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// A fresh packet identifier.
    pub fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid % u16::MAX + 1;
        self.next_pkid
    }

    /// Subscribes to one filter and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe_many(&[(filter, qos)]).await
    }

    /// Subscribes to several filters in one SUBSCRIBE and returns the SUBACK.
    pub async fn subscribe_many(&mut self, filters: &[(&str, QoS)]) -> SubAck {
        let pkid = self.pkid();
        let sub = Subscribe {
            pkid,
            filters: filters
                .iter()
                .map(|(f, qos)| SubscribeFilter {
                    filter: (*f).into(),
                    options: SubscriptionOptions {
                        qos: *qos,
                        ..Default::default()
                    },
                })
                .collect(),
            properties: None,
        };
        self.send(&Packet::Subscribe(sub)).await;
        match self.recv_control().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid);
                ack
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes and completes the QoS handshake as a publisher.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            self.pkid()
        };
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: topic.into(),
            pkid,
            payload: Bytes::copy_from_slice(payload),
            properties: None,
        }))
        .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv_control().await {
                Packet::PubAck(a) if a.pkid == pkid => {}
                other => panic!("expected PUBACK {pkid}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv_control().await {
                    Packet::PubRec(a) if a.pkid == pkid => {}
                    other => panic!("expected PUBREC {pkid}, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubRel::new(pkid))).await;
                match self.recv_control().await {
                    Packet::PubComp(a) if a.pkid == pkid => {}
                    other => panic!("expected PUBCOMP {pkid}, got {other:?}"),
                }
            }
        }
    }

    /// Acknowledges a received PUBLISH as a subscriber (PUBACK, or PUBREC then
    /// PUBREL/PUBCOMP for QoS 2).
    pub async fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubAck::new(p.pkid))).await,
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(PubRec::new(p.pkid))).await;
                match self.recv_control().await {
                    Packet::PubRel(r) if r.pkid == p.pkid => {}
                    other => panic!("expected PUBREL {}, got {other:?}", p.pkid),
                }
                self.send(&Packet::PubComp(PubComp::new(p.pkid))).await;
            }
        }
    }

    /// Sends DISCONNECT and waits for the broker to close the socket.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default())).await;
        self.expect_closed().await;
    }

    /// Round trip: PINGREQ, then waits for PINGRESP (skipping nothing else: any other
    /// packet first is a failure).
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }
}

/// Waits until `cond` holds, polling every 20 ms, up to [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The example plugin `tandem-event-logger` (events as JSON lines).
pub fn event_logger_bin() -> PathBuf {
    binary("tandem-event-logger")
}

/// The example plugin `tandem-policy` (static rules from the broker's YAML).
pub fn policy_bin() -> PathBuf {
    binary("tandem-policy")
}

/// A plugin process started by a test (not by the broker). Killed on drop.
pub struct PluginProcess {
    child: Child,
    /// The endpoint to put in the broker's config.
    pub endpoint: String,
}

impl PluginProcess {
    /// Starts `program args...` listening on `listen` (`unix:///path` or
    /// `tcp://ip:port`) and waits until it accepts connections.
    pub fn start(program: &std::path::Path, args: &[&str], listen: &str) -> Self {
        let child = Command::new(program)
            .args(args)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn plugin");
        let endpoint = if let Some(addr) = listen.strip_prefix("tcp://") {
            format!("http://{addr}")
        } else {
            listen.to_owned()
        };
        let mut p = Self { child, endpoint };
        p.wait_accepting(listen);
        p
    }

    /// Starts `program args...` on a free TCP port of `host` and waits until it accepts
    /// connections; returns it and the port. A free port can be taken by another test
    /// between [`free_port`] and the plugin's bind, so a plugin that exits before
    /// listening is started again on another port (a few times, then it panics: a plugin
    /// that never starts is still a failure).
    pub fn start_tcp(program: &std::path::Path, args: &[&str], host: &str) -> (Self, u16) {
        let mut exits = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("tcp://{host}:{port}");
            let child = Command::new(program)
                .args(args)
                .args(["--listen", &listen])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn plugin");
            let mut p = Self {
                child,
                endpoint: format!("http://{host}:{port}"),
            };
            match p.try_wait_accepting(&listen) {
                Ok(()) => return (p, port),
                Err(status) => exits.push((port, status)),
            }
        }
        panic!("plugin exited before listening, on every port tried: {exits:?}");
    }

    fn wait_accepting(&mut self, listen: &str) {
        if let Err(status) = self.try_wait_accepting(listen) {
            panic!("plugin exited before listening: {status}");
        }
    }

    /// Waits until the plugin accepts on `listen`; `Err` with its exit status if it
    /// exited first.
    fn try_wait_accepting(&mut self, listen: &str) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let up = if let Some(path) = listen.strip_prefix("unix://") {
                std::os::unix::net::UnixStream::connect(path).is_ok()
            } else {
                let addr = listen.trim_start_matches("tcp://");
                std::net::TcpStream::connect(addr).is_ok()
            };
            if up {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "plugin never listened on {listen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: fine for tests on loopback).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Sends SIGKILL to a process by id.
pub fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

impl Tandem {
    /// The pid of the plugin process the broker started for `alias` most recently
    /// (read from its "plugin process started/restarted" log line).
    pub fn plugin_pid(&self, alias: &str) -> Option<u32> {
        let needle = format!("plugin={alias} pid=Some(");
        self.logs()
            .iter()
            .rev()
            .find(|l| l.contains(&needle) && l.contains("plugin process"))
            .and_then(|l| {
                let start = l.find(&needle)? + needle.len();
                l[start..].split(')').next()?.parse().ok()
            })
    }
}

/// Connects with a username and password; returns the client if accepted, or the
/// CONNACK reason if refused.
pub async fn connect_as(
    addr: SocketAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<RawClient, protocol::ConnectReason> {
    let mut connect = connect_packet(client_id, true, 0);
    connect.username = Some(username.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let (client, ack) = RawClient::connect_with(addr, connect).await;
    if ack.reason == protocol::ConnectReason::Success {
        Ok(client)
    } else {
        Err(ack.reason)
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

impl Tandem {
    /// Runs the broker with `yaml` and expects it to fail at start-up within
    /// `within`; returns its stderr.
    pub fn expect_startup_failure(yaml: &str, within: Duration) -> String {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tandem.yaml");
        std::fs::write(&path, yaml).expect("write config");
        let mut child = Command::new(tandem_bin())
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                assert!(!status.success(), "expected a failed start-up:\n{err}");
                return err;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tandem still running after {within:?}; expected it to fail");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The name the `dns:///` tests resolve to two loopback replicas.
pub const REPLICAS_HOST: &str = "tandem-replicas.test";

/// Makes sure [`REPLICAS_HOST`] resolves to 127.0.0.2 and 127.0.0.3, adding the lines
/// to `/etc/hosts` if they are missing (CI runs as root). Panics with what to do if it
/// cannot.
pub fn ensure_replica_hosts() {
    use std::net::ToSocketAddrs;
    let resolved = |()| -> Vec<std::net::IpAddr> {
        let mut v: Vec<_> = (REPLICAS_HOST, 1)
            .to_socket_addrs()
            .map(|a| a.map(|a| a.ip()).collect())
            .unwrap_or_default();
        v.sort();
        v.dedup();
        v
    };
    let want: Vec<std::net::IpAddr> = vec![[127, 0, 0, 2].into(), [127, 0, 0, 3].into()];
    if resolved(()) == want {
        return;
    }
    let lines = format!("127.0.0.2 {REPLICAS_HOST}\n127.0.0.3 {REPLICAS_HOST}\n");
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .open("/etc/hosts")
        .and_then(|mut f| std::io::Write::write_all(&mut f, lines.as_bytes()));
    assert!(
        appended.is_ok() && resolved(()) == want,
        "{REPLICAS_HOST} must resolve to 127.0.0.2 and 127.0.0.3; add to /etc/hosts:\n{lines}"
    );
}
