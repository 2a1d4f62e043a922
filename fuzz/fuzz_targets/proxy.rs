//! Arbitrary bytes through the PROXY protocol parser
//! (`tandem_broker::transport::proxy::parse`), the first code a proxied listener runs on
//! a connection. Nothing may panic, and the parser must keep the promises the reader
//! relies on to take the header and not one byte more:
//! - a header of `n` bytes is the same header when parsed from exactly its `n` bytes,
//!   and its first `n - 1` bytes are "need more";
//! - `read_header` over the same bytes gives the same answer and leaves exactly the
//!   bytes after the header unread;
//! - "need more" makes `read_header` report the connection closed, having read it all.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tandem_broker::transport::proxy::{ProxyError, ProxyHeader, parse, read_header};

/// `read_header` over an in-memory reader, which is always ready: one poll finishes it.
fn read_all(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, &[u8]) {
    let mut rest = bytes;
    let result = {
        let mut read = pin!(read_header(&mut rest));
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("read_header is pending over a slice"),
        }
    };
    (result, rest)
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    let (read, rest) = read_all(data);
    match parsed {
        Ok(Some((header, n))) => {
            assert!(n <= data.len());
            assert_eq!(parse(&data[..n]).ok(), Some(Some((header, n))));
            assert!(matches!(parse(&data[..n - 1]), Ok(None)));
            assert_eq!(read.ok(), Some(header));
            assert_eq!(rest.len(), data.len() - n);
        }
        Ok(None) => {
            assert!(matches!(read, Err(ProxyError::Closed)), "{read:?}");
            assert!(rest.is_empty());
        }
        Err(_) => assert!(read.is_err()),
    }
});
