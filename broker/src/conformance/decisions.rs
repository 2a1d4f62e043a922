//! The unary RPCs: `Describe`, then the decision RPCs of the roles it declared, asked as
//! the broker asks them: the `describe`, `roles`, `verdicts`, `unknown-fields` and
//! `credentials` rows.

use tandem_proto::v1 as pb;

use super::conn::{CallError, Conn};
use super::report::{Outcome, Report};
use super::samples;
use super::unknown::{Encoded, UNKNOWN_FIELD};
use crate::plugins::plugin::{Chan, Described};

/// A decision RPC's answer, as the checks read it.
struct Answer {
    /// The verdict number as sent (a newer or broken plugin may send any).
    verdict: i32,
    /// Whether it continues an enhanced authentication exchange (the verdict is then
    /// not read).
    continues: bool,
    /// The plugin's reason, for the report.
    reason: String,
}

impl From<pb::AuthenticateResponse> for Answer {
    fn from(r: pb::AuthenticateResponse) -> Self {
        Self {
            verdict: r.verdict,
            continues: r.auth_continue.is_some(),
            reason: r.reason,
        }
    }
}

impl From<pb::TopicFilterResponse> for Answer {
    fn from(r: pb::TopicFilterResponse) -> Self {
        Self {
            verdict: r.verdict,
            continues: false,
            reason: r.reason,
        }
    }
}

/// The verdict's name, or why it is not one.
fn verdict_name(verdict: i32) -> Result<&'static str, String> {
    match pb::Verdict::try_from(verdict) {
        Ok(pb::Verdict::Allow) => Ok("ALLOW"),
        Ok(pb::Verdict::Deny) => Ok("DENY"),
        Ok(pb::Verdict::Abstain) => Ok("ABSTAIN"),
        Ok(pb::Verdict::Unspecified) => {
            Err("VERDICT_UNSPECIFIED (the broker reads it as an error and applies on_error)".into())
        }
        Err(_) => Err(format!(
            "verdict {verdict}, which the contract does not define"
        )),
    }
}

/// One decision call: what it was, for which role, and what came back.
struct Asked {
    what: String,
    role: pb::Role,
    answer: Result<Answer, CallError>,
}

/// Sends a decision request (`body` holds it, perhaps with unknown fields).
async fn ask(conn: &Conn, chan: &Chan, role: pb::Role, what: String, body: Encoded) -> Asked {
    let answer = match role {
        pb::Role::Authenticate => conn
            .unary::<pb::AuthenticateResponse>(chan, "Authenticate", &what, body)
            .await
            .map(Answer::from),
        _ => conn
            .unary::<pb::TopicFilterResponse>(chan, "TopicFilter", &what, body)
            .await
            .map(Answer::from),
    };
    Asked { what, role, answer }
}

/// `Describe` with this run's request: the `describe` row. `None` when it got no answer.
pub(super) async fn describe(conn: &Conn, chan: &Chan, report: &mut Report) -> Option<Described> {
    let body = Encoded::plain(&conn.describe);
    let answer = conn
        .unary::<pb::DescribeResponse>(chan, "Describe", "Describe", body)
        .await;
    let outcome = match answer {
        Err(CallError::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
            Outcome::Fail(format!(
                "refused the configuration ({}); give its config: section with --plugin-config FILE",
                s.message()
            ))
        }
        Err(CallError::Status(s)) if s.code() == tonic::Code::Unauthenticated => {
            Outcome::Fail(format!(
                "refused the call ({}); give the broker's bearer token with --token-file FILE",
                s.message()
            ))
        }
        Err(e) => Outcome::Fail(format!("Describe: {e}")),
        Ok(resp) if resp.name.is_empty() => {
            report.push(
                "describe",
                Outcome::Fail("answered an empty name (required)".into()),
            );
            return Some(Described::from(resp));
        }
        Ok(resp) => {
            let described = Described::from(resp);
            let roles: Vec<&str> = described.roles.iter().map(|r| r.as_str_name()).collect();
            report.push(
                "describe",
                Outcome::Pass(format!(
                    "{} {}: roles [{}], {} event kinds",
                    described.name,
                    described.version,
                    roles.join(", "),
                    described.event_kinds.len()
                )),
            );
            return Some(described);
        }
    };
    report.push("describe", outcome);
    None
}

