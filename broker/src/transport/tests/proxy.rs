//! The PROXY protocol reader's tests: every header form, partial input, exact reading,
//! and what a client that is not a proxy sends.
use crate::transport::proxy::*;
use futures_util::FutureExt;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn proxied(source: &str, destination: &str) -> ProxyHeader {
    ProxyHeader::Proxied {
        source: sock(source),
        destination: sock(destination),
    }
}

/// A v1 line for two addresses of the same family.
fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 header: version 2 and `command`, `family` (family and transport nibbles), and
/// `block` with its length.
fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// A v2 PROXY/STREAM header for two addresses of the same family, then `tlvs`.
fn v2_proxy(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let family = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("mixed families"),
    };
    block.extend_from_slice(&source.port().to_be_bytes());
    block.extend_from_slice(&destination.port().to_be_bytes());
    block.extend_from_slice(tlvs);
    v2(1, family, &block)
}

/// TLVs as AWS NLB and HAProxy send them: ALPN, authority, NOOP padding, and the
/// AWS VPC endpoint id (type 0xEA).
fn tlvs() -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, value) in [
        (0x01u8, &b"mqtt"[..]),
        (0x02, b"broker.example.com"),
        (0x04, &[0; 5]),
        (0xea, b"\x01vpce-0123456789abcdef0"),
    ] {
        out.push(kind);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Every kind of valid header, with what it says.
fn samples() -> Vec<(Vec<u8>, ProxyHeader)> {
    let v4 = proxied("192.0.2.1:56324", "198.51.100.7:1883");
    let v6 = proxied("[2001:db8::1]:40000", "[2001:db8:1::2]:8883");
    let (s4, d4) = (sock("192.0.2.1:56324"), sock("198.51.100.7:1883"));
    let (s6, d6) = (sock("[2001:db8::1]:40000"), sock("[2001:db8:1::2]:8883"));
    vec![
        (v1(s4, d4), v4),
        (v1(s6, d6), v6),
        (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
        (
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
            ProxyHeader::Local,
        ),
        (v2_proxy(s4, d4, &[]), v4),
        (v2_proxy(s4, d4, &tlvs()), v4),
        (v2_proxy(s6, d6, &[]), v6),
        (v2_proxy(s6, d6, &tlvs()), v6),
        (v2(0, 0x00, &[]), ProxyHeader::Local),
        // LOCAL ignores the family and the block, whatever they say.
        (v2(0, 0x11, &[1, 2, 3]), ProxyHeader::Local),
        (v2(0, 0xff, &tlvs()), ProxyHeader::Local),
        (v2(1, 0x00, &[]), ProxyHeader::Local),
        (v2(1, 0x00, &tlvs()), ProxyHeader::Local),
        (v2(1, 0x31, &[0; 216]), ProxyHeader::Local),
    ]
}

/// `read_header` over an in-memory reader: the header and what it left unread.
fn read_all(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, &[u8]) {
    let mut rest = bytes;
    let result = read_header(&mut rest)
        .now_or_never()
        .expect("a slice reader is always ready");
    (result, rest)
}

fn invalid(bytes: &[u8]) -> String {
    match parse(bytes) {
        Err(ProxyError::Invalid(why)) => why.into_owned(),
        other => panic!(
            "{:?}: expected Invalid, got {other:?}",
            bytes.escape_ascii().to_string()
        ),
    }
}

#[test]
fn every_sample_parses_to_what_it_says() {
    for (bytes, expected) in samples() {
        assert_eq!(
            parse(&bytes).unwrap(),
            Some((expected, bytes.len())),
            "{}",
            bytes.escape_ascii()
        );
    }
}

#[test]
fn v1_addresses_of_both_families() {
    let line = b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n";
    let expected = proxied("255.255.255.255:65535", "0.0.0.0:0");
    assert_eq!(parse(line).unwrap(), Some((expected, line.len())));

    let line = b"PROXY TCP6 ::ffff:192.0.2.1 fe80::1 1 2\r\n";
    let expected = proxied("[::ffff:192.0.2.1]:1", "[fe80::1]:2");
    assert_eq!(parse(line).unwrap(), Some((expected, line.len())));
}

#[test]
fn v1_at_the_longest_is_accepted_one_more_byte_is_not() {
    let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(tcp6.len(), 104);
    assert!(matches!(
        parse(tcp6),
        Ok(Some((ProxyHeader::Proxied { .. }, 104)))
    ));
    let unknown = [b"PROXY UNKNOWN".as_slice(), &tcp6[10..]].concat();
    assert_eq!(unknown.len(), MAX_V1_LEN);
    assert_eq!(
        parse(&unknown).unwrap(),
        Some((ProxyHeader::Local, MAX_V1_LEN))
    );

    let mut unknown = b"PROXY UNKNOWN ".to_vec();
    unknown.resize(MAX_V1_LEN - 2, b'x');
    unknown.extend_from_slice(b"\r\n");
    assert_eq!(
        parse(&unknown).unwrap(),
        Some((ProxyHeader::Local, MAX_V1_LEN))
    );

    // 106 bytes and a CR: its LF would be the 108th byte.
    unknown.truncate(MAX_V1_LEN - 2);
    unknown.extend_from_slice(b"x\r");
    assert!(invalid(&unknown).contains("107"));
    // No CR within 107 bytes: refused without waiting for more.
    assert!(invalid(&[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat()).contains("107"));
    assert!(invalid(&[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 93]].concat()).contains("107"));
}

#[test]
fn v1_breaking_the_spec_is_invalid() {
    for line in [
        &b"PROXY TCP4 192.0.2.1 192.0.2.2 +80 443\r\n"[..],
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 +443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 080 443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 65536\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 99999999999999999999999\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 -1 443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 \r\n",
        b"PROXY TCP4 192.0.2.1  192.0.2.2 80 443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 443 \r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 443 1\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80\r\n",
        b"PROXY TCP4\r\n",
        b"PROXY TCP4 \r\n",
        b"PROXY \r\n",
        b"PROXY  TCP4 192.0.2.1 192.0.2.2 80 443\r\n",
        b"PROXY TCP5 192.0.2.1 192.0.2.2 80 443\r\n",
        b"PROXY tcp4 192.0.2.1 192.0.2.2 80 443\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY TCP4 2001:db8::1 192.0.2.2 80 443\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 80 443\r\n",
        b"PROXY TCP4 192.0.2.01 192.0.2.2 80 443\r\n",
        b"PROXY TCP6 fe80::1%eth0 2001:db8::2 80 443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.\xff 80 443\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 443\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 80 443\rX",
    ] {
        let why = invalid(line);
        assert!(why.starts_with("v1 "), "{why}");
    }
}

#[test]
fn v2_breaking_the_spec_or_our_bounds_is_invalid() {
    let (s4, d4) = (sock("192.0.2.1:1"), sock("192.0.2.2:2"));
    let mut version_1 = v2_proxy(s4, d4, &[]);
    version_1[12] = 0x11;
    assert!(invalid(&version_1).contains("version 1"));

    let mut command_2 = v2_proxy(s4, d4, &[]);
    command_2[12] = 0x22;
    assert!(invalid(&command_2).contains("command"));

    let mut dgram = v2_proxy(s4, d4, &[]);
    dgram[13] = 0x12;
    assert!(invalid(&dgram).contains("DGRAM"));
    assert!(invalid(&v2(1, 0x32, &[0; 216])).contains("DGRAM"));
    assert!(invalid(&v2(1, 0x13, &[0; 12])).contains("transport"));
    assert!(invalid(&v2(1, 0x10, &[0; 12])).contains("STREAM expected"));
    assert!(invalid(&v2(1, 0x41, &[0; 12])).contains("family"));
    assert!(invalid(&v2(1, 0x11, &[0; 11])).contains("12 needed"));
    assert!(invalid(&v2(1, 0x21, &[0; 35])).contains("36 needed"));
    assert!(invalid(&v2(1, 0x21, &[0; 12])).contains("36 needed"));

    // The largest block is accepted; a larger one is refused from the 16 fixed bytes
    // alone, before anything waits for (or holds) the block.
    let big = v2_proxy(s4, d4, &vec![0; MAX_V2_ADDRESS_LEN - 12]);
    assert_eq!(parse(&big).unwrap().unwrap().1, MAX_HEADER_LEN);
    let too_big = v2_proxy(s4, d4, &vec![0; MAX_V2_ADDRESS_LEN - 11]);
    assert!(invalid(&too_big[..V2_FIXED_LEN]).contains("1537"));
    let mut huge = too_big[..V2_FIXED_LEN].to_vec();
    huge[14..16].copy_from_slice(&[0xff, 0xff]);
    assert!(invalid(&huge).contains("65535"));
}

#[test]
fn other_protocols_are_not_proxy() {
    let (s4, d4) = (sock("192.0.2.1:1"), sock("192.0.2.2:2"));
    let mut bad_signature = v2_proxy(s4, d4, &[]);
    bad_signature[11] = b'X';
    let mqtt_connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    for bytes in [
        &b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        mqtt_connect,
        b"\x00",
        b"proxy TCP4 192.0.2.1 192.0.2.2 80 443\r\n",
        b"PROXY\r\n",
        b"PROXY\rTCP4 192.0.2.1 192.0.2.2 80 443\r\n",
        b"PROXYTCP4",
        b"\r\n\r\n\r\n\r\n\r\n\r\n",
        &bad_signature,
    ] {
        assert!(
            matches!(parse(bytes), Err(ProxyError::NotProxy)),
            "{}",
            bytes.escape_ascii()
        );
        assert!(matches!(read_all(bytes).0, Err(ProxyError::NotProxy)));
    }
}

#[test]
fn every_strict_prefix_needs_more_and_reads_as_closed() {
    for (bytes, _) in samples() {
        for end in 0..bytes.len() {
            let prefix = &bytes[..end];
            assert!(
                matches!(parse(prefix), Ok(None)),
                "{}",
                prefix.escape_ascii()
            );
            assert!(matches!(read_all(prefix).0, Err(ProxyError::Closed)));
        }
    }
}

#[test]
fn read_header_leaves_what_follows_unread() {
    for (bytes, expected) in samples() {
        let stream = [bytes.as_slice(), b"MQTT-bytes"].concat();
        let (result, rest) = read_all(&stream);
        assert_eq!(result.unwrap(), expected);
        assert_eq!(rest, b"MQTT-bytes", "after {}", bytes.escape_ascii());
    }
}

/// Over a real stream, written a byte at a time, with the next layer's bytes behind
/// the header: they are still there for whoever reads next.
#[tokio::test]
async fn read_header_over_a_stream_written_in_pieces() {
    for (bytes, expected) in samples() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let stream = [bytes.as_slice(), b"\x10\x0c\x00\x04MQTT"].concat();
        let writer = tokio::spawn(async move {
            for byte in stream {
                client.write_all(&[byte]).await.unwrap();
            }
            client
        });
        assert_eq!(read_header(&mut server).await.unwrap(), expected);
        let mut next = [0; 8];
        server.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"\x10\x0c\x00\x04MQTT");
        drop(writer.await.unwrap());
    }
}

