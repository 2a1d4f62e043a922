//! A real browser: headless Chromium (Debian's `chromium`) loads a page that connects
//! with MQTT.js (npm `mqtt`, served by this test) over `ws://` and `wss://`, subscribes,
//! and receives a message `mosquitto_pub` publishes on the plain listener. The page
//! reports what happens by fetching `/report` from the test's own HTTP server, which
//! is how the test reads the result.
//!
//! Chromium is installed by `.ci/run`; the test fails (not skips) without it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tandem_tests::pki::Pki;
use tandem_tests::tooling::mqttjs_modules;
use tandem_tests::{DEADLINE, Tandem};

/// The page: connect to the broker URL in the query, subscribe, report.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>tandem browser test</title></head>
<body>
<script src="/mqtt.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  function report(kind, text) {
    fetch('/report?kind=' + kind + '&text=' + encodeURIComponent(text));
  }
  try {
    const client = mqtt.connect(params.get('broker'), {
      clientId: params.get('id'),
      protocolVersion: Number(params.get('version')),
      reconnectPeriod: 0,
      connectTimeout: 10000,
    });
    client.on('connect', () => {
      client.subscribe('browser/#', { qos: 1 }, (err) => {
        report('subscribed', err ? String(err) : 'ok');
      });
    });
    client.on('message', (topic, payload) => {
      report('message', topic + ' ' + payload.toString());
    });
    client.on('error', (e) => report('error', String(e)));
  } catch (e) {
    report('error', String(e));
  }
</script>
</body></html>
"#;

/// The test's HTTP server: the page, MQTT.js, and the reports (sent to the returned
/// channel as `kind text`).
fn serve_page() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let script = std::fs::read(mqttjs_modules().join("mqtt/dist/mqtt.min.js"))
        .expect("MQTT.js's browser bundle");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            answer(stream, &script, &tx);
        }
    });
    (addr, rx)
}

fn answer(mut stream: TcpStream, script: &[u8], reports: &mpsc::Sender<String>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Headers, up to the blank line.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let target = request.split(' ').nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, kind, body): (&str, &str, &[u8]) = match path {
        "/page" => ("200 OK", "text/html", PAGE.as_bytes()),
        "/mqtt.min.js" => ("200 OK", "text/javascript", script),
        "/report" => {
            let field = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(percent_decode)
                    .unwrap_or_default()
            };
            let _ = reports.send(format!("{} {}", field("kind"), field("text")));
            ("204 No Content", "text/plain", b"")
        }
        _ => ("404 Not Found", "text/plain", b""),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(body);
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Headless Chromium on `url`, killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--disable-sync",
                // The wss:// listener's certificate is the test's own CA's.
                "--ignore-certificate-errors",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is installed (apt-get install chromium)");
        Self {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next report, within a deadline that allows for a cold browser start.
fn next_report(reports: &mpsc::Receiver<String>, waiting_for: &str) -> String {
    let report = reports
        .recv_timeout(4 * DEADLINE)
        .unwrap_or_else(|_| panic!("no report from the page while waiting for {waiting_for}"));
    assert!(
        !report.starts_with("error"),
        "the page reported {report:?} while waiting for {waiting_for}"
    );
    report
}

fn browser_round_trip(broker: &Tandem, url: &str, id: &str, version: u8) {
    let (http, reports) = serve_page();
    let page = format!(
        "http://{http}/page?broker={}&id={id}&version={version}",
        url.replace(':', "%3A").replace('/', "%2F")
    );
    let _browser = Browser::open(&page);
    assert_eq!(next_report(&reports, "SUBACK"), "subscribed ok");
    broker
        .wait_log_all(&[&format!("client_id={id}"), "subscribed"], DEADLINE)
        .expect("the broker has the browser's subscription");
    let message = format!("hello {id}");
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .args(["-t", "browser/x", "-q", "1", "-m", &message])
        .status()
        .expect("mosquitto_pub is installed");
    assert!(status.success());
    assert_eq!(
        next_report(&reports, "the message"),
        format!("message browser/x {message}")
    );
}

#[test]
fn chromium_with_mqttjs_over_ws_and_wss() {
    let pki = Pki::new("tandem test CA");
    let (cert, key) = pki.server("server");
    let broker = Tandem::start_config(&format!(
        "listeners:\n  default: {{ type: tcp, bind: 127.0.0.1:0 }}\n  web: {{ type: ws, bind: 127.0.0.1:0 }}\n  webs: {{ type: wss, bind: 127.0.0.1:0, tls: {{ cert: {}, key: {} }} }}\n",
        cert.display(),
        key.display()
    ));
    let ws = broker.listener_addr("web");
    let wss = broker.listener_addr("webs");
    browser_round_trip(
        &broker,
        &format!("ws://127.0.0.1:{}/mqtt", ws.port()),
        "chromium-ws",
        4,
    );
    browser_round_trip(
        &broker,
        &format!("wss://localhost:{}/mqtt", wss.port()),
        "chromium-wss",
        5,
    );
}
