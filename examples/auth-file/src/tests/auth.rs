use super::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::{Plugin, Verdict};

const ARGON2ID: &str =
    "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";

fn plugin() -> Plugin {
    Plugin::new("auth-file", "test")
        .config::<Config>()
        .authenticate(FileAuth::new())
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn decisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, format!("alice:{ARGON2ID}\nodd:$1$x$y\n")).unwrap();
    let broker = TestBroker::new(plugin());
    let config = |extra: &str| {
        let json = format!(
            r#"{{"password_file": {:?}{extra}}}"#,
            file.display().to_string()
        );
        tandem_plugin::serde_json::from_str::<tandem_plugin::serde_json::Value>(&json).unwrap()
    };
    broker.describe(config("")).await.unwrap();
    let verdict = |req: AuthRequest| {
        let broker = &broker;
        async move { broker.authenticate(req).await.unwrap() }
    };
    let req = |u: &str, p: &str| AuthRequest::new("c").with_username(u).with_password(p);

    let ok = verdict(req("alice", "argon pw")).await;
    assert_eq!(ok.verdict, Verdict::Allow);
    assert_eq!(ok.identity.as_deref(), Some("alice"));
    assert_eq!(ok.attributes.get("auth").map(String::as_str), Some("file"));
    // Again: answered from the cache, same answer.
    assert_eq!(
        verdict(req("alice", "argon pw")).await.verdict,
        Verdict::Allow
    );
    let bad = verdict(req("alice", "nope")).await;
    assert_eq!((bad.verdict, bad.reason_code), (Verdict::Deny, Some(0x86)));
    let no_pw = verdict(AuthRequest::new("c").with_username("alice")).await;
    assert_eq!(no_pw.verdict, Verdict::Deny);
    assert_eq!(verdict(req("odd", "x")).await.verdict, Verdict::Deny);
    assert_eq!(verdict(req("nobody", "x")).await.verdict, Verdict::Deny);
    assert_eq!(verdict(AuthRequest::new("c")).await.verdict, Verdict::Deny);
    assert_eq!(
        verdict(AuthRequest::new("c").with_username(""))
            .await
            .verdict,
        Verdict::Deny
    );

    broker
        .describe(config(
            r#", "allow_anonymous": true, "unknown_user": "abstain""#,
        ))
        .await
        .unwrap();
    let anon = verdict(AuthRequest::new("c")).await;
    assert_eq!(anon.verdict, Verdict::Allow);
    assert_eq!(verdict(req("nobody", "x")).await.verdict, Verdict::Abstain);
    // A user whose hash cannot be used is denied, not treated as unknown.
    assert_eq!(verdict(req("odd", "x")).await.verdict, Verdict::Deny);
    // A username with the wrong password is never let in by allow_anonymous (aMQTT's bug).
    assert_eq!(verdict(req("alice", "nope")).await.verdict, Verdict::Deny);
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn unknown_users_cost_a_verification_and_failures_are_throttled_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, format!("alice:{ARGON2ID}\nbob:{ARGON2ID}\n")).unwrap();
    let auth = FileAuth::new();
    let verifications = Arc::clone(&auth.verifications);
    let count = || verifications.load(Ordering::Relaxed);
    let broker = TestBroker::new(
        Plugin::new("auth-file", "test")
            .config::<Config>()
            .authenticate(auth),
    );
    broker
        .describe(tandem_plugin::serde_json::json!({
            "password_file": file.display().to_string(),
            "throttle": {"user_failures": 3, "address_failures": 4, "window": "1m"},
        }))
        .await
        .unwrap();
    let from = |u: &str, p: &str, ip: [u8; 4]| {
        let mut r = AuthRequest::new("c").with_username(u).with_password(p);
        r.remote_addr = Some((ip, 40000).into());
        r
    };
    let ask = |r: AuthRequest| {
        let broker = &broker;
        async move { broker.authenticate(r).await.unwrap() }
    };

    // An unknown user takes one hash verification, like a known one, and is denied even
    // with a password that verifies against the decoy (alice's hash).
    let before = count();
    let unknown = ask(from("nobody", "argon pw", [10, 0, 0, 1])).await;
    assert_eq!(
        (unknown.verdict, unknown.reason.as_str()),
        (Verdict::Deny, "unknown user")
    );
    assert_eq!(
        count(),
        before + 1,
        "the unknown user was verified against the decoy"
    );
    assert_eq!(unknown.identity, None);
    let known = ask(from("alice", "wrong", [10, 0, 0, 2])).await;
    assert_eq!(
        (known.verdict, known.reason_code),
        (Verdict::Deny, Some(0x86))
    );
    assert_eq!(
        unknown.reason_code, known.reason_code,
        "same answer to the client"
    );
    assert_eq!(count(), before + 2);

    // Three failures for alice (from two addresses): the fourth attempt is refused without
    // a verification, even with the right password; bob is not affected.
    ask(from("alice", "wrong", [10, 0, 0, 3])).await;
    ask(from("alice", "wrong", [10, 0, 0, 2])).await;
    let n = count();
    let throttled = ask(from("alice", "argon pw", [10, 0, 0, 9])).await;
    assert_eq!(throttled.verdict, Verdict::Deny);
    assert!(
        throttled.reason.starts_with("throttled"),
        "{}",
        throttled.reason
    );
    assert_eq!(throttled.reason_code, Some(0x86));
    assert_eq!(count(), n, "no verification for a throttled username");
    let bob = ask(from("bob", "argon pw", [10, 0, 0, 9])).await;
    assert_eq!(bob.verdict, Verdict::Allow);
    assert_eq!(
        bob.identity.as_deref(),
        Some("bob"),
        "the verified username is the identity"
    );

    // Four failures from one address, over any usernames: that address is refused.
    for u in ["u1", "u2", "u3", "u4"] {
        ask(from(u, "x", [10, 0, 0, 7])).await;
    }
    let n = count();
    let by_address = ask(from("bob", "argon pw", [10, 0, 0, 7])).await;
    assert_eq!(by_address.verdict, Verdict::Deny);
    assert!(
        by_address.reason.contains("this address"),
        "{}",
        by_address.reason
    );
    assert_eq!(count(), n, "no verification for a throttled address");

    // A new Describe (a reload, a probe) does not reset the throttle.
    broker
        .describe(tandem_plugin::serde_json::json!({
            "password_file": file.display().to_string(),
            "throttle": {"user_failures": 3, "address_failures": 4, "window": "1m"},
        }))
        .await
        .unwrap();
    let still = ask(from("alice", "argon pw", [10, 0, 0, 9])).await;
    assert!(still.reason.starts_with("throttled"), "{}", still.reason);
}

