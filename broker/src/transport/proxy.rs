//! The PROXY protocol (HAProxy's, versions 1 and 2): the client's real address, sent by a
//! load balancer in front of the connection's first bytes.
//!
//! A listener behind a TCP load balancer (HAProxy, AWS NLB, Envoy, nginx `stream`) sees
//! the balancer's address as every client's peer; the PROXY header is how the balancer
//! tells us who actually connected. It comes once, before anything else on the socket,
//! and what follows it (a TLS ClientHello, an HTTP upgrade, an MQTT CONNECT) belongs to
//! the next layer.
//!
//! - [`parse`] is the pure parser: bytes in, a [`ProxyHeader`] and its length out, or
//!   "need more". The fuzz target (`fuzz/fuzz_targets/proxy.rs`) calls it directly.
//! - [`read_header`] reads exactly one header off a socket and not one byte more, so the
//!   next layer can read the same socket with no buffer handed between them. It asks
//!   for bytes in steps no longer than what the header must still contain, and reads
//!   the first byte alone, so a client that sends MQTT or TLS where a header was
//!   expected is told [`ProxyError::NotProxy`] at once, not after the caller's timeout.
//!
//! # Bounds
//! A v1 line is at most 107 bytes including CRLF (the spec's own maximum). A v2 address
//! block is at most [`MAX_V2_ADDRESS_LEN`] bytes: the spec allows 65535, but the TLVs
//! real balancers send (AWS NLB's VPC endpoint id, HAProxy's ALPN, authority, SSL
//! details) fit well inside it, and a hostile length must not make every connection
//! hold 64 KiB. So [`read_header`] never holds more than 16 + 1536 bytes, on its stack.
//!
//! # What is accepted
//! - v1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n`, fields separated by exactly
//!   one space, addresses of the announced family, ports decimal in 0..=65535 with no
//!   sign and no leading zero (the spec forbids them to avoid octal confusion);
//!   `PROXY UNKNOWN...\r\n` (anything up to CRLF ignored, as the spec requires) is
//!   [`ProxyHeader::Local`].
//! - v2: version 2; command LOCAL ([`ProxyHeader::Local`], whatever the rest says, as
//!   the spec requires) or PROXY; with PROXY, AF_INET/AF_INET6 over STREAM give the
//!   addresses, AF_UNSPEC and AF_UNIX give [`ProxyHeader::Local`] (there is no IP address
//!   to report), and DGRAM is refused: these listeners serve TCP. TLVs after the
//!   addresses are skipped unread.
//!
//! Error messages never quote the client's bytes: they end up in log lines, and a
//! header is attacker-controlled text.
//!
//! # Why not the `ppp` crate
//! The project prefers a well-kept crate to hand-written code, and `ppp` 2.3 was
//! considered. Its v2 parser is sound, but its v1 parser accepts ports with a `+` sign
//! (`u16::from_str` allows one), and reports complete but invalid lines as incomplete
//! (`PROXY UNKNOWN a b c d e f\r\n`, `PROXY TCP4\r\n`, `PROXY\rTCP4 ...\r\n` all say "need
//! more bytes"), which a streaming reader would wait on until its timeout. Working around
//! that would leave us re-checking its answers; and it would still need our own length
//! cap read before its parser, our DGRAM refusal, and `read_header`, and it brings
//! `thiserror` 1 into a tree on 2. The parser here is some 200 lines, fuzzed and
//! property-tested against the spec.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// What a PROXY header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// A proxied connection: the client's address and the address it connected to.
    Proxied {
        /// The client, as the proxy saw it.
        source: SocketAddr,
        /// The address the client connected to (the proxy's listener).
        destination: SocketAddr,
    },
    /// The proxy's own connection (v2 LOCAL, v1 UNKNOWN, or v2 PROXY with AF_UNSPEC/AF_UNIX):
    /// the socket's peer address stands.
    Local,
}

/// Why a connection's first bytes are not an acceptable PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The socket failed while the header was being read.
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
    /// The peer closed the connection before the header was whole.
    #[error("connection closed before the PROXY header was complete")]
    Closed,
    /// The first bytes are neither the v1 nor the v2 signature: most likely the
    /// listener expects the PROXY protocol and the balancer (or a client connecting
    /// directly) does not send it.
    #[error(
        "no PROXY header: the first bytes are neither `PROXY ` (v1) nor the v2 signature; \
         is the load balancer configured to send the PROXY protocol?"
    )]
    NotProxy,
    /// The signature was there but the header breaks the spec or our bounds.
    #[error("invalid PROXY header: {0}")]
    Invalid(Cow<'static, str>),
}

impl ProxyError {
    fn invalid(why: &'static str) -> Self {
        Self::Invalid(Cow::Borrowed(why))
    }
}

