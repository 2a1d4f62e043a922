//! The password file: `user:hash` lines, blank lines and `#` comments.
//!
//! Reading ([`parse`]) never fails as a whole: a bad line is reported as a [`Problem`] with its
//! line number and skipped. Editing ([`edit`]) changes one user's line and keeps every other line,
//! comments included, as it was; [`write_atomically`] replaces the file in one rename.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;

use crate::hash::{Hash, HashError};

/// The users of one version of the file. A user whose hash could not be used stays here with
/// the error, so that the user is denied, not treated as unknown.
#[derive(Debug, Default)]
pub(crate) struct Users {
    entries: HashMap<String, Result<Hash, HashError>>,
    /// The first usable hash of the file: unknown users are verified against it (and always
    /// denied), so they cost what a known user costs and cannot be told apart by timing.
    decoy: Option<Hash>,
    /// The iteration count of the file's first SCRAM-SHA-256 entry: what unknown users are told
    /// in a SCRAM exchange unless the configuration says otherwise.
    scram_iterations: Option<u32>,
}

impl Users {
    /// The user's hash, or why it cannot be used; `None` for a user not in the file.
    pub(crate) fn get(&self, user: &str) -> Option<&Result<Hash, HashError>> {
        self.entries.get(user)
    }

    /// A usable hash of this file (the first one), of the kind and cost its users' hashes
    /// have, to verify unknown users against; `None` when the file has none.
    pub(crate) fn decoy(&self) -> Option<&Hash> {
        self.decoy.as_ref()
    }

    /// The iteration count of the first SCRAM-SHA-256 entry, if any.
    pub(crate) fn scram_iterations(&self) -> Option<u32> {
        self.scram_iterations
    }

    /// Users with a usable hash.
    pub(crate) fn usable(&self) -> usize {
        self.entries.values().filter(|e| e.is_ok()).count()
    }
}

/// A line that was skipped, or a user that will always be denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// 1-based line number.
    pub(crate) line: usize,
    /// The user the line is about, when it names one.
    pub(crate) user: Option<String>,
    pub(crate) message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user {
            Some(user) => write!(f, "line {}: user {user:?}: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// What reading a file found.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub(crate) users: Users,
    pub(crate) problems: Vec<Problem>,
}

/// One meaningful line: `user:hash` (both trimmed, as aMQTT does).
fn split_line(raw: &str) -> Option<Result<(&str, &str), &'static str>> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    Some(match line.split_once(':') {
        None => Err("no ':' between user and hash"),
        Some((user, _)) if user.trim().is_empty() => Err("empty user name"),
        Some((user, hash)) => Ok((user.trim(), hash.trim())),
    })
}

/// Reads the file's text.
pub(crate) fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let problem = |user: Option<&str>, message: String| Problem {
            line,
            user: user.map(str::to_owned),
            message,
        };
        let (user, hash) = match split_line(raw) {
            None => continue,
            Some(Err(message)) => {
                parsed
                    .problems
                    .push(problem(None, format!("{message}; line skipped")));
                continue;
            }
            Some(Ok(fields)) => fields,
        };
        if let Some(first) = first_line.get(user) {
            parsed.problems.push(problem(
                Some(user),
                format!("duplicate user (first defined on line {first}); line skipped"),
            ));
            continue;
        }
        first_line.insert(user.to_owned(), line);
        let hash = Hash::parse(hash);
        if let Err(e) = &hash {
            parsed.problems.push(problem(
                Some(user),
                format!("{e}; line skipped, the user will be denied"),
            ));
        }
        if let (None, Ok(hash)) = (&parsed.users.decoy, &hash) {
            parsed.users.decoy = Some(hash.clone());
        }
        if let (None, Ok(Hash::Scram(c))) = (parsed.users.scram_iterations, &hash) {
            parsed.users.scram_iterations = Some(c.iterations);
        }
        parsed.users.entries.insert(user.to_owned(), hash);
    }
    parsed
}

/// A change to one user's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit<'a> {
    /// Append a new user; fails when the user is already in the file.
    Add { hash: &'a str },
    /// Replace the user's hash; fails when the user is not in the file.
    Set { hash: &'a str },
    /// Remove the user's lines; fails when the user is not in the file.
    Remove,
}

/// Why an edit was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EditError {
    #[error("user {0:?} is already in the file (use `passwd set` to change the password)")]
    Exists(String),
    #[error("user {0:?} is not in the file (use `passwd add` to add it)")]
    Missing(String),
    #[error(
        "invalid user name {0:?}: it must be non-empty, without ':' or line breaks, without spaces around it, and not start with '#'"
    )]
    InvalidUser(String),
}

/// Checks a user name given on the command line: one that the file format can hold and that
/// reads back as itself.
pub(crate) fn check_user(user: &str) -> Result<(), EditError> {
    let ok = !user.is_empty()
        && user.trim() == user
        && !user.starts_with('#')
        && !user.contains([':', '\n', '\r']);
    if ok {
        Ok(())
    } else {
        Err(EditError::InvalidUser(user.to_owned()))
    }
}