#[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
async fn bad_configuration_fails_describe() {
    let broker = TestBroker::new(plugin());
    let describe = |v: tandem_plugin::serde_json::Value| {
        let broker = &broker;
        async move { broker.describe(v).await.unwrap_err().message().to_owned() }
    };
    use tandem_plugin::serde_json::json;
    let missing = describe(json!({"password_file": "/nonexistent/passwd"})).await;
    assert!(
        missing.contains("cannot read the password file /nonexistent/passwd"),
        "{missing}"
    );
    let unknown = describe(json!({"password_file": "/x", "alow_anonymous": true})).await;
    assert!(
        unknown.contains("unknown field `alow_anonymous`"),
        "{unknown}"
    );
    let required = describe(json!({})).await;
    assert!(
        required.contains("missing field `password_file`"),
        "{required}"
    );
    let verdict = describe(json!({"password_file": "/x", "unknown_user": "allow"})).await;
    assert!(verdict.contains("unknown variant `allow`"), "{verdict}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "").unwrap();
    let f = file.display().to_string();
    let window = describe(json!({"password_file": f, "throttle": {"window": "0s"}})).await;
    assert!(window.contains("throttle.window is 0"), "{window}");
    let entries = describe(json!({"password_file": f, "throttle": {"max_entries": 0}})).await;
    assert!(entries.contains("throttle.max_entries is 0"), "{entries}");
    let typo = describe(json!({"password_file": f, "throttle": {"user_failure": 3}})).await;
    assert!(typo.contains("unknown field `user_failure`"), "{typo}");
    let iterations = describe(json!({"password_file": f, "scram_iterations": 1000})).await;
    assert!(
        iterations.contains("scram_iterations is 1000"),
        "{iterations}"
    );
}

mod scram_exchange {
    use super::*;
    use crate::scram::tests::{
        RFC_CLIENT_FINAL, RFC_CLIENT_FIRST, RFC_ENTRY, RFC_SERVER_FINAL, RFC_SERVER_FIRST,
        RFC_SERVER_NONCE, client_final,
    };
    use crate::scram::{Exchange, MAX_MESSAGE_LEN};
    use tandem_plugin::serde_json::{Value, json};

    fn request(step: u32, data: &[u8], context: &[u8], ip: [u8; 4]) -> AuthRequest {
        let mut r = AuthRequest::new("c");
        r.auth_method = Some("SCRAM-SHA-256".into());
        r.auth_data = Some(data.to_vec());
        r.auth_step = step;
        r.auth_context = context.to_vec();
        r.remote_addr = Some((ip, 40000).into());
        r
    }

    /// A password file with RFC 7677's user, an argon2id user and an unusable line.
    struct Setup {
        _dir: tempfile::TempDir,
        broker: TestBroker,
        file: String,
    }

    impl Setup {
        async fn new(extra: Value) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("passwd");
            std::fs::write(
                &file,
                format!("user:{RFC_ENTRY}\nalice:{ARGON2ID}\nodd:$scram-sha-256$1$x$y$z\n"),
            )
            .unwrap();
            let auth = FileAuth::new().with_server_nonce(|| RFC_SERVER_NONCE.to_owned());
            let broker = TestBroker::new(
                Plugin::new("auth-file", "test")
                    .config::<Config>()
                    .authenticate(auth),
            );
            let file = file.display().to_string();
            let mut config = json!({"password_file": file});
            if let (Some(c), Value::Object(extra)) = (config.as_object_mut(), extra) {
                c.extend(extra);
            }
            broker.describe(config).await.unwrap();
            Setup {
                _dir: dir,
                broker,
                file,
            }
        }

        async fn ask(&self, r: AuthRequest) -> AuthDecision {
            self.broker.authenticate(r).await.unwrap()
        }

        /// Step 0 for `user`: the server-first-message and the context.
        async fn first(&self, user: &str, ip: [u8; 4]) -> (String, Vec<u8>) {
            let d = self
                .ask(request(
                    0,
                    format!("n,,n={user},r=cnonce").as_bytes(),
                    &[],
                    ip,
                ))
                .await;
            let Some(c) = d.auth_continue else {
                panic!("no continue: {} {:?}", d.reason, d.verdict);
            };
            (String::from_utf8(c.auth_data).unwrap(), c.context)
        }

        /// A whole exchange of `user` with `password`; the final decision.
        async fn login(&self, user: &str, password: &str, ip: [u8; 4]) -> AuthDecision {
            let (_, context) = self.first(user, ip).await;
            let exchange = Exchange::from_context(&context).unwrap();
            let fin = client_final(password.as_bytes(), &exchange);
            self.ask(request(1, fin.as_bytes(), &context, ip)).await
        }
    }

    const IP: [u8; 4] = [10, 0, 0, 1];

    /// What the client learns of a decision (`reason` is for the broker's log only).
    type Seen = (
        Verdict,
        Option<u8>,
        Option<String>,
        Option<String>,
        Option<Vec<u8>>,
        bool,
    );

    fn seen(d: &AuthDecision) -> Seen {
        (
            d.verdict,
            d.reason_code,
            d.client_reason.clone(),
            d.identity.clone(),
            d.auth_data.clone(),
            d.auth_continue.is_some(),
        )
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn rfc_7677_example_through_the_plugin() {
        let s = Setup::new(json!({})).await;
        let first = s
            .ask(request(0, RFC_CLIENT_FIRST.as_bytes(), &[], IP))
            .await;
        assert_eq!(
            first.verdict,
            Verdict::Abstain,
            "a continue decides nothing"
        );
        let cont = first.auth_continue.expect("continue");
        assert_eq!(String::from_utf8(cont.auth_data).unwrap(), RFC_SERVER_FIRST);
        let done = s
            .ask(request(1, RFC_CLIENT_FINAL.as_bytes(), &cont.context, IP))
            .await;
        assert_eq!(done.verdict, Verdict::Allow, "{}", done.reason);
        assert_eq!(done.identity.as_deref(), Some("user"));
        assert_eq!(done.auth_data.as_deref(), Some(RFC_SERVER_FINAL.as_bytes()));
        assert_eq!(
            done.attributes.get("auth").map(String::as_str),
            Some("scram")
        );
        assert!(done.auth_continue.is_none());

        // Re-authentication runs the same exchange, to the same identity.
        let mut again = request(0, RFC_CLIENT_FIRST.as_bytes(), &[], IP);
        again.reauthentication = true;
        let cont = s.ask(again).await.auth_continue.expect("continue");
        let mut fin = request(1, RFC_CLIENT_FINAL.as_bytes(), &cont.context, IP);
        fin.reauthentication = true;
        let done = s.ask(fin).await;
        assert_eq!(done.verdict, Verdict::Allow, "{}", done.reason);
        assert_eq!(done.identity.as_deref(), Some("user"));
        assert_eq!(done.auth_data.as_deref(), Some(RFC_SERVER_FINAL.as_bytes()));

        // A CONNECT user name, when given, must be the SCRAM one.
        let mut same = request(0, RFC_CLIENT_FIRST.as_bytes(), &[], IP);
        same.username = Some("user".into());
        assert!(s.ask(same).await.auth_continue.is_some());
        let mut other = request(0, RFC_CLIENT_FIRST.as_bytes(), &[], IP);
        other.username = Some("alice".into());
        let other = s.ask(other).await;
        assert_eq!(
            (other.verdict, other.reason_code),
            (Verdict::Deny, Some(0x86))
        );
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn wrong_passwords_and_unknown_users_fail_alike() {
        let s = Setup::new(json!({})).await;
        let ok = s.login("user", "pencil", IP).await;
        assert_eq!(ok.verdict, Verdict::Allow, "{}", ok.reason);
        let wrong = s.login("user", "pencil2", IP).await;
        assert_eq!(
            seen(&wrong),
            (Verdict::Deny, Some(0x86), None, None, None, false)
        );
        assert_eq!(wrong.reason, "SCRAM-SHA-256: wrong password");

        // An unknown user gets a salt (stable, 16 bytes) and the iterations of the file's
        // SCRAM entries, then the same refusal as a wrong password.
        let (server_first, _) = s.first("ghost", IP).await;
        let (again, _) = s.first("ghost", IP).await;
        assert_eq!(server_first, again, "the same salt each time");
        let (other, _) = s.first("ghost2", IP).await;
        let salt = |m: &str| m.split(',').nth(1).unwrap().to_owned();
        assert_ne!(salt(&server_first), salt(&other));
        assert!(server_first.ends_with(",i=4096"), "{server_first}");
        let ghost_salt = BASE64.decode(salt(&server_first).strip_prefix("s=").unwrap());
        assert_eq!(ghost_salt.unwrap().len(), 16);
        let ghost = s.login("ghost", "pencil", IP).await;
        assert_eq!(seen(&ghost), seen(&wrong));
        assert_eq!(ghost.reason, "SCRAM-SHA-256: unknown user", "the log tells");
        // A user whose line is unusable, or whose entry is another kind of hash: the same,
        // and the log says why.
        let odd = s.login("odd", "pencil", IP).await;
        assert_eq!(seen(&odd), seen(&wrong));
        assert!(odd.reason.contains("was skipped"), "{}", odd.reason);
        let (argon_first, _) = s.first("alice", IP).await;
        assert!(argon_first.ends_with(",i=4096"), "{argon_first}");
        assert_eq!(salt(&argon_first).len(), salt(&server_first).len());
        let argon = s.login("alice", "argon pw", IP).await;
        assert_eq!(seen(&argon), seen(&wrong));
        assert!(
            argon.reason.contains(
                "(argon2) has no SCRAM-SHA-256 credentials; it can log in with a CONNECT password"
            ),
            "{}",
            argon.reason
        );

        // The configured iteration count, for unknown users only.
        let s = Setup::new(json!({"scram_iterations": 8192})).await;
        assert!(s.first("ghost", IP).await.0.ends_with(",i=8192"));
        assert!(s.first("user", IP).await.0.ends_with(",i=4096"));
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn users_without_scram_credentials_and_unknown_methods() {
        let s = Setup::new(json!({"allow_anonymous": true})).await;
        // Another method is left to other plugins, whatever the username and password,
        // and even for anonymous clients.
        let mut other = AuthRequest::new("c")
            .with_username("alice")
            .with_password("argon pw");
        other.auth_method = Some("SCRAM-SHA-1".into());
        other.auth_data = Some(b"n,,n=alice,r=x".to_vec());
        assert_eq!(s.ask(other.clone()).await.verdict, Verdict::Abstain);
        other.username = None;
        other.password = None;
        assert_eq!(s.ask(other).await.verdict, Verdict::Abstain);
        // Lower case is another method.
        let mut lower = request(0, b"n,,n=user,r=x", &[], IP);
        lower.auth_method = Some("scram-sha-256".into());
        assert_eq!(s.ask(lower).await.verdict, Verdict::Abstain);
        // An exchange step or a re-authentication without a method is refused.
        let mut stray = AuthRequest::new("c")
            .with_username("alice")
            .with_password("argon pw");
        stray.auth_step = 1;
        assert_eq!(s.ask(stray.clone()).await.verdict, Verdict::Deny);
        stray.auth_step = 0;
        stray.reauthentication = true;
        assert_eq!(s.ask(stray).await.verdict, Verdict::Deny);

        // A plain CONNECT password against a SCRAM entry: checked with PBKDF2.
        let plain = |p: &str| AuthRequest::new("c").with_username("user").with_password(p);
        let ok = s.ask(plain("pencil")).await;
        assert_eq!(ok.verdict, Verdict::Allow, "{}", ok.reason);
        assert_eq!(ok.identity.as_deref(), Some("user"));
        assert_eq!(s.ask(plain("pencil2")).await.verdict, Verdict::Deny);
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn malformed_messages_are_refused() {
        let s = Setup::new(json!({})).await;
        // Told to the client too: nothing about the user is known yet.
        let refused = |d: AuthDecision, needle: &str| {
            assert_eq!(
                (d.verdict, d.reason_code),
                (Verdict::Deny, Some(0x86)),
                "{d:?}"
            );
            assert!(d.reason.contains(needle), "{:?} lacks {needle:?}", d.reason);
            assert_eq!(d.client_reason.as_ref(), Some(&d.reason));
            assert!(d.auth_continue.is_none());
        };
        for (data, needle) in [
            (&b"p=tls-unique,,n=user,r=x"[..], "channel binding"),
            (b"n,,m=x,n=user,r=x", "mandatory extension"),
            (b"n,,n=us=er,r=x", "2C or 3D"),
            (b"n,,r=x", "n=<user>"),
            (b"", "no client-first-message"),
        ] {
            refused(s.ask(request(0, data, &[], IP)).await, needle);
        }
        let mut none = request(0, b"", &[], IP);
        none.auth_data = None;
        refused(s.ask(none).await, "no client-first-message");
        let big = format!("n,,n=user,r={}", "x".repeat(MAX_MESSAGE_LEN));
        refused(
            s.ask(request(0, big.as_bytes(), &[], IP)).await,
            "more than",
        );

        let (_, context) = s.first("user", IP).await;
        let exchange = Exchange::from_context(&context).unwrap();
        let good = client_final(b"pencil", &exchange);
        let tampered = good.replace(&exchange.nonce, &format!("{}x", exchange.nonce));
        refused(
            s.ask(request(1, tampered.as_bytes(), &context, IP)).await,
            "nonce",
        );
        let unbound = good.replace("c=biws", "c=eSws");
        refused(
            s.ask(request(1, unbound.as_bytes(), &context, IP)).await,
            "channel binding",
        );
        let big = "x".repeat(MAX_MESSAGE_LEN + 1);
        refused(
            s.ask(request(1, big.as_bytes(), &context, IP)).await,
            "more than",
        );

        // The broker's side going wrong fails closed, without blaming the client.
        let later = s.ask(request(2, good.as_bytes(), &context, IP)).await;
        assert_eq!(
            (
                later.verdict,
                later.reason_code,
                later.client_reason.as_ref()
            ),
            (Verdict::Deny, None, None)
        );
        assert!(
            later.reason.contains("unexpected step 2"),
            "{}",
            later.reason
        );
        for context in [&b""[..], b"garbage", &context[..context.len() - 1]] {
            let d = s.ask(request(1, good.as_bytes(), context, IP)).await;
            assert_eq!(d.verdict, Verdict::Deny);
            assert!(d.reason.contains("does not parse"), "{}", d.reason);
        }
        // The right answer still works.
        let ok = s.ask(request(1, good.as_bytes(), &context, IP)).await;
        assert_eq!(ok.verdict, Verdict::Allow, "{}", ok.reason);
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn failed_proofs_are_throttled() {
        let s = Setup::new(json!({
            "throttle": {"user_failures": 3, "address_failures": 5, "window": "1m"},
        }))
        .await;
        for ip in [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]] {
            assert_eq!(s.login("user", "guess", ip).await.verdict, Verdict::Deny);
        }
        // The username is refused at step 0, from anywhere, even with the right password.
        let throttled = s
            .ask(request(0, RFC_CLIENT_FIRST.as_bytes(), &[], [10, 0, 0, 9]))
            .await;
        assert_eq!(throttled.reason_code, Some(0x86));
        assert!(
            throttled.reason.starts_with("throttled"),
            "{}",
            throttled.reason
        );
        // Unknown users count the same, and an address is counted over usernames.
        for _ in 0..3 {
            s.login("ghost", "guess", [10, 0, 0, 4]).await;
        }
        let ghost = s
            .ask(request(0, b"n,,n=ghost,r=x", &[], [10, 0, 0, 9]))
            .await;
        assert!(ghost.reason.starts_with("throttled"), "{}", ghost.reason);
        s.login("ghost2", "guess", [10, 0, 0, 4]).await;
        s.login("ghost3", "guess", [10, 0, 0, 4]).await;
        let from = s
            .ask(request(0, b"n,,n=ghost4,r=x", &[], [10, 0, 0, 4]))
            .await;
        assert!(from.reason.contains("this address"), "{}", from.reason);
        // A throttle engaged between the steps refuses the final step too.
        let s = Setup::new(json!({"throttle": {"user_failures": 1, "window": "1m"}})).await;
        let (_, context) = s.first("user", IP).await;
        let exchange = Exchange::from_context(&context).unwrap();
        s.login("user", "guess", [10, 0, 0, 2]).await;
        let fin = client_final(b"pencil", &exchange);
        let late = s.ask(request(1, fin.as_bytes(), &context, IP)).await;
        assert!(late.reason.starts_with("throttled"), "{}", late.reason);
    }

    #[tandem_plugin::tokio::test(crate = "tandem_plugin::tokio")]
    async fn abstaining_on_unknown_users_and_entries_changed_mid_exchange() {
        let s = Setup::new(json!({"unknown_user": "abstain"})).await;
        let ghost = s.ask(request(0, b"n,,n=ghost,r=x", &[], IP)).await;
        assert_eq!(ghost.verdict, Verdict::Abstain);
        assert!(ghost.auth_continue.is_none(), "not this plugin's exchange");
        // An unusable line is this plugin's user: never handed on.
        let (_, _) = s.first("odd", IP).await;

        // The password changes between the steps: the proof made with the old salt fails.
        let (_, context) = s.first("user", IP).await;
        let exchange = Exchange::from_context(&context).unwrap();
        let new = crate::scram::Credentials::generate(b"pencil", 4096).to_entry();
        crate::passwd::write_atomically(std::path::Path::new(&s.file), &format!("user:{new}\n"))
            .unwrap();
        let fin = client_final(b"pencil", &exchange);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let d = s.ask(request(1, fin.as_bytes(), &context, IP)).await;
            if d.verdict == Verdict::Deny {
                assert_eq!(
                    d.reason,
                    "SCRAM-SHA-256: the user's entry changed during the exchange"
                );
                break;
            }
            assert!(Instant::now() < deadline, "the file was not reloaded");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(s.login("user", "pencil", IP).await.verdict, Verdict::Allow);
    }
}