/// A client that sends a short MQTT CONNECT where a header was expected, then waits
/// for its CONNACK, is refused at once, not when the caller's timeout fires.
#[tokio::test]
async fn a_short_packet_that_is_not_proxy_is_refused_without_waiting() {
    for first in [
        &b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"[..],
        b"\x16\x03\x01",
        b"PUT / HTTP/1.1",
        b"\r\n\r\n\x00\r\nQUIX\n",
    ] {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(first).await.unwrap();
        let result =
            tokio::time::timeout(std::time::Duration::from_secs(5), read_header(&mut server))
                .await
                .expect("read_header waited for bytes it did not need");
        assert!(matches!(result, Err(ProxyError::NotProxy)));
    }
}

#[tokio::test]
async fn io_errors_are_reported_as_such() {
    let mut failing = tokio_test_reader_error();
    assert!(matches!(
        read_header(&mut failing).await,
        Err(ProxyError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset
    ));
}

/// A reader whose first read fails with a connection reset.
fn tokio_test_reader_error() -> impl AsyncRead + Unpin {
    struct Reset;
    impl AsyncRead for Reset {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }
    Reset
}

#[test]
fn error_messages_name_the_problem() {
    assert_eq!(
        ProxyError::Closed.to_string(),
        "connection closed before the PROXY header was complete"
    );
    assert!(ProxyError::NotProxy.to_string().contains("load balancer"));
    assert_eq!(
        parse(b"PROXY TCP4 192.0.2.1 192.0.2.2 +80 443\r\n")
            .unwrap_err()
            .to_string(),
        "invalid PROXY header: v1 source port is not a decimal 0..=65535 \
         without sign or leading zero"
    );
}

fn socket_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                SocketAddr::new(Ipv4Addr::from(d).into(), dp)
            )),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                SocketAddr::new(Ipv6Addr::from(d).into(), dp)
            )),
    ]
}

