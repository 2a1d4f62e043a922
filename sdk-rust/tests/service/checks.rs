//! Topic checks: decisions reach the broker with their cache TTL, and handler errors with the
//! status code they chose (`INTERNAL` for any other error).

use std::time::Duration;

use tandem_plugin::testing::TestBroker;
use tandem_plugin::tonic::Code;
use tandem_plugin::{Action, Client, Plugin, TopicRequest, Verdict};

use crate::fixtures::NoAdmin;

#[tokio::test]
async fn topic_decisions_and_handler_errors_reach_the_broker() {
    let broker = TestBroker::new(Plugin::new("acl", "1").topic_filter(NoAdmin));
    let client = Client::new("c")
        .with_username("u")
        .with_attribute("tenant", "t1");

    let denied = broker
        .topic_filter(TopicRequest::new(
            Action::Publish,
            "admin/x",
            client.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(denied.verdict, Verdict::Deny);
    assert_eq!(denied.cache_ttl, Duration::from_secs(5));
    assert_eq!(denied.reason, "admin only");

    let allowed = broker
        .topic_filter(TopicRequest::new(
            Action::Subscribe,
            "admin/x",
            client.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(allowed.verdict, Verdict::Allow);
    assert_eq!(allowed.cache_ttl, Duration::ZERO);

    let status = broker
        .topic_filter(TopicRequest::new(Action::Publish, "broken", client.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "backend down")
    );
    let status = broker
        .topic_filter(TopicRequest::new(Action::Publish, "io", client))
        .await
        .unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::Internal, "disk"));
}
