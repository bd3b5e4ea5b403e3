//! Per-worker deadlines. A connection owns a slot, not a timer: one driver task per worker sleeps
//! until the earliest armed deadline and wakes the connections whose deadline passed. monoio's
//! own `Sleep` is 640 bytes; held by every idle connection it was the largest part of its memory.
//!
//! A slot is re-armed only when its deadline moves earlier or has fired, so a connection that keeps
//! receiving frames pushes nothing: when the old, earlier deadline fires, the connection finds
//! nothing due and arms the later one.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use monoio::time::Instant;

#[derive(Default)]
struct Entry {
    /// The armed deadline; `None` once fired (or never armed).
    deadline: Option<Instant>,
    /// Bumped on every arm and release, so heap entries of an older arm are recognised as stale.
    seq: u64,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    entries: Vec<Entry>,
    free: Vec<usize>,
    driver: Option<Waker>,
    /// Set when a deadline earlier than the driver's next one was armed.
    rearmed: bool,
}

/// The deadlines of one worker's connections.
#[derive(Default)]
pub(crate) struct Timers {
    inner: RefCell<Inner>,
}

/// A connection's slot; released when dropped.
pub(crate) struct Slot<'t> {
    timers: &'t Timers,
    index: usize,
}

impl Timers {
    /// A new, unarmed slot.
    pub(crate) fn slot(&self) -> Slot<'_> {
        let mut inner = self.inner.borrow_mut();
        let index = match inner.free.pop() {
            Some(index) => index,
            None => {
                inner.entries.push(Entry::default());
                inner.entries.len() - 1
            }
        };
        Slot {
            timers: self,
            index,
        }
    }

    /// Runs forever on the worker: fires due deadlines, then sleeps until the next one.
    pub(crate) async fn drive(&self) {
        loop {
            let next = self.fire_due(Instant::now());
            let rearmed = poll_fn(|cx| {
                let mut inner = self.inner.borrow_mut();
                if std::mem::take(&mut inner.rearmed) {
                    return Poll::Ready(());
                }
                inner.driver = Some(cx.waker().clone());
                Poll::Pending
            });
            match next {
                Some(at) => monoio::select! {
                    _ = monoio::time::sleep_until(at) => {},
                    _ = rearmed => {},
                },
                None => rearmed.await,
            }
        }
    }

    /// Wakes every slot whose deadline is at or before `now`; returns the next live deadline.
    fn fire_due(&self, now: Instant) -> Option<Instant> {
        let mut inner = self.inner.borrow_mut();
        let Inner { heap, entries, .. } = &mut *inner;
        while let Some(&Reverse((at, index, seq))) = heap.peek() {
            let live = entries
                .get(index)
                .is_some_and(|e| e.seq == seq && e.deadline == Some(at));
            if !live {
                heap.pop();
                continue;
            }
            if at > now {
                return Some(at);
            }
            heap.pop();
            if let Some(entry) = entries.get_mut(index) {
                entry.deadline = None;
                if let Some(waker) = entry.waker.take() {
                    waker.wake();
                }
            }
        }
        None
    }
}

