//! Plugin processes: the workspace's binaries, plugins a test starts itself
//! ([`PluginProcess`]), and finding the ones the broker started (`command:`) among its
//! children, as Linux lists them in `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::wait::DEADLINE;

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
        // Without this test's own variables: with them, ring's build script would rerun and
        // the build would be anything but a no-op (see `tooling::cargo`).
        let mut cmd = crate::tooling::cargo();
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
    ///
    /// For a TCP port, prefer [`start_tcp`](Self::start_tcp): a port found free can be
    /// taken by another test before the plugin binds it.
    pub fn start(program: &Path, args: &[&str], listen: &str) -> Self {
        match Self::try_start(program, args, listen) {
            Ok(p) => p,
            Err(status) => panic!("plugin exited before listening: {status}"),
        }
    }

    /// [`start`](Self::start), returning how the plugin exited if it did before
    /// listening (a port taken meanwhile, for a caller that retries on another).
    pub fn try_start(program: &Path, args: &[&str], listen: &str) -> Result<Self, ExitStatus> {
        let endpoint = if let Some(addr) = listen.strip_prefix("tcp://") {
            format!("http://{addr}")
        } else {
            listen.to_owned()
        };
        let mut p = Self::spawn(program, args, listen, endpoint);
        p.try_wait_accepting(listen)?;
        Ok(p)
    }

    /// Starts `program args...` on a free TCP port of `host` and waits until it accepts
    /// connections; returns it and the port. A free port can be taken by another test
    /// between [`free_port`] and the plugin's bind, so a plugin that exits before
    /// listening is started again on another port (a few times, then it panics: a plugin
    /// that never starts is still a failure).
    pub fn start_tcp(program: &Path, args: &[&str], host: &str) -> (Self, u16) {
        let mut exits = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let listen = format!("tcp://{host}:{port}");
            let mut p = Self::spawn(program, args, &listen, format!("http://{host}:{port}"));
            match p.try_wait_accepting(&listen) {
                Ok(()) => return (p, port),
                Err(status) => exits.push((port, status)),
            }
        }
        panic!("plugin exited before listening, on every port tried: {exits:?}");
    }

    fn spawn(program: &Path, args: &[&str], listen: &str, endpoint: String) -> Self {
        let child = Command::new(program)
            .args(args)
            .args(["--listen", listen])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn plugin");
        Self { child, endpoint }
    }

    /// Waits until the plugin accepts on `listen`; `Err` with its exit status if it
    /// exited first.
    fn try_wait_accepting(&mut self, listen: &str) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let up = if let Some(path) = listen.strip_prefix("unix://") {
                std::os::unix::net::UnixStream::connect(path).is_ok()
            } else {
                // Not a connect: a port picked by `free_port` may have been taken by
                // another test's listener meanwhile (the plugin then fails to bind), and
                // a connect would reach that one.
                let addr = listen.trim_start_matches("tcp://");
                let port = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
                port.is_some_and(|port| listens_on(self.child.id(), port))
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

/// The live child processes of `pid`: every process in `/proc` whose parent it is.
///
/// Not `/proc/<pid>/task/*/children`: the kernel documents those lists as unreliable
/// while the threads run, and under load they missed a plugin just restarted. Walking
/// `/proc` reads every process's parent from its own `stat`, which is exact.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| parent(child) == Some(pid))
        .collect();
    found.sort_unstable();
    found
}

/// The parent of process `pid` (field 4 of `/proc/<pid>/stat`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold spaces and ')', so count after the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The command line of process `pid`, one string per argument; empty for a process that
/// is gone or a zombie (the kernel keeps no arguments for one that exited).
pub fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // Each argument ends with a NUL; an empty argument is an empty string between two.
    let Some(args) = raw.strip_suffix(&[0]) else {
        return Vec::new();
    };
    args.split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The value of `name` in the environment process `pid` started with.
pub(crate) fn environ_var(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|b| *b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`);
/// orders processes by age where pids, which wrap, cannot.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ...: comm may hold spaces and ')', so count after the last ')'.
    // Field 22 is the 20th after it (field 3, state, is the first).
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether process `pid` holds a TCP socket listening on `port` (any address): the
/// listening sockets of `/proc/net/tcp{,6}` on that port whose inode is among the
/// process's file descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<String> = fds
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_string_lossy();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let port_hex = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // local_address, state 0A = LISTEN, inode
                cols.len() > 9
                    && cols[1].ends_with(&port_hex)
                    && cols[3] == "0A"
                    && inodes.contains(cols[9])
            })
        })
    })
}
