//! UNSUBSCRIBE (5.0): properties, then the filters.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, write_bytes, write_fixed_header};
use crate::protocol::packet::{PacketType, Unsubscribe};
use crate::protocol::v4::fields::{expect_flags, read_pkid};
use crate::protocol::v5::properties::{self, Context};

/// Decodes an UNSUBSCRIBE body.
pub fn read(header: FixedHeader, body: Bytes) -> Result<Unsubscribe, Error> {
    expect_flags(header, PacketType::Unsubscribe, 0x02)?;
    let mut r = Reader::new(body, PacketType::Unsubscribe);
    let pkid = read_pkid(&mut r)?;
    let properties = properties::read(&mut r, Context::Unsubscribe)?;
    let mut filters = Vec::new();
    while r.remaining() > 0 {
        filters.push(r.string("topic filter")?);
    }
    if filters.is_empty() {
        return Err(r.malformed("no topic filter"));
    }
    Ok(Unsubscribe {
        pkid,
        filters,
        properties,
    })
}

/// Encodes an UNSUBSCRIBE.
pub fn write(p: &Unsubscribe, buf: &mut BytesMut) {
    let props = p.properties.as_deref();
    let len = 2 + properties::len(props) + p.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
    write_fixed_header(buf, 0xA2, len);
    buf.put_u16(p.pkid);
    properties::write(props, buf);
    for f in &p.filters {
        write_bytes(buf, f.as_bytes());
    }
}
