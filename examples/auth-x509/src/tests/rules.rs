//! The rules file: defaults, and errors that say what is wrong where.

use std::path::Path;
use std::time::Duration;

use crate::rules::{Fallback, Rules};

fn err(yaml: &str) -> String {
    Rules::from_yaml(Path::new("/etc/x509.yaml"), yaml).unwrap_err()
}

#[test]
fn defaults_fail_closed() {
    let rules = Rules::from_yaml(
        Path::new("x.yaml"),
        "clients: [ { match: { common_name: \"*\" } } ]\n",
    )
    .unwrap();
    assert_eq!(rules.no_certificate, Fallback::Deny);
    assert_eq!(rules.unmatched_certificate, Fallback::Deny);
    assert_eq!(rules.unmatched_identity, Fallback::Deny);
    assert_eq!(rules.cache_ttl, Duration::from_secs(30));
    let rules = Rules::from_yaml(
        Path::new("x.yaml"),
        "no_certificate: ignore\nunmatched_certificate: abstain\nunmatched_identity: ignore\ncache_ttl: 1500ms\nacl: []\nclients: [ { match: { any: true } } ]\n",
    )
    .unwrap();
    assert_eq!(rules.no_certificate, Fallback::Ignore);
    assert_eq!(
        rules.unmatched_certificate,
        Fallback::Ignore,
        "abstain is an alias"
    );
    assert_eq!(rules.unmatched_identity, Fallback::Ignore);
    assert_eq!(rules.cache_ttl, Duration::from_millis(1500));
    assert!(
        rules.summary().contains("clients=1 acl=0/0"),
        "{}",
        rules.summary()
    );
}

#[test]
fn bad_files_are_clear_errors() {
    let cases: &[(&str, &[&str])] = &[
        ("", &["/etc/x509.yaml"]),
        ("clients: []\n", &["no rules"]),
        ("client: []\n", &["unknown field `client`"]),
        (
            "clients: [ { match: { any: true }, idenity: x } ]\n",
            &["rules file /etc/x509.yaml: clients[0].idenity: unknown field `idenity`"],
        ),
        (
            "no_certificate: allow\nacl: []\n",
            &["no_certificate", "unknown variant `allow`"],
        ),
        ("cache_ttl: soon\nacl: []\n", &["cache_ttl"]),
        (
            "clients: [ { match: {} } ]\n",
            &["clients[0].match", "give common_name"],
        ),
        (
            "clients: [ { match: { any: true, common_name: a } } ]\n",
            &["clients[0].match", "stands alone"],
        ),
        (
            "clients: [ { match: { cn: a } } ]\n",
            &["clients[0].match", "unknown field `cn`"],
        ),
        (
            "clients: [ { match: { common_name: a } }, { match: { san: \"sensor.example.com\" } } ]\n",
            &["clients[1].match", "give a type"],
        ),
        (
            "clients: [ { match: { san: \"dn:x\" } } ]\n",
            &["unknown type `dn`"],
        ),
        (
            "clients: [ { match: { san: \"ip:10.0.0.0/8\" } } ]\n",
            &["not an IP address"],
        ),
        (
            "clients: [ { match: { fingerprint: abc } } ]\n",
            &["clients[0].match", "not a SHA-256"],
        ),
        (
            "clients: [ { match: { common_name: a }, identity: \"{username}\" } ]\n",
            &["clients[0].identity", "unknown placeholder `{username}`"],
        ),
        (
            "clients: [ { match: { common_name: a }, identity: \"{san}\" } ]\n",
            &["clients[0].identity", "`san` matcher"],
        ),
        (
            "clients: [ { match: { common_name: a }, identity: \"\" } ]\n",
            &["clients[0].identity", "empty"],
        ),
        (
            "clients: [ { match: { common_name: a }, attributes: { t: \"{cn\" } } ]\n",
            &["clients[0].attributes", "t:", "without `}`"],
        ),
        (
            "acl: [ { identity: a, publish: [ok, \"a/#/b\"] } ]\n",
            &["acl[0].publish[1]", "invalid filter `a/#/b`"],
        ),
        (
            "acl: [ { identity: a, subscribe: [\"d/{identity}+\"] } ]\n",
            &["acl[0].subscribe[0]", "`+` must be alone"],
        ),
        (
            "acl: [ { identity: a, receive: [\"d/{cn}\"] } ]\n",
            &["acl[0].receive[0]", "unknown placeholder `{cn}`"],
        ),
        (
            "acl: [ { identity: \"\" } ]\n",
            &["acl[0].identity", "empty"],
        ),
        (
            "acl: [ { publish: [a] } ]\n",
            &["acl[0]", "missing field `identity`"],
        ),
    ];
    for (yaml, needles) in cases {
        let err = err(yaml);
        assert!(err.starts_with("rules file /etc/x509.yaml: "), "{err}");
        for needle in *needles {
            assert!(err.contains(needle), "{yaml:?}: {err}");
        }
    }
    let err = Rules::from_bytes(Path::new("/etc/x509.yaml"), b"\xff\xfe").unwrap_err();
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn a_bad_or_missing_file_keeps_the_last_good_rules() {
    use crate::live::LiveRules;
    use crate::watch::reload;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x509.yaml");
    let good = b"clients: [ { match: { common_name: a } } ]\n".to_vec();
    let live = LiveRules::new(Rules::from_bytes(&path, &good).unwrap());
    let clients = || live.current().clients.len();
    let mut last = good.clone();

    std::fs::write(
        &path,
        "clients: [ { match: { common_name: a } }, { match: {} } ]\n",
    )
    .unwrap();
    reload(&path, &mut last, &live);
    assert_eq!(clients(), 1, "an invalid file is not loaded");
    std::fs::write(&path, b"\xff").unwrap();
    reload(&path, &mut last, &live);
    assert_eq!(clients(), 1, "a non-UTF-8 file is not loaded");
    std::fs::remove_file(&path).unwrap();
    reload(&path, &mut last, &live);
    assert_eq!(clients(), 1, "a missing file is not an empty one");

    std::fs::write(
        &path,
        "clients: [ { match: { common_name: a } }, { match: { common_name: b } } ]\n",
    )
    .unwrap();
    reload(&path, &mut last, &live);
    assert_eq!(clients(), 2, "a good file is loaded");
}
