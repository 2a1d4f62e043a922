//! SUBSCRIBE (5.0): properties, then filters each with an options byte (QoS, no local,
//! retain as published, retain handling).

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, qos, write_bytes, write_fixed_header};
use crate::protocol::packet::{PacketType, Subscribe, SubscribeFilter, SubscriptionOptions};
use crate::protocol::v4::fields::{expect_flags, read_pkid};
use crate::protocol::v5::properties::{self, Context};

/// Decodes a SUBSCRIBE body. Filters are checked for UTF-8 here and for wildcard
/// placement by the broker, which answers a bad filter with a SUBACK failure.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Subscribe, Error> {
    expect_flags(header, PacketType::Subscribe, 0x02)?;
    let mut r = Reader::new(body, PacketType::Subscribe);
    let pkid = read_pkid(&mut r)?;
    let properties = properties::read(&mut r, Context::Subscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        let filter = r.string("topic filter")?;
        let options = r.u8("subscription options")?;
        if options & 0xC0 != 0 {
            return Err(r.malformed("reserved bits set in subscription options"));
        }
        let retain_handling = (options >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(r.malformed("retain handling 3"));
        }
        filters.push(SubscribeFilter {
            filter,
            options: SubscriptionOptions {
                qos: qos(options & 0x03)?,
                no_local: options & 0x04 != 0,
                retain_as_published: options & 0x08 != 0,
                retain_handling,
            },
        });
    }
    if filters.is_empty() {
        return Err(r.malformed("no topic filter"));
    }
    Ok(Subscribe {
        pkid,
        filters,
        properties,
    })
}

/// The options byte of one filter.
fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos as u8
        | (o.no_local as u8) << 2
        | (o.retain_as_published as u8) << 3
        | (o.retain_handling & 0x03) << 4
}

/// Encodes a SUBSCRIBE.
pub fn write(p: &Subscribe, buf: &mut BytesMut) {
    let props = p.properties.as_deref();
    let len = 2
        + properties::len(props)
        + p.filters
            .iter()
            .map(|f| 2 + f.filter.len() + 1)
            .sum::<usize>();
    write_fixed_header(buf, 0x82, len);
    buf.put_u16(p.pkid);
    properties::write(props, buf);
    for f in &p.filters {
        write_bytes(buf, f.filter.as_bytes());
        buf.put_u8(options_byte(&f.options));
    }
}
