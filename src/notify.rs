//! Readiness notification to a service manager: systemd's `Type=notify`
//! protocol (`sd_notify(3)`), written by hand. The manager names a unix
//! datagram socket in `NOTIFY_SOCKET` (a path, or an abstract name
//! written with a leading `@`); the server sends `READY=1` once it serves
//! and `STOPPING=1` when it begins to stop, each with a `STATUS=` line. A
//! notification that cannot be sent is a warning, never an error: the
//! server works the same without a manager.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The service manager's notification socket.
#[derive(Debug, Clone)]
pub struct NotifySocket {
    addr: SocketAddr,
    /// As given in `NOTIFY_SOCKET`, for the log.
    name: String,
}

impl NotifySocket {
    /// The socket named by `value` (`/path` or `@abstract-name`), or why
    /// it cannot be used.
    pub fn parse(value: &OsStr) -> Result<NotifySocket, String> {
        let name = value.to_string_lossy().into_owned();
        let bytes = value.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(value),
            #[cfg(target_os = "linux")]
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(&bytes[1..])
            }
            _ => {
                return Err(format!(
                    "{NOTIFY_SOCKET}={name:?} is neither an absolute path nor @abstract-name"
                ));
            }
        };
        let addr = addr.map_err(|e| format!("{NOTIFY_SOCKET}={name:?}: {e}"))?;
        Ok(NotifySocket { addr, name })
    }

    /// The socket of `NOTIFY_SOCKET`, if set (an unusable value is logged
    /// as a warning and ignored).
    ///
    /// The variable stays in the environment: removing it needs `unsafe`
    /// (`std::env::remove_var`), which this crate forbids, and the server
    /// starts no child process that could inherit it.
    pub fn from_env() -> Option<NotifySocket> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        match NotifySocket::parse(&value) {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!(error = %e, "not notifying the service manager");
                None
            }
        }
    }

    /// Sends `message` (newline-separated `KEY=VALUE` lines) in one
    /// datagram; a failure is logged as a warning. Never blocks: a
    /// manager whose queue is full misses the message.
    pub fn notify(&self, message: &str) {
        if let Err(e) = self.send(message) {
            tracing::warn!(
                socket = %self.name,
                message,
                error = %e,
                "cannot notify the service manager"
            );
        }
    }

    fn send(&self, message: &str) -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        let sent = socket.send_to_addr(message.as_bytes(), &self.addr)?;
        if sent != message.len() {
            return Err(std::io::Error::other(format!(
                "sent {sent} of {} bytes",
                message.len()
            )));
        }
        Ok(())
    }
}

/// `READY=1` with a `STATUS=` line naming the listeners.
pub fn ready_message(addresses: &[String]) -> String {
    format!("READY=1\nSTATUS=listening on {}\n", addresses.join(", "))
}

/// `STOPPING=1` with a `STATUS=` line saying why.
pub fn stopping_message(why: &str) -> String {
    format!("STOPPING=1\nSTATUS=stopping: {why}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn paths_and_abstract_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        NotifySocket::parse(path.as_os_str())
            .unwrap()
            .send("READY=1\n")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("modelhub-notify-test-{}", std::process::id());
        let receiver =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        NotifySocket::parse(OsStr::new(&format!("@{name}")))
            .unwrap()
            .send("STOPPING=1\n")
            .unwrap();
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn other_values_are_refused() {
        for value in ["", "relative/path", "vsock:2:1234"] {
            assert!(NotifySocket::parse(OsStr::new(value)).is_err(), "{value}");
        }
    }

    #[test]
    fn messages_name_the_listeners() {
        let ready = ready_message(&["http://127.0.0.1:8080".into(), "unix:/run/m.sock".into()]);
        assert!(
            ready.starts_with(
                "READY=1\nSTATUS=listening on http://127.0.0.1:8080, unix:/run/m.sock\n"
            )
        );
        assert_eq!(
            stopping_message("shutdown requested"),
            "STOPPING=1\nSTATUS=stopping: shutdown requested\n"
        );
    }
}
