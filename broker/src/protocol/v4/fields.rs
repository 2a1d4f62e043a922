//! Fields several 3.1.1 packets read alike.

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader, qos};
use crate::protocol::packet::{PacketType, QoS};

/// Fails unless the fixed header's flags are exactly `expected`.
pub(crate) fn expect_flags(
    header: FixedHeader,
    kind: PacketType,
    expected: u8,
) -> Result<(), Error> {
    if header.flags() == expected {
        Ok(())
    } else {
        Err(Error::InvalidFlags {
            kind,
            flags: header.flags(),
        })
    }
}

/// Reads a non-zero packet identifier.
pub(crate) fn read_pkid(r: &mut Reader) -> Result<u16, Error> {
    let pkid = r.u16("packet identifier")?;
    if pkid == 0 {
        return Err(r.malformed("packet identifier 0"));
    }
    Ok(pkid)
}

/// A PUBLISH's QoS, DUP and RETAIN flags (the same in every version); DUP on a QoS 0
/// PUBLISH is malformed.
pub(crate) fn publish_flags(header: FixedHeader) -> Result<(QoS, bool, bool), Error> {
    let flags = header.flags();
    let qos = qos((flags >> 1) & 0x03)?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(Error::InvalidFlags {
            kind: PacketType::Publish,
            flags,
        });
    }
    Ok((qos, dup, flags & 0x01 != 0))
}
