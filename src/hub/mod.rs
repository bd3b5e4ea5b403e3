//! The hub: the data plane between cores (docs/protocol.md §4). Each core owns its group table
//! (`table`) and its connections' queues (`outbox`); a publish reaches another core as one message
//! in that core's bounded lock-free queue (crossbeam-channel), and the core is woken at most once
//! per batch. Which cores have members of a group is one atomic bitmask per group, found through a
//! registry touched only when a core's first member joins or its last one leaves, and cached per
//! core, so a publish reads one atomic instead of a shared map. A queue that is full loses the
//! message for that core, never silently: the loss is counted, and the core hears which groups
//! lost messages, so that it closes their members there with 1008 as it would a slow consumer.

pub mod fanout;
pub mod outbox;
pub mod table;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// The most workers the hub supports (one bit per core in a group's interest mask).
pub const MAX_CORES: usize = 64;

/// Messages one core's queue holds by default: far more than a core that keeps running ever has
/// waiting (it drains 256 per turn), so only a core that has stopped fills it.
pub const INBOX_CAPACITY: usize = 16_384;

/// A group as every core sees it: its name and which cores have members.
#[derive(Debug)]
pub struct GroupKey {
    name: Box<str>,
    cores: AtomicU64,
}

impl GroupKey {
    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A message from one core to another.
#[derive(Debug)]
pub enum HubMsg {
    /// Deliver `frame` (one encoded server frame, shared) to the local members of `group`.
    Publish {
        /// The group.
        group: Arc<GroupKey>,
        /// The frame, encoded once by the publishing core.
        frame: Bytes,
    },
    /// Messages to `group` were lost because this core's queue was full: its members here
    /// missed them.
    Lost {
        /// The group.
        group: Arc<GroupKey>,
    },
}

/// One core's incoming queue and the waker of the task that drains it.
#[derive(Debug)]
struct Inbox {
    tx: Sender<HubMsg>,
    rx: Receiver<HubMsg>,
    waker: AtomicWaker,
    /// Groups that lost a message to this core since it last looked (each once).
    lost: Mutex<Vec<Arc<GroupKey>>>,
    /// Set when `lost` has something, so that draining looks at the lock only then.
    lost_pending: AtomicBool,
    /// Messages lost to this core, ever.
    lost_messages: AtomicU64,
}

/// Shared by every core (Send + Sync).
#[derive(Debug)]
pub struct Hub {
    inboxes: Vec<Inbox>,
    registry: Mutex<HashMap<Box<str>, Arc<GroupKey>>>,
}

impl Hub {
    /// A hub for `cores` workers (at most `MAX_CORES`), each queue holding `INBOX_CAPACITY`.
    pub fn new(cores: usize) -> Arc<Self> {
        Self::with_capacity(cores, INBOX_CAPACITY)
    }

    /// A hub whose queues hold `capacity` messages each (at least 1).
    pub fn with_capacity(cores: usize, capacity: usize) -> Arc<Self> {
        let inboxes = (0..cores.clamp(1, MAX_CORES))
            .map(|_| {
                let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
                Inbox {
                    tx,
                    rx,
                    waker: AtomicWaker::new(),
                    lost: Mutex::new(Vec::new()),
                    lost_pending: AtomicBool::new(false),
                    lost_messages: AtomicU64::new(0),
                }
            })
            .collect();
        Arc::new(Self {
            inboxes,
            registry: Mutex::new(HashMap::new()),
        })
    }

    /// The number of cores.
    pub fn cores(&self) -> usize {
        self.inboxes.len()
    }

    /// Messages waiting in `core`'s queue.
    pub fn queue_depth(&self, core: usize) -> usize {
        self.inboxes.get(core).map_or(0, |i| i.rx.len())
    }

