//! The matching and ACL logic, with the inputs a hostile certificate or client can bring.

use std::path::Path;

use tandem_plugin::Action::{self, Publish, Receive, Subscribe};

use super::certs::{Alt, der};
use crate::acl::{self, Access};
use crate::cert::{Certificate, San};
use crate::clients::{self, Connect};
use crate::rules::Rules;

fn rules(yaml: &str) -> Rules {
    Rules::from_yaml(Path::new("test.yaml"), yaml).unwrap()
}

fn cert(cn: Option<&str>, sans: Vec<San>) -> Certificate {
    Certificate {
        subject: cn.map(|cn| format!("CN={cn},O=Acme")),
        common_name: cn.map(str::to_owned),
        sans,
        fingerprint: "ab".repeat(32),
        listener: "secure".to_owned(),
    }
}

/// The identity the clients entries give `cert`, or `None` when they do not allow it.
fn identity(rules: &Rules, cert: &Certificate) -> Option<String> {
    match clients::decide(&rules.clients, cert) {
        Connect::Allow { identity, .. } => Some(identity),
        _ => None,
    }
}

fn access(rules: &Rules, action: Action, identity: &str, topic: &str) -> Access {
    acl::decide(&rules.acl, action, Some(identity), topic)
}

fn allowed(rules: &Rules, action: Action, identity: &str, topic: &str) -> bool {
    access(rules, action, identity, topic) == Access::Allow
}

const DEVICES: &str = r##"
clients:
  - match: { common_name: "device-*" }
    identity: "{cn}"
    attributes: { tenant: acme, serial: "{fingerprint}" }
  - match: { san: "dns:sensor-*.example.com" }
    identity: "{san}"
  - match: { san: "uri:spiffe://acme/*" }
    identity: "svc:{san_uri}"
  - match: { san: "ip:10.0.0.5" }
    identity: "gateway"
  - match: { subject: "CN=ops,O=Acme" }
    identity: "{subject}"
acl:
  - identity: "device-*"
    publish: ["devices/{identity}/telemetry/#"]
    subscribe: ["devices/{identity}/commands/#"]
  - identity: "*"
    subscribe: ["public/+"]
    receive: ["public/+", "broadcast"]
"##;

#[test]
fn first_matching_entry_gives_identity_and_attributes() {
    let rules = rules(DEVICES);
    let d17 = cert(Some("device-17"), vec![]);
    assert_eq!(
        clients::decide(&rules.clients, &d17),
        Connect::Allow {
            rule: 0,
            identity: "device-17".into(),
            attributes: vec![
                ("serial".into(), "ab".repeat(32)),
                ("tenant".into(), "acme".into())
            ],
        }
    );
    // The first match wins even when a later entry would match too.
    let both = cert(
        Some("device-1"),
        vec![San::Dns("sensor-1.example.com".into())],
    );
    assert_eq!(identity(&rules, &both).as_deref(), Some("device-1"));
    let sensor = cert(None, vec![San::Dns("SENSOR-2.example.com".into())]);
    assert_eq!(
        identity(&rules, &sensor).as_deref(),
        Some("SENSOR-2.example.com"),
        "DNS globs ignore case; {{san}} is the SAN that matched"
    );
    let svc = cert(
        Some("x"),
        vec![
            San::Dns("a.test".into()),
            San::Uri("spiffe://acme/billing".into()),
        ],
    );
    assert_eq!(
        identity(&rules, &svc).as_deref(),
        Some("svc:spiffe://acme/billing")
    );
    let gw = cert(None, vec![San::Ip("10.0.0.5".parse().unwrap())]);
    assert_eq!(identity(&rules, &gw).as_deref(), Some("gateway"));
    let ops = cert(Some("ops"), vec![]);
    assert_eq!(identity(&rules, &ops).as_deref(), Some("CN=ops,O=Acme"));
}

#[test]
fn near_misses_do_not_match() {
    let rules = rules(DEVICES);
    for (what, c) in [
        (
            "a CN that only contains the prefix",
            cert(Some("xdevice-1"), vec![]),
        ),
        ("an empty subject and no CN", cert(None, vec![])),
        ("a CN of `*`", cert(Some("*"), vec![])),
        ("a CN of `#`", cert(Some("#"), vec![])),
        (
            "a DNS SAN that only starts like the pattern",
            cert(
                None,
                vec![San::Dns("sensor-1.example.com.evil.test".into())],
            ),
        ),
        (
            "the right text as another SAN type",
            cert(None, vec![San::Email("sensor-1.example.com".into())]),
        ),
        (
            "a URI under another trust domain",
            cert(None, vec![San::Uri("spiffe://acme.evil/x".into())]),
        ),
        (
            "an IP next to the one named",
            cert(None, vec![San::Ip("10.0.0.50".parse().unwrap())]),
        ),
        (
            "the subject with other spacing",
            Certificate {
                subject: Some("CN=ops, O=Acme".into()),
                ..cert(Some("ops"), vec![])
            },
        ),
    ] {
        assert_eq!(
            clients::decide(&rules.clients, &c),
            Connect::Unmatched,
            "{what}"
        );
    }
}

