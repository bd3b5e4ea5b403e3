//! Group delivery on one core: members and their outboxes, the `Groups` operations a session
//! calls, local fan-out of a frame encoded once, the per-core inbox task that fans out what other
//! cores publish, and the flush that sends each dirty member's queue with one `sendmsg` per batch.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::Service;
use super::conn::Worker;
use super::sys::{self, Transfer};
use crate::envelope::{self, RawJson};
use crate::hub::HubMsg;
use crate::hub::outbox::Outbox;
use crate::hub::table::Join;
use crate::proto::close::CloseCode;
use crate::proto::frame;
use crate::session::Groups;

/// Slices handed to one `sendmsg` (well under IOV_MAX).
const IOV_BATCH: usize = 64;
/// Inbox messages fanned out before the dirty members are flushed.
const INBOX_BATCH: usize = 256;

/// What the fan-out needs to know about one connection.
pub(crate) struct Member {
    pub(crate) fd: RawFd,
    /// Frames and replies the socket has not taken yet, in order.
    pub(crate) outbox: RefCell<Outbox>,
    /// Set when the connection must close (a slow consumer): the connection task sends it.
    pub(crate) closing: Cell<Option<CloseCode>>,
    /// Queued in the worker's dirty list, waiting for the next flush.
    dirty: Cell<bool>,
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
        frame::write_text_with(&mut message, |o| {
            envelope::write_auth_failure(o, 401, detail);
        });
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
    fn notify(&self) {
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

    fn get(&self, key: u64) -> Option<&Rc<Member>> {
        self.slots.get(key as usize).and_then(Option::as_ref)
    }
}

impl<S: Service> Worker<S> {
    /// Queues `frame` to every local member of `group` (encoded once; see `Outbox::push` for
    /// when a member's queue copies it and when it shares it).
    pub(crate) fn fan_out(&self, group: &str, frame: &Bytes) {
        let budget = self.settings().limits.max_outbound_bytes;
        let table = self.table.borrow();
        let members = self.members.borrow();
        let mut dirty = self.dirty.borrow_mut();
        let mut delivered = 0u64;
        for &key in table.members(group) {
            let Some(member) = members.get(key) else {
                continue;
            };
            if member.closing.get().is_some() {
                continue;
            }
            let pushed = member.outbox.borrow_mut().push(frame, budget);
            match pushed {
                Ok(()) => {
                    delivered += 1;
                    if !member.dirty.replace(true) {
                        dirty.push(key);
                    }
                }
                Err(_) => {
                    // PROTOCOL §4: a member that cannot keep up is disconnected, never skipped.
                    member.closing.set(Some(CloseCode::POLICY));
                    member.notify();
                    self.stats.slow_consumer_closes.fetch_add(1, RELAXED);
                }
            }
        }
        self.stats.fanout_deliveries.fetch_add(delivered, RELAXED);
        self.stats.messages_out.fetch_add(delivered, RELAXED);
    }

    /// Sends each dirty member's queue; members with output left wait for writability.
    pub(crate) fn flush_dirty(&self) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let members = self.members.borrow();
        for key in &dirty {
            let Some(member) = members.get(*key) else {
                continue;
            };
            member.dirty.set(false);
            match member.flush() {
                Ok(sent) => {
                    self.stats.bytes_out.fetch_add(sent as u64, RELAXED);
                }
                // The peer is gone: its own task finds out on its next read.
                Err(_) => member.notify(),
            }
            if member.closing.get().is_some() || !member.outbox.borrow().is_empty() {
                member.notify();
            }
        }
        let mut slot = self.dirty.borrow_mut();
        if slot.is_empty() {
            // Keep the list's storage for the next batch.
            *slot = dirty;
            slot.clear();
        }
    }

