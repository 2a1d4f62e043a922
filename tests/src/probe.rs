//! Reading a running broker from outside: its admin listener over plain HTTP/1.1
//! (`/metrics` series, `/healthz`, `/readyz`) and its resident memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wait::DEADLINE;

/// The admin section that serves `/metrics` on an ephemeral port.
pub const ADMIN: &str = "admin: { bind: 127.0.0.1:0 }\n";

/// One HTTP/1.1 GET over a plain socket: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
        .await
        .expect("admin accepts in time")
        .expect("connect to admin");
    let req = format!("GET {path} HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_owned())
}

/// One scrape of `/metrics` (the body; panics on a status other than 200).
pub async fn metrics(admin: SocketAddr) -> String {
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (`name{labels}` exactly as exposed) in a scrape.
pub fn series(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().expect("a number"))
        })
}

/// The value of one series in a fresh scrape of `admin`; `None` if it is not exposed.
pub async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    series(&metrics(admin).await, name)
}

/// Scrapes `/metrics` until the series `name` satisfies `ok`; returns that scrape.
pub async fn wait_scrape(admin: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = metrics(admin).await;
        if series(&body, name).is_some_and(&ok) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never satisfied the condition; last scrape:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes `/metrics` until the series `name` satisfies `ok`; returns its value.
pub async fn wait_series(admin: SocketAddr, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let body = wait_scrape(admin, name, ok).await;
    series(&body, name).expect("the series just satisfied the condition")
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    try_rss_kib(pid).expect("VmRSS in /proc/PID/status")
}

/// Like [`rss_kib`], `None` once the process is gone (for a long run that must report
/// a vanished broker rather than panic).
pub fn try_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