/// The `roles`, `verdicts` and `unknown-fields` rows.
pub(super) async fn decisions(
    conn: &Conn,
    chan: &Chan,
    described: &Described,
    username: &str,
    report: &mut Report,
) {
    // (role, what the report calls it, request): as the broker sends them, then with
    // fields the contract does not define.
    let mut plain: Vec<(pb::Role, String, Encoded)> = Vec::new();
    let mut unknown = Vec::new();
    if described.serves(pb::Role::Authenticate) {
        let nobody = samples::authenticate(Some("tandem-check-nobody"), Some("not-a-password"));
        let role = pb::Role::Authenticate;
        plain.push((
            role,
            "Authenticate(no credentials)".into(),
            Encoded::plain(&samples::authenticate(None, None)),
        ));
        plain.push((
            role,
            "Authenticate(unknown user)".into(),
            Encoded::plain(&nobody),
        ));
        let request = samples::authenticate(Some(username), Some("not-a-password"));
        unknown.push((
            role,
            "Authenticate".into(),
            Encoded::with_unknown_fields(&request),
        ));
    }
    if described.serves(pb::Role::TopicFilter) {
        let role = pb::Role::TopicFilter;
        for (action, name, topic) in samples::TOPIC_CHECKS {
            let request = samples::topic_filter(action, topic, username);
            plain.push((
                role,
                format!("TopicFilter({name} {topic})"),
                Encoded::plain(&request),
            ));
        }
        let (action, _, topic) = samples::TOPIC_CHECKS[0];
        let request = samples::topic_filter(action, topic, username);
        unknown.push((
            role,
            "TopicFilter".into(),
            Encoded::with_unknown_fields(&request),
        ));
    }
    let mut asked = Vec::new();
    for (role, what, body) in plain {
        asked.push(ask(conn, chan, role, what, body).await);
    }
    let mut strange = Vec::new();
    for (role, what, body) in unknown {
        strange.push(ask(conn, chan, role, what, body).await);
    }
    report.push("roles", roles(described, &asked));
    report.push("verdicts", verdicts(&asked));
    report.push("unknown-fields", unknown_fields(conn, chan, &strange).await);
}

/// Every declared role's RPC must answer something other than UNIMPLEMENTED.
fn roles(described: &Described, asked: &[Asked]) -> Outcome {
    if described.roles.is_empty() {
        return Outcome::Pass(if described.event_kinds.is_empty() {
            "declares no role and no event kind: the broker never calls it".into()
        } else {
            "declares no role (events only)".into()
        });
    }
    let mut served = Vec::new();
    for role in &described.roles {
        if *role == pb::Role::Unspecified {
            return Outcome::Fail("declares ROLE_UNSPECIFIED, which is no role".into());
        }
        let rpc = rpc_of(*role);
        if served.contains(&rpc) {
            continue;
        }
        let calls: Vec<&Asked> = asked.iter().filter(|a| a.role == *role).collect();
        if calls
            .iter()
            .any(|a| matches!(&a.answer, Err(e) if e.unimplemented()))
        {
            return Outcome::Fail(format!(
                "declares {} but {rpc} answers UNIMPLEMENTED",
                role.as_str_name()
            ));
        }
        served.push(rpc);
    }
    Outcome::Pass(format!("{} served, as declared", served.join(" and ")))
}

fn rpc_of(role: pb::Role) -> &'static str {
    match role {
        pb::Role::Authenticate => "Authenticate",
        _ => "TopicFilter",
    }
}

