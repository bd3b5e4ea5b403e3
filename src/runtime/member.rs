//! One connection as its core's fan-out sees it (`Member`): its outbox, its close request, its
//! wake-up, the counters of its last log line and the keys revocations find it by; and the
//! core's registry of members by key. The flush that sends an outbox with one `sendmsg` per
//! batch of slices is here; what is queued and when is decided by the pure `hub::fanout`.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::sys::{self, Transfer};
use crate::hub::fanout::Recipient;
use crate::hub::outbox::{Outbox, Overflow};
use crate::proto::close::CloseCode;
use crate::session;

/// Slices handed to one `sendmsg` (well under IOV_MAX).
const IOV_BATCH: usize = 64;

/// What the fan-out needs to know about one connection.
pub(crate) struct Member {
    pub(crate) fd: RawFd,
    /// Frames and replies the socket has not taken yet, in order.
    pub(crate) outbox: RefCell<Outbox>,
    /// Set when the connection must close (a slow consumer): the connection task sends it.
    pub(crate) closing: Cell<Option<CloseCode>>,
    /// Queued in the worker's dirty list, waiting for the next flush.
    pub(crate) dirty: Cell<bool>,
    /// Something for the connection task to look at (closing, or output left after a flush).
    notified: Cell<bool>,
    waker: Cell<Option<Waker>>,
    /// Bytes read from and written to the socket, for the connection's last log line.
    pub(crate) bytes_in: Cell<u64>,
    pub(crate) bytes_out: Cell<u64>,
    /// Fingerprints of the authenticated user and token jti (0: none), which revocations match.
    pub(crate) user_key: Cell<u64>,
    pub(crate) jti_key: Cell<u64>,
    /// Inbound message rate (`--max-messages-per-sec`, `--burst`); here rather than in the
    /// connection task, whose size is watched (this allocation's size class has room).
    pub(crate) bucket: Cell<crate::limits::TokenBucket>,
    /// The client address's place in the per-address count, while the connection lives.
    pub(crate) ip_slot: Cell<Option<Box<crate::limits::IpSlot>>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("fd", &self.fd)
            .field("closing", &self.closing.get())
            .finish()
    }
}

impl Member {
    pub(crate) fn new(fd: RawFd) -> Self {
        Self {
            fd,
            outbox: RefCell::new(Outbox::new()),
            closing: Cell::new(None),
            dirty: Cell::new(false),
            notified: Cell::new(false),
            waker: Cell::new(None),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            user_key: Cell::new(0),
            jti_key: Cell::new(0),
            bucket: Cell::new(crate::limits::TokenBucket::new(1, 0)),
            ip_slot: Cell::new(None),
        }
    }

    /// Closes the connection with the 401 `authentication` message and 4401 (a revocation, or
    /// an expiry noticed elsewhere); a close already decided stays. Returns whether it was open.
    pub(crate) fn revoke(&self, detail: &str) -> bool {
        if self.closing.get().is_some() {
            return false;
        }
        let mut message = Vec::with_capacity(160);
        session::write_auth_failure(401, detail, &mut message);
        // Unbounded on purpose, like a Close: one short message ahead of the end.
        let _ = self.outbox.borrow_mut().push_copy(&message, usize::MAX);
        self.closing.set(Some(CloseCode::TOKEN_INVALID));
        self.notify();
        true
    }

    /// Asks the connection to close with 1001 after what is queued (shutdown); a close already
    /// decided stays.
    pub(crate) fn go_away(&self) {
        if self.closing.get().is_none() {
            self.closing.set(Some(CloseCode::GOING_AWAY));
        }
        self.notify();
    }

    /// Wakes the connection task.
    pub(crate) fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Resolves when the fan-out asked the connection task to look at this member.
    pub(crate) async fn notified(&self) {
        std::future::poll_fn(|cx| {
            if self.notified.replace(false) {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }

    /// Sends as much of the outbox as the socket takes now, one `sendmsg` per `IOV_BATCH`
    /// slices; returns the bytes sent. An error means the peer is gone.
    pub(crate) fn flush(&self) -> std::io::Result<usize> {
        self.flush_with(false)
    }

    /// [`Self::flush`]; with `more`, the last segment is held back (`MSG_MORE`) for a FIN that
    /// follows at once, so a Close frame and the FIN leave as one segment.
    pub(crate) fn flush_with(&self, more: bool) -> std::io::Result<usize> {
        let mut total = 0;
        let mut outbox = self.outbox.borrow_mut();
        while !outbox.is_empty() {
            let mut iov = [IoSlice::new(&[]); IOV_BATCH];
            let count = outbox.io_slices(&mut iov);
            let wanted: usize = iov[..count].iter().map(|s| s.len()).sum();
            match sys::send_vectored(self.fd, &iov[..count], more)? {
                Transfer::Done(n) => {
                    outbox.advance(n);
                    total += n;
                    if n < wanted {
                        break;
                    }
                }
                Transfer::WouldBlock => break,
            }
        }
        if outbox.is_empty() {
            outbox.shrink();
        }
        self.bytes_out.set(self.bytes_out.get() + total as u64);
        Ok(total)
    }
}

/// The worker's members, by key (the key is the slot index; a slot is reused only after its
/// member left every group).
#[derive(Debug, Default)]
pub(crate) struct Members {
    slots: Vec<Option<Rc<Member>>>,
    free: Vec<usize>,
}

impl Members {
    pub(crate) fn insert(&mut self, member: Rc<Member>) -> u64 {
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(member);
                index
            }
            None => {
                self.slots.push(Some(member));
                self.slots.len() - 1
            }
        };
        index as u64
    }

    pub(crate) fn remove(&mut self, key: u64) {
        let index = key as usize;
        if let Some(slot) = self.slots.get_mut(index)
            && slot.take().is_some()
        {
            self.free.push(index);
        }
    }

    /// Every member of this core.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Rc<Member>> {
        self.slots.iter().flatten()
    }

    pub(crate) fn get(&self, key: u64) -> Option<&Rc<Member>> {
        self.slots.get(key as usize).and_then(Option::as_ref)
    }
}

impl Recipient for Member {
    fn is_closing(&self) -> bool {
        self.closing.get().is_some()
    }

    fn push(&self, frame: &Bytes, budget: usize) -> Result<(), Overflow> {
        self.outbox.borrow_mut().push(frame, budget)
    }

    fn mark_dirty(&self) -> bool {
        !self.dirty.replace(true)
    }

    fn close_slow(&self) {
        // docs/protocol.md §4: a member that cannot keep up is disconnected, never skipped.
        self.closing.set(Some(CloseCode::POLICY));
        self.notify();
    }
}
