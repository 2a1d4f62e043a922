//! Clients that connect from a chosen source address. On Linux every address of 127.0.0.0/8 is
//! local, so a test can play several hosts (an attacker per address, a legitimate client on
//! another) against a broker listening on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};

use tandem_broker::protocol::ConnectReason;
use tokio::net::TcpSocket;

use crate::client::{RawClient, accepted, connect_packet_as};
use crate::wait::DEADLINE;

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
        Self::from_stream(stream)
    }
}

/// Like [`connect_as`](crate::connect_as), from the source address `local`.
pub async fn connect_as_from(
    addr: SocketAddr,
    local: IpAddr,
    client_id: &str,
    username: &str,
    password: &str,
) -> Result<RawClient, ConnectReason> {
    let connect = connect_packet_as(client_id, true, username, password);
    let (client, ack) = RawClient::tcp_from(addr, local)
        .await
        .handshake(connect)
        .await;
    accepted(client, ack)
}