/// Every answer of a served RPC must be a verdict, never VERDICT_UNSPECIFIED.
fn verdicts(asked: &[Asked]) -> Outcome {
    if asked.is_empty() {
        return Outcome::Skip("declares no role: no verdict to ask for".into());
    }
    let mut seen = Vec::new();
    for a in asked
        .iter()
        .filter(|a| !matches!(&a.answer, Err(e) if e.unimplemented()))
    {
        match &a.answer {
            Err(e) => return Outcome::Fail(format!("{}: {e}", a.what)),
            Ok(answer) if answer.continues => seen.push(format!("{} continues", a.what)),
            Ok(answer) => match verdict_name(answer.verdict) {
                Ok(name) => seen.push(format!("{} {name}", a.what)),
                Err(why) => return Outcome::Fail(format!("{} answered {why}", a.what)),
            },
        }
    }
    if seen.is_empty() {
        return Outcome::Skip("no verdict RPC answered (see roles)".into());
    }
    Outcome::Pass(seen.join(", "))
}

/// `Describe` and each served RPC, sent with fields the contract does not define, must
/// answer as without them.
async fn unknown_fields(conn: &Conn, chan: &Chan, strange: &[Asked]) -> Outcome {
    let body = Encoded::with_unknown_fields(&conn.describe);
    let described = conn
        .unary::<pb::DescribeResponse>(chan, "Describe", "Describe (unknown fields)", body)
        .await;
    if let Err(e) = described {
        return Outcome::Fail(format!("Describe with unknown fields: {e}"));
    }
    let mut rpcs = vec!["Describe"];
    for a in strange {
        match &a.answer {
            Err(e) if e.unimplemented() => {}
            Err(e) => return Outcome::Fail(format!("{} with unknown fields: {e}", a.what)),
            Ok(answer) if answer.continues => rpcs.push(rpc_of(a.role)),
            Ok(answer) => match verdict_name(answer.verdict) {
                Ok(_) => rpcs.push(rpc_of(a.role)),
                Err(why) => {
                    return Outcome::Fail(format!("{} with unknown fields answered {why}", a.what));
                }
            },
        }
    }
    Outcome::Pass(format!(
        "{} answer requests carrying fields {UNKNOWN_FIELD} and {}",
        rpcs.join(", "),
        UNKNOWN_FIELD + 1
    ))
}

/// The `credentials` row: the author's test user is let in, and refused with a wrong
/// password.
pub(super) async fn credentials(
    conn: &Conn,
    chan: &Chan,
    described: &Described,
    credentials: Option<&(String, String)>,
) -> Outcome {
    let Some((user, password)) = credentials else {
        return Outcome::Skip("no --username/--password given".into());
    };
    if !described.serves(pb::Role::Authenticate) {
        return Outcome::Skip("declares no ROLE_AUTHENTICATE: credentials not checked".into());
    }
    let wrong = format!("{password}-wrong");
    for (password, label, expected) in [
        (password.as_str(), "the --password", pb::Verdict::Allow),
        (wrong.as_str(), "a wrong password", pb::Verdict::Deny),
    ] {
        let request = samples::authenticate(Some(user), Some(password));
        let what = format!("Authenticate({user}, {label})");
        let asked = ask(
            conn,
            chan,
            pb::Role::Authenticate,
            what,
            Encoded::plain(&request),
        )
        .await;
        let answer = match asked.answer {
            Err(e) => return Outcome::Fail(format!("{}: {e}", asked.what)),
            Ok(a) => a,
        };
        if answer.continues || answer.verdict != expected as i32 {
            let got = if answer.continues {
                "an enhanced authentication step".to_owned()
            } else {
                verdict_name(answer.verdict).map_or_else(|why| why, str::to_owned)
            };
            let reason = if answer.reason.is_empty() {
                String::new()
            } else {
                format!(" (reason: {})", answer.reason)
            };
            return Outcome::Fail(format!(
                "{} answered {got}{reason}, expected {}",
                asked.what,
                verdict_name(expected as i32).unwrap_or_default()
            ));
        }
    }
    Outcome::Pass(format!(
        "{user} is allowed with the --password and denied with a wrong one"
    ))
}
