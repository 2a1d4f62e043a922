//! From verified claims to the connection's decision: the username check and the session
//! attributes (mapped claims, and the topic filter lists the topic role reads back).

use tandem_plugin::{AuthDecision, AuthRequest};

use serde_json::Value;

use crate::attributes::{EXP_ATTRIBUTE, USERNAME_ATTRIBUTE, action_attribute};
use crate::config::Config;
use crate::topics::valid_filter;
use crate::verify::Claims;

/// The claim named `name`: a top-level claim, or a JSON pointer when it starts with `/` (for
/// nested claims such as Kubernetes' `/kubernetes.io/namespace`).
fn claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    let Some(pointer) = name.strip_prefix('/') else {
        return claims.get(name);
    };
    let (first, rest) = match pointer.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (pointer, None),
    };
    let top = claims.get(&first.replace("~1", "/").replace("~0", "~"))?;
    match rest {
        None => Some(top),
        Some(rest) => top.pointer(&format!("/{rest}")),
    }
}

/// A claim as attribute text: strings as they are, other values as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The claim as a list of topic filters (a single string counts as a list of one).
fn filters(value: &Value) -> Result<Vec<String>, String> {
    let list: Vec<String> = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or(()))
            .collect::<Result<_, ()>>()
            .map_err(|()| "is not a list of strings".to_string())?,
        _ => return Err("is not a list of topic filters".into()),
    };
    if let Some(bad) = list.iter().find(|f| !valid_filter(f)) {
        return Err(format!("holds an invalid topic filter {bad:?}"));
    }
    Ok(list)
}

/// The decision for a verified token: allow with attributes, or the reason to deny.
pub(crate) fn decide(
    config: &Config,
    req: &AuthRequest,
    claims: &Claims,
) -> Result<AuthDecision, String> {
    let mut decision = AuthDecision::allow();
    let identity = claim(claims, &config.username_claim).map(text);
    if config.require_username_match {
        match (&identity, &req.username) {
            (None, _) => return Err(format!("claim {} is missing", config.username_claim)),
            (Some(id), Some(user)) if id == user => {}
            _ => {
                return Err(format!(
                    "username does not match claim {}",
                    config.username_claim
                ));
            }
        }
    }
    if let Some(id) = identity {
        // The token's subject is who the client is, whatever username it typed: the broker
        // sends it to topic checks and events as the client's identity.
        decision = decision
            .with_attribute(USERNAME_ATTRIBUTE, id.clone())
            .with_identity(id);
    }
    if let Some(exp) = claims.get("exp").and_then(Value::as_i64) {
        decision = decision.with_attribute(EXP_ATTRIBUTE, exp.to_string());
    }
    for (attribute, name) in &config.attributes {
        if let Some(value) = claim(claims, name) {
            decision = decision.with_attribute(attribute, text(value));
        }
    }
    let topic = &config.topic_claims;
    for (action, name) in [
        (tandem_plugin::Action::Publish, &topic.publish),
        (tandem_plugin::Action::Subscribe, &topic.subscribe),
        (tandem_plugin::Action::Receive, &topic.receive),
    ] {
        let Some(name) = name else { continue };
        let Some(value) = claims.get(name) else {
            continue;
        };
        let list = filters(value).map_err(|why| format!("claim {name} {why}"))?;
        let json = serde_json::to_string(&list).map_err(|e| e.to_string())?;
        decision = decision.with_attribute(action_attribute(action), json);
    }
    Ok(decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::tests::hs_config;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claims_become_attributes_and_topic_lists() {
        let config = hs_config(json!({
            "attributes": {"tenant": "tenant", "ns": "/kubernetes.io/namespace", "groups": "groups"},
            "publish_claim": "publish", "subscribe_claim": "subscribe", "receive_claim": "receive",
        }));
        let c = claims(json!({
            "sub": "dev-1", "exp": 2000000000, "tenant": "acme", "groups": ["a", "b"],
            "kubernetes.io": {"namespace": "prod"},
            "publish": ["t/acme/#"], "subscribe": "t/acme/+",
        }));
        let req = AuthRequest::new("c1").with_username("anything");
        let d = decide(&config, &req, &c).unwrap();
        let a = &d.attributes;
        assert_eq!(a["tenant"], "acme");
        assert_eq!(a["ns"], "prod");
        assert_eq!(a["groups"], r#"["a","b"]"#);
        assert_eq!(a["jwt.username"], "dev-1");
        assert_eq!(
            d.identity.as_deref(),
            Some("dev-1"),
            "the subject is the identity, not the typed username"
        );
        assert_eq!(a["jwt.exp"], "2000000000");
        assert_eq!(a["jwt.publish"], r#"["t/acme/#"]"#);
        assert_eq!(a["jwt.subscribe"], r#"["t/acme/+"]"#);
        assert!(!a.contains_key("jwt.receive"), "absent claim, no attribute");

        let bad = claims(json!({"sub": "d", "publish": ["a/#/b"]}));
        let err = decide(&config, &req, &bad).unwrap_err();
        assert!(
            err.contains("claim publish holds an invalid topic filter"),
            "{err}"
        );
        let bad = claims(json!({"sub": "d", "publish": {"a": 1}}));
        assert!(decide(&config, &req, &bad).is_err());
    }

    #[test]
    fn the_username_must_match_when_asked() {
        let config =
            hs_config(json!({"require_username_match": true, "username_claim": "username"}));
        let c = claims(json!({"username": "alice"}));
        assert!(decide(&config, &AuthRequest::new("c").with_username("alice"), &c).is_ok());
        let err = decide(&config, &AuthRequest::new("c").with_username("bob"), &c).unwrap_err();
        assert_eq!(err, "username does not match claim username");
        assert!(decide(&config, &AuthRequest::new("c"), &c).is_err());
        let err = decide(&config, &AuthRequest::new("c"), &claims(json!({}))).unwrap_err();
        assert_eq!(err, "claim username is missing");
    }
}