    /// Messages lost to `core` because its queue was full.
    pub fn lost_messages(&self, core: usize) -> u64 {
        self.inboxes
            .get(core)
            .map_or(0, |i| i.lost_messages.load(Ordering::Relaxed))
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<GroupKey>>> {
        // A panic while holding this lock leaves a consistent map (every update is one call).
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One core's side of the hub (`!Send`: lives on its worker thread).
#[derive(Debug)]
pub struct LocalHub {
    core: usize,
    hub: Arc<Hub>,
    cache: RefCell<HashMap<Box<str>, Arc<GroupKey>>>,
    /// Cores sent to since the last `wake_pending`.
    pending: Cell<u64>,
}

/// Where a publish must go.
#[derive(Debug)]
pub struct Targets {
    /// The group, to hand to other cores.
    pub group: Option<Arc<GroupKey>>,
    /// Whether this core has members.
    pub local: bool,
}

impl LocalHub {
    /// The hub side of worker `core`.
    pub fn new(hub: Arc<Hub>, core: usize) -> Self {
        Self {
            core,
            hub,
            cache: RefCell::new(HashMap::new()),
            pending: Cell::new(0),
        }
    }

    /// The shared hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn bit(&self) -> u64 {
        1u64 << self.core
    }

    /// This core's first member joined `group`: other cores' publishes now reach it.
    pub fn interest_start(&self, group: &str) {
        let key = {
            let mut registry = self.hub.registry();
            let key = registry
                .entry(group.into())
                .or_insert_with(|| {
                    Arc::new(GroupKey {
                        name: group.into(),
                        cores: AtomicU64::new(0),
                    })
                })
                .clone();
            // Under the lock, so a concurrent last-leave cannot remove the key after we set our
            // bit and leave us listening to a group nobody publishes to.
            key.cores.fetch_or(self.bit(), Ordering::SeqCst);
            key
        };
        self.cache.borrow_mut().insert(group.into(), key);
    }

    /// This core's last member left `group`.
    pub fn interest_end(&self, group: &str) {
        self.cache.borrow_mut().remove(group);
        let mut registry = self.hub.registry();
        if let Some(key) = registry.get(group) {
            let left = key.cores.fetch_and(!self.bit(), Ordering::SeqCst) & !self.bit();
            if left == 0 {
                registry.remove(group);
            }
        }
    }

    /// Which cores a publish to `group` must reach. Reads the cached interest mask; the registry
    /// is consulted only when this core has no live entry for the group.
    pub fn targets(&self, group: &str) -> Targets {
        let cached = self.cache.borrow().get(group).cloned();
        let key = match cached {
            Some(key) if key.cores.load(Ordering::SeqCst) != 0 => Some(key),
            _ => {
                // Not cached, or cached for a group that emptied (and may have been re-created).
                let key = self.hub.registry().get(group).cloned();
                let mut cache = self.cache.borrow_mut();
                match &key {
                    Some(key) => {
                        cache.insert(group.into(), key.clone());
                    }
                    None => {
                        cache.remove(group);
                    }
                }
                key
            }
        };
        let mask = key.as_ref().map_or(0, |k| k.cores.load(Ordering::SeqCst));
        Targets {
            local: mask & self.bit() != 0,
            group: key,
        }
    }

    /// Sends `frame` to every other core with members of the group; the cores are woken later,
    /// once, by `wake_pending`. Returns how many cores' queues were full (the message lost
    /// there, and that core told).
    pub fn send_remote(&self, group: &Arc<GroupKey>, frame: &Bytes) -> u64 {
        let mask = group.cores.load(Ordering::SeqCst) & !self.bit();
        let mut rest = mask;
        let mut full = 0;
        while rest != 0 {
            let core = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(inbox) = self.hub.inboxes.get(core) {
                // Never waits: a core never blocks on another. A full queue (a core that has
                // stopped draining) loses the message there, and that core is told which group.
                let publish = HubMsg::Publish {
                    group: group.clone(),
                    frame: frame.clone(),
                };
                if inbox.tx.try_send(publish).is_err() {
                    full += 1;
                    inbox.lost_messages.fetch_add(1, Ordering::Relaxed);
                    let mut lost = inbox.lost.lock().unwrap_or_else(PoisonError::into_inner);
                    if !lost.iter().any(|g| Arc::ptr_eq(g, group)) {
                        lost.push(group.clone());
                    }
                    inbox.lost_pending.store(true, Ordering::Release);
                }
            }
        }
        self.pending.set(self.pending.get() | mask);
        full
    }

    /// Wakes every core sent to since the last call (one wake per core per batch).
    pub fn wake_pending(&self) {
        let mut rest = self.pending.replace(0);
        while rest != 0 {
            let core = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(inbox) = self.hub.inboxes.get(core) {
                inbox.waker.wake();
            }
        }
    }

    /// Moves up to `max` queued messages into `batch`; `Pending` (with the waker registered)
    /// when the queue is empty.
    pub fn poll_inbox(
        &self,
        cx: &mut Context<'_>,
        batch: &mut Vec<HubMsg>,
        max: usize,
    ) -> Poll<()> {
        let Some(inbox) = self.hub.inboxes.get(self.core) else {
            return Poll::Pending;
        };
        for attempt in 0..2 {
            // What was lost comes first: those members are closed before anything newer that
            // they would otherwise receive after a gap.
            if inbox.lost_pending.swap(false, Ordering::Acquire) {
                let lost =
                    std::mem::take(&mut *inbox.lost.lock().unwrap_or_else(PoisonError::into_inner));
                batch.extend(lost.into_iter().map(|group| HubMsg::Lost { group }));
            }
            while batch.len() < max {
                match inbox.rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if !batch.is_empty() {
                return Poll::Ready(());
            }
            if attempt == 0 {
                // Register, then look again: a message sent in between is not missed.
                inbox.waker.register(cx.waker());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn publishes_reach_only_interested_cores_in_order() {
        let hub = Hub::new(3);
        let (a, b, c) = (
            LocalHub::new(hub.clone(), 0),
            LocalHub::new(hub.clone(), 1),
            LocalHub::new(hub.clone(), 2),
        );
        b.interest_start("room");
        let t = a.targets("room");
        assert!(!t.local);
        let group = t.group.unwrap();
        for i in 0..5 {
            a.send_remote(&group, &frame(&i.to_string()));
        }
        assert_eq!(hub.queue_depth(1), 5);
        assert_eq!(
            hub.queue_depth(2),
            0,
            "core 2 has no member and gets nothing"
        );
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut batch = Vec::new();
        assert!(b.poll_inbox(&mut cx, &mut batch, 100).is_ready());
        let got: Vec<_> = batch
            .iter()
            .map(|msg| match msg {
                HubMsg::Publish { frame, group } => {
                    assert_eq!(group.name(), "room");
                    String::from_utf8(frame.to_vec()).unwrap()
                }
                HubMsg::Lost { .. } => panic!("nothing was lost"),
            })
            .collect();
        assert_eq!(got, ["0", "1", "2", "3", "4"]);
        let mut empty = Vec::new();
        assert!(c.poll_inbox(&mut cx, &mut empty, 100).is_pending());
    }

    #[test]
    fn interest_follows_first_join_and_last_leave() {
        let hub = Hub::new(2);
        let (a, b) = (LocalHub::new(hub.clone(), 0), LocalHub::new(hub.clone(), 1));
        assert!(a.targets("g").group.is_none());
        a.interest_start("g");
        assert!(a.targets("g").local);
        b.interest_start("g");
        let key = b.targets("g").group.unwrap();
        assert_eq!(key.cores.load(Ordering::SeqCst), 0b11);
        a.interest_end("g");
        assert!(!a.targets("g").local);
        b.interest_end("g");
        assert!(
            hub.registry().is_empty(),
            "an empty group leaves the registry"
        );
        // Re-created after emptying: a stale cache entry must not hide the new interest.
        b.interest_start("g");
        assert!(
            a.targets("g")
                .group
                .is_some_and(|k| k.cores.load(Ordering::SeqCst) == 0b10)
        );
    }

    /// A full queue loses the message for that core only, counts it, and tells the core which
    /// groups lost messages (each once), ahead of what is queued.
    #[test]
    fn a_full_queue_loses_counted_and_named() {
        let hub = Hub::with_capacity(2, 3);
        let (a, b) = (LocalHub::new(hub.clone(), 0), LocalHub::new(hub.clone(), 1));
        b.interest_start("g");
        b.interest_start("h");
        let g = a.targets("g").group.unwrap();
        let h = a.targets("h").group.unwrap();
        for i in 0..5 {
            a.send_remote(&g, &frame(&i.to_string()));
        }
        a.send_remote(&h, &frame("h"));
        assert_eq!(hub.queue_depth(1), 3);
        assert_eq!(hub.lost_messages(1), 3);
        assert_eq!(hub.lost_messages(0), 0);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut batch = Vec::new();
        assert!(b.poll_inbox(&mut cx, &mut batch, 100).is_ready());
        let seen: Vec<String> = batch
            .iter()
            .map(|m| match m {
                HubMsg::Lost { group } => format!("lost {}", group.name()),
                HubMsg::Publish { frame, .. } => String::from_utf8(frame.to_vec()).unwrap(),
            })
            .collect();
        assert_eq!(seen, ["lost g", "lost h", "0", "1", "2"]);
        // Told once: the next batch has only what is new.
        batch.clear();
        a.send_remote(&g, &frame("5"));
        assert!(b.poll_inbox(&mut cx, &mut batch, 100).is_ready());
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn wakes_once_per_core_per_batch() {
        let hub = Hub::new(2);
        let (a, b) = (LocalHub::new(hub.clone(), 0), LocalHub::new(hub.clone(), 1));
        b.interest_start("g");
        let group = a.targets("g").group.unwrap();
        for _ in 0..10 {
            a.send_remote(&group, &frame("x"));
        }
        assert_eq!(a.pending.get(), 0b10);
        a.wake_pending();
        assert_eq!(a.pending.get(), 0);
    }
}
