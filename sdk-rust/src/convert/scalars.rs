//! How the wire writes absence, time and small numbers, and how the domain types read them:
//! an empty string or zero means "none", durations travel as whole seconds, and a number too big
//! for its domain type (only a broken peer sends one) saturates rather than wraps.

use std::net::SocketAddr;
use std::time::Duration;

use tandem_proto::v1 as pb;

use crate::types::UserProperties;

pub(super) fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

pub(super) fn non_empty_bytes(b: Vec<u8>) -> Option<Vec<u8>> {
    (!b.is_empty()).then_some(b)
}

pub(super) fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

pub(super) fn to_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Values that do not fit (a broken peer) saturate rather than wrap.
pub(super) fn byte(n: u32) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

pub(super) fn packet_id(n: u32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&id| id != 0)
}

pub(super) fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

pub(super) fn addr_string(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_default()
}

pub(super) fn props_from(pb: Vec<pb::UserProperty>) -> UserProperties {
    pb.into_iter().map(|p| (p.key, p.value)).collect()
}

pub(super) fn props_to(props: UserProperties) -> Vec<pb::UserProperty> {
    props
        .into_iter()
        .map(|(key, value)| pb::UserProperty { key, value })
        .collect()
}
