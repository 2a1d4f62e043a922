//! The rules in force: loaded at `Describe`, replaced by the watcher when the file changes.

use std::path::Path;
use std::sync::{Arc, RwLock};

use crate::rules::Rules;

/// The rules in force. The watcher holds it weakly and stops once the configuration holding it
/// is dropped (a later `Describe` replaced it).
#[derive(Debug)]
pub(crate) struct LiveRules {
    current: RwLock<Arc<Rules>>,
}

impl LiveRules {
    pub(crate) fn new(rules: Rules) -> Self {
        LiveRules {
            current: RwLock::new(Arc::new(rules)),
        }
    }

    /// The rules to decide with (a cheap clone; the lock is held for nothing else).
    pub(crate) fn current(&self) -> Arc<Rules> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn replace(&self, rules: Rules) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }
}

/// Reads and checks the rules file at `path`: the text read (for the watcher to compare) and
/// the rules, or an error naming the file.
pub(crate) fn read_file(path: &Path) -> Result<(Vec<u8>, Rules), String> {
    let bytes = std::fs::read(path)
        .map_err(|err| format!("rules file {}: cannot read it: {err}", path.display()))?;
    let rules = Rules::from_bytes(path, &bytes)?;
    Ok((bytes, rules))
}