/// A valid header of either version for random addresses, and what it says.
fn header() -> impl Strategy<Value = (Vec<u8>, ProxyHeader)> {
    (
        socket_pair(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|((source, destination), text, tlvs)| {
            let bytes = if text {
                v1(source, destination)
            } else {
                v2_proxy(source, destination, &tlvs)
            };
            (
                bytes,
                ProxyHeader::Proxied {
                    source,
                    destination,
                },
            )
        })
}

/// `parse` and `read_header` agree on `bytes`, and `parse` keeps its promises: a
/// header is exactly what `read_header` takes, `None` means every extension could
/// still be valid (checked on `more`), and an error stays an error.
fn check_consistent(bytes: &[u8], more: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse(bytes);
    let extended = [bytes, more].concat();
    let (read, rest) = read_all(bytes);
    match &parsed {
        Ok(Some((header, consumed))) => {
            prop_assert!(*consumed <= bytes.len() && *consumed >= V1_MIN_LEN);
            prop_assert!(*consumed <= MAX_HEADER_LEN);
            prop_assert_eq!(read.as_ref().ok(), Some(header));
            prop_assert_eq!(rest.len(), bytes.len() - consumed);
            prop_assert_eq!(
                parse(&bytes[..*consumed]).ok(),
                Some(Some((*header, *consumed)))
            );
            prop_assert_eq!(parse(&extended).ok(), Some(Some((*header, *consumed))));
        }
        Ok(None) => {
            prop_assert!(bytes.len() < MAX_HEADER_LEN);
            prop_assert!(matches!(read, Err(ProxyError::Closed)), "{:?}", read);
            prop_assert!(rest.is_empty());
        }
        Err(_) => {
            prop_assert!(read.is_err());
            prop_assert!(parse(&extended).is_err());
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_never_panics_and_keeps_its_promises(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        more in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        check_consistent(&bytes, &more)?;
    }

    /// Random bytes rarely get past the signature; these start from a valid header
    /// and break it in one place, then cut it somewhere.
    #[test]
    fn mutated_headers_keep_the_promises(
        (bytes, _) in header(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        more in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = bytes;
        let at = at.index(bytes.len());
        bytes[at] = value;
        let cut = cut.index(bytes.len() + 1);
        check_consistent(&bytes[..cut], &more)?;
        check_consistent(&bytes, &more)?;
    }

    #[test]
    fn headers_from_random_addresses_round_trip(
        (bytes, expected) in header(),
        after in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let stream = [bytes.as_slice(), &after].concat();
        prop_assert_eq!(parse(&stream).unwrap(), Some((expected, bytes.len())));
        let (read, rest) = read_all(&stream);
        prop_assert_eq!(read.unwrap(), expected);
        prop_assert_eq!(rest, after.as_slice());
    }
}
