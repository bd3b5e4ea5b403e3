//! One connection's queue of outgoing frames, bounded in bytes (PROTOCOL.md §4): a push that
//! would take the queue over its budget is refused and nothing is queued, so the caller closes
//! the connection with 1008; nothing is dropped silently and no one else waits. Frames are shared
//! `bytes::Bytes` (a broadcast is encoded once); the socket takes them through `io_slices` and
//! `advance`. Pure: no IO; uses only std and `bytes`.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;

use bytes::Bytes;

/// A push refused because the frame would take the queue over its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue would exceed its byte budget")]
pub struct Overflow;

/// The frames a connection has yet to write, oldest first.
///
/// Invariants: no queued frame is empty; `offset < queue[0].len()` when the queue is non-empty
/// and `offset == 0` when it is empty; `queued` is the total length of the queue minus `offset`.
#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    /// Bytes of the front frame the socket has already taken.
    offset: usize,
    /// Bytes not yet written.
    queued: usize,
}

impl fmt::Debug for Outbox {
    /// Sizes only: frame contents are user messages and stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("frames", &self.queue.len())
            .field("queued_bytes", &self.queued)
            .field("front_written", &self.offset)
            .finish()
    }
}

impl Outbox {
    /// An empty queue; allocates nothing until the first push.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `frame` (a shared `bytes::Bytes`: no copy) unless queued bytes + its length would exceed `budget`; then Err(Overflow) and nothing is queued.
    pub fn push(&mut self, frame: Bytes, budget: usize) -> Result<(), Overflow> {
        let total = self.admit(frame.len(), budget)?;
        if !frame.is_empty() {
            self.queue.push_back(frame);
            self.queued = total;
        }
        Ok(())
    }

    /// Copies `bytes` into the queue (for a connection's own replies that the socket did not take), same budget rule.
    pub fn push_copy(&mut self, bytes: &[u8], budget: usize) -> Result<(), Overflow> {
        // Check before copying: a refused reply costs no allocation.
        self.admit(bytes.len(), budget)?;
        self.push(Bytes::copy_from_slice(bytes), budget)
    }

