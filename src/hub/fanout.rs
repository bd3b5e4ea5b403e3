//! One core's fan-out loop (docs/protocol.md §4; STYLE "Encode a broadcast once"): a frame
//! encoded once is queued for every member of a group on this core (a small frame is copied
//! into the member's queue, a large one shared, see `Outbox::push`); a member whose queue would
//! go over its byte budget is closed 1008, never skipped in silence; members given output are
//! listed once for the flush that follows. Pure: members are reached through [`Recipient`],
//! which the runtime's connections implement and the fan-out benchmark's plain queues too.

use bytes::Bytes;

use super::outbox::Overflow;

/// One member as the fan-out sees it.
pub trait Recipient {
    /// Whether the member is already closing (it gets nothing more).
    fn is_closing(&self) -> bool;
    /// Queues `frame` behind the member's output, within `budget` bytes queued in all.
    fn push(&self, frame: &Bytes, budget: usize) -> Result<(), Overflow>;
    /// Marks the member dirty (output to flush); `true` when it was not already.
    fn mark_dirty(&self) -> bool;
    /// The member cannot keep up: close it with 1008 after what it has started to read.
    fn close_slow(&self);
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Members that got the frame.
    pub delivered: u64,
    /// Members closed as slow consumers instead.
    pub slow: u64,
}

/// Queues `frame` for each of `members` (key and member) not already closing; a member that
/// becomes dirty is appended to `dirty` by its key.
pub fn fan_out<'m, R: Recipient + 'm>(
    members: impl IntoIterator<Item = (u64, &'m R)>,
    frame: &Bytes,
    budget: usize,
    dirty: &mut Vec<u64>,
) -> Delivery {
    let mut delivery = Delivery::default();
    for (key, member) in members {
        if member.is_closing() {
            continue;
        }
        match member.push(frame, budget) {
            Ok(()) => {
                delivery.delivered += 1;
                if member.mark_dirty() {
                    dirty.push(key);
                }
            }
            Err(Overflow) => {
                member.close_slow();
                delivery.slow += 1;
            }
        }
    }
    delivery
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::hub::outbox::Outbox;

    #[derive(Default)]
    struct Plain {
        outbox: RefCell<Outbox>,
        dirty: Cell<bool>,
        closing: Cell<bool>,
    }

    impl Recipient for Plain {
        fn is_closing(&self) -> bool {
            self.closing.get()
        }
        fn push(&self, frame: &Bytes, budget: usize) -> Result<(), Overflow> {
            self.outbox.borrow_mut().push(frame, budget)
        }
        fn mark_dirty(&self) -> bool {
            !self.dirty.replace(true)
        }
        fn close_slow(&self) {
            self.closing.set(true);
        }
    }

    #[test]
    fn every_open_member_gets_the_frame_once_and_is_listed_dirty_once() {
        let members: Vec<Plain> = (0..3).map(|_| Plain::default()).collect();
        members[2].closing.set(true);
        let frame = Bytes::from_static(b"\x81\x02hi");
        let mut dirty = Vec::new();
        for _ in 0..2 {
            let delivery = fan_out(
                members.iter().enumerate().map(|(k, m)| (k as u64, m)),
                &frame,
                1024,
                &mut dirty,
            );
            assert_eq!(
                delivery,
                Delivery {
                    delivered: 2,
                    slow: 0
                }
            );
        }
        assert_eq!(dirty, [0, 1]);
        assert_eq!(members[0].outbox.borrow().queued_bytes(), 8);
        assert!(members[2].outbox.borrow().is_empty());
    }

    #[test]
    fn a_member_over_its_budget_is_closed_not_skipped() {
        let member = Plain::default();
        let frame = Bytes::from_static(b"\x81\x04ping");
        let mut dirty = Vec::new();
        let first = fan_out([(7, &member)], &frame, 10, &mut dirty);
        assert_eq!(
            first,
            Delivery {
                delivered: 1,
                slow: 0
            }
        );
        let second = fan_out([(7, &member)], &frame, 10, &mut dirty);
        assert_eq!(
            second,
            Delivery {
                delivered: 0,
                slow: 1
            }
        );
        assert!(member.closing.get());
        // Closed: nothing more is queued or counted.
        let third = fan_out([(7, &member)], &frame, 10, &mut dirty);
        assert_eq!(third, Delivery::default());
        assert_eq!(member.outbox.borrow().queued_bytes(), 6);
    }
}