/// The v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family/transport, 2-byte length.
const V2_FIXED_LEN: usize = 16;
/// The longest v2 address block (addresses and TLVs) we accept. See the module doc.
pub const MAX_V2_ADDRESS_LEN: usize = 1536;
/// What every v1 header starts with.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The shortest v1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
/// The longest v1 header, CRLF included: the spec's worst case, `UNKNOWN` followed by
/// full-length IPv6 fields (a full-length `TCP6` line is 104).
pub const MAX_V1_LEN: usize = 107;

/// The most bytes [`read_header`] can hold: the longest v2 header (a v1 line is shorter).
const MAX_HEADER_LEN: usize = V2_FIXED_LEN + MAX_V2_ADDRESS_LEN;

/// Parses a PROXY header at the start of `buf`.
///
/// `Ok(None)`: `buf` is a prefix of a header that may yet be valid; more bytes are
/// needed. `Ok(Some((header, consumed)))`: a whole header of `consumed` bytes starts
/// `buf`; the bytes after it are not looked at. An error is final: no more bytes can
/// make the input valid.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if is_prefix_of(buf, &V2_SIGNATURE) {
        if buf.len() < V2_FIXED_LEN {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    if is_prefix_of(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    Err(ProxyError::NotProxy)
}

/// Whether `buf` and `signature` agree on their common length (an empty `buf` agrees).
fn is_prefix_of(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// A v2 header; `buf` holds at least the 16 fixed bytes, starting with the signature.
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));

    if version != 2 {
        return Err(ProxyError::Invalid(
            format!("v2 signature with version {version} (only 2 exists)").into(),
        ));
    }
    if command > 1 {
        return Err(ProxyError::Invalid(
            format!("v2 command {command:#x} is neither LOCAL (0) nor PROXY (1)").into(),
        ));
    }
    // Checked before waiting for the block, so the bound holds while reading.
    if len > MAX_V2_ADDRESS_LEN {
        return Err(ProxyError::Invalid(
            format!("v2 address block of {len} bytes (at most {MAX_V2_ADDRESS_LEN} accepted)")
                .into(),
        ));
    }
    let total = V2_FIXED_LEN + len;
    if buf.len() < total {
        return Ok(None);
    }
    // LOCAL: the proxy's own connection (a health check); the spec says to ignore the
    // family and the block, whatever they hold.
    if command == 0 {
        return Ok(Some((ProxyHeader::Local, total)));
    }
    if family > 3 {
        return Err(ProxyError::Invalid(
            format!("v2 address family {family:#x} is none of UNSPEC, INET, INET6, UNIX").into(),
        ));
    }
    match transport {
        0 | 1 => {}
        2 => {
            return Err(ProxyError::invalid(
                "v2 transport DGRAM: this listener serves TCP only",
            ));
        }
        _ => {
            return Err(ProxyError::Invalid(
                format!("v2 transport {transport:#x} is none of UNSPEC, STREAM, DGRAM").into(),
            ));
        }
    }
    let block = &buf[V2_FIXED_LEN..total];
    let header = match family {
        // No IP address to report: the socket's peer stands.
        0 | 3 => ProxyHeader::Local,
        _ if transport != 1 => {
            return Err(ProxyError::invalid(
                "v2 INET/INET6 addresses with an unspecified transport (STREAM expected)",
            ));
        }
        1 => {
            let Some(a) = block.first_chunk::<12>() else {
                return Err(ProxyError::Invalid(
                    format!("v2 INET address block of {len} bytes (12 needed)").into(),
                ));
            };
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]));
            proxied(ip(0), ip(4), [a[8], a[9]], [a[10], a[11]])
        }
        _ => {
            let Some(a) = block.first_chunk::<36>() else {
                return Err(ProxyError::Invalid(
                    format!("v2 INET6 address block of {len} bytes (36 needed)").into(),
                ));
            };
            let ip = |at: usize| {
                let mut octets = [0; 16];
                octets.copy_from_slice(&a[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            proxied(ip(0), ip(16), [a[32], a[33]], [a[34], a[35]])
        }
    };
    Ok(Some((header, total)))
}

fn proxied(src: IpAddr, dst: IpAddr, sport: [u8; 2], dport: [u8; 2]) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: SocketAddr::new(src, u16::from_be_bytes(sport)),
        destination: SocketAddr::new(dst, u16::from_be_bytes(dport)),
    }
}

