//! Decisions, plugin to broker: what the handlers answer to `Authenticate` and `TopicFilter`.
//! Written exactly (a verdict the contract does not know is an error); read back for the testing
//! harness.

use std::time::Duration;

use tandem_proto::v1 as pb;

use super::scalars::{byte, non_empty, props_from, props_to};
use super::types::verdict_from;
use crate::auth::{AuthContinue, AuthDecision};
use crate::error::Error;
use crate::topic::TopicDecision;
use crate::types::Verdict;

impl From<AuthDecision> for pb::AuthenticateResponse {
    fn from(d: AuthDecision) -> Self {
        pb::AuthenticateResponse {
            verdict: pb::Verdict::from(d.verdict).into(),
            reason: d.reason,
            reason_code: d.reason_code.map(u32::from).unwrap_or(0),
            attributes: d.attributes,
            auth_continue: d.auth_continue.map(|c| pb::AuthContinue {
                auth_data: c.auth_data,
                context: c.context,
                user_properties: props_to(c.user_properties),
            }),
            auth_data: d.auth_data.unwrap_or_default(),
            user_properties: props_to(d.user_properties),
            identity: d.identity.unwrap_or_default(),
            client_reason: d.client_reason.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::AuthenticateResponse> for AuthDecision {
    type Error = Error;
    fn try_from(r: pb::AuthenticateResponse) -> Result<Self, Error> {
        let auth_continue = r.auth_continue.map(|c| AuthContinue {
            auth_data: c.auth_data,
            context: c.context,
            user_properties: props_from(c.user_properties),
        });
        Ok(AuthDecision {
            // The verdict of a continue is not read (the broker ignores it).
            verdict: if auth_continue.is_some() {
                Verdict::Abstain
            } else {
                verdict_from(r.verdict)?
            },
            reason: r.reason,
            client_reason: non_empty(r.client_reason),
            reason_code: (r.reason_code != 0).then(|| byte(r.reason_code)),
            attributes: r.attributes,
            user_properties: props_from(r.user_properties),
            identity: non_empty(r.identity),
            auth_continue,
            auth_data: (!r.auth_data.is_empty()).then_some(r.auth_data),
        })
    }
}

impl From<TopicDecision> for pb::TopicFilterResponse {
    fn from(d: TopicDecision) -> Self {
        pb::TopicFilterResponse {
            verdict: pb::Verdict::from(d.verdict).into(),
            reason: d.reason,
            // Sub-millisecond TTLs round down to "do not cache"; huge ones saturate.
            cache_ttl_ms: u32::try_from(d.cache_ttl.as_millis()).unwrap_or(u32::MAX),
            reason_code: d.reason_code.map(u32::from).unwrap_or(0),
            client_reason: d.client_reason.unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::TopicFilterResponse> for TopicDecision {
    type Error = Error;
    fn try_from(r: pb::TopicFilterResponse) -> Result<Self, Error> {
        Ok(TopicDecision {
            verdict: verdict_from(r.verdict)?,
            reason: r.reason,
            cache_ttl: Duration::from_millis(u64::from(r.cache_ttl_ms)),
            reason_code: (r.reason_code != 0).then(|| byte(r.reason_code)),
            client_reason: non_empty(r.client_reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_decision_to_wire() {
        let wire: pb::TopicFilterResponse = TopicDecision::deny("no")
            .cache_for(Duration::from_millis(1500))
            .with_reason_code(0x97)
            .into();
        assert_eq!(wire.verdict(), pb::Verdict::Deny);
        assert_eq!(wire.cache_ttl_ms, 1500);
        assert_eq!(wire.reason_code, 0x97);
        assert_eq!(wire.reason, "no");

        let huge: pb::TopicFilterResponse = TopicDecision::allow()
            .cache_for(Duration::from_secs(u64::MAX))
            .into();
        assert_eq!(huge.cache_ttl_ms, u32::MAX);
        let default: pb::TopicFilterResponse = TopicDecision::abstain().into();
        assert_eq!((default.cache_ttl_ms, default.reason_code), (0, 0));
    }

    #[test]
    fn auth_decision_round_trips() {
        let decision = AuthDecision::allow()
            .with_attribute("tenant", "acme")
            .with_reason("known device")
            .with_identity("device-17");
        let wire = pb::AuthenticateResponse::from(decision.clone());
        assert_eq!(wire.verdict(), pb::Verdict::Allow);
        assert_eq!(wire.attributes["tenant"], "acme");
        assert_eq!(wire.reason_code, 0);
        assert_eq!(wire.identity, "device-17");
        assert_eq!(AuthDecision::try_from(wire).unwrap(), decision);
        // No identity set: the field stays empty, and empty reads back as none.
        let plain = pb::AuthenticateResponse::from(AuthDecision::allow());
        assert_eq!(plain.identity, "");
        assert_eq!(AuthDecision::try_from(plain).unwrap().identity, None);
    }
}
