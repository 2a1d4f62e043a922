//! SUBSCRIBE and UNSUBSCRIBE, and the session's subscriptions checked again when a
//! reload puts a new topic-check chain in force.

use std::time::Duration;

use bytestring::ByteString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::plugins::cache::CachedAction;
use crate::plugins::client::{Checked, Decision};
use crate::protocol::{
    Packet, Properties, QoS, Subscribe, SubscribeReason, SubscriptionOptions, UnsubAck,
    Unsubscribe, suback_failure_code,
};
use crate::router::{Subscriber, topic};
use crate::server::connection::Connection;
use crate::session::Delivery;
use crate::stats::TopicIn;
use crate::storage::SubOptions;

/// What [`Connection::decide_filters`] decided.
struct Decided {
    /// Per distinct filter: `None` granted, else the refusal.
    reasons: Vec<Option<SubscribeReason>>,
    /// Granted filters whose retained messages are sent, with their QoS.
    granted: Vec<(ByteString, QoS)>,
    /// The first denying plugin's Reason String.
    why: Option<ByteString>,
}

/// Between revoked subscriptions and a retry of a re-check that failed.
const RECHECK_RETRY: Duration = Duration::from_secs(1);

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Applies a SUBSCRIBE: each distinct filter checked (validity, depth, the
    /// per-client bound, then SUBSCRIBE), granted ones added to the router, the SUBACK
    /// encoded, and the retained messages that match queued behind it (as each
    /// filter's MQTT 5 retain handling says). Its MQTT 5 subscription identifier, if
    /// any, goes with every subscription it makes.
    pub(super) async fn on_subscribe(&mut self, s: Subscribe) {
        let subscription_id = s
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied())
            .unwrap_or(0);
        // Copies of one filter are decided once, with the options of the last copy (as
        // if applied in order); each copy still gets its own SUBACK code.
        let mut slot_of = Vec::with_capacity(s.filters.len());
        let mut distinct: Vec<(ByteString, SubscriptionOptions)> = Vec::new();
        let mut index: foldhash::HashMap<&str, usize> = Default::default();
        for f in &s.filters {
            let slot = *index.entry(&f.filter).or_insert_with(|| {
                distinct.push((f.filter.clone(), f.options));
                distinct.len() - 1
            });
            distinct[slot].1 = f.options;
            slot_of.push(slot);
        }
        drop(index);
        let Decided {
            reasons: decided,
            granted,
            why,
        } = self
            .decide_filters(distinct, subscription_id, s.properties.as_deref())
            .await;
        self.save_session();
        let requested: Vec<(ByteString, QoS)> = s
            .filters
            .into_iter()
            .map(|f| (f.filter, f.options.qos))
            .collect();
        let reasons: Vec<SubscribeReason> = requested
            .iter()
            .zip(&slot_of)
            .map(|((_, qos), slot)| decided[*slot].unwrap_or(SubscribeReason::Granted(*qos)))
            .collect();
        self.plugins
            .subscribed(&requested, &reasons, s.properties.as_deref())
            .await;
        let properties = why.filter(|_| self.problem_information).map(|why| {
            Box::new(Properties {
                reason_string: Some(why),
                ..Properties::default()
            })
        });
        self.out.suback(s.pkid, reasons, properties);
        if !granted.is_empty() {
            self.queue_retained(&granted, subscription_id);
        }
    }

    /// Decides each distinct filter: `None` for granted (and subscribed), else the
    /// refusal (a denying plugin's reason code when a SUBACK may carry it); also
    /// returns the granted filters whose retained messages are to be sent, with their
    /// QoS: all of them but shared ones and those with MQTT 5 retain handling 2
    /// (never), or 1 (only for a new subscription) when the session held the filter;
    /// and the first denying plugin's Reason String.
    async fn decide_filters(
        &mut self,
        distinct: Vec<(ByteString, SubscriptionOptions)>,
        subscription_id: u32,
        props: Option<&Properties>,
    ) -> Decided {
        let mqtt = &self.broker.config.mqtt;
        let (max_levels, max_subscriptions) =
            (mqtt.max_topic_levels, mqtt.max_subscriptions_per_client);
        let (mut invalid, mut too_deep, mut over_limit) = (0u64, 0u64, 0u64);
        let mut decided = Vec::with_capacity(distinct.len());
        let mut granted = Vec::new();
        let mut why = None;
        for (filter, options) in distinct {
            let qos = options.qos;
            if !topic::valid_filter(&filter) {
                if invalid == 0 {
                    info!(filter = ?filter, "refusing invalid topic filter");
                }
                invalid += 1;
                decided.push(Some(SubscribeReason::FILTER_INVALID));
                continue;
            }
            if let Err(levels) = topic::check_levels(&filter, max_levels) {
                self.broker.stats.limits.topic_levels(TopicIn::Subscribe);
                if too_deep == 0 {
                    info!(
                        levels,
                        max = max_levels,
                        "refusing a topic filter deeper than mqtt.max_topic_levels"
                    );
                }
                too_deep += 1;
                decided.push(Some(SubscribeReason::FILTER_INVALID));
                continue;
            }
            if self.state.subscriptions.len() >= max_subscriptions
                && !self.state.subscriptions.contains_key(&filter)
            {
                over_limit += 1;
                // MQTT 5 "quota exceeded"; 0x80 under 3.1.1.
                decided.push(Some(SubscribeReason::Failure(0x97)));
                continue;
            }
            match self
                .plugins
                .decide(
                    CachedAction::Subscribe,
                    topic::checked_filter(&filter),
                    qos,
                    false,
                    props,
                )
                .await
            {
                Decision::Allowed => {}
                Decision::Denied(denial) => {
                    let code = if suback_failure_code(denial.code) {
                        denial.code
                    } else {
                        0x87
                    };
                    decided.push(Some(SubscribeReason::Failure(code)));
                    why = why.or(denial.reason);
                    continue;
                }
                Decision::Failed => {
                    decided.push(Some(SubscribeReason::NOT_AUTHORIZED));
                    continue;
                }
            }
            self.broker.router.subscribe(
                &filter,
                Subscriber {
                    session: self.state.id,
                    qos,
                    subscription_id,
                    no_local: options.no_local,
                    retain_as_published: options.retain_as_published,
                    mailbox: self.state.mailbox.clone(),
                    // The router makes a `$share/` filter's membership.
                    share: None,
                },
            );
            let granted_options = SubOptions {
                qos,
                subscription_id,
                no_local: options.no_local,
                retain_as_published: options.retain_as_published,
            };
            let existed = self
                .state
                .subscriptions
                .insert(filter.clone(), granted_options)
                .is_some();
            debug!(filter = ?filter, ?qos, "subscribed");
            decided.push(None);
            // Retained messages are not sent for a shared subscription (MQTT 5
            // section 4.8.2).
            let shared = topic::split_shared(&filter).is_some();
            match options.retain_handling {
                _ if shared => {}
                2 => {}
                1 if existed => {}
                _ => granted.push((filter, qos)),
            }
        }
        if too_deep > 1 || invalid > 1 {
            info!(invalid, too_deep, "refused topic filters in one SUBSCRIBE");
        }
        if over_limit > 0 {
            self.broker.stats.limits.subscriptions_refused(over_limit);
            info!(
                refused = over_limit,
                max = max_subscriptions,
                "refusing subscriptions past mqtt.max_subscriptions_per_client"
            );
        }
        Decided {
            reasons: decided,
            granted,
            why,
        }
    }

    /// Retained messages follow the SUBACK through the session's own queue, behind the
    /// inflight window like any other message: each once, however many granted filters
    /// match it, and no more than the queue has room for.
    fn queue_retained(&mut self, granted: &[(ByteString, QoS)], subscription_id: u32) {
        let room = self
            .broker
            .config
            .mqtt
            .max_queued_messages
            .saturating_sub(self.state.mailbox.queued());
        let (retained, full) = self.broker.router.retained_for_subscribe(granted, room);
        if full {
            info!(
                queued = retained.len(),
                "retained messages past the session queue's room not sent (mqtt.max_queued_messages)"
            );
        }
        for (message, qos) in retained {
            let offer = self.state.mailbox.offer(Delivery {
                retain: true,
                subscription_ids: (subscription_id != 0).then(|| Box::new(vec![subscription_id])),
                ..Delivery::new(message, qos)
            });
            if offer.dropped() {
                self.broker.stats.add_dropped(1);
            }
        }
    }

    /// Applies an UNSUBSCRIBE. Each filter's MQTT 5 reason code says whether the
    /// session held it (0x00) or not (0x11, "no subscription existed").
    pub(super) async fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let mut reasons = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            self.broker.router.unsubscribe(f, self.state.id);
            let held = self.state.subscriptions.remove(f).is_some();
            reasons.push(if held { 0x00 } else { 0x11 });
        }
        self.save_session();
        self.plugins
            .unsubscribed(&u.filters, u.properties.as_deref())
            .await;
        self.out.packet(&Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            reasons,
            properties: None,
        }));
    }

    /// If a reload put a new plugin set in force, uses it from now on (the handle drops
    /// the cached decisions of the old one). Called before anything the set decides:
    /// each loop turn, each batch of input and each delivery, so no packet read after a
    /// reload is checked by the old set.
    ///
    /// The session's subscriptions are then checked again (SUBSCRIBE) by the set in
    /// force, once per generation: what it denies now is revoked before anything more is
    /// delivered (see [`recheck_subscriptions`](Self::recheck_subscriptions)).
    pub(super) async fn follow_reload(&mut self) {
        if self.plugins.follow_reload() {
            self.out.summarize(self.plugins.wants_packets_sent());
        }
        if self.state.checked_generation != self.plugins.generation() {
            self.recheck_subscriptions().await;
        }
    }

    /// Checks every subscription of the session with SUBSCRIBE against the topic-check
    /// chain in force and revokes those it denies: removed from the router and the
    /// session, counted, logged, reported as `client_unsubscribed`, and messages already
    /// queued through them are not delivered. A check that fails (a plugin error, not a
    /// DENY) keeps the subscription and is tried again after [`RECHECK_RETRY`]:
    /// deliveries stay subject to RECEIVE meanwhile.
    async fn recheck_subscriptions(&mut self) {
        let generation = self.plugins.generation();
        let now = Instant::now();
        if self.recheck_after.is_some_and(|at| now < at) {
            return;
        }
        if !self.plugins.checks_topics() || self.state.subscriptions.is_empty() {
            self.state.checked_generation = generation;
            return;
        }
        let mut subscriptions: Vec<(ByteString, QoS)> = self
            .state
            .subscriptions
            .iter()
            .map(|(f, o)| (f.clone(), o.qos))
            .collect();
        subscriptions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut revoked = Vec::new();
        let mut failed = false;
        for (filter, qos) in subscriptions {
            match self
                .plugins
                .check(
                    CachedAction::Subscribe,
                    topic::checked_filter(&filter),
                    qos,
                    false,
                )
                .await
            {
                Checked::Allowed => {}
                Checked::Failed => failed = true,
                Checked::Denied => {
                    self.broker.router.unsubscribe(&filter, self.state.id);
                    self.state.subscriptions.remove(&filter);
                    self.broker.stats.subscription_revoked();
                    info!(
                        filter = ?filter,
                        generation,
                        "subscription revoked: the topic-check chain in force denies it"
                    );
                    revoked.push(filter);
                }
            }
        }
        if failed {
            self.recheck_after = Some(now + RECHECK_RETRY);
            warn!(
                generation,
                retry_in = ?RECHECK_RETRY,
                "could not re-check every subscription (plugin error); kept until a check answers"
            );
        } else {
            self.recheck_after = None;
            self.state.checked_generation = generation;
        }
        if !revoked.is_empty() {
            self.save_session();
            self.purge_revoked = true;
            self.plugins.unsubscribed(&revoked, None).await;
        }
    }

    /// Whether a queued delivery came through a subscription revoked since (it matches
    /// none of the session's filters now); only looked at after a revocation.
    pub(super) fn through_revoked(&self, delivery: &Delivery) -> bool {
        self.purge_revoked
            && !self
                .state
                .subscriptions
                .keys()
                .any(|f| topic::matches(f, &delivery.message.topic))
    }
}
