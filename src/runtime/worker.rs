//! One core's worker: what its connections share on their thread (settings in force, scratch
//! and cork buffers, the timer wheel, the members and group table, this core's side of the
//! hub, its counters) and the work done for all of them: admission, group delivery (through the
//! pure `hub::fanout`), the inbox of other cores' publishes, revocations, the drain at
//! shutdown. Single-threaded: `Cell`/`RefCell`, no locks. Fields are private; connections use
//! the methods.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use monoio::time::Instant;

use super::member::{Member, Members};
use super::timer::Timers;
use super::{Service, WorkerShared, control};
use crate::api;
use crate::config::Settings;
use crate::connection::CloseReason;
use crate::envelope::{self, RawJson};
use crate::hub::table::{GroupTable, Join, Leave};
use crate::hub::{HubMsg, LocalHub, fanout};
use crate::metrics::CoreStats;
use crate::proto::close::CloseCode;
use crate::proto::frame;
use crate::session::Groups;
use crate::tables::Tables;

/// Size of the per-worker read buffer every readable connection reads into.
const SCRATCH_BYTES: usize = 64 * 1024;
/// Inbox messages fanned out before the dirty members are flushed.
const INBOX_BATCH: usize = 256;
const RELAXED: Ordering = Ordering::Relaxed;

/// Per-worker state shared by the worker's connections; see the module docs.
pub(crate) struct Worker<S> {
    shared: WorkerShared<S>,
    /// This core's copy of the settings; a reload replaces it (connections keep the copy they
    /// hold, so nothing changes under a request being served).
    settings: RefCell<Rc<Settings>>,
    /// Shutting down: no keep-alive, and every WebSocket that opens is told to go away.
    draining: Cell<bool>,
    /// The drain waiting for the last connection to end.
    drained: Cell<Option<std::task::Waker>>,
    /// Origin of the millisecond clock of the connections' message-rate buckets.
    epoch: Instant,
    scratch: RefCell<Box<[u8]>>,
    cork: RefCell<Vec<u8>>,
    open: Cell<usize>,
    /// Deadlines of this worker's connections.
    timers: Timers,
    /// This core's connections that fan-out can reach, by key.
    members: RefCell<Members>,
    /// This core's group membership.
    table: RefCell<GroupTable<u64>>,
    /// This core's side of the cross-core hub.
    hub: LocalHub,
    /// Members with queued frames, flushed once per batch.
    dirty: RefCell<Vec<u64>>,
}

