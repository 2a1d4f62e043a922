//! The loaded password file and how it is (re)loaded: [`Store::open`] at `Describe`, which
//! fails when the file cannot be read, and [`Store::reload_if_changed`] from the watcher, which
//! keeps the last good set when it cannot.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tandem_plugin::tracing::{info, warn};

use crate::cache::VerifiedCache;
use crate::passwd::{self, Users};

/// One version of the file, with the cache of the passwords verified against it (so a reload
/// forgets them).
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) users: Users,
    pub(crate) cache: VerifiedCache,
}

/// What identifies one version of the file without reading it. Following symlinks, so an
/// atomic swap of Kubernetes' `..data` link or an editor's rename gives a new inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let m = std::fs::metadata(path)?;
    Ok(Fingerprint {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

#[derive(Debug, Default)]
struct ReloadState {
    /// The version loaded last; `None` forces the next check to read.
    loaded: Option<Fingerprint>,
    /// The last failure logged, so a file that stays unreadable is logged once, not per poll.
    last_error: Option<String>,
}

/// The password file of one configuration.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    /// A std lock held only to clone or swap the `Arc`.
    current: RwLock<Arc<Loaded>>,
    state: Mutex<ReloadState>,
}

impl Store {
    /// Reads the file; an unreadable file is an error (the caller fails `Describe`).
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let before = fingerprint(path).ok();
        let loaded = read(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        Ok(Store {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(loaded)),
            state: Mutex::new(ReloadState {
                loaded: before,
                last_error: None,
            }),
        })
    }

    /// The file being served.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The current version.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the file again when it changed; when it cannot be read, logs why and keeps the
    /// users loaded last.
    pub(crate) fn reload_if_changed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = match fingerprint(&self.path) {
            Ok(now) if state.loaded == Some(now) => return,
            Ok(now) => now,
            Err(e) => {
                self.failed(&mut state, e.to_string());
                return;
            }
        };
        match read(&self.path) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                state.loaded = Some(now);
                state.last_error = None;
            }
            Err(e) => self.failed(&mut state, e.to_string()),
        }
    }

    fn failed(&self, state: &mut ReloadState, cause: String) {
        if state.last_error.as_ref() != Some(&cause) {
            warn!(
                file = %self.path.display(),
                cause = %cause,
                "cannot reload the password file; keeping the users loaded last"
            );
            state.last_error = Some(cause);
        }
        // Read again at the next check even if the file comes back unchanged.
        state.loaded = None;
    }
}

/// Reads and parses the file, logging each skipped line and the counts.
fn read(path: &Path) -> std::io::Result<Loaded> {
    let text = std::fs::read_to_string(path)?;
    let parsed = passwd::parse(&text);
    for problem in &parsed.problems {
        warn!(
            location = %format!("{}:{}", path.display(), problem.line),
            user = problem.user.as_deref().unwrap_or(""),
            "password file: {}",
            problem.message
        );
    }
    info!(
        file = %path.display(),
        users = parsed.users.usable(),
        skipped = parsed.problems.len(),
        "password file loaded"
    );
    Ok(Loaded {
        users: parsed.users,
        cache: VerifiedCache::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARGON2ID: &str =
        "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";

    #[test]
    fn reload_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        assert!(
            Store::open(&path)
                .unwrap_err()
                .contains("cannot read the password file")
        );
        std::fs::write(&path, format!("alice:{ARGON2ID}\n")).unwrap();
        let store = Store::open(&path).unwrap();
        assert!(store.current().users.get("alice").is_some());

        crate::passwd::write_atomically(&path, &format!("bob:{ARGON2ID}\n")).unwrap();
        store.reload_if_changed();
        assert!(store.current().users.get("alice").is_none());
        assert!(store.current().users.get("bob").is_some());

        std::fs::remove_file(&path).unwrap();
        store.reload_if_changed();
        assert!(store.current().users.get("bob").is_some(), "kept");

        std::fs::write(&path, format!("carol:{ARGON2ID}\n")).unwrap();
        store.reload_if_changed();
        assert!(store.current().users.get("carol").is_some());
    }
}