#[test]
fn hostile_common_names_stay_in_their_subtree() {
    let rules = rules(
        r##"
clients:
  - match: { any: true }
acl:
  - identity: "*"
    publish: ["devices/{identity}/#", "{identity}/inbox"]
    subscribe: ["devices/{identity}/#"]
"##,
    );
    // Any certificate connects, with its CN as identity (the default `{cn}`)...
    for cn in ["*", "#", "+", "a/b", "$SYS", "device-1"] {
        assert_eq!(
            identity(&rules, &cert(Some(cn), vec![])).as_deref(),
            Some(cn)
        );
    }
    // ...but a wildcard or a level separator in it cannot widen its filters.
    assert!(allowed(&rules, Publish, "device-1", "devices/device-1/x"));
    assert!(
        allowed(&rules, Publish, "*", "devices/*/x"),
        "`*` is no MQTT wildcard"
    );
    for (id, topic) in [
        ("#", "devices/other/x"),
        ("+", "devices/other/x"),
        ("a/b", "devices/a/b/x"),
        ("a/b", "a/b/inbox"),
        ("$SYS", "$SYS/inbox"),
    ] {
        assert!(
            matches!(access(&rules, Publish, id, topic), Access::Deny(_)),
            "{id} on {topic}"
        );
    }
    for (id, filter) in [
        ("#", "devices/#"),
        ("+", "devices/+/#"),
        ("a/b", "devices/a/#"),
    ] {
        assert!(
            matches!(access(&rules, Subscribe, id, filter), Access::Deny(_)),
            "{id} subscribing {filter}"
        );
    }
    // `$` inside a filter (not at its start) is plain text.
    assert!(allowed(&rules, Publish, "$x", "devices/$x/t"));
    // A client without a CN (or with several) gets no `{cn}` identity: denied, not anonymous.
    assert!(matches!(
        clients::decide(&rules.clients, &cert(None, vec![])),
        Connect::Deny { rule: 0, .. }
    ));
}

#[test]
fn subscriptions_must_lie_inside_an_allowed_filter() {
    let rules = rules(DEVICES);
    let id = "device-17";
    assert!(allowed(
        &rules,
        Subscribe,
        id,
        "devices/device-17/commands/#"
    ));
    assert!(allowed(
        &rules,
        Subscribe,
        id,
        "devices/device-17/commands/+/reboot"
    ));
    assert!(allowed(&rules, Subscribe, id, "devices/device-17/commands"));
    for broader in [
        "#",
        "devices/#",
        "devices/+/commands/#",
        "devices/device-17/#",
        "+/device-17/commands/#",
        "devices/device-17/+/x",
    ] {
        assert!(
            matches!(access(&rules, Subscribe, id, broader), Access::Deny(_)),
            "{broader} is broader than the allowed subtree"
        );
    }
    assert!(
        allowed(&rules, Subscribe, id, "public/+"),
        "from the `*` entry"
    );
    assert!(!allowed(&rules, Subscribe, id, "public/#"));
    // Another device's subtree.
    assert!(!allowed(
        &rules,
        Subscribe,
        id,
        "devices/device-18/commands/#"
    ));
    assert!(!allowed(
        &rules,
        Publish,
        id,
        "devices/device-18/telemetry/t"
    ));
    assert!(allowed(
        &rules,
        Publish,
        id,
        "devices/device-17/telemetry/t"
    ));
    assert!(allowed(&rules, Publish, id, "devices/device-17/telemetry"));
    assert!(!allowed(
        &rules,
        Publish,
        id,
        "devices/device-17/commands/x"
    ));
}

#[test]
fn receive_defaults_to_subscribe_and_can_be_given() {
    let rules = rules(DEVICES);
    assert!(allowed(
        &rules,
        Receive,
        "device-1",
        "devices/device-1/commands/x"
    ));
    assert!(!allowed(
        &rules,
        Receive,
        "device-1",
        "devices/device-2/commands/x"
    ));
    assert!(
        allowed(&rules, Receive, "device-1", "broadcast"),
        "given for `*`"
    );
    assert!(allowed(&rules, Receive, "gateway", "public/news"));
    assert!(!allowed(
        &rules,
        Receive,
        "gateway",
        "devices/gateway/commands/x"
    ));
}

