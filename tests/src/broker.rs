//! [`Tandem`]: the real broker binary as a child process, started with a YAML config on
//! an ephemeral port; its logs read as they come, its config reloaded the way an
//! operator would, and its plugin processes found among its children.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tandem_broker::config::Config;

use crate::plugin::{children, cmdline, environ_var, start_time, tandem_bin};
use crate::wait::DEADLINE;

/// The broker's log lines so far, and a signal for each new one.
#[derive(Default)]
struct LogBuf {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

/// A running `tandem` process. Stopped (SIGTERM, then SIGKILL) on drop unless stopped
/// before.
pub struct Tandem {
    child: Child,
    /// Address of the listener named `default`.
    pub addr: SocketAddr,
    logs: Arc<LogBuf>,
    /// Holds the config file (and anything a test puts there) for the broker's life.
    pub dir: tempfile::TempDir,
    /// The plugin process last seen for each alias, so that [`plugin_pid`](Self::plugin_pid)
    /// still names it between its exit and its restart.
    plugin_pids: Mutex<HashMap<String, u32>>,
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
        let (dir, mut command) = command(yaml);
        let mut child = command
            .envs(env.iter().copied())
            .env("TANDEM_LOG", "info,tandem_broker=debug")
            // RUST_LOG would override TANDEM_LOG, and the harness reads info lines.
            .env_remove("RUST_LOG")
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
            plugin_pids: Mutex::default(),
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

    /// The bound address of the listener `name` (read from its "listening" log line,
    /// which every listener logs before the broker serves).
    pub fn listener_addr(&self, name: &str) -> SocketAddr {
        let line = self
            .wait_log_where(
                |l| log_event(l, "listening", Some(("listener", name))),
                DEADLINE,
            )
            .unwrap_or_else(|| panic!("no listener `{name}` in the log"));
        log_field(&line, "addr")
            .expect("listening line has addr=")
            .parse()
            .expect("addr parses")
    }

    /// Runs the broker with `yaml` and expects it to fail at start-up within
    /// `within`; returns its stderr.
    pub fn expect_startup_failure(yaml: &str, within: Duration) -> String {
        let (_dir, mut command) = command(yaml);
        let mut child = command.spawn().expect("spawn tandem");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
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

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's config file.
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("tandem.yaml")
    }

    /// Rewrites the broker's config file with `yaml` and asks it to reload, the way an
    /// operator would: `tandem reload --pid <pid>`, which must say it was applied.
    /// Returns what it printed.
    pub fn reload(&self, yaml: &str) -> String {
        let out = self.run_reload(yaml);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "tandem reload failed: {:?}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// [`reload`](Self::reload) expecting the broker to refuse: `tandem reload` exits
    /// non-zero. Returns what it printed on stderr (the reason).
    pub fn reload_refused(&self, yaml: &str) -> String {
        let out = self.run_reload(yaml);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "tandem reload succeeded: {stderr}");
        stderr
    }

    fn run_reload(&self, yaml: &str) -> std::process::Output {
        std::fs::write(self.config_path(), yaml).expect("write config");
        Command::new(tandem_bin())
            .args(["reload", "--pid", &self.pid().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run tandem reload")
    }

    /// The pid of the plugin process the broker started for `alias` most recently: the
    /// running one, or while none runs (it exited and is not restarted yet) the one seen
    /// last. `None` if no process was ever seen for `alias`.
    ///
    /// Read from the broker process itself, not its logs: its children whose command line
    /// is the alias's `command:` in the config file. Two aliases may run the same command
    /// (they differ only in `endpoint:` and `config:`, which the broker does not pass on
    /// the command line); then the alias the broker put in the child's environment
    /// (`TANDEM_PLUGIN_ALIAS`) tells them apart. Of several matches (an old process not
    /// yet gone), the one started last.
    pub fn plugin_pid(&self, alias: &str) -> Option<u32> {
        let mut seen = self.plugin_pids.lock().unwrap();
        if let Some(pid) = self.running_plugin_pid(alias) {
            seen.insert(alias.to_owned(), pid);
        }
        seen.get(alias).copied()
    }

    /// The running plugin process of `alias`, as [`plugin_pid`](Self::plugin_pid) finds it.
    fn running_plugin_pid(&self, alias: &str) -> Option<u32> {
        let config = Config::from_file(&self.config_path())
            .unwrap_or_else(|e| panic!("the broker's config does not parse: {e}"));
        let command = config.plugins.get(alias)?.command.clone()?;
        let shared = config
            .plugins
            .iter()
            .any(|(other, p)| other != alias && p.command.as_ref() == Some(&command));
        children(self.pid())
            .into_iter()
            .filter(|&pid| cmdline(pid) == command)
            .filter(|&pid| {
                !shared || environ_var(pid, "TANDEM_PLUGIN_ALIAS").as_deref() == Some(alias)
            })
            .max_by_key(|&pid| start_time(pid))
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

    /// Kills the process with SIGKILL, as an OOM kill or a node failure would, and
    /// waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A directory holding `yaml` as `tandem.yaml`, and the command that runs the broker on it
/// with stderr piped (the logs) and no stdin or stdout.
fn command(yaml: &str) -> (tempfile::TempDir, Command) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tandem.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let mut command = Command::new(tandem_bin());
    command
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    (dir, command)
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