    /// Whether every queued byte has been written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes not yet written, counting the unsent part of a partially written frame.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Fills `iov` with the unsent bytes in order (first the rest of a partially written frame); returns how many slices were filled.
    pub fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, (index, frame)) in iov.iter_mut().zip(self.queue.iter().enumerate()) {
            let unsent = if index == 0 {
                frame.get(self.offset..).unwrap_or_default()
            } else {
                frame
            };
            *slot = IoSlice::new(unsent);
            filled += 1;
        }
        filled
    }

    /// Records that the socket took `n` bytes (may end mid-frame); releases fully written frames.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.queued, "advanced past the queued bytes");
        let mut left = n.min(self.queued);
        self.queued -= left;
        while left > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let unsent = front.len().saturating_sub(self.offset);
            if left < unsent {
                self.offset += left;
                break;
            }
            left -= unsent;
            self.offset = 0;
            self.queue.pop_front();
        }
    }

    /// Drops every frame not yet started and keeps the rest of a partially written one, so a Close frame can follow on a valid stream; returns the bytes dropped.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0);
        let dropped: usize = self.queue.drain(keep..).map(|frame| frame.len()).sum();
        self.queued -= dropped;
        dropped
    }

    /// Releases the queue's storage when empty (idle connections hold none).
    pub fn shrink(&mut self) {
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// Checks that `len` more bytes fit in `budget` and returns the new queued total.
    fn admit(&self, len: usize, budget: usize) -> Result<usize, Overflow> {
        match self.queued.checked_add(len) {
            Some(total) if total <= budget => Ok(total),
            _ => Err(Overflow),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = usize::MAX;

    /// Every unsent byte, in the order `io_slices` hands them out, `iov_len` slices at a time
    /// being all a single call can show.
    fn unsent(outbox: &Outbox) -> Vec<u8> {
        let mut iov = vec![IoSlice::new(&[]); outbox.queue.len() + 1];
        let filled = outbox.io_slices(&mut iov);
        assert_eq!(filled, outbox.queue.len());
        iov[..filled]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    fn frames() -> Vec<Bytes> {
        [&b"a"[..], b"bcdef", b"ghi", b"jklmnop", b"qr"]
            .into_iter()
            .map(Bytes::from_static)
            .collect()
    }

    fn concatenation(frames: &[Bytes]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    fn filled(frames: &[Bytes]) -> Outbox {
        let mut outbox = Outbox::new();
        for frame in frames {
            outbox.push(frame.clone(), BIG).unwrap();
        }
        outbox
    }

    #[test]
    fn new_outbox_is_empty_and_unallocated() {
        let outbox = Outbox::new();
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.queue.capacity(), 0);
        assert_eq!(outbox.io_slices(&mut [IoSlice::new(&[])]), 0);
    }

    #[test]
    fn frames_come_out_in_push_order() {
        let frames = frames();
        let mut outbox = filled(&frames[..3]);
        outbox.push_copy(b"STU", BIG).unwrap();
        assert_eq!(unsent(&outbox), b"abcdefghiSTU");
        assert_eq!(outbox.queued_bytes(), 12);
    }

    #[test]
    fn empty_frames_are_not_queued() {
        let mut outbox = Outbox::new();
        outbox.push(Bytes::new(), 0).unwrap();
        outbox.push_copy(&[], 0).unwrap();
        assert!(outbox.is_empty());
        assert_eq!(outbox.queue.capacity(), 0);
    }

    #[test]
    fn partial_writes_at_every_offset_reproduce_the_stream() {
        let frames = frames();
        let all = concatenation(&frames);
        for first in 0..=all.len() {
            for step in 1..=all.len() {
                let mut outbox = filled(&frames);
                let mut written = first;
                outbox.advance(first);
                loop {
                    assert_eq!(outbox.queued_bytes(), all.len() - written);
                    assert_eq!(
                        unsent(&outbox),
                        &all[written..],
                        "first {first}, step {step}"
                    );
                    assert_eq!(outbox.is_empty(), written == all.len());
                    if outbox.is_empty() {
                        break;
                    }
                    let n = step.min(all.len() - written);
                    outbox.advance(n);
                    written += n;
                }
            }
        }
    }

    #[test]
    fn a_short_iov_gets_the_oldest_bytes() {
        let frames = frames();
        let mut outbox = filled(&frames);
        outbox.advance(3);
        let mut iov = [IoSlice::new(&[]); 2];
        assert_eq!(outbox.io_slices(&mut iov), 2);
        assert_eq!(&*iov[0], b"def");
        assert_eq!(&*iov[1], b"ghi");
        assert_eq!(outbox.io_slices(&mut []), 0);
    }

    #[test]
    fn budget_admits_exactly_up_to_the_limit() {
        let mut outbox = Outbox::new();
        outbox.push(Bytes::from_static(b"1234"), 10).unwrap();
        outbox.push_copy(b"567890", 10).unwrap();
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(outbox.push(Bytes::from_static(b"x"), 10), Err(Overflow));
        assert_eq!(outbox.push_copy(b"x", 10), Err(Overflow));
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(unsent(&outbox), b"1234567890");

        outbox.advance(3);
        outbox.push(Bytes::from_static(b"abc"), 10).unwrap();
        assert_eq!(outbox.push_copy(b"d", 10), Err(Overflow));
        assert_eq!(unsent(&outbox), b"4567890abc");
    }

    #[test]
    fn a_frame_larger_than_the_budget_is_refused_on_an_empty_queue() {
        let mut outbox = Outbox::new();
        assert_eq!(outbox.push(Bytes::from_static(b"12345"), 4), Err(Overflow));
        assert!(outbox.is_empty());
        assert_eq!(outbox.queue.capacity(), 0);
    }

    #[test]
    fn overflow_says_what_happened() {
        assert_eq!(
            Overflow.to_string(),
            "outbound queue would exceed its byte budget"
        );
    }

    #[test]
    fn discard_keeps_the_rest_of_a_started_frame() {
        let frames = frames();
        let mut outbox = filled(&frames[1..]);
        outbox.advance(2);
        assert_eq!(outbox.discard_unstarted(), 3 + 7 + 2);
        assert_eq!(outbox.queued_bytes(), 3);
        outbox.push(Bytes::from_static(b"CLOSE"), BIG).unwrap();
        assert_eq!(unsent(&outbox), b"defCLOSE");
    }

    #[test]
    fn discard_drops_everything_when_nothing_is_started() {
        let frames = frames();
        let mut outbox = filled(&frames);
        outbox.advance(1);
        assert_eq!(outbox.discard_unstarted(), 17);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.discard_unstarted(), 0);
    }

    #[test]
    fn shrink_frees_storage_only_when_empty() {
        let frames = frames();
        let mut outbox = filled(&frames);
        assert!(outbox.queue.capacity() >= frames.len());
        outbox.advance(4);
        outbox.shrink();
        assert!(outbox.queue.capacity() >= 4);
        assert_eq!(unsent(&outbox), b"efghijklmnopqr");
        outbox.advance(outbox.queued_bytes());
        assert!(outbox.queue.capacity() > 0);
        outbox.shrink();
        assert_eq!(outbox.queue.capacity(), 0);
        assert!(outbox.is_empty());
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn advancing_past_the_end_is_clamped_in_release() {
        let mut outbox = filled(&frames());
        outbox.advance(1000);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn a_shared_frame_is_never_copied() {
        let frame = Bytes::from(vec![0x81, 3, b'a', b'b', b'c']);
        let mut outboxes: Vec<Outbox> = (0..100).map(|_| Outbox::new()).collect();
        for outbox in &mut outboxes {
            outbox.push(frame.clone(), 1024).unwrap();
        }
        for outbox in &mut outboxes {
            {
                let mut iov = [IoSlice::new(&[])];
                assert_eq!(outbox.io_slices(&mut iov), 1);
                assert_eq!(iov[0].as_ptr(), frame.as_ptr());
                assert_eq!(iov[0].len(), frame.len());
            }
            outbox.advance(2);
            let mut iov = [IoSlice::new(&[])];
            assert_eq!(outbox.io_slices(&mut iov), 1);
            assert_eq!(iov[0].as_ptr(), frame[2..].as_ptr());
        }

        let mut copied = Outbox::new();
        copied.push_copy(&frame, 1024).unwrap();
        let mut iov = [IoSlice::new(&[])];
        assert_eq!(copied.io_slices(&mut iov), 1);
        assert_ne!(iov[0].as_ptr(), frame.as_ptr());
    }

    #[test]
    fn debug_shows_sizes_not_contents() {
        let mut outbox = Outbox::new();
        outbox.push_copy(b"secret", BIG).unwrap();
        outbox.advance(2);
        let text = format!("{outbox:?}");
        assert_eq!(
            text,
            "Outbox { frames: 1, queued_bytes: 4, front_written: 2 }"
        );
    }
}