impl<S: Service> Worker<S> {
    pub(crate) fn new(shared: WorkerShared<S>, hub: LocalHub) -> Self {
        Self {
            settings: RefCell::new(Rc::new(Settings::clone(&shared.settings))),
            draining: Cell::new(false),
            drained: Cell::new(None),
            epoch: Instant::now(),
            shared,
            scratch: RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice()),
            cork: RefCell::new(Vec::with_capacity(SCRATCH_BYTES)),
            open: Cell::new(0),
            timers: Timers::default(),
            members: RefCell::new(Members::default()),
            table: RefCell::new(GroupTable::new()),
            hub,
            dirty: RefCell::new(Vec::new()),
        }
    }

    /// This worker's index.
    pub(crate) fn id(&self) -> usize {
        self.shared.id
    }

    /// The settings in force now (a reload may replace them between two calls).
    pub(crate) fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// Puts reloaded settings in force for every request and message from now on.
    pub(crate) fn replace_settings(&self, settings: &Settings) {
        *self.settings.borrow_mut() = Rc::new(settings.clone());
    }

    /// The shared tables.
    pub(crate) fn tables(&self) -> &Tables {
        &self.shared.tables
    }

    /// This core's counters.
    pub(crate) fn stats(&self) -> &CoreStats {
        &self.shared.stats
    }

    /// A new connection's application side.
    pub(crate) fn handler(&self) -> S::Handler {
        self.shared.service.handler()
    }

    /// The service, for the requests it answers itself.
    pub(crate) fn service(&self) -> &S {
        &self.shared.service
    }

    /// Whether the core is shutting down.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Origin of the rate buckets' millisecond clock.
    pub(crate) fn epoch(&self) -> std::time::Instant {
        self.epoch.into_std()
    }

    /// Milliseconds on the process-wide clock of the per-address limits.
    pub(crate) fn clock_ms(&self) -> u64 {
        self.shared.clock_ms()
    }

    /// The read buffer every readable connection of this core reads into.
    pub(crate) fn scratch(&self) -> RefMut<'_, Box<[u8]>> {
        self.scratch.borrow_mut()
    }

    /// The buffer replies are staged in before they are sent at once.
    pub(crate) fn cork(&self) -> RefMut<'_, Vec<u8>> {
        self.cork.borrow_mut()
    }

    /// The deadlines of this core's connections.
    pub(crate) fn timers(&self) -> &Timers {
        &self.timers
    }

    /// What an HTTP API request is handled with on this core.
    pub(crate) fn with_api_context<R>(
        &self,
        settings: &Settings,
        client: Option<std::net::IpAddr>,
        run: impl FnOnce(&api::Context<'_>) -> R,
    ) -> R {
        let unresponsive = self.shared.liveness.unresponsive();
        run(&api::Context {
            settings,
            tables: &self.shared.tables,
            stats: &self.shared.stats,
            all_stats: &self.shared.all_stats,
            unresponsive: &unresponsive,
            client,
        })
    }

    /// Graceful shutdown of this core (the accept loop has stopped): every WebSocket is closed
    /// with 1001 after what is queued for it, and this resolves when the last connection ended
    /// or the shutdown deadline passed, whichever comes first.
    pub(crate) async fn drain(&self) {
        self.draining.set(true);
        let deadline = Instant::now() + self.settings().timeouts.shutdown;
        let members: Vec<Rc<Member>> = self.members.borrow().iter().cloned().collect();
        for member in members {
            member.go_away();
        }
        let all_closed = std::future::poll_fn(|cx| {
            if self.open.get() == 0 {
                return std::task::Poll::Ready(());
            }
            self.drained.set(Some(cx.waker().clone()));
            std::task::Poll::Pending
        });
        monoio::select! {
            _ = all_closed => {}
            _ = monoio::time::sleep_until(deadline) => {
                tracing::warn!(
                    worker = self.shared.id,
                    open = self.open.get(),
                    "shutdown deadline passed; dropping the connections still open"
                );
            }
        }
    }

    /// A place in the worker's and the global connection counts, unless either is full.
    pub(crate) fn admit(&self) -> Option<Admission<'_, S>> {
        let s = self.settings();
        if self.open.get() >= s.max_connections_per_worker {
            return None;
        }
        if self.shared.open.fetch_add(1, RELAXED) >= s.max_connections {
            self.shared.open.fetch_sub(1, RELAXED);
            return None;
        }
        self.open.set(self.open.get() + 1);
        self.shared.stats.open_connections.fetch_add(1, RELAXED);
        Some(Admission { worker: self })
    }

    /// Makes an upgraded connection reachable by fan-out, revocations and the drain.
    pub(crate) fn register(&self, member: Rc<Member>) -> Registration<'_, S> {
        let key = self.members.borrow_mut().insert(member.clone());
        if self.draining.get() {
            // Upgraded while the core shuts down: closed 1001 at once, like the others.
            member.go_away();
        }
        Registration { worker: self, key }
    }

    /// After a batch of input: send what fan-out queued, wake the other cores sent to.
    pub(crate) fn after_batch(&self) {
        self.flush_dirty();
        self.hub.wake_pending();
    }

    /// Queues `frame` to every local member of `group` (encoded once).
    fn fan_out(&self, group: &str, frame: &Bytes) {
        let budget = self.settings().limits.max_outbound_bytes;
        let table = self.table.borrow();
        let members = self.members.borrow();
        let recipients = table
            .members(group)
            .iter()
            .filter_map(|&key| members.get(key).map(|member| (key, &**member)));
        let delivery = fanout::fan_out(recipients, frame, budget, &mut self.dirty.borrow_mut());
        let stats = &self.shared.stats;
        stats.slow_consumer_closes.fetch_add(delivery.slow, RELAXED);
        stats
            .fanout_deliveries
            .fetch_add(delivery.delivered, RELAXED);
        stats.messages_out.fetch_add(delivery.delivered, RELAXED);
    }

    /// Sends each dirty member's queue; members with output left wait for writability.
    fn flush_dirty(&self) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        let members = self.members.borrow();
        for key in &dirty {
            let Some(member) = members.get(*key) else {
                continue;
            };
            member.dirty.set(false);
            match member.flush() {
                Ok(sent) => {
                    self.shared.stats.bytes_out.fetch_add(sent as u64, RELAXED);
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
                self.shared.stats.cross_core_lost.fetch_add(lost, RELAXED);
            }
        }
    }

    /// Runs forever: fans out what other cores publish, a batch at a time.
    pub(crate) async fn drain_inbox(&self) {
        let mut batch = Vec::with_capacity(INBOX_BATCH);
        loop {
            std::future::poll_fn(|cx| self.hub.poll_inbox(cx, &mut batch, INBOX_BATCH)).await;
            self.shared
                .stats
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
        self.shared
            .stats
            .slow_consumer_closes
            .fetch_add(closed, RELAXED);
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
    pub(crate) fn revoke(&self, job: &control::Revoke) -> usize {
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
        let closed = members
            .iter()
            .filter(|m| m.revoke(CloseReason::Revoked.reason()))
            .count();
        self.shared
            .stats
            .revoked_closes
            .fetch_add(closed as u64, RELAXED);
        closed
    }

    /// Has every worker close the connections a recorded revocation matches (4401) and waits
    /// for their count, at most the close timeout or five seconds, whichever is longer.
    pub(crate) async fn revoke_everywhere(&self, by_user: bool, key: u64) -> usize {
        let done = Arc::new(control::Countdown::new(self.shared.controls.len()));
        let job = control::Revoke {
            by_user,
            key,
            done: done.clone(),
        };
        for control in self.shared.controls.iter() {
            control.post_revoke(job.clone());
        }
        let wait = self
            .settings()
            .timeouts
            .close
            .max(std::time::Duration::from_secs(5));
        let closed = monoio::select! {
            closed = done.wait() => closed,
            _ = monoio::time::sleep(wait) => {
                tracing::warn!("revocation: a worker did not report in time");
                done.closed_so_far()
            }
        };
        tracing::info!(by_user, closed, "revoked");
        closed
    }

    /// Removes a member from every group (and this core's interest in groups it emptied).
    fn leave_all(&self, key: u64) {
        let mut emptied = Vec::new();
        self.table
            .borrow_mut()
            .remove_member(key, |group| emptied.push(group.to_owned()));
        for group in emptied {
            self.hub.interest_end(&group);
        }
        self.members.borrow_mut().remove(key);
    }

    /// The groups view a connection's session acts through.
    pub(crate) fn groups<'a>(&'a self, key: u64, member: &'a Member) -> GroupCtx<'a, S> {
        GroupCtx {
            worker: self,
            key,
            member,
        }
    }
}

/// Holds one connection's place in the worker and global counts.
pub(crate) struct Admission<'w, S> {
    worker: &'w Worker<S>,
}

