//! Clients that connect from a chosen source address. On Linux every address of 127.0.0.0/8 is
//! local, so a test can play several hosts (an attacker per address, a legitimate client on
//! another) against a broker listening on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tandem_broker::protocol::{self, Packet};
use tokio::net::TcpSocket;

use crate::{DEADLINE, RawClient, connect_packet};

impl RawClient {
    /// Opens a TCP connection to `addr` from `local` (any port), without sending anything.
    pub async fn tcp_from(addr: SocketAddr, local: IpAddr) -> Self {
        let socket = match local {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .unwrap_or_else(|e| panic!("bind {local}: {e}"));
        let stream = tokio::time::timeout(DEADLINE, socket.connect(addr))
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
}

/// Like [`connect_as`](crate::connect_as), from the source address `local`.
pub async fn connect_as_from(
    addr: SocketAddr,
    local: IpAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<RawClient, protocol::ConnectReason> {
    let mut connect = connect_packet(client_id, true, 0);
    connect.username = Some(username.into());
    connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let mut client = RawClient::tcp_from(addr, local).await;
    client.send(&Packet::Connect(connect)).await;
    match client.recv().await {
        Packet::ConnAck(ack) if ack.reason == protocol::ConnectReason::Success => Ok(client),
        Packet::ConnAck(ack) => Err(ack.reason),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}
