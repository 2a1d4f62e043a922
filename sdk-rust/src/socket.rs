//! The unix socket file of a listener: created so that only this user can connect, in a
//! directory only this user can write when the SDK makes it, replacing the stale socket a
//! killed run left behind, and never replacing anything else.

use std::path::Path;

use tokio::net::UnixListener;

use crate::error::Error;

/// Binds a unix socket that only this user may connect to (mode 0600): bound under a temporary
/// name beside `path`, restricted, then renamed into place, so nobody can connect before the mode
/// is set.
pub(crate) fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the socket path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// Makes `path` ready to bind: its directory exists, and no stale socket file is in the way.
pub(crate) fn prepare_socket_path(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt as _;
    let fail = |reason: String| Error::SocketPath {
        path: path.to_owned(),
        reason,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // A directory made here is this user's alone (0700).
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| fail(format!("cannot create its directory: {e}")))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            // A socket file nobody listens on any more (the previous run was killed).
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))
        }
        Ok(_) => Err(fail("a file that is not a socket is in the way".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(fail(e.to_string())),
    }
}
