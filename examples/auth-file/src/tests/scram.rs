use super::*;

// RFC 7677 §3.
pub(crate) const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
pub(crate) const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
pub(crate) const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
pub(crate) const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
pub(crate) const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
pub(crate) const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
/// The entry of user "user", password "pencil", with the RFC's salt: the keys by Python's
/// `hashlib.pbkdf2_hmac('sha256', b'pencil', salt, 4096)` then `hmac` and `hashlib.sha256`.
pub(crate) const RFC_ENTRY: &str = "$scram-sha-256$4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=$wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

/// The client-final-message a client knowing `password` sends (RFC 5802 §3, the client's
/// side), for tests that run exchanges with random nonces.
pub(crate) fn client_final(password: &[u8], exchange: &Exchange) -> String {
    let salted = salted_password(password, &exchange.salt, exchange.iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    let without_proof = format!(
        "c={},r={}",
        BASE64.encode(&exchange.client_first.gs2_header),
        exchange.nonce
    );
    let auth_message = format!(
        "{},{},{without_proof}",
        exchange.client_first.bare, exchange.server_first
    );
    let signature = hmac(&sha256(&client_key), &[auth_message.as_bytes()]);
    let proof: Vec<u8> = client_key
        .iter()
        .zip(signature)
        .map(|(k, s)| k ^ s)
        .collect();
    format!("{without_proof},p={}", BASE64.encode(proof))
}

fn rfc_credentials() -> Credentials {
    Credentials::parse(RFC_ENTRY.strip_prefix(PREFIX).unwrap()).unwrap()
}

fn rfc_exchange() -> Exchange {
    let first = parse_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    let creds = rfc_credentials();
    Exchange::start(first, RFC_SERVER_NONCE, &creds.salt, creds.iterations)
}

#[test]
fn rfc_7677_example() {
    let salt = BASE64.decode(RFC_SALT).unwrap();
    let derived = Credentials::derive(b"pencil", &salt, 4096);
    assert_eq!(derived, rfc_credentials());
    assert_eq!(derived.to_entry(), RFC_ENTRY);

    let first = parse_client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(
        first,
        ClientFirst {
            gs2_header: "n,,".into(),
            user: "user".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
        }
    );
    let exchange = rfc_exchange();
    assert_eq!(exchange.server_first, RFC_SERVER_FIRST);
    let back = Exchange::from_context(&exchange.context()).unwrap();
    assert_eq!(back, exchange, "the context carries the exchange");
    let fin = back
        .parse_client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap();
    assert_eq!(
        back.verify(&fin, &derived).as_deref(),
        Some(RFC_SERVER_FINAL)
    );
    assert_eq!(client_final(b"pencil", &exchange), RFC_CLIENT_FINAL);
}

#[test]
fn plain_passwords_verify_against_an_entry() {
    let creds = rfc_credentials();
    assert!(creds.verify_password(b"pencil"));
    assert!(!creds.verify_password(b"pencil "));
    assert!(!creds.verify_password(b""));
}

#[test]
fn a_wrong_proof_or_other_credentials_do_not_verify() {
    let exchange = rfc_exchange();
    let fin = exchange
        .parse_client_final(RFC_CLIENT_FINAL.as_bytes())
        .unwrap();
    let salt = BASE64.decode(RFC_SALT).unwrap();
    let other = Credentials::derive(b"pencil2", &salt, 4096);
    assert_eq!(exchange.verify(&fin, &other), None);
    assert_eq!(exchange.verify(&fin, &fake_credentials("user", 4096)), None);
    // One flipped bit of the proof.
    let mut proof = BASE64
        .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .unwrap();
    proof[0] ^= 1;
    let tampered = format!("c=biws,r={},p={}", exchange.nonce, BASE64.encode(&proof));
    let fin = exchange.parse_client_final(tampered.as_bytes()).unwrap();
    assert_eq!(exchange.verify(&fin, &rfc_credentials()), None);
}

#[test]
fn fake_credentials_are_stable_per_user_and_never_verify() {
    let a = fake_credentials("ghost", 4096);
    assert_eq!(a, fake_credentials("ghost", 4096));
    assert_ne!(a.salt, fake_credentials("ghost2", 4096).salt);
    assert_eq!(a.salt.len(), SALT_LEN);
    assert!(!a.verify_password(b""));
}

#[test]
fn client_first_messages() {
    let ok = |m: &str| parse_client_first(m.as_bytes()).unwrap();
    let c = ok("n,,n=a=2Cb=3Dc,r=xyz");
    assert_eq!(c.user, "a,b=c");
    assert_eq!(ok("y,,n=user,r=abc").gs2_header, "y,,");
    let with_authzid = ok("n,a=us=3Der,n=us=3Der,r=abc");
    assert_eq!(with_authzid.gs2_header, "n,a=us=3Der,");
    assert_eq!(
        ok("n,,n=user,r=abc,x=ext,y=more").bare,
        "n=user,r=abc,x=ext,y=more"
    );
    assert_eq!(ok("n,,n=ünï,r=abc").user, "ünï");

    let err = |m: &[u8]| parse_client_first(m).unwrap_err();
    assert!(err(b"p=tls-unique,,n=user,r=abc").contains("channel binding"));
    assert!(err(b"p=tls-server-end-point,,n=user,r=abc").contains("channel binding"));
    assert!(err(b"n,,m=ext,n=user,r=abc").contains("mandatory extension"));
    assert!(err(b"n,a=other,n=user,r=abc").contains("authorization identity"));
    for bad in [
        &b""[..],
        b"n",
        b"n,,",
        b"x,,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,,r=abc,n=user",
        b"n,,n=,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=user=2,r=abc",
        b"n,,n=user",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,x",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=us\0er,r=abc",
        b"n,,n=\xff,r=abc",
    ] {
        assert!(
            parse_client_first(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let big = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_LEN));
    assert!(err(big.as_bytes()).contains("more than the 4096 accepted"));
}

#[test]
fn client_final_messages() {
    let exchange = rfc_exchange();
    let err = |m: &str| exchange.parse_client_final(m.as_bytes()).unwrap_err();
    let nonce = &exchange.nonce;
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert!(err(&format!("c=biws,r={nonce}x,p={proof}")).contains("nonce"));
    assert!(err(&format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}")).contains("nonce"));
    assert!(err(&format!("c=eSws,r={nonce},p={proof}")).contains("channel binding"));
    assert!(
        err(&format!("c=cD10bHMtdW5pcXVlLCw=,r={nonce},p={proof}")).contains("channel binding")
    );
    assert!(err(&format!("c=biws,r={nonce},p=c2hvcnQ=")).contains("proof"));
    assert!(err(&format!("c=biws,r={nonce}")).contains("proof"));
    assert!(err(&format!("r={nonce},c=biws,p={proof}")).contains("channel binding"));
    assert!(err(&format!("c=biws,p={proof}")).contains("nonce"));
    assert!(err(&format!("c=biws,r={nonce},p={proof},x=1")).contains("proof"));
    assert!(err(&"x".repeat(MAX_MESSAGE_LEN + 1)).contains("more than"));
    // An optional extension before the proof is part of the AuthMessage, and accepted.
    assert!(
        exchange
            .parse_client_final(format!("c=biws,r={nonce},x=1,p={proof}").as_bytes())
            .is_ok()
    );
    // y,, is bound as eSws.
    let first = parse_client_first(b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    let y = Exchange::start(first, RFC_SERVER_NONCE, &[0; 16], 4096);
    assert!(
        y.parse_client_final(format!("c=eSws,r={nonce},p={proof}").as_bytes())
            .is_ok()
    );
    assert!(
        y.parse_client_final(format!("c=biws,r={nonce},p={proof}").as_bytes())
            .is_err()
    );
}

#[test]
fn contexts_that_do_not_parse_are_refused() {
    let good = rfc_exchange().context();
    assert!(Exchange::from_context(&good).is_ok());
    let text = String::from_utf8(good.clone()).unwrap();
    for bad in [
        String::new(),
        "garbage".into(),
        text.replace(CONTEXT_TAG, "tandem-auth-file/scram-sha-256/2"),
        text.replace("r=rOprNGfwEbeRWgbNEkqO%", "r=other%"),
        text.replace("i=4096", "i=1"),
        text.replace("n,,", "p=x,,"),
        format!("{text}\0more"),
        "x".repeat(MAX_CONTEXT_LEN + 1),
    ] {
        assert!(Exchange::from_context(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(Exchange::from_context(&[0xff, 0xfe]).is_err());
}

#[test]
fn entries_parse_strictly() {
    let fields = RFC_ENTRY.strip_prefix(PREFIX).unwrap();
    assert!(Credentials::parse(fields).is_ok());
    for bad in [
        fields.replacen("4096", "4095", 1),
        fields.replacen("4096", "10000001", 1),
        fields.replacen("4096", "x", 1),
        fields.replacen("W22ZaJ0SNY7soEsUEjb6gQ==", "c2hvcnQ=", 1),
        fields.replacen("W22ZaJ0SNY7soEsUEjb6gQ==", "!!", 1),
        fields.replacen(
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
            "c2hvcnQ=",
            1,
        ),
        format!("{fields}$extra"),
        "4096$W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=".into(),
    ] {
        assert!(Credentials::parse(&bad).is_err(), "{bad}");
    }
    assert_eq!(
        format!("{:?}", rfc_credentials()),
        "Credentials { iterations: 4096, .. }"
    );
}

#[test]
fn generated_credentials_round_trip() {
    let creds = Credentials::generate(b"s3cret", DEFAULT_ITERATIONS);
    assert_eq!(creds.salt.len(), SALT_LEN);
    let entry = creds.to_entry();
    let back = Credentials::parse(entry.strip_prefix(PREFIX).unwrap()).unwrap();
    assert_eq!(back, creds);
    assert!(back.verify_password(b"s3cret"));
    assert_ne!(
        Credentials::generate(b"s3cret", DEFAULT_ITERATIONS).salt,
        creds.salt
    );
    assert_eq!(random_nonce().len(), 22);
    check_nonce(&random_nonce()).unwrap();
}
