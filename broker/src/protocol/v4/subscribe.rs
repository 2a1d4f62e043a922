//! SUBSCRIBE.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, qos, write_bytes, write_fixed_header};
use crate::protocol::packet::{PacketType, Subscribe, SubscribeFilter, SubscriptionOptions};
use crate::protocol::v4::fields::{expect_flags, read_pkid};

/// Decodes a SUBSCRIBE body. Filters are checked for UTF-8 here and for wildcard
/// placement by the broker, which answers a bad filter with a SUBACK failure.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Subscribe, Error> {
    expect_flags(header, PacketType::Subscribe, 0x02)?;
    let mut r = Reader::new(body, PacketType::Subscribe);
    let pkid = read_pkid(&mut r)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let options = r.u8("requested QoS")?;
        if options & 0xFC != 0 {
            return Err(r.malformed("reserved bits set in requested QoS"));
        }
        filters.push(SubscribeFilter {
            filter,
            options: SubscriptionOptions {
                qos: qos(options)?,
                ..SubscriptionOptions::default()
            },
        });
    }
    if filters.is_empty() {
        return Err(r.malformed("no topic filter"));
    }
    Ok(Subscribe {
        pkid,
        filters,
        properties: None,
    })
}

/// Encodes a SUBSCRIBE.
pub fn write(p: &Subscribe, buf: &mut BytesMut) {
    let len = 2 + p
        .filters
        .iter()
        .map(|f| 2 + f.filter.len() + 1)
        .sum::<usize>();
    write_fixed_header(buf, 0x82, len);
    buf.put_u16(p.pkid);
    for f in &p.filters {
        write_bytes(buf, f.filter.as_bytes());
        buf.put_u8(f.options.qos as u8);
    }
}