/// A v1 header; `buf` starts with `PROXY `.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1_LEN)];
    let end = match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        None if window.len() == MAX_V1_LEN => {
            return Err(ProxyError::invalid("v1 line without CRLF within 107 bytes"));
        }
        None => return Ok(None),
        Some(i) if window[i] == b'\n' => {
            return Err(ProxyError::invalid("v1 line ends in LF without CR"));
        }
        Some(i) => match window.get(i + 1) {
            Some(b'\n') => i,
            Some(_) => return Err(ProxyError::invalid("v1 line has a CR not followed by LF")),
            None if window.len() == MAX_V1_LEN => {
                return Err(ProxyError::invalid("v1 line longer than 107 bytes"));
            }
            None => return Ok(None),
        },
    };
    let consumed = end + 2;
    let rest = &buf[V1_PREFIX.len()..end];

    // The spec: after UNKNOWN, the receiver ignores everything up to CRLF.
    if let Some(after) = rest.strip_prefix(b"UNKNOWN")
        && (after.is_empty() || after[0] == b' ')
    {
        return Ok(Some((ProxyHeader::Local, consumed)));
    }
    let mut fields = rest.split(|&b| b == b' ');
    let v6 = match fields.next() {
        Some(b"TCP4") => false,
        Some(b"TCP6") => true,
        _ => {
            return Err(ProxyError::invalid(
                "v1 protocol is none of TCP4, TCP6, UNKNOWN (or is not followed by one space)",
            ));
        }
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(ProxyError::invalid(
            "v1 line does not have exactly four fields after the protocol, one space apart",
        ));
    };
    let header = ProxyHeader::Proxied {
        source: SocketAddr::new(v1_ip(src, v6, "source")?, v1_port(sport, "source")?),
        destination: SocketAddr::new(
            v1_ip(dst, v6, "destination")?,
            v1_port(dport, "destination")?,
        ),
    };
    Ok(Some((header, consumed)))
}

/// A v1 address of the announced family.
fn v1_ip(field: &[u8], v6: bool, which: &'static str) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).ok();
    let ip = if v6 {
        text.and_then(|t| t.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6)
    } else {
        text.and_then(|t| t.parse::<Ipv4Addr>().ok())
            .map(IpAddr::V4)
    };
    ip.ok_or_else(|| {
        let family = if v6 { "IPv6" } else { "IPv4" };
        ProxyError::Invalid(format!("v1 {which} address is not an {family} address").into())
    })
}

/// A v1 port: decimal digits only (no sign), no leading zero, at most 65535.
fn v1_port(field: &[u8], which: &'static str) -> Result<u16, ProxyError> {
    let well_formed = (1..=5).contains(&field.len())
        && field.iter().all(u8::is_ascii_digit)
        && (field.len() == 1 || field[0] != b'0');
    well_formed
        .then(|| field.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        .and_then(|port| u16::try_from(port).ok())
        .ok_or_else(|| {
            ProxyError::Invalid(
                format!("v1 {which} port is not a decimal 0..=65535 without sign or leading zero")
                    .into(),
            )
        })
}

/// How many bytes [`read_header`] may read next after `parse(buf)` said `Ok(None)`:
/// never more than the header must still contain, so nothing after it is taken.
///
/// The first byte is read alone: it refuses an MQTT CONNECT (0x10), a TLS ClientHello
/// (0x16) or an HTTP request other than `P...` at once, however short the packet its
/// client sends before waiting for an answer. After a `P` or a CR the rest of the
/// signature (6 or 12 bytes) is read in one go: no protocol a listener expects begins
/// with a CR, and an HTTP `POST`/`PUT`/`PATCH` request line is longer than 6 bytes.
fn next_read(buf: &[u8]) -> usize {
    let n = buf.len();
    match buf.first() {
        // One byte tells v1 from v2 from neither.
        None => 1,
        Some(b'\r') if n < V2_SIGNATURE.len() => V2_SIGNATURE.len() - n,
        Some(b'\r') if n < V2_FIXED_LEN => V2_FIXED_LEN - n,
        // `parse` checked the length against the cap before answering `None`.
        Some(b'\r') => V2_FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]])) - n,
        Some(_) if n < V1_PREFIX.len() => V1_PREFIX.len() - n,
        Some(_) if n < V1_MIN_LEN => V1_MIN_LEN - n,
        // The line ends in CRLF: if the last byte is not its CR, both are still to come.
        Some(_) if buf[n - 1] == b'\r' => 1,
        Some(_) => 2,
    }
}

/// Reads exactly one PROXY header from `io` and not one byte more: what follows belongs
/// to the next layer (TLS, HTTP, MQTT), which reads the same socket.
///
/// No timeout here: the caller bounds the call (a balancer sends the header at once).
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut buf = [0u8; MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        if let Some((header, consumed)) = parse(&buf[..filled])? {
            debug_assert_eq!(consumed, filled, "read past the PROXY header");
            return Ok(header);
        }
        let want = next_read(&buf[..filled]);
        // v1 can ask for one byte past its 107 (then `parse` says Invalid); v2's total is
        // capped by `parse` before it answers `None`.
        let chunk = buf
            .get_mut(filled..filled + want)
            .ok_or_else(|| ProxyError::invalid("header longer than the bound"))?;
        io.read_exact(chunk).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => ProxyError::Closed,
            _ => ProxyError::Io(e),
        })?;
        filled += want;
    }
}

#[cfg(test)]
#[path = "tests/proxy.rs"]
mod tests;
