//! The name the `dns:///` plugin tests resolve to two loopback replicas: a `dns:///`
//! endpoint balances over every address a name resolves to, and on Linux every address
//! of 127.0.0.0/8 is local, so two plugin processes on 127.0.0.2 and 127.0.0.3 play two
//! replicas of one service.

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
