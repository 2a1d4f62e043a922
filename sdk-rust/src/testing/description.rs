//! [`Description`]: what a plugin answered to `Describe`, read back into domain types and
//! checked against the contract (no unspecified role or event kind).

use tandem_proto::v1 as pb;

use crate::error::Error;
use crate::events::EventKind;
use crate::types::Role;

/// What a plugin answered to `Describe`, in domain types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The roles it declared.
    pub roles: Vec<Role>,
    /// The event kinds it asked for.
    pub event_kinds: Vec<EventKind>,
    /// Topic filters restricting message events (empty: every topic).
    pub message_topic_filters: Vec<String>,
    /// Whether it wants message payloads.
    pub want_message_payloads: bool,
    /// Whether it wants raw packet bytes.
    pub want_raw_packets: bool,
}

impl TryFrom<pb::DescribeResponse> for Description {
    type Error = Error;
    fn try_from(r: pb::DescribeResponse) -> Result<Self, Error> {
        let roles = r
            .roles()
            .map(|role| match role {
                pb::Role::Authenticate => Ok(Role::Authenticate),
                pb::Role::TopicFilter => Ok(Role::TopicFilter),
                pb::Role::Unspecified => Err(Error::InvalidResponse {
                    field: "roles",
                    reason: "ROLE_UNSPECIFIED".into(),
                }),
            })
            .collect::<Result<_, _>>()?;
        let event_kinds = r
            .event_kinds()
            .map(|kind| {
                EventKind::try_from(kind).map_err(|_| Error::InvalidResponse {
                    field: "event_kinds",
                    reason: "EVENT_KIND_UNSPECIFIED".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Description {
            name: r.name,
            version: r.version,
            roles,
            event_kinds,
            message_topic_filters: r.message_topic_filters,
            want_message_payloads: r.want_message_payloads,
            want_raw_packets: r.want_raw_packets,
        })
    }
}