impl<S> Drop for Admission<'_, S> {
    fn drop(&mut self) {
        let worker = self.worker;
        worker.open.set(worker.open.get() - 1);
        if worker.open.get() == 0
            && let Some(waker) = worker.drained.take()
        {
            waker.wake();
        }
        worker.shared.open.fetch_sub(1, RELAXED);
        worker.shared.stats.open_connections.fetch_sub(1, RELAXED);
    }
}

/// A WebSocket connection's place in the fan-out; leaves every group when dropped.
pub(crate) struct Registration<'w, S: Service> {
    worker: &'w Worker<S>,
    key: u64,
}

impl<S: Service> Registration<'_, S> {
    /// The connection's key among the core's members.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }
}

impl<S: Service> Drop for Registration<'_, S> {
    fn drop(&mut self) {
        self.worker.leave_all(self.key);
    }
}

/// One connection's view of its core's groups (what `Session` calls).
pub(crate) struct GroupCtx<'a, S> {
    worker: &'a Worker<S>,
    key: u64,
    member: &'a Member,
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
        if let Leave::Left { last_on_core: true } =
            self.worker.table.borrow_mut().leave(self.key, group)
        {
            self.worker.hub.interest_end(group);
        }
    }

    fn is_member(&self, group: &str) -> bool {
        self.worker.table.borrow().is_member(self.key, group)
    }

    fn joined(&self) -> Vec<Arc<str>> {
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
