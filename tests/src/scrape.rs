//! `/metrics` from the admin listener, for tests that assert on what the broker counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::DEADLINE;

/// The admin section that serves `/metrics` on an ephemeral port.
pub const ADMIN: &str = "admin: { bind: 127.0.0.1:0 }\n";

/// One scrape of `/metrics` (the body; panics on a status other than 200).
pub async fn metrics(admin: SocketAddr) -> String {
    let mut s = tokio::time::timeout(DEADLINE, TcpStream::connect(admin))
        .await
        .expect("admin accepts in time")
        .expect("connect to admin");
    let req = "GET /metrics HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
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

/// Scrapes until `name` equals `want`; panics with the last scrape after [`DEADLINE`].
pub async fn wait_series(admin: SocketAddr, name: &str, want: f64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let body = metrics(admin).await;
        if series(&body, name) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {want}; last scrape:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
