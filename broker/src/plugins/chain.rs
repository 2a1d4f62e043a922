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
use tracing::{Instrument, info, info_span, warn};

use super::config::OnError;
use super::plugin::Plugin;
use super::rpc::{ErrorKind, Rpc, Verdict};

/// One plugin's answer, after `on_error`.
#[derive(Debug, Clone)]
struct Answer {
    verdict: Verdict,
    reason: String,
    reason_code: u32,
    error: Option<ErrorKind>,
    attributes: HashMap<String, String>,
    /// The identity an Authenticate answer established (empty: none).
    identity: String,
    cache_ttl: Duration,
}

impl Answer {
    fn failed(plugin: &Plugin, kind: ErrorKind) -> Self {
        Self {
            verdict: match plugin.config.on_error {
                OnError::Deny => Verdict::Deny,
                OnError::Abstain => Verdict::Abstain,
                OnError::Allow => Verdict::Allow,
            },
            reason: format!("plugin error: {}", kind.as_str()),
            reason_code: 0,
            error: Some(kind),
            attributes: HashMap::new(),
            identity: String::new(),
            cache_ttl: Duration::ZERO,
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
}

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

    /// Runs the Authenticate chain.
    pub async fn authenticate(&self, request: pb::AuthenticateRequest) -> AuthOutcome {
        let ask = |plugin: Arc<Plugin>| {
            let request = request.clone();
            async move {
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
                        if resp.auth_continue.is_some() {
                            return Err(
                                "enhanced authentication (auth_continue) is not supported yet",
                            );
                        }
                        let verdict =
                            verdict(resp.verdict).ok_or("answered VERDICT_UNSPECIFIED")?;
                        Ok(Answer {
                            verdict,
                            reason: resp.reason,
                            reason_code: resp.reason_code,
                            error: None,
                            attributes: resp.attributes,
                            identity: resp.identity,
                            cache_ttl: Duration::ZERO,
                        })
                    },
                )
            }
        };
        let span = info_span!("authenticate", chain = self.section, client_id = %request.client_id, allowed = Empty);
        let outcome = self
            .authenticate_in(ask, &request)
            .instrument(span.clone())
            .await;
        span.record("allowed", outcome.allowed);
        outcome
    }

    async fn authenticate_in<F, Fut>(
        &self,
        ask: F,
        request: &pb::AuthenticateRequest,
    ) -> AuthOutcome
    where
        F: Fn(Arc<Plugin>) -> Fut,
        Fut: std::future::Future<Output = Answer>,
    {
        match self.run(ask).await {
            Err((i, a)) => {
                let alias = self.plugins[i].alias.clone();
                info!(plugin = %alias, reason = %a.reason, client_id = %request.client_id, "authentication denied");
                AuthOutcome {
                    allowed: false,
                    attributes: HashMap::new(),
                    identity: None,
                    denied_by: Some((alias, a.reason)),
                    from_error: a.error.is_some(),
                    reason_code: a.reason_code,
                }
            }
            Ok(answers) => {
                let allowed = answers.iter().any(|a| a.verdict == Verdict::Allow);
                let mut attributes = HashMap::new();
                for a in answers.iter().filter(|a| a.verdict == Verdict::Allow) {
                    attributes.extend(a.attributes.clone());
                }
                if !allowed {
                    info!(chain = self.section, client_id = %request.client_id, "authentication denied: every plugin abstained");
                }
                let identity = match established_identity(&self.plugins, &answers) {
                    Ok(identity) => identity,
                    Err(conflict) => {
                        warn!(chain = self.section, client_id = ?request.client_id,
                            first = %conflict.first.0, first_identity = ?conflict.first.1,
                            other = %conflict.other.0, other_identity = ?conflict.other.1,
                            "authentication denied: allowing plugins established different identities");
                        return AuthOutcome {
                            allowed: false,
                            attributes: HashMap::new(),
                            identity: None,
                            denied_by: Some((
                                conflict.other.0,
                                "established a different identity than an earlier plugin".into(),
                            )),
                            from_error: false,
                            reason_code: 0,
                        };
                    }
                };
                AuthOutcome {
                    allowed,
                    attributes,
                    identity: identity.filter(|_| allowed),
                    denied_by: (!allowed)
                        .then(|| (self.section.to_owned(), "every plugin abstained".to_owned())),
                    from_error: !allowed && answers.iter().any(|a| a.error.is_some()),
                    reason_code: 0,
                }
            }
        }
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
                            verdict,
                            reason: resp.reason,
                            reason_code: resp.reason_code,
                            error: None,
                            attributes: HashMap::new(),
                            identity: String::new(),
                            cache_ttl: Duration::from_millis(u64::from(resp.cache_ttl_ms)),
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
                info!(plugin = %alias, reason = %a.reason, client_id = %request.client_id, topic = %request.topic, action, "topic check denied");
                TopicOutcome {
                    allowed: false,
                    cache_ttl: (a.error.is_none() && !a.cache_ttl.is_zero()).then_some(a.cache_ttl),
                    denied_by: Some((alias, a.reason)),
                    from_error: a.error.is_some(),
                    reason_code: a.reason_code,
                }
            }
            Ok(answers) => {
                let allowed = answers.iter().any(|a| a.verdict == Verdict::Allow);
                if !allowed {
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
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(verdict: Verdict, identity: &str) -> Answer {
        Answer {
            verdict,
            reason: String::new(),
            reason_code: 0,
            error: None,
            attributes: HashMap::new(),
            identity: identity.to_owned(),
            cache_ttl: Duration::ZERO,
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
}