    /// Publishes `{"action":"message",...}` to `group` on every core: encoded once, delivered
    /// locally here, and one message to each other core with members.
    pub(crate) fn publish<'d>(&self, group: &str, data: impl Into<RawJson<'d>>) {
        let data = data.into();
        let targets = self.hub.targets(group);
        if !targets.local && targets.group.is_none() {
            return;
        }
        let mut encoded = Vec::with_capacity(group.len() + data.get().len() + 48);
        frame::write_text_with(&mut encoded, |o| envelope::write_message(o, group, data));
        let frame = Bytes::from(encoded);
        if targets.local {
            self.fan_out(group, &frame);
        }
        if let Some(key) = &targets.group {
            let lost = self.hub.send_remote(key, &frame);
            if lost > 0 {
                self.stats.cross_core_lost.fetch_add(lost, RELAXED);
            }
        }
    }

    /// Runs forever: fans out what other cores publish, a batch at a time.
    pub(crate) async fn drain_inbox(&self) {
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        loop {
            std::future::poll_fn(|cx| self.hub.poll_inbox(cx, &mut batch, INBOX_BATCH)).await;
            self.stats
                .cross_core_queue_depth
                .store(self.hub.hub().queue_depth(self.shared.id) as u64, RELAXED);
            for msg in batch.drain(..) {
                match msg {
                    HubMsg::Publish { group, frame } => self.fan_out(group.name(), &frame),
                    HubMsg::Lost { group } => self.lost(group.name()),
                }
            }
            self.flush_dirty();
        }
    }

    /// Messages to `group` never reached this core (its queue was full): its members here are
    /// closed with 1008, as slow consumers are, so none goes on with a silent gap.
    fn lost(&self, group: &str) {
        let table = self.table.borrow();
        let members = self.members.borrow();
        let mut closed = 0u64;
        for &key in table.members(group) {
            if let Some(member) = members.get(key)
                && member.closing.get().is_none()
            {
                member.closing.set(Some(CloseCode::POLICY));
                member.notify();
                closed += 1;
            }
        }
        self.stats.slow_consumer_closes.fetch_add(closed, RELAXED);
        let lost = self.hub.hub().lost_messages(self.shared.id);
        tracing::warn!(
            worker = self.shared.id,
            group,
            closed,
            lost_in_all = lost,
            "this core's queue was full: messages to the group were lost here; its members on this core were closed 1008"
        );
    }

    /// Closes this core's connections matching a revocation; returns how many.
    pub(crate) fn revoke(&self, job: &super::control::Revoke) -> usize {
        let members: Vec<Rc<Member>> = self
            .members
            .borrow()
            .iter()
            .filter(|m| {
                let key = if job.by_user { &m.user_key } else { &m.jti_key };
                key.get() == job.key
            })
            .cloned()
            .collect();
        let closed = members.iter().filter(|m| m.revoke("token revoked")).count();
        self.stats.revoked_closes.fetch_add(closed as u64, RELAXED);
        closed
    }

    /// Removes a member from every group (and this core's interest in groups it emptied).
    pub(crate) fn leave_all(&self, key: u64) {
        let mut emptied = Vec::new();
        self.table
            .borrow_mut()
            .remove_member(key, |group| emptied.push(group.to_owned()));
        for group in emptied {
            self.hub.interest_end(&group);
        }
        self.members.borrow_mut().remove(key);
    }
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;

/// One connection's view of its core's groups (what `Session` calls).
pub(crate) struct GroupCtx<'a, S> {
    pub(crate) worker: &'a Worker<S>,
    pub(crate) key: u64,
    pub(crate) member: &'a Member,
}

impl<S: Service> Groups for GroupCtx<'_, S> {
    fn join(&mut self, group: &str) -> Join {
        let max = self.worker.settings().max_groups_per_connection;
        let outcome = self.worker.table.borrow_mut().join(self.key, group, max);
        if let Join::Joined {
            first_on_core: true,
        } = outcome
        {
            self.worker.hub.interest_start(group);
        }
        outcome
    }

    fn leave(&mut self, group: &str) {
        if let crate::hub::table::Leave::Left { last_on_core: true } =
            self.worker.table.borrow_mut().leave(self.key, group)
        {
            self.worker.hub.interest_end(group);
        }
    }

    fn is_member(&self, group: &str) -> bool {
        self.worker.table.borrow().is_member(self.key, group)
    }

    fn joined(&self) -> Vec<std::sync::Arc<str>> {
        self.worker
            .table
            .borrow()
            .joined(self.key)
            .cloned()
            .collect()
    }

    fn publish(&mut self, group: &str, data: RawJson<'_>, out: &mut Vec<u8>) {
        // Replies written before this publish go first: move them into this member's queue.
        if !out.is_empty() {
            let budget = self.worker.settings().limits.max_outbound_bytes;
            if self
                .member
                .outbox
                .borrow_mut()
                .push_copy(out, budget)
                .is_err()
            {
                self.member.closing.set(Some(CloseCode::POLICY));
            }
            out.clear();
            if !self.member.dirty.replace(true) {
                self.worker.dirty.borrow_mut().push(self.key);
            }
        }
        self.worker.publish(group, data);
    }
}
