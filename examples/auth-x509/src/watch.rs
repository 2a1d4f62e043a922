//! Reloads the rules file when it changes, without a restart (the approach of `tandem-topic-acl`).
//!
//! The file's parent directory is watched, not the file: editors replace a file by renaming a
//! new one over it, and a Kubernetes ConfigMap or Secret volume swaps a `..data` symlink, and
//! neither is seen by a watch on the old inode. Any change in the directory, after a short quiet
//! period, rereads the file and loads it if its contents changed. If the directory cannot be
//! watched, the file's modification time and size are polled. A file that cannot be read or
//! checked is logged and the last good rules stay in force.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tandem_plugin::tracing::{info, warn};

use crate::live::LiveRules;
use crate::rules::Rules;

/// How long the directory must be quiet before the file is reread.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The longest a burst of changes may postpone a reload.
const MAX_DEBOUNCE_ROUNDS: usize = 20;
/// How often the file is polled when the directory cannot be watched.
const POLL: Duration = Duration::from_secs(1);
/// How often the thread checks, while idle, that its configuration is still in use.
const ALIVE: Duration = Duration::from_secs(2);

/// Starts watching `path`, whose contents `loaded` are in force in `live`. The watch is in
/// place when this returns; the thread ends once `live` is dropped.
pub(crate) fn spawn(path: PathBuf, loaded: Vec<u8>, live: Weak<LiveRules>) {
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
        Ok(watcher) => Some(watcher),
        Err(err) => {
            warn!(file = %path.display(), cause = %err, every = ?POLL, "cannot watch the rules file's directory; polling it");
            None
        }
    };
    let spawned = std::thread::Builder::new()
        .name("x509-rules-watch".into())
        .spawn(move || run(&path, loaded, &live, watcher, &rx));
    if let Err(err) = spawned {
        warn!(cause = %err, "cannot start the rules watcher; the rules file will not be reloaded");
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
    live: &Weak<LiveRules>,
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
                warn!(file = %path.display(), cause = %err, "rules watcher error");
            }
            Some(Err(RecvTimeoutError::Timeout)) => {}
            Some(Err(RecvTimeoutError::Disconnected)) => {
                warn!(file = %path.display(), every = ?POLL, "the rules watcher stopped; polling the file");
                watcher = None;
                polled = stamp(path);
            }
        }
    }
}

/// Rereads the file and, if its contents changed, loads it; a bad file keeps the last good rules.
pub(crate) fn reload(path: &Path, last: &mut Vec<u8>, live: &LiveRules) {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            warn!(file = %path.display(), cause = %err, "cannot read the rules file; keeping the last good rules");
            return;
        }
    };
    if bytes == *last {
        return;
    }
    match Rules::from_bytes(path, &bytes) {
        Ok(rules) => {
            info!(file = %path.display(), summary = %rules.summary(), "rules reloaded");
            live.replace(rules);
        }
        Err(cause) => {
            warn!(file = %path.display(), %cause, "the rules file is invalid; keeping the last good rules");
        }
    }
    // Remembered even when invalid, so one bad version is reported once.
    *last = bytes;
}
