//! The service manager's notification protocol (sd_notify(3)), in the few lines it takes: one
//! datagram of `KEY=value` lines to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for
//! an abstract socket). Without that variable every call does nothing, so the binary behaves
//! the same outside systemd. No libsystemd.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go; `None` outside a service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, Target)>,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(std::os::unix::net::SocketAddr),
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; unset or empty: a notifier that sends nothing.
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(value) if !value.is_empty() => Self::to(&value.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
        .map(|target| Self { target })
    }

    /// A notifier for this socket address (`/path` or `@abstract-name`).
    fn to(address: &str) -> io::Result<(UnixDatagram, Target)> {
        let target = match address.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                Target::Abstract(addr)
            }
            None => Target::Path(address.into()),
        };
        Ok((UnixDatagram::unbound()?, target))
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification (`READY=1`, `STATUS=...`, several lines at once). A failure is
    /// logged, never fatal: the service manager's absence must not stop the gateway.
    pub fn send(&self, state: &str) {
        let Some((socket, target)) = &self.target else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(addr) => socket.send_to_addr(state.as_bytes(), addr),
        };
        if let Err(e) = sent {
            tracing::warn!("cannot notify the service manager: {e}");
        }
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` newer systemd versions ask for.
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when the watchdog is on and meant
/// for this process (`WATCHDOG_PID`, when set, must be ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => {
            let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(t.tv_nsec()).unwrap_or(0);
            secs * 1_000_000 + nanos / 1_000
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_is_one_datagram_to_the_socket_path() {
        let dir = std::env::temp_dir().join(format!("wsgate-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            target: Some(Notifier::to(path.to_str().unwrap()).unwrap()),
        };
        notifier.send("READY=1\nSTATUS=up");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
        notifier.reloading();
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        let usec: u64 = text.rsplit('=').next().unwrap().parse().unwrap();
        assert!(usec > 0);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn abstract_sockets_are_reached_by_their_at_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wsgate-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier {
            target: Some(Notifier::to(&format!("@{name}")).unwrap()),
        };
        notifier.send("WATCHDOG=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier { target: None };
        assert!(!notifier.enabled());
        notifier.send("READY=1");
    }
}