/// Applies `edit` for `user` to the file's text, keeping every other line as it was.
pub(crate) fn edit(text: &str, user: &str, edit: Edit<'_>) -> Result<String, EditError> {
    check_user(user)?;
    let lines: Vec<&str> = text.lines().collect();
    let is_user = |raw: &str| matches!(split_line(raw), Some(Ok((u, _))) if u == user);
    let found = lines.iter().position(|l| is_user(l));
    let new_line = |hash: &str| format!("{user}:{hash}");
    let mut out: Vec<String> = match (edit, found) {
        (Edit::Add { .. }, Some(_)) => return Err(EditError::Exists(user.to_owned())),
        (Edit::Set { .. } | Edit::Remove, None) => {
            return Err(EditError::Missing(user.to_owned()));
        }
        (Edit::Add { hash }, None) => {
            let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            out.push(new_line(hash));
            out
        }
        (Edit::Set { hash }, Some(at)) => lines
            .iter()
            .enumerate()
            // Later duplicates of the user would be skipped on reading: drop them.
            .filter(|(i, l)| *i == at || !is_user(l))
            .map(|(i, l)| {
                if i == at {
                    new_line(hash)
                } else {
                    (*l).to_owned()
                }
            })
            .collect(),
        (Edit::Remove, Some(_)) => lines
            .iter()
            .filter(|l| !is_user(l))
            .map(|l| (*l).to_owned())
            .collect(),
    };
    if out.is_empty() {
        return Ok(String::new());
    }
    out.push(String::new());
    Ok(out.join("\n"))
}

/// Replaces `path` with `text` in one rename (a reader sees the old file or the new one, never
/// half of one), keeping the old file's permissions, or `0600` for a new file.
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let permissions = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::Permissions::from_mode(0o600)
        }
        Err(e) => return Err(e),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tandem-passwd-")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().set_permissions(permissions)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGON2ID: &str =
        "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";

    #[test]
    fn bad_lines_are_reported_with_their_numbers() {
        let text = format!(
            "# users\n\nalice:{ARGON2ID}\nno colon here\n:{ARGON2ID}\nalice:{ARGON2ID}\n  bob : {ARGON2ID}  \ncarol:plaintext\ndave:\n"
        );
        let parsed = parse(&text);
        let problems: Vec<String> = parsed.problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("line 4: no ':'"), "{}", problems[0]);
        assert!(
            problems[1].starts_with("line 5: empty user name"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2]
                .starts_with("line 6: user \"alice\": duplicate user (first defined on line 3)"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].starts_with("line 8: user \"carol\": unknown hash format"),
            "{}",
            problems[3]
        );
        assert!(problems[4].starts_with("line 9: user \"dave\": unknown hash format"));
        assert!(matches!(parsed.users.get("alice"), Some(Ok(_))));
        assert!(
            matches!(parsed.users.get("bob"), Some(Ok(_))),
            "trimmed like aMQTT"
        );
        assert!(matches!(
            parsed.users.get("carol"),
            Some(Err(HashError::UnknownFormat))
        ));
        assert!(parsed.users.get("nobody").is_none());
        assert_eq!(parsed.users.usable(), 2);
    }

    #[test]
    fn windows_line_endings_and_no_final_newline() {
        let parsed = parse(&format!("# c\r\nalice:{ARGON2ID}\r\nbob:{ARGON2ID}"));
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert_eq!(parsed.users.usable(), 2);
    }

    #[test]
    fn edits_keep_other_lines() {
        let text = "# head\nalice:A\n\n# bob's\nbob:B\nalice:dup\n";
        assert_eq!(
            edit(text, "carol", Edit::Add { hash: "C" }).unwrap(),
            "# head\nalice:A\n\n# bob's\nbob:B\nalice:dup\ncarol:C\n"
        );
        assert_eq!(
            edit(text, "alice", Edit::Set { hash: "N" }).unwrap(),
            "# head\nalice:N\n\n# bob's\nbob:B\n"
        );
        assert_eq!(
            edit(text, "alice", Edit::Remove).unwrap(),
            "# head\n\n# bob's\nbob:B\n"
        );
        assert_eq!(
            edit(text, "bob", Edit::Add { hash: "x" }),
            Err(EditError::Exists("bob".into()))
        );
        assert_eq!(
            edit(text, "zed", Edit::Set { hash: "x" }),
            Err(EditError::Missing("zed".into()))
        );
        assert_eq!(
            edit(text, "zed", Edit::Remove),
            Err(EditError::Missing("zed".into()))
        );
        assert_eq!(edit("", "a", Edit::Add { hash: "h" }).unwrap(), "a:h\n");
        assert_eq!(edit("a:h\n", "a", Edit::Remove).unwrap(), "");
        for bad in ["", " a", "a:b", "#a", "a\nb"] {
            assert!(matches!(
                edit(text, bad, Edit::Remove),
                Err(EditError::InvalidUser(_))
            ));
        }
    }

    #[test]
    fn atomic_write_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        write_atomically(&path, "a:b\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, "c:d\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c:d\n");
        assert_eq!(mode(&path), 0o640);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }
}
