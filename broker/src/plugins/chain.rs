//! Chains: how the verdicts of several plugins combine.
//!
//! All members are called concurrently. Any DENY denies at once (the other calls are
//! dropped, which cancels them). Otherwise at least one ALLOW is needed; all ABSTAIN
//! denies. A failed call counts as its plugin's `on_error` verdict. These are aMQTT's
//! rules as its documentation states them (its code treats a topic plugin's `None` as
//! deny; Tandem follows the documentation: ABSTAIN is no opinion).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tandem_proto::v1 as pb;
use tracing::field::Empty;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::OnError;
use super::plugin::Plugin;
use super::rpc::{ErrorKind, Rpc, Verdict};

/// One plugin's answer, after `on_error`.
#[derive(Debug, Clone)]
struct Answer {
    verdict: Verdict,
    reason: String,
    /// The Reason String for the client (MQTT 5), on a DENY.
    client_reason: String,
    reason_code: u32,
    error: Option<ErrorKind>,
    attributes: HashMap<String, String>,
    /// The identity an Authenticate answer established (empty: none).
    identity: String,
    cache_ttl: Duration,
    /// Authenticate: the plugin continues an enhanced authentication exchange (its
    /// verdict is ABSTAIN meanwhile).
    proceed: Option<pb::AuthContinue>,
    /// Authenticate ALLOW: Authentication Data for the client with the CONNACK.
    auth_data: Vec<u8>,
    /// Authenticate ALLOW: user properties for the CONNACK.
    user_properties: Vec<pb::UserProperty>,
}

impl Answer {
    fn new(verdict: Verdict, reason: String, reason_code: u32, client_reason: String) -> Self {
        Self {
            verdict,
            reason,
            client_reason,
            reason_code,
            error: None,
            attributes: HashMap::new(),
            identity: String::new(),
            cache_ttl: Duration::ZERO,
            proceed: None,
            auth_data: Vec::new(),
            user_properties: Vec::new(),
        }
    }

    fn failed(plugin: &Plugin, kind: ErrorKind) -> Self {
        let verdict = match plugin.config.on_error {
            OnError::Deny => Verdict::Deny,
            OnError::Abstain => Verdict::Abstain,
            OnError::Allow => Verdict::Allow,
        };
        Self {
            error: Some(kind),
            ..Self::new(
                verdict,
                format!("plugin error: {}", kind.as_str()),
                0,
                String::new(),
            )
        }
    }
}

fn verdict(raw: i32) -> Option<Verdict> {
    match pb::Verdict::try_from(raw) {
        Ok(pb::Verdict::Allow) => Some(Verdict::Allow),
        Ok(pb::Verdict::Deny) => Some(Verdict::Deny),
        Ok(pb::Verdict::Abstain) => Some(Verdict::Abstain),
        _ => None,
    }
}

/// Turns a call's result into the plugin's answer: a failed call, or a response that
/// `read` refuses, becomes the plugin's `on_error` answer. Logs failures (rate-limited)
/// and counts the outcome either way.
fn settle<R>(
    plugin: &Plugin,
    rpc: Rpc,
    result: Result<R, ErrorKind>,
    took: Duration,
    read: impl FnOnce(R) -> Result<Answer, &'static str>,
) -> Answer {
    let answer = match result.map(read) {
        Ok(Ok(answer)) => answer,
        Ok(Err(detail)) => {
            plugin.log_error(ErrorKind::Unspecified, detail);
            Answer::failed(plugin, ErrorKind::Unspecified)
        }
        Err(kind) => {
            plugin.log_error(kind, rpc.as_str());
            Answer::failed(plugin, kind)
        }
    };
    plugin.record(rpc, answer.verdict, answer.error, took);
    answer
}

