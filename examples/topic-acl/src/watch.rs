//! Reloads the ACL file when it changes, without a restart.
//!
//! The watcher watches the file's parent directory, not the file: editors replace a file by
//! writing a new one and renaming it over the old, and a Kubernetes ConfigMap volume swaps a
//! `..data` symlink, and neither is seen by a watch on the old file's inode. Any change in the
//! directory, after a short quiet period (changes come in bursts), rereads the file and reloads it
//! if its contents changed. If the directory cannot be watched, the file's modification time and
//! size are polled instead. A file that cannot be read or does not parse is logged and the last
//! good ACL stays in force.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tandem_plugin::tracing::{info, warn};

use crate::live::{LiveAcl, load_file};

/// How long the directory must be quiet before the file is reread.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a burst of changes may postpone a reload.
const MAX_DEBOUNCE_ROUNDS: usize = 20;
/// How often the file is polled when the directory cannot be watched.
const POLL: Duration = Duration::from_secs(1);
/// How often the thread checks, while idle, that its configuration is still in use.
const ALIVE: Duration = Duration::from_secs(2);

/// Starts watching `path`, whose current contents `loaded` are in force in `live`. The watch is
/// in place when this returns (a change right after `Describe` is not missed); the thread ends
/// once `live` is dropped (a new `Describe` replaced the configuration).
pub(crate) fn spawn(path: PathBuf, loaded: Vec<u8>, live: Weak<LiveAcl>) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |event| {
        let _ = tx.send(event);
    })
    .and_then(|mut watcher| {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let watcher = match watcher {
        Ok(watcher) => {
            info!(file = %path.display(), dir = %dir.display(), "watching the ACL file for changes");
            Some(watcher)
        }
        Err(err) => {
            warn!(file = %path.display(), cause = %err, every = ?POLL, "cannot watch the ACL file's directory; polling it");
            None
        }
    };
    let spawned = std::thread::Builder::new()
        .name("acl-watch".into())
        .spawn(move || run(&path, loaded, &live, watcher, &rx));
    if let Err(err) = spawned {
        warn!(cause = %err, "cannot start the ACL watcher; the ACL file will not be reloaded");
    }
}

/// What polling compares: modification time and size.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The watcher's loop. `watcher` is kept alive here (dropping it ends the watch); `None` polls.
fn run(
    path: &Path,
    mut last: Vec<u8>,
    live: &Weak<LiveAcl>,
    mut watcher: Option<notify::RecommendedWatcher>,
    rx: &mpsc::Receiver<notify::Result<notify::Event>>,
) {
    let mut polled = stamp(path);
    // A change between the first read and the watch being set up.
    if let Some(live) = live.upgrade() {
        reload(path, &mut last, &live);
    }
    loop {
        let woken = match watcher {
            Some(_) => Some(rx.recv_timeout(ALIVE)),
            None => {
                std::thread::sleep(POLL);
                None
            }
        };
        let Some(live) = live.upgrade() else {
            return;
        };
        match woken {
            None => {
                let now = stamp(path);
                if now != polled {
                    polled = now;
                    reload(path, &mut last, &live);
                }
            }
            // Reads (ours included) change nothing.
            Some(Ok(Ok(event))) if matches!(event.kind, EventKind::Access(_)) => {}
            Some(Ok(Ok(_))) => {
                let mut rounds = 0;
                while rx.recv_timeout(DEBOUNCE).is_ok() && rounds < MAX_DEBOUNCE_ROUNDS {
                    rounds += 1;
                }
                reload(path, &mut last, &live);
            }
            Some(Ok(Err(err))) => {
                warn!(file = %path.display(), cause = %err, "ACL watcher error");
            }
            Some(Err(RecvTimeoutError::Timeout)) => {}
            Some(Err(RecvTimeoutError::Disconnected)) => {
                warn!(file = %path.display(), every = ?POLL, "the ACL watcher stopped; polling the file");
                watcher = None;
                polled = stamp(path);
            }
        }
    }
}

/// Rereads the file and, if its contents changed, loads it; a bad file keeps the last good ACL.
fn reload(path: &Path, last: &mut Vec<u8>, live: &LiveAcl) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            warn!(file = %path.display(), cause = %err, "cannot read the ACL file; keeping the last good ACL");
            return;
        }
    };
    if bytes == *last {
        return;
    }
    match load_file(path, &bytes) {
        Ok(acl) => {
            info!(file = %path.display(), summary = %acl.summary(), "ACL reloaded");
            live.replace(acl);
        }
        Err(cause) => {
            warn!(file = %path.display(), %cause, "the ACL file is invalid; keeping the last good ACL");
        }
    }
    // Remembered even when invalid, so one bad version is reported once.
    *last = bytes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_plugin::{Action, Client};

    use crate::acl::Outcome;

    #[test]
    fn a_bad_or_missing_file_keeps_the_last_good_acl() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acl.yaml");
        let good = b"publish-acl: { alice: [a] }\n".to_vec();
        let live = LiveAcl::new(load_file(&path, &good).unwrap());
        let alice = Client::new("c").with_username("alice");
        let decide = || live.current().decide(Action::Publish, &alice, "a");
        let mut last = good.clone();

        std::fs::write(&path, "publish-acl: { alice: [\"a/#/b\"] }\n").unwrap();
        reload(&path, &mut last, &live);
        assert_eq!(decide(), Outcome::Allow, "an invalid file is not loaded");
        std::fs::write(&path, b"\xff\xfe").unwrap();
        reload(&path, &mut last, &live);
        assert_eq!(decide(), Outcome::Allow, "a non-UTF-8 file is not loaded");
        std::fs::remove_file(&path).unwrap();
        reload(&path, &mut last, &live);
        assert_eq!(
            decide(),
            Outcome::Allow,
            "a missing file is not an empty ACL"
        );

        std::fs::write(&path, "publish-acl: { alice: [b] }\n").unwrap();
        reload(&path, &mut last, &live);
        assert!(
            matches!(decide(), Outcome::Deny(_)),
            "a good file is loaded"
        );
    }
}
