//! Fields several 3.1.1 packets read alike.

use crate::protocol::error::Error;
use crate::protocol::frame::{FixedHeader, Reader};
use crate::protocol::packet::PacketType;

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