/// The outcome of the Authenticate chain.
#[derive(Debug, Clone, Default)]
pub struct AuthOutcome {
    /// Whether the client may connect.
    pub allowed: bool,
    /// Merged attributes of the allowing plugins, in chain order.
    pub attributes: HashMap<String, String>,
    /// The identity the allowing plugins established (see [`established_identity`]);
    /// `None` when none set one, and the CONNECT username stands.
    pub identity: Option<String>,
    /// The plugin whose answer decided a denial, and its reason.
    pub denied_by: Option<(String, String)>,
    /// Whether the denial came from a plugin failure (MQTT 5: 0x88, not 0x87).
    pub from_error: bool,
    /// The MQTT 5 reason code the deciding plugin asked for (0: broker's choice).
    pub reason_code: u32,
    /// The Reason String the deciding plugin's DENY has for the client (empty: none).
    pub client_reason: String,
    /// ALLOW: Authentication Data for the CONNACK (the plugin that led an enhanced
    /// authentication exchange proves itself with it; empty: none).
    pub auth_data: Vec<u8>,
    /// ALLOW: user properties the allowing plugins add to the CONNACK, in chain order.
    pub user_properties: Vec<(String, String)>,
}

/// Where the Authenticate chain stands after a step.
#[derive(Debug)]
pub enum AuthStep {
    /// Decided.
    Done(AuthOutcome),
    /// A plugin continues an MQTT 5 enhanced authentication exchange: send the client
    /// an AUTH packet with the exchange's [`data`](Exchange::data), then hand its answer
    /// to [`Chain::continue_auth`].
    Continue(Exchange),
}

/// An MQTT 5 enhanced authentication exchange in progress. One plugin leads it (the
/// first in chain order that answered with `auth_continue`); the others' first answers
/// are kept and combined with the leader's final one as any chain's answers are.
#[derive(Debug)]
pub struct Exchange {
    leader: usize,
    step: u32,
    context: Vec<u8>,
    answers: Vec<Answer>,
    /// Authentication Data for the client's AUTH packet.
    pub data: Vec<u8>,
    /// User properties for the client's AUTH packet.
    pub user_properties: Vec<(String, String)>,
}

impl Exchange {
    /// How many AUTH packets the broker has sent in this exchange.
    pub fn step(&self) -> u32 {
        self.step
    }
}

fn pairs(props: Vec<pb::UserProperty>) -> Vec<(String, String)> {
    props.into_iter().map(|p| (p.key, p.value)).collect()
}

/// Two allowing plugins that set different identities: (alias, identity) of each.
#[derive(Debug, PartialEq, Eq)]
struct IdentityConflict {
    first: (String, String),
    other: (String, String),
}

/// The identity the chain established: the non-empty `identity` of the allowing answers
/// (`answers[i]` is `plugins[i]`'s, in `auth.plugins` order). `None` when no allowing plugin
/// set one. Two allowing plugins that set different identities are a conflict: nobody can
/// tell which one the credentials proved, so the caller denies rather than pick one.
fn established_identity(
    plugins: &[Arc<Plugin>],
    answers: &[Answer],
) -> Result<Option<String>, IdentityConflict> {
    let aliases: Vec<&str> = plugins.iter().map(|p| p.alias.as_str()).collect();
    established_identity_of(&aliases, answers)
}

fn established_identity_of(
    aliases: &[&str],
    answers: &[Answer],
) -> Result<Option<String>, IdentityConflict> {
    let mut first: Option<(&str, &str)> = None;
    for (alias, a) in aliases.iter().zip(answers) {
        if a.verdict != Verdict::Allow || a.identity.is_empty() {
            continue;
        }
        match first {
            None => first = Some((alias, &a.identity)),
            Some((_, id)) if id == a.identity => {}
            Some((first_alias, id)) => {
                return Err(IdentityConflict {
                    first: (first_alias.to_owned(), id.to_owned()),
                    other: ((*alias).to_owned(), a.identity.clone()),
                });
            }
        }
    }
    Ok(first.map(|(_, id)| id.to_owned()))
}

/// The outcome of the TopicFilter chain.
#[derive(Debug, Clone, Default)]
pub struct TopicOutcome {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// How long the outcome may be cached; `None` when any answer said 0 or failed.
    pub cache_ttl: Option<Duration>,
    /// The plugin whose answer decided a denial, and its reason.
    pub denied_by: Option<(String, String)>,
    /// Whether a denial came from a plugin failure with its `on_error` applied rather
    /// than from a verdict: the deciding answer failed, or every plugin abstained and
    /// one of them only because it failed. Always false when allowed. A caller may
    /// hold what it cannot decide yet and ask again; a real DENY is final.
    pub from_error: bool,
    /// The MQTT 5 reason code the deciding plugin asked for (0: broker's choice).
    pub reason_code: u32,
    /// The Reason String the deciding plugin's DENY has for the client (empty: none).
    pub client_reason: String,
}

