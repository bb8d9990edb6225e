//! The unix-socket listener: the socket file, created by the server with
//! mode 0660 and a group its user belongs to, replaced when stale, and
//! removed at a clean exit.
//!
//! `bind(2)` creates the file with mode 0777 minus the umask, and anyone
//! who may write to it may connect between `bind` and a `chmod`. The
//! umask is per process (other threads may be creating files), so instead
//! the socket is bound inside a fresh directory of mode 0700 next to the
//! final path, given its mode and group there, and renamed into place:
//! until the rename nobody but the server's own user (and root) can reach
//! it, and the rename atomically replaces a stale socket. The check that
//! the old socket is stale and the rename are not one step: two servers
//! started at the same instant on the same path may both pass the check
//! (the last rename wins).

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::Gid;

/// Mode of the socket file: the user and the group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// The socket file of a listener; removed when dropped if it is still
/// ours (the same inode: a later server may have replaced it).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The gid named by `group` (a name from `/etc/group` or a number;
/// `None`: the server's primary group), checked to be one the server's
/// user belongs to (root may use any).
pub fn socket_gid(group: Option<&str>) -> Result<u32, String> {
    let gid = match group {
        None => return Ok(rustix::process::getegid().as_raw()),
        Some(g) if !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()) => g
            .parse::<u32>()
            .map_err(|_| format!("--socket-group {g}: not a gid"))?,
        Some(name) => group_by_name(name)?,
    };
    let member = rustix::process::geteuid().is_root()
        || rustix::process::getegid().as_raw() == gid
        || rustix::process::getgroups()
            .map_err(|e| format!("cannot read the server's groups: {e}"))?
            .contains(&Gid::from_raw(gid));
    if !member {
        return Err(format!(
            "--socket-group {}: the server's user (uid {}) is not in group {gid}; \
             add it to the group or choose another group",
            group.unwrap_or_default(),
            rustix::process::geteuid().as_raw()
        ));
    }
    Ok(gid)
}

/// Looks a group name up in `/etc/group` (groups only known to NSS
/// services such as LDAP must be given by number).
fn group_by_name(name: &str) -> Result<u32, String> {
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("--socket-group {name}: cannot read /etc/group: {e}"))?;
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            format!("--socket-group {name}: no such group in /etc/group (give a gid instead)")
        })
}

/// Whether the file at `path` may be replaced: nothing there, or a socket
/// nobody listens on. A live socket or another kind of file refuses.
fn check_existing(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot inspect {}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket: refusing to replace it (remove it or choose another path)",
            path.display()
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "another server is listening on {}: refusing to take its socket",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            Ok(())
        }
        Err(e) => Err(format!(
            "cannot tell whether {} is in use: {e}",
            path.display()
        )),
    }
}

/// Creates the socket at `path` with [`SOCKET_MODE`] and group `gid`
/// (see the module doc).
pub fn bind(path: &Path, gid: u32) -> Result<(tokio::net::UnixListener, SocketFile), String> {
    check_existing(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(".modelhub-{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| format!("cannot create {}: {e}", private.display()))?;
    let made = (|| {
        let temp = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&temp)
            .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
        rustix::fs::chown(&temp, None, Some(Gid::from_raw(gid)))
            .map_err(|e| format!("cannot give {} group {gid}: {e}", path.display()))?;
        std::fs::rename(&temp, path)
            .map_err(|e| format!("cannot move the socket to {}: {e}", path.display()))?;
        Ok::<_, String>(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    let listener = made?;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot use {}: {e}", path.display()))?;
    let listener = tokio::net::UnixListener::from_std(listener)
        .map_err(|e| format!("cannot use {}: {e}", path.display()))?;
    Ok((listener, file))
}
