//! The ACL in force and how an ACL file is read: shared by the configuration (which loads
//! the file at `Describe`) and the watcher (which loads it again when it changes).

use std::sync::{Arc, RwLock};

use tandem_plugin::tracing::warn;

use crate::acl::{Acl, AclSpec};

/// The ACL in force. The watcher holds it weakly and stops when the configuration is dropped.
#[derive(Debug)]
pub(crate) struct LiveAcl {
    current: RwLock<Arc<Acl>>,
}

impl LiveAcl {
    pub(crate) fn new(acl: Acl) -> Self {
        LiveAcl {
            current: RwLock::new(Arc::new(acl)),
        }
    }

    /// The ACL to decide with (a cheap clone; the lock is never held across anything else).
    pub(crate) fn current(&self) -> Arc<Acl> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn replace(&self, acl: Acl) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(acl);
    }
}

/// Checks the contents of an ACL file; the error names the file and what is wrong where.
pub(crate) fn load_file(path: &std::path::Path, bytes: &[u8]) -> Result<Acl, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|err| format!("ACL file {}: not UTF-8: {err}", path.display()))?;
    let spec = AclSpec::from_yaml(path, text)?;
    if spec.is_empty() {
        return Err(format!(
            "ACL file {}: no rules (expected subscribe-acl, publish-acl, receive-acl or a -deny section)",
            path.display()
        ));
    }
    if spec.acl.is_some() {
        warn!(file = %path.display(), "`acl` is deprecated (as in aMQTT); use `subscribe-acl`");
    }
    Acl::try_from(spec).map_err(|err| format!("ACL file {}: {err}", path.display()))
}
