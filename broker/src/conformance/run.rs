//! A check run: every check in order, each row's outcome decided, and the command that
//! prints them.

use std::process::ExitCode;
use std::time::Duration;

use super::args::{CheckArgs, Settings};
use super::conn::{CallError, Conn, describe_status, from_transport, humantime};
use super::error::CheckError;
use super::report::{Outcome, Report};
use super::{decisions, events};

/// Runs every check against the plugin of `settings` and returns the rows. A plugin that
/// cannot be reached makes a failed `connect` row, not an error.
pub async fn check(settings: &Settings) -> Result<Report, CheckError> {
    let mut report = Report {
        target: settings.plugin.endpoint.to_string(),
        rows: Vec::new(),
    };
    let conn = match Conn::dial(settings).await? {
        Ok(conn) => conn,
        Err(why) => {
            report.push("connect", Outcome::Fail(why));
            return Ok(skip_all(report, "not connected"));
        }
    };
    if conn.label != report.target {
        report.target = format!("{} ({})", report.target, conn.label);
    }
    let chan = conn.channel();
    // The first call tells whether a gRPC server answers at all.
    let health = conn
        .timed("Check (grpc.health.v1)", async {
            // The whole server's health (service ""), as the broker's probes ask it.
            let mut health = tonic_health::pb::health_client::HealthClient::new(chan.clone());
            let request = tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            };
            health.check(request).await.map(tonic::Response::into_inner)
        })
        .await;
    match &health {
        Err(CallError::Timeout(d)) => {
            let why = format!(
                "no gRPC answer within {} (is a gRPC server listening there?)",
                humantime(*d)
            );
            report.push("connect", Outcome::Fail(why));
            return Ok(skip_all(report, "not connected"));
        }
        Err(CallError::Status(s)) if from_transport(s) => {
            let why = format!("cannot reach it: {}", describe_status(s));
            report.push("connect", Outcome::Fail(why));
            return Ok(skip_all(report, "not connected"));
        }
        _ => {
            let what = format!("a gRPC server answers at {}", conn.label);
            report.push("connect", Outcome::Pass(what));
        }
    }
    report.push("health", health_row(&health));

    let Some(described) = decisions::describe(&conn, &chan, &mut report).await else {
        return Ok(finish(skip_all(report, "needs Describe"), &conn));
    };
    let username = settings
        .credentials
        .as_ref()
        .map_or("tandem-check", |(u, _)| u.as_str());
    decisions::decisions(&conn, &chan, &described, username, &mut report).await;
    let credentials = settings.credentials.as_ref();
    let outcome = decisions::credentials(&conn, &chan, &described, credentials).await;
    report.push("credentials", outcome);
    events::events(&conn, &chan, &described, &mut report).await;
    Ok(finish(report, &conn))
}

/// The rows between `connect` and `deadlines`, in order.
const ROWS: [&str; 9] = [
    "health",
    "describe",
    "roles",
    "verdicts",
    "unknown-fields",
    "credentials",
    "events-acks",
    "events-unknown-kind",
    "events-reconnect",
];

/// Adds every row of [`ROWS`] not there yet, skipped for `why` (what could not run).
fn skip_all(mut report: Report, why: &str) -> Report {
    for row in ROWS {
        if report.outcome(row).is_none() {
            report.push(row, Outcome::Skip(why.to_owned()));
        }
    }
    report
}

/// `grpc.health.v1` must be served and say SERVING for the whole server.
fn health_row(health: &Result<tonic_health::pb::HealthCheckResponse, CallError>) -> Outcome {
    use tonic_health::pb::health_check_response::ServingStatus;
    match health {
        Ok(r) if r.status == ServingStatus::Serving as i32 => {
            Outcome::Pass("grpc.health.v1 Check(\"\") answers SERVING".into())
        }
        Ok(r) => Outcome::Fail(format!(
            "grpc.health.v1 Check(\"\") answers {} (the broker's probes wait for SERVING before Describe)",
            ServingStatus::try_from(r.status).map_or("an unknown status", |s| s.as_str_name())
        )),
        Err(e) if e.unimplemented() => Outcome::Fail(
            "grpc.health.v1 is not served (UNIMPLEMENTED): serve it, as the plugin guide asks, so probes can tell a plugin that is up from one shutting down".into(),
        ),
        Err(e) => Outcome::Fail(format!("grpc.health.v1 Check(\"\"): {e}")),
    }
}

/// Adds the `deadlines` row: every call made answered within the deadline.
fn finish(mut report: Report, conn: &Conn) -> Report {
    let timings = conn.timings();
    let late: Vec<&str> = timings
        .iter()
        .filter(|t| t.timed_out)
        .map(|t| t.what.as_str())
        .collect();
    let outcome = if !late.is_empty() {
        Outcome::Fail(format!(
            "no answer within {}: {}",
            humantime(conn.timeout),
            late.join(", ")
        ))
    } else if let Some(slowest) = timings.iter().max_by_key(|t| t.took) {
        // Whole milliseconds: a table line, not a benchmark.
        let took = Duration::from_millis(slowest.took.as_millis() as u64);
        Outcome::Pass(format!(
            "{} calls and acks within {} (slowest: {} in {})",
            timings.len(),
            humantime(conn.timeout),
            slowest.what,
            humantime(took.max(Duration::from_millis(1)))
        ))
    } else {
        Outcome::Skip("no call answered".into())
    };
    report.push("deadlines", outcome);
    report
}

/// `tandem plugin check`: runs the checks, prints the table on stdout, and exits 0 if no
/// check failed, 1 if one did, 2 if the run could not start.
pub fn run(args: &CheckArgs) -> ExitCode {
    let settings = match args.settings() {
        Ok(s) => s,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(check(&settings)) {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
