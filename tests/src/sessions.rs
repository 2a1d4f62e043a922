//! Helpers for the session tests: connecting as a user with either clean flag, and
//! reading one series off `/metrics`.

use std::net::SocketAddr;

use bytes::Bytes;
use tandem_broker::protocol::ConnAck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{DEADLINE, RawClient, connect_packet};

/// Connects `client_id` as `username`/`password` with the given clean flag; returns
/// the client and its CONNACK, whatever it says.
pub async fn connect_user(
    addr: SocketAddr,
    client_id: &str,
    clean: bool,
    username: &str,
    password: &str,
) -> (RawClient, ConnAck) {
    let mut connect = connect_packet(client_id, clean, 0);
    connect.username = Some(username.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    RawClient::connect_with(addr, connect).await
}

/// The value of one series (`name{labels}` exactly as exposed) in a `/metrics` scrape
/// of the admin listener at `admin`; `None` if it is not exposed.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let mut s = TcpStream::connect(admin).await.expect("connect to admin");
    let req = "GET /metrics HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.expect("send request");
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .expect("admin answers in time")
        .expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == series).then(|| value.parse().ok()).flatten()
    })
}
