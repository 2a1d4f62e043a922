//! How chains combine answers.

use super::*;

fn answer(verdict: Verdict, identity: &str) -> Answer {
    Answer {
        identity: identity.to_owned(),
        ..Answer::new(verdict, String::new(), 0, String::new())
    }
}

#[test]
fn the_identity_comes_from_the_allowing_plugins_that_agree() {
    use Verdict::{Abstain, Allow};
    let aliases = ["jwt", "file", "ip"];
    // None set: the CONNECT username stands.
    let none = [answer(Allow, ""), answer(Abstain, ""), answer(Allow, "")];
    assert_eq!(established_identity_of(&aliases, &none), Ok(None));
    // One sets it, wherever it is in the chain.
    let later = [
        answer(Allow, ""),
        answer(Allow, "device-17"),
        answer(Allow, ""),
    ];
    assert_eq!(
        established_identity_of(&aliases, &later),
        Ok(Some("device-17".into()))
    );
    // An abstaining plugin's identity is not read: it vouched for nothing.
    let abstained = [answer(Abstain, "admin"), answer(Allow, "device-17")];
    assert_eq!(
        established_identity_of(&aliases, &abstained),
        Ok(Some("device-17".into()))
    );
    // Several agree.
    let agree = [answer(Allow, "d"), answer(Allow, "d"), answer(Allow, "")];
    assert_eq!(
        established_identity_of(&aliases, &agree),
        Ok(Some("d".into()))
    );
    // Two allowing plugins disagree: a conflict naming both.
    let conflict = [
        answer(Allow, "device-17"),
        answer(Allow, ""),
        answer(Allow, "admin"),
    ];
    assert_eq!(
        established_identity_of(&aliases, &conflict),
        Err(IdentityConflict {
            first: ("jwt".into(), "device-17".into()),
            other: ("ip".into(), "admin".into()),
        })
    );
    // Case matters: identities are compared exactly.
    let case = [answer(Allow, "Admin"), answer(Allow, "admin")];
    assert!(established_identity_of(&aliases, &case).is_err());
}