#[test]
fn unmatched_identities_and_malformed_topics() {
    let rules = rules("acl: [ { identity: \"device-*\", publish: [\"d/{identity}\"] } ]\n");
    assert_eq!(
        access(&rules, Publish, "gateway", "d/gateway"),
        Access::Unmatched
    );
    assert_eq!(
        acl::decide(&rules.acl, Publish, None, "d/x"),
        Access::Unmatched
    );
    assert!(allowed(&rules, Publish, "device-1", "d/device-1"));
    // An identity that the glob names but no filter grants is denied, not unmatched.
    assert!(matches!(
        access(&rules, Subscribe, "device-1", "d/device-1"),
        Access::Deny(_)
    ));
    for (action, topic) in [
        (Publish, "d/+"),
        (Publish, ""),
        (Receive, "d/#"),
        (Subscribe, "d/#/x"),
        (Subscribe, "d/device-1+"),
        (Publish, "d/\0"),
    ] {
        let Access::Deny(reason) = access(&rules, action, "device-1", topic) else {
            panic!("{topic:?} is malformed");
        };
        assert!(reason.starts_with("invalid"), "{reason}");
    }
}

#[test]
fn placeholders_without_a_value_deny_the_matching_entry() {
    let rules = rules(
        r#"
clients:
  - match: { san: "dns:*.example.com" }
    identity: "{cn}"
  - match: { any: true }
    identity: "{san_dns}"
"#,
    );
    // The first entry matches and cannot give `{cn}`: denied, not passed to the next entry.
    let no_cn = cert(None, vec![San::Dns("a.example.com".into())]);
    assert!(matches!(
        clients::decide(&rules.clients, &no_cn),
        Connect::Deny { rule: 0, reason } if reason.contains("{cn}")
    ));
    let no_dns = cert(Some("x"), vec![San::Email("x@y.z".into())]);
    assert!(matches!(
        clients::decide(&rules.clients, &no_dns),
        Connect::Deny { rule: 1, .. }
    ));
    // A CN with a control character is no identity.
    let rules2 = self::rules("clients: [ { match: { any: true } } ]\n");
    assert!(matches!(
        clients::decide(&rules2.clients, &cert(Some("a\nb"), vec![])),
        Connect::Deny { .. }
    ));
}

#[test]
fn fingerprints_match_whatever_their_case_and_separators() {
    let fp = "AB:".repeat(31) + "AB";
    let rules = rules(&format!(
        "clients: [ {{ match: {{ fingerprint: \"{fp}\" }}, identity: pinned }} ]\n"
    ));
    assert_eq!(
        identity(&rules, &cert(None, vec![])).as_deref(),
        Some("pinned")
    );
    let other = Certificate {
        fingerprint: "cd".repeat(32),
        ..cert(None, vec![])
    };
    assert_eq!(identity(&rules, &other), None);
}

#[test]
fn certificates_are_read_from_the_der() {
    let one = Certificate::from_der(&der(
        &["device-17"],
        &[
            Alt::Dns("sensor-1.example.com"),
            Alt::Ip("10.0.0.5"),
            Alt::Ip("::1"),
            Alt::Uri("spiffe://acme/d17"),
            Alt::Email("ops@acme.test"),
        ],
    ))
    .unwrap();
    assert_eq!(one.common_name.as_deref(), Some("device-17"));
    assert_eq!(
        one.sans,
        [
            San::Dns("sensor-1.example.com".into()),
            San::Ip("10.0.0.5".parse().unwrap()),
            San::Ip("::1".parse().unwrap()),
            San::Uri("spiffe://acme/d17".into()),
            San::Email("ops@acme.test".into()),
        ]
    );
    assert_eq!(one.fingerprint.len(), 64);
    assert!(
        one.fingerprint
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // Two CNs: neither is the CN (a rule cannot be made to pick the convenient one).
    let two = Certificate::from_der(&der(&["device-1", "admin"], &[])).unwrap();
    assert_eq!(two.common_name, None);
    let none = Certificate::from_der(&der(&[], &[])).unwrap();
    assert_eq!((none.common_name, none.sans.len()), (None, 0));
    assert!(Certificate::from_der(b"not a certificate").is_err());
}

#[test]
fn a_listener_key_tells_which_ca_vouched() {
    let rules = rules(
        "clients:\n  - { match: { listener: devices, common_name: \"device-*\" } }\n  - { match: { listener: staff, any: true }, identity: \"staff-{cn}\" }\n",
    );
    // The same name from the staff listener's CA is no device.
    let on = |listener: &str| Certificate {
        listener: listener.to_owned(),
        ..cert(Some("device-17"), vec![])
    };
    assert_eq!(
        identity(&rules, &on("devices")).as_deref(),
        Some("device-17")
    );
    assert_eq!(
        identity(&rules, &on("staff")).as_deref(),
        Some("staff-device-17")
    );
    assert_eq!(identity(&rules, &on("secure")), None);
    // A listener alone is no match of a certificate.
    let err = Rules::from_yaml(
        Path::new("t.yaml"),
        "clients: [ { match: { listener: devices } } ]\n",
    );
    assert!(err.is_err());
}