/// Whether a denial is logged at debug rather than info: RECEIVE checks run once per
/// message delivered, so a subscriber to `#` that its rules mostly deny would otherwise
/// write a log line per message (1.2 million lines in a 10-minute soak). Denials stay
/// counted (`tandem_topics_denied`); PUBLISH and SUBSCRIBE denials, one per client
/// packet, stay at info.
fn quiet(request: &pb::TopicFilterRequest) -> bool {
    request.action == pb::Action::Receive as i32
}

/// MQTT 5 CONNACK "bad authentication method".
const BAD_AUTHENTICATION_METHOD: u32 = 0x8C;

/// An ordered set of plugins answering one RPC.
pub struct Chain {
    section: &'static str,
    plugins: Vec<Arc<Plugin>>,
}

impl Chain {
    /// A chain over `plugins`, named after its config section for logs.
    pub fn new(section: &'static str, plugins: Vec<Arc<Plugin>>) -> Self {
        Self { section, plugins }
    }

    /// The members.
    pub fn plugins(&self) -> &[Arc<Plugin>] {
        &self.plugins
    }

    /// Asks every member concurrently; returns as soon as a DENY arrives, else when all
    /// have answered. `answers` is indexed by chain position.
    async fn run<F, Fut>(&self, ask: F) -> Result<Vec<Answer>, (usize, Answer)>
    where
        F: Fn(Arc<Plugin>) -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        if let [only] = self.plugins.as_slice() {
            let a = ask(only.clone()).await;
            return if a.verdict == Verdict::Deny {
                Err((0, a))
            } else {
                Ok(vec![a])
            };
        }
        let mut pending: FuturesUnordered<_> = self
            .plugins
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let fut = ask(p.clone());
                async move { (i, fut.await) }
            })
            .collect();
        let mut answers: Vec<Option<Answer>> = vec![None; self.plugins.len()];
        while let Some((i, a)) = pending.next().await {
            if a.verdict == Verdict::Deny {
                return Err((i, a));
            }
            answers[i] = Some(a);
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Asks one plugin to authenticate, its answer settled.
    async fn ask_auth(plugin: Arc<Plugin>, request: pb::AuthenticateRequest) -> Answer {
        let started = Instant::now();
        let result = plugin
            .call(request, |mut c, r| async move { c.authenticate(r).await })
            .await;
        settle(
            &plugin,
            Rpc::Authenticate,
            result,
            started.elapsed(),
            |resp| {
                if let Some(proceed) = resp.auth_continue {
                    return Ok(Answer {
                        proceed: Some(proceed),
                        ..Answer::new(Verdict::Abstain, resp.reason, 0, String::new())
                    });
                }
                let verdict = verdict(resp.verdict).ok_or("answered VERDICT_UNSPECIFIED")?;
                Ok(Answer {
                    attributes: resp.attributes,
                    identity: resp.identity,
                    auth_data: resp.auth_data,
                    user_properties: resp.user_properties,
                    ..Answer::new(verdict, resp.reason, resp.reason_code, resp.client_reason)
                })
            },
        )
    }

    /// Runs the Authenticate chain on a CONNECT (or the AUTH that starts a
    /// re-authentication): every member is asked; a DENY decides at once; a member that
    /// continues an enhanced authentication exchange leads it from here.
    pub async fn authenticate(&self, request: pb::AuthenticateRequest) -> AuthStep {
        let span = info_span!("authenticate", chain = self.section, client_id = %request.client_id, allowed = Empty);
        let step = async {
            let answers = self
                .run(|plugin| Self::ask_auth(plugin, request.clone()))
                .await;
            match answers {
                Err((i, a)) => AuthStep::Done(self.denied(i, a, &request)),
                Ok(answers) => match answers.iter().position(|a| a.proceed.is_some()) {
                    Some(leader) => {
                        let mut answers = answers;
                        let proceed = answers[leader].proceed.take().unwrap_or_default();
                        AuthStep::Continue(Exchange {
                            leader,
                            step: 1,
                            context: proceed.context,
                            answers,
                            data: proceed.auth_data,
                            user_properties: pairs(proceed.user_properties),
                        })
                    }
                    None => AuthStep::Done(self.combined(answers, &request, false)),
                },
            }
        }
        .instrument(span.clone())
        .await;
        if let AuthStep::Done(outcome) = &step {
            span.record("allowed", outcome.allowed);
        }
        step
    }

    /// Runs the next step of an enhanced authentication exchange: the client's answer
    /// (`request.auth_data`) goes to the plugin that leads it, with its context; its
    /// final verdict is combined with the other members' first answers.
    pub async fn continue_auth(
        &self,
        mut exchange: Exchange,
        mut request: pb::AuthenticateRequest,
    ) -> AuthStep {
        let Some(plugin) = self.plugins.get(exchange.leader).cloned() else {
            return AuthStep::Done(AuthOutcome::default());
        };
        request.auth_step = exchange.step;
        request.auth_context = std::mem::take(&mut exchange.context);
        let span = info_span!("authenticate", chain = self.section, client_id = %request.client_id,
            step = exchange.step, allowed = Empty);
        let answer = Self::ask_auth(plugin, request.clone())
            .instrument(span.clone())
            .await;
        if let Some(proceed) = answer.proceed {
            exchange.step += 1;
            exchange.context = proceed.context;
            exchange.data = proceed.auth_data;
            exchange.user_properties = pairs(proceed.user_properties);
            return AuthStep::Continue(exchange);
        }
        let outcome = if answer.verdict == Verdict::Deny {
            self.denied(exchange.leader, answer, &request)
        } else {
            let mut answers = exchange.answers;
            answers[exchange.leader] = answer;
            self.combined(answers, &request, true)
        };
        span.record("allowed", outcome.allowed);
        AuthStep::Done(outcome)
    }

    /// The outcome when plugin `i`'s DENY decides.
    fn denied(&self, i: usize, a: Answer, request: &pb::AuthenticateRequest) -> AuthOutcome {
        let alias = self.plugins[i].alias.clone();
        info!(plugin = %alias, reason = %a.reason, client_id = %request.client_id, username = %request.username.as_deref().unwrap_or(""), "authentication denied");
        AuthOutcome {
            from_error: a.error.is_some(),
            reason_code: a.reason_code,
            client_reason: a.client_reason,
            denied_by: Some((alias, a.reason)),
            ..AuthOutcome::default()
        }
    }

    /// Combines answers none of which denied: at least one ALLOW is needed. A CONNECT
    /// that named an authentication method no plugin took up (`exchanged` false, nobody
    /// allowed) is refused with 0x8C "bad authentication method".
    fn combined(
        &self,
        answers: Vec<Answer>,
        request: &pb::AuthenticateRequest,
        exchanged: bool,
    ) -> AuthOutcome {
        let allowed = answers.iter().any(|a| a.verdict == Verdict::Allow);
        if !allowed {
            let unknown_method = !exchanged && !request.auth_method.is_empty();
            if unknown_method {
                info!(chain = self.section, client_id = %request.client_id, username = %request.username.as_deref().unwrap_or(""),
                    method = %request.auth_method, "authentication denied: no plugin knows the authentication method");
            } else {
                info!(chain = self.section, client_id = %request.client_id, username = %request.username.as_deref().unwrap_or(""),
                    "authentication denied: every plugin abstained");
            }
            return AuthOutcome {
                denied_by: Some((self.section.to_owned(), "every plugin abstained".to_owned())),
                from_error: answers.iter().any(|a| a.error.is_some()),
                reason_code: if unknown_method {
                    BAD_AUTHENTICATION_METHOD
                } else {
                    0
                },
                ..AuthOutcome::default()
            };
        }
        let identity = match established_identity(&self.plugins, &answers) {
            Ok(identity) => identity,
            Err(conflict) => {
                warn!(chain = self.section, client_id = %request.client_id, username = %request.username.as_deref().unwrap_or(""),
                    first = %conflict.first.0, first_identity = ?conflict.first.1,
                    other = %conflict.other.0, other_identity = ?conflict.other.1,
                    "authentication denied: allowing plugins established different identities");
                return AuthOutcome {
                    denied_by: Some((
                        conflict.other.0,
                        "established a different identity than an earlier plugin".into(),
                    )),
                    ..AuthOutcome::default()
                };
            }
        };
        let mut outcome = AuthOutcome {
            allowed,
            identity,
            ..AuthOutcome::default()
        };
        for a in answers.into_iter().filter(|a| a.verdict == Verdict::Allow) {
            outcome.attributes.extend(a.attributes);
            outcome.user_properties.extend(pairs(a.user_properties));
            if outcome.auth_data.is_empty() {
                outcome.auth_data = a.auth_data;
            }
        }
        outcome
    }

    /// Runs the TopicFilter chain.
    pub async fn topic_filter(&self, request: pb::TopicFilterRequest) -> TopicOutcome {
        let ask = |plugin: Arc<Plugin>| {
            let request = request.clone();
            async move {
                let started = Instant::now();
                let result = plugin
                    .call(request, |mut c, r| async move { c.topic_filter(r).await })
                    .await;
                settle(
                    &plugin,
                    Rpc::TopicFilter,
                    result,
                    started.elapsed(),
                    |resp| {
                        let verdict =
                            verdict(resp.verdict).ok_or("answered VERDICT_UNSPECIFIED")?;
                        Ok(Answer {
                            cache_ttl: Duration::from_millis(u64::from(resp.cache_ttl_ms)),
                            ..Answer::new(
                                verdict,
                                resp.reason,
                                resp.reason_code,
                                resp.client_reason,
                            )
                        })
                    },
                )
            }
        };
        let action = pb::Action::try_from(request.action)
            .map(|a| a.as_str_name())
            .unwrap_or("?");
        // Only a check that reaches the plugins gets here: cache hits make no span.
        let span = info_span!("topic_check", chain = self.section, client_id = %request.client_id,
            topic = %request.topic, action, allowed = Empty);
        let outcome = self
            .topic_filter_in(ask, &request, action)
            .instrument(span.clone())
            .await;
        span.record("allowed", outcome.allowed);
        outcome
    }

    async fn topic_filter_in<F, Fut>(
        &self,
        ask: F,
        request: &pb::TopicFilterRequest,
        action: &'static str,
    ) -> TopicOutcome
    where
        F: Fn(Arc<Plugin>) -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        match self.run(ask).await {
            Err((i, a)) => {
                let alias = self.plugins[i].alias.clone();
                if quiet(request) {
                    debug!(plugin = %alias, reason = %a.reason, client_id = %request.client_id, topic = %request.topic, action, "topic check denied");
                } else {
                    info!(plugin = %alias, reason = %a.reason, client_id = %request.client_id, topic = %request.topic, action, "topic check denied");
                }
                TopicOutcome {
                    allowed: false,
                    cache_ttl: (a.error.is_none() && !a.cache_ttl.is_zero()).then_some(a.cache_ttl),
                    denied_by: Some((alias, a.reason)),
                    from_error: a.error.is_some(),
                    reason_code: a.reason_code,
                    client_reason: a.client_reason,
                }
            }
            Ok(answers) => {
                let allowed = answers.iter().any(|a| a.verdict == Verdict::Allow);
                if !allowed && quiet(request) {
                    debug!(chain = self.section, client_id = %request.client_id, topic = %request.topic, action, "topic check denied: every plugin abstained");
                } else if !allowed {
                    info!(chain = self.section, client_id = %request.client_id, topic = %request.topic, action, "topic check denied: every plugin abstained");
                }
                let cacheable = answers
                    .iter()
                    .all(|a| a.error.is_none() && !a.cache_ttl.is_zero());
                TopicOutcome {
                    allowed,
                    cache_ttl: cacheable
                        .then(|| answers.iter().map(|a| a.cache_ttl).min())
                        .flatten(),
                    denied_by: (!allowed)
                        .then(|| (self.section.to_owned(), "every plugin abstained".to_owned())),
                    from_error: !allowed && answers.iter().any(|a| a.error.is_some()),
                    reason_code: 0,
                    client_reason: String::new(),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/chain.rs"]
mod tests;
