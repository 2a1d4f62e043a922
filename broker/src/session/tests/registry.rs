//! The registry: ownership, takeover, expiry and the parked bound.

use super::*;
use crate::protocol::QoS;
use crate::router::Subscriber;

fn registry(limits: Limits) -> (Registry, Arc<Router>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let router = Arc::new(Router::new(stats.clone(), Default::default()));
    (
        Registry::new(router.clone(), stats.clone(), limits),
        router,
        stats,
    )
}

fn limits() -> Limits {
    Limits {
        takeover: SessionTakeover::SameIdentity,
        expiry: Some(Duration::from_secs(60)),
        max_parked: 10,
    }
}

/// Claims `id` for `identity`, subscribes the session to `id/#` and parks it.
async fn park(registry: &Registry, router: &Router, id: &str, identity: &str) {
    let id = ByteString::from(id);
    let (claim, previous) = registry.claim(&id, identity).await.expect("claimed");
    let mut state = previous.unwrap_or_else(|| SessionState::new(id.clone(), true, 10));
    let filter = ByteString::from(format!("{id}/#"));
    router.subscribe(
        &filter,
        Subscriber {
            session: state.id,
            qos: QoS::AtLeastOnce,
            subscription_id: 0,
            no_local: false,
            retain_as_published: false,
            mailbox: state.mailbox.clone(),
            share: None,
        },
    );
    state.subscriptions.insert(
        filter,
        crate::storage::SubOptions {
            qos: QoS::AtLeastOnce,
            ..Default::default()
        },
    );
    registry.release(claim, state);
}

#[tokio::test]
async fn another_identity_is_refused_and_the_session_left_alone() {
    let (registry, router, _) = registry(limits());
    park(&registry, &router, "c", "alice").await;
    let id = ByteString::from("c");
    assert_eq!(
        registry.claim(&id, "mallory").await.err(),
        Some(ClaimError::OwnedByAnother)
    );
    assert_eq!(
        registry.claim(&id, "").await.err(),
        Some(ClaimError::OwnedByAnother)
    );
    assert_eq!(registry.parked(), 1, "still parked");
    assert_eq!(router.subscription_count(), 1);
    // Its owner resumes it; while it is live another identity is refused too, and
    // the owner's connection is not stopped.
    let (claim, previous) = registry.claim(&id, "alice").await.expect("owner");
    assert!(previous.is_some_and(|s| s.subscriptions.len() == 1));
    assert_eq!(
        registry.claim(&id, "mallory").await.err(),
        Some(ClaimError::OwnedByAnother)
    );
    assert!(!claim.stop.is_cancelled());
}

#[tokio::test]
async fn with_any_another_identity_takes_over() {
    let (registry, router, _) = registry(Limits {
        takeover: SessionTakeover::Any,
        ..limits()
    });
    park(&registry, &router, "c", "alice").await;
    let (_claim, previous) = registry
        .claim(&ByteString::from("c"), "mallory")
        .await
        .expect("any identity may take over");
    assert!(previous.is_some());
}

#[tokio::test]
async fn parked_sessions_expire_with_their_subscriptions() {
    let (registry, router, stats) = registry(limits());
    let start = Instant::now();
    park(&registry, &router, "a", "alice").await;
    let due = registry.expire_due(start).expect("one is due later");
    assert!(due >= start + Duration::from_secs(60));
    assert_eq!(
        registry.expire_due(due - Duration::from_millis(1)),
        Some(due)
    );
    assert_eq!(registry.parked(), 1);
    assert_eq!(registry.expire_due(due), None, "nothing left parked");
    assert_eq!(registry.parked(), 0);
    assert!(registry.is_empty());
    assert_eq!(router.subscription_count(), 0, "its subscriptions went");
    assert_eq!(stats.snapshot().sessions_expired, 1);
    // Gone: the next claim starts afresh, and by anyone.
    let (_c, previous) = registry
        .claim(&ByteString::from("a"), "mallory")
        .await
        .unwrap();
    assert!(previous.is_none());
}

#[tokio::test]
async fn without_expiry_nothing_expires() {
    let (registry, router, _) = registry(Limits {
        expiry: None,
        ..limits()
    });
    park(&registry, &router, "a", "alice").await;
    assert_eq!(
        registry.expire_due(Instant::now() + Duration::from_secs(1_000_000)),
        None
    );
    assert_eq!(registry.parked(), 1);
}

#[tokio::test]
async fn parking_past_the_bound_discards_the_oldest() {
    let (registry, router, stats) = registry(Limits {
        max_parked: 2,
        ..limits()
    });
    for id in ["one", "two", "three"] {
        park(&registry, &router, id, "u").await;
    }
    assert_eq!(registry.parked(), 2);
    assert_eq!(registry.len(), 2);
    assert_eq!(router.subscription_count(), 2);
    assert_eq!(stats.snapshot().sessions_evicted, 1);
    let (_c, previous) = registry.claim(&ByteString::from("one"), "u").await.unwrap();
    assert!(previous.is_none(), "the oldest went");
    let (_c, previous) = registry
        .claim(&ByteString::from("three"), "u")
        .await
        .unwrap();
    assert!(previous.is_some(), "the newest stayed");
}

#[tokio::test]
async fn restored_sessions_count_toward_the_bound_and_the_longest_offline_goes() {
    let (registry, _router, stats) = registry(Limits {
        max_parked: 2,
        ..limits()
    });
    for (id, offline_secs) in [("a", 5), ("b", 30), ("c", 1)] {
        let state = SessionState::new(ByteString::from(id), true, 10);
        assert!(registry.adopt(state, "u".into(), Duration::from_secs(offline_secs)));
    }
    assert_eq!(registry.parked(), 2);
    assert_eq!(stats.snapshot().sessions_evicted, 1);
    let (_c, previous) = registry.claim(&ByteString::from("b"), "u").await.unwrap();
    assert!(previous.is_none(), "the one offline longest went");
    let (_c, previous) = registry.claim(&ByteString::from("a"), "u").await.unwrap();
    assert!(previous.is_some());
    // One offline past its expiry is not parked at all.
    let expired = SessionState::new(ByteString::from("old"), true, 10);
    assert!(!registry.adopt(expired, "u".into(), Duration::from_secs(61)));
}
