//! The configuration the broker pushes with `Describe`: handlers read it, a re-push replaces it,
//! and one that does not fit the declared type is refused while the previous one stays.

use tandem_plugin::serde_json::json;
use tandem_plugin::testing::TestBroker;
use tandem_plugin::tonic::Code;
use tandem_plugin::{AuthRequest, Plugin, Verdict};

use crate::fixtures::{UserList, Users};

#[tokio::test]
async fn authenticate_uses_the_pushed_config_and_a_repush_replaces_it() {
    let broker = TestBroker::new(
        Plugin::new("users", "1")
            .authenticate(UserList)
            .config::<Users>(),
    );
    broker.describe(json!({"users": ["alice"]})).await.unwrap();

    let alice = broker
        .authenticate(AuthRequest::new("c1").with_username("alice"))
        .await
        .unwrap();
    assert_eq!(alice.verdict, Verdict::Allow);
    assert_eq!(alice.attributes["user"], "alice");
    assert_eq!(alice.attributes["generation"], "1");

    let bob = broker
        .authenticate(AuthRequest::new("c2").with_username("bob"))
        .await
        .unwrap();
    assert_eq!(bob.verdict, Verdict::Deny);
    assert_eq!(bob.reason, "unknown user");
    assert_eq!(bob.reason_code, Some(0x86));

    let anonymous = broker.authenticate(AuthRequest::new("c3")).await.unwrap();
    assert_eq!(anonymous.verdict, Verdict::Abstain);

    // Reload: bob is in, alice is out, and the generation moved on.
    broker.describe(json!({"users": ["bob"]})).await.unwrap();
    let bob = broker
        .authenticate(AuthRequest::new("c2").with_username("bob"))
        .await
        .unwrap();
    assert_eq!(bob.verdict, Verdict::Allow);
    assert_eq!(bob.attributes["generation"], "2");
    let alice = broker
        .authenticate(AuthRequest::new("c1").with_username("alice"))
        .await
        .unwrap();
    assert_eq!(alice.verdict, Verdict::Deny);
}

#[tokio::test]
async fn a_config_that_does_not_fit_is_refused_and_the_previous_one_kept() {
    let broker = TestBroker::new(
        Plugin::new("users", "1")
            .authenticate(UserList)
            .config::<Users>(),
    );
    broker.describe(json!({"users": ["alice"]})).await.unwrap();

    let status = broker
        .describe(json!({"users": "alice"}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("`users`"), "{}", status.message());

    let alice = broker
        .authenticate(AuthRequest::new("c1").with_username("alice"))
        .await
        .unwrap();
    assert_eq!(
        alice.verdict,
        Verdict::Allow,
        "the previous configuration still applies"
    );
}

#[tokio::test]
async fn without_a_declared_type_a_bad_config_fails_the_call_not_describe() {
    let broker = TestBroker::new(Plugin::new("users", "1").authenticate(UserList));
    broker.describe(json!({"wrong": 1})).await.unwrap();
    let status = broker
        .authenticate(AuthRequest::new("c").with_username("a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("missing field `users`"),
        "{}",
        status.message()
    );
}
