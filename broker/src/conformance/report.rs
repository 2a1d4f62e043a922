//! What a check run found: one [`Row`] per check, printed as a table, failed if any
//! row failed. A skipped check is said to be skipped, with why, never counted as passed.

use std::fmt;

/// The outcome of one check, with what the reader needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plugin does what the contract asks; the text says what was seen.
    Pass(String),
    /// It does not; the text says what was wrong.
    Fail(String),
    /// The check could not run or does not apply; the text says why.
    Skip(String),
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The check's name, as the docs list it (for example `events-acks`).
    pub check: &'static str,
    /// What it found.
    pub outcome: Outcome,
}

/// Every check of a run, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// What was checked (the endpoint, and the address it was reached at).
    pub target: String,
    /// The rows.
    pub rows: Vec<Row>,
}

impl Report {
    /// Adds a row.
    pub fn push(&mut self, check: &'static str, outcome: Outcome) {
        self.rows.push(Row { check, outcome });
    }

    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        !self
            .rows
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    }

    /// The outcome of `check`, if it ran.
    pub fn outcome(&self, check: &str) -> Option<&Outcome> {
        self.rows
            .iter()
            .find(|r| r.check == check)
            .map(|r| &r.outcome)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tandem plugin check {}", self.target)?;
        let width = self.rows.iter().map(|r| r.check.len()).max().unwrap_or(0);
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        for row in &self.rows {
            let (word, text) = match &row.outcome {
                Outcome::Pass(t) => {
                    passed += 1;
                    ("pass", t)
                }
                Outcome::Fail(t) => {
                    failed += 1;
                    ("FAIL", t)
                }
                Outcome::Skip(t) => {
                    skipped += 1;
                    ("skip", t)
                }
            };
            writeln!(f, "{:<width$}  {word}  {}", row.check, printable(text))?;
        }
        write!(
            f,
            "{passed} passed, {failed} failed, {skipped} skipped: {}",
            if failed == 0 { "ok" } else { "FAILED" }
        )
    }
}

/// The longest row text printed, in characters.
const MAX_TEXT: usize = 400;

/// `text` as one safe line: what a plugin answered (names, reasons, status messages)
/// may hold control characters that would forge rows or colour a terminal, and may be
/// megabytes long.
fn printable(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == MAX_TEXT {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_row_fails_the_report_and_skips_do_not_pass() {
        let mut report = Report {
            target: "unix:///p.sock".into(),
            rows: Vec::new(),
        };
        report.push("health", Outcome::Pass("SERVING".into()));
        report.push("credentials", Outcome::Skip("no --username".into()));
        assert!(report.passed());
        report.push("verdicts", Outcome::Fail("VERDICT_UNSPECIFIED".into()));
        assert!(!report.passed());
        let text = report.to_string();
        assert!(
            text.contains("\nverdicts     FAIL  VERDICT_UNSPECIFIED\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncredentials  skip  no --username\n"),
            "{text}"
        );
        assert!(
            text.ends_with("1 passed, 1 failed, 1 skipped: FAILED"),
            "{text}"
        );
    }

    #[test]
    fn a_plugins_text_cannot_forge_rows_or_flood() {
        assert_eq!(
            printable("ok\nroles  pass  \u{1b}[32mfake"),
            "ok\\nroles  pass  \\u{1b}[32mfake"
        );
        let long = "x".repeat(10_000);
        assert_eq!(printable(&long).chars().count(), MAX_TEXT + 3);
    }
}
