//! Reloading the password file when it changes, without a restart.
//!
//! The parent directory is watched (not the file), so the ways files get replaced are all seen:
//! an editor's write-to-temp-and-rename, `tandem-auth-file passwd` (same), and Kubernetes
//! Secret and ConfigMap volumes, which swap a `..data` symlink in the directory. Events are
//! debounced, then the store reloads only when the file's identity (inode, size, times)
//! changed. The directory is also polled, every [`POLL`] while watching works and every
//! [`POLL_UNWATCHED`] when it does not (inotify exhausted, a filesystem without events).

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tandem_plugin::tracing::{debug, warn};

use crate::store::Store;

/// Quiet time after the last event before reloading (a burst of writes reloads once).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Safety-net polling while events work.
const POLL: Duration = Duration::from_secs(30);
/// Polling when the directory cannot be watched.
const POLL_UNWATCHED: Duration = Duration::from_secs(2);

/// Watches while alive; dropping it stops the watcher and its thread.
pub(crate) struct Watch {
    _watcher: Option<notify::RecommendedWatcher>,
    /// The thread ends when every sender (this one and the watcher's) is gone.
    _wake: mpsc::Sender<()>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watching", &self._watcher.is_some())
            .finish()
    }
}

/// Starts watching `store`'s file.
pub(crate) fn spawn(store: Arc<Store>) -> Watch {
    let (wake, events) = mpsc::channel::<()>();
    let dir = match store.path().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => ".".into(),
    };
    let sender = wake.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = sender.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let (watcher, poll) = match watcher {
        Ok(w) => (Some(w), POLL),
        Err(e) => {
            warn!(dir = %dir.display(), cause = %e, every = ?POLL_UNWATCHED, "cannot watch the password file's directory; polling instead");
            (None, POLL_UNWATCHED)
        }
    };
    let spawned = std::thread::Builder::new()
        .name("passwd-watch".into())
        .spawn(move || run(&store, &events, poll));
    if let Err(e) = spawned {
        warn!(cause = %e, "cannot start the password file watcher; the file will not be reloaded");
    }
    Watch {
        _watcher: watcher,
        _wake: wake,
    }
}

fn run(store: &Store, events: &mpsc::Receiver<()>, poll: Duration) {
    loop {
        match events.recv_timeout(poll) {
            Ok(()) => loop {
                match events.recv_timeout(DEBOUNCE) {
                    Ok(()) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        store.reload_if_changed();
    }
    debug!(file = %store.path().display(), "stopped watching the password file");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const ARGON2ID: &str =
        "$argon2id$v=19$m=4096,t=2,p=1$c29tZXNhbHQxMjM$vzC1eDZ06Bi1lvrbgG9QmK3jfd00j4DD0JXQ7wTD6rw";

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kubernetes' layout: `passwd -> ..data/passwd`, `..data -> ..v1`, updated by pointing a
    /// new `..data` link at `..v2` and renaming it over the old one.
    #[test]
    fn sees_a_kubernetes_style_symlink_swap() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/passwd"), format!("alice:{ARGON2ID}\n")).unwrap();
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/passwd", d.join("passwd")).unwrap();
        let store = Arc::new(Store::open(&d.join("passwd")).unwrap());
        let _watch = spawn(Arc::clone(&store));

        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/passwd"), format!("bob:{ARGON2ID}\n")).unwrap();
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        wait_until("bob after the swap", || {
            store.current().users.get("bob").is_some()
        });
        assert!(store.current().users.get("alice").is_none());
    }

    #[test]
    fn dropping_the_watch_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "").unwrap();
        let store = Arc::new(Store::open(&path).unwrap());
        let watch = spawn(Arc::clone(&store));
        drop(watch);
        // The thread held the other reference; it lets go once it has stopped.
        wait_until("the watcher thread to end", || {
            Arc::strong_count(&store) == 1
        });
    }
}