impl Slot<'_> {
    /// Makes sure the slot fires no later than `at`.
    pub(crate) fn arm(&self, at: Instant) {
        self.arm_at(at, Instant::now());
    }

    fn arm_at(&self, at: Instant, now: Instant) {
        let mut inner = self.timers.inner.borrow_mut();
        let Some(entry) = inner.entries.get_mut(self.index) else {
            return;
        };
        // Keep an earlier deadline only while it is still ahead: one that already passed counts as
        // fired even if the driver has not run yet. Keeping it would make `expired` ready at once,
        // forever, and the connection would spin without yielding to the driver.
        if entry
            .deadline
            .is_some_and(|current| current <= at && current > now)
        {
            return;
        }
        entry.deadline = Some(at);
        entry.seq += 1;
        let seq = entry.seq;
        let earliest = inner.heap.peek().is_none_or(|Reverse((top, ..))| at < *top);
        inner.heap.push(Reverse((at, self.index, seq)));
        if earliest {
            inner.rearmed = true;
            if let Some(driver) = inner.driver.take() {
                driver.wake();
            }
        }
    }

    /// Sets the deadline to exactly `at`, later or earlier than what was armed.
    pub(crate) fn reset(&self, at: Instant) {
        if let Some(entry) = self.timers.inner.borrow_mut().entries.get_mut(self.index) {
            entry.deadline = None;
        }
        self.arm(at);
    }

    /// Whether the armed deadline has passed (`expired` would be ready).
    #[cfg(test)]
    fn is_due(&self, now: Instant) -> bool {
        let inner = self.timers.inner.borrow();
        inner
            .entries
            .get(self.index)
            .is_none_or(|e| e.deadline.is_none_or(|at| at <= now))
    }

    /// Resolves once the armed deadline has passed (at once when none is armed).
    pub(crate) async fn expired(&self) {
        poll_fn(|cx| {
            let mut inner = self.timers.inner.borrow_mut();
            let Some(entry) = inner.entries.get_mut(self.index) else {
                return Poll::Ready(());
            };
            match entry.deadline {
                Some(at) if at > Instant::now() => {
                    entry.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut inner = self.timers.inner.borrow_mut();
        if let Some(entry) = inner.entries.get_mut(self.index) {
            entry.deadline = None;
            entry.waker = None;
            entry.seq += 1;
            inner.free.push(self.index);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn due_slots_fire_in_order_and_later_arms_are_deferred() {
        let timers = Timers::default();
        let t0 = Instant::now();
        let a = timers.slot();
        let b = timers.slot();
        a.arm(t0 + Duration::from_secs(5));
        b.arm(t0 + Duration::from_secs(2));
        // Arming later than what is armed changes nothing: the earlier deadline still fires.
        b.arm(t0 + Duration::from_secs(9));
        assert_eq!(timers.fire_due(t0), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            timers.fire_due(t0 + Duration::from_secs(2)),
            Some(t0 + Duration::from_secs(5))
        );
        // b fired: it can be armed again, later.
        b.arm(t0 + Duration::from_secs(9));
        assert_eq!(
            timers.fire_due(t0 + Duration::from_secs(6)),
            Some(t0 + Duration::from_secs(9))
        );
        assert_eq!(timers.fire_due(t0 + Duration::from_secs(9)), None);
    }

    #[test]
    fn earlier_arms_replace_later_ones_and_released_slots_never_fire() {
        let timers = Timers::default();
        let t0 = Instant::now();
        let a = timers.slot();
        a.arm(t0 + Duration::from_secs(5));
        a.arm(t0 + Duration::from_secs(1));
        assert_eq!(timers.fire_due(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            timers.fire_due(t0 + Duration::from_secs(1)),
            None,
            "the stale 5 s entry is gone"
        );
        let b = timers.slot();
        b.arm(t0 + Duration::from_secs(3));
        drop(b);
        assert_eq!(timers.fire_due(t0), None);
        // The freed slot is reused rather than a new one added.
        let _c = timers.slot();
        assert_eq!(timers.inner.borrow().entries.len(), 2);
    }

    #[test]
    fn a_passed_deadline_the_driver_has_not_fired_yet_is_replaced() {
        // The connection wakes for another reason after its early deadline passed but before
        // the driver ran; arming the later real deadline must not leave it permanently due.
        let timers = Timers::default();
        let t0 = Instant::now();
        let a = timers.slot();
        a.arm_at(t0 + Duration::from_secs(5), t0);
        let later = t0 + Duration::from_secs(6);
        assert!(a.is_due(later));
        a.arm_at(t0 + Duration::from_secs(20), later);
        assert!(!a.is_due(later), "re-armed to the later deadline");
        assert_eq!(timers.fire_due(later), Some(t0 + Duration::from_secs(20)));
    }
}
