//! Non-blocking socket calls on a connection's fd, made after the runtime reported readiness.
//! nix takes the fd by number; the invariant that makes that sound is that every call here is
//! made while the connection's monoio `TcpStream` (which owns and later closes the fd) is alive.

use std::io;
use std::os::fd::RawFd;

use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, Shutdown};

/// Outcome of one non-blocking transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// This many bytes moved (0 on a receive means the peer closed).
    Done(usize),
    /// Nothing to do now; wait for readiness.
    WouldBlock,
}

/// `recv(MSG_DONTWAIT)` into `buf`.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Transfer> {
    loop {
        return match socket::recv(fd, buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Transfer::Done(n)),
            Err(Errno::EAGAIN) => Ok(Transfer::WouldBlock),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// `send(MSG_DONTWAIT | MSG_NOSIGNAL)` of `buf`; a closed peer is an error, never SIGPIPE.
pub(crate) fn send(fd: RawFd, buf: &[u8]) -> io::Result<Transfer> {
    loop {
        return match socket::send(fd, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => Ok(Transfer::Done(n)),
            Err(Errno::EAGAIN) => Ok(Transfer::WouldBlock),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}

/// Half-closes the sending side: the peer sees FIN after everything already sent.
pub(crate) fn shutdown_write(fd: RawFd) {
    // ENOTCONN after a reset is fine: the connection is ending either way.
    let _ = socket::shutdown(fd, Shutdown::Write);
}

/// `sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL)` of several slices in one call (a writev with flags);
/// `more` adds `MSG_MORE`: the kernel may hold a short last segment for what follows.
pub(crate) fn send_vectored(
    fd: RawFd,
    iov: &[std::io::IoSlice<'_>],
    more: bool,
) -> io::Result<Transfer> {
    let mut flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    if more {
        flags |= MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
    }
    loop {
        return match socket::sendmsg::<socket::SockaddrStorage>(fd, iov, &[], flags, None) {
            Ok(n) => Ok(Transfer::Done(n)),
            Err(Errno::EAGAIN) => Ok(Transfer::WouldBlock),
            Err(Errno::EINTR) => continue,
            Err(e) => Err(e.into()),
        };
    }
}
