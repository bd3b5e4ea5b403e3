//! One connection's queue of outgoing frames, bounded in bytes (docs/protocol.md §4): a push that
//! would take the queue over its budget is refused and nothing is queued, so the caller closes
//! the connection with 1008; nothing is dropped silently and no one else waits.
//!
//! A broadcast is encoded once. Each member's outbox either shares the encoded frame (a
//! `bytes::Bytes` reference) or, for a frame of at most [`COPY_LIMIT`] bytes, copies it onto the
//! end of a buffer of its own, so a burst of small messages leaves in one contiguous write. The
//! copy is cheaper than the reference for small frames: a reference costs two atomic refcount
//! operations, a queue slot and an iovec entry the kernel walks; a copy of 100 bytes costs a few
//! nanoseconds, and the kernel copies one slice instead of dozens. The socket takes the bytes
//! through `io_slices` and `advance`. Pure: no IO; uses only std and `bytes`.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;

use bytes::Bytes;

/// Frames up to this length are copied into the connection's own buffer instead of shared.
pub const COPY_LIMIT: usize = 512;
/// The largest capacity of a copy buffer (one frame larger than this gets a buffer of its own
/// size): it bounds what must still go out ahead of a Close (see
/// [`Outbox::discard_unstarted`]).
pub const CHUNK_BYTES: usize = 16 * 1024;
/// The capacity of the first copy buffer after the queue was empty; each next one is twice the
/// one before, up to [`CHUNK_BYTES`]. A single message costs one small allocation, a burst a few
/// (mimalloc's small sizes are its fast path; 4 KiB made one message per flush 2.3x slower).
const CHUNK_START: usize = 512;

/// A push refused because the frame would take the queue over its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbound queue would exceed its byte budget")]
pub struct Overflow;

/// A run of queued bytes: a shared frame, or a buffer of copied frames.
enum Chunk {
    Shared(Bytes),
    Copied(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(frame) => frame,
            Chunk::Copied(buf) => buf,
        }
    }
}

/// The bytes a connection has yet to write, oldest first.
///
/// Invariants: no queued chunk is empty; `offset < queue[0].len()` when the queue is non-empty
/// and `offset == 0` when it is empty; `queued` is the total length of the queue minus `offset`;
/// only the last chunk takes more copied bytes, and only within its capacity.
#[derive(Default)]
pub struct Outbox {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk the socket has already taken.
    offset: usize,
    /// Bytes not yet written.
    queued: usize,
}

impl fmt::Debug for Outbox {
    /// Sizes only: frame contents are user messages and stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("chunks", &self.queue.len())
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

    /// Queues `frame` unless queued bytes + its length would exceed `budget`; then
    /// Err(Overflow) and nothing is queued. A frame longer than [`COPY_LIMIT`] is shared (a
    /// reference, no copy); a shorter one is copied behind the bytes already queued.
    pub fn push(&mut self, frame: &Bytes, budget: usize) -> Result<(), Overflow> {
        if frame.len() <= COPY_LIMIT {
            return self.push_copy(frame, budget);
        }
        self.queued = self.admit(frame.len(), budget)?;
        self.queue.push_back(Chunk::Shared(frame.clone()));
        Ok(())
    }

    /// Copies `bytes` into the queue (replies, Close frames, small broadcasts), same budget rule.
    pub fn push_copy(&mut self, bytes: &[u8], budget: usize) -> Result<(), Overflow> {
        let total = self.admit(bytes.len(), budget)?;
        if bytes.is_empty() {
            return Ok(());
        }
        // A buffer never grows (no reallocation copies what is already queued) and a frame is
        // never split between two: when the last one is full, a larger one follows it.
        let capacity = match self.queue.back_mut() {
            Some(Chunk::Copied(buf)) if buf.capacity() - buf.len() >= bytes.len() => {
                buf.extend_from_slice(bytes);
                self.queued = total;
                return Ok(());
            }
            Some(Chunk::Copied(buf)) => (buf.capacity() * 2).min(CHUNK_BYTES),
            _ => CHUNK_START,
        };
        let mut buf = Vec::with_capacity(capacity.max(bytes.len()));
        buf.extend_from_slice(bytes);
        self.queue.push_back(Chunk::Copied(buf));
        self.queued = total;
        Ok(())
    }

    /// Whether every queued byte has been written.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes not yet written, counting the unsent part of a partially written chunk.
    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    /// Fills `iov` with the unsent bytes in order (first the rest of a partially written chunk); returns how many slices were filled.
    pub fn io_slices<'a>(&'a self, iov: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        for (slot, (index, chunk)) in iov.iter_mut().zip(self.queue.iter().enumerate()) {
            let bytes = chunk.bytes();
            let unsent = if index == 0 {
                bytes.get(self.offset..).unwrap_or_default()
            } else {
                bytes
            };
            *slot = IoSlice::new(unsent);
            filled += 1;
        }
        filled
    }

    /// Records that the socket took `n` bytes (may end mid-chunk); releases fully written chunks.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.queued, "advanced past the queued bytes");
        let mut left = n.min(self.queued);
        self.queued -= left;
        while left > 0 {
            let Some(front) = self.queue.front() else {
                break;
            };
            let unsent = front.bytes().len().saturating_sub(self.offset);
            if left < unsent {
                self.offset += left;
                break;
            }
            left -= unsent;
            self.offset = 0;
            self.queue.pop_front();
        }
    }

    /// Drops every chunk not yet started and keeps the rest of a partially written one, so a
    /// Close frame can follow on a valid stream; returns the bytes dropped. A copy buffer holds
    /// whole frames, so the rest of a started one (at most [`CHUNK_BYTES`] plus one frame)
    /// still goes out: it may carry a few frames after the one the socket was in.
    pub fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0);
        let dropped: usize = self
            .queue
            .drain(keep..)
            .map(|chunk| chunk.bytes().len())
            .sum();
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

    /// Every unsent byte, in the order `io_slices` hands them out.
    fn unsent(outbox: &Outbox) -> Vec<u8> {
        let mut iov = vec![IoSlice::new(&[]); outbox.queue.len() + 1];
        let filled = outbox.io_slices(&mut iov);
        assert_eq!(filled, outbox.queue.len());
        iov[..filled]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    /// Small frames (copied) and one over the copy limit (shared), in a fixed order.
    fn frames() -> Vec<Bytes> {
        let large: Vec<u8> = (0..COPY_LIMIT as u32 + 7).map(|i| i as u8).collect();
        vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"bcdef"),
            Bytes::from(large),
            Bytes::from_static(b"ghi"),
            Bytes::from_static(b"jklmnop"),
        ]
    }

    fn concatenation(frames: &[Bytes]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    fn filled(frames: &[Bytes]) -> Outbox {
        let mut outbox = Outbox::new();
        for frame in frames {
            outbox.push(frame, BIG).unwrap();
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
        let mut outbox = filled(&frames);
        outbox.push_copy(b"STU", BIG).unwrap();
        let mut expected = concatenation(&frames);
        expected.extend_from_slice(b"STU");
        assert_eq!(unsent(&outbox), expected);
        assert_eq!(outbox.queued_bytes(), expected.len());
    }

    #[test]
    fn small_frames_leave_as_one_slice_and_a_large_one_is_its_own() {
        let frames = frames();
        let outbox = filled(&frames);
        let mut iov = [IoSlice::new(&[]); 8];
        assert_eq!(outbox.io_slices(&mut iov), 3);
        assert_eq!(&*iov[0], b"abcdef");
        assert_eq!(iov[1].as_ptr(), frames[2].as_ptr(), "shared, not copied");
        assert_eq!(&*iov[2], b"ghijklmnop");
    }

    #[test]
    fn copy_buffers_double_up_to_the_chunk_size_without_reallocating() {
        let frame = Bytes::from(vec![7u8; 100]);
        let mut outbox = Outbox::new();
        let count = 3 * CHUNK_BYTES / 100;
        for _ in 0..count {
            outbox.push(&frame, BIG).unwrap();
        }
        let capacities: Vec<usize> = outbox
            .queue
            .iter()
            .map(|chunk| match chunk {
                Chunk::Copied(buf) => buf.capacity(),
                Chunk::Shared(_) => panic!("a small frame was shared"),
            })
            .collect();
        let mut expected = vec![CHUNK_START];
        while expected.len() < capacities.len() {
            expected.push((expected[expected.len() - 1] * 2).min(CHUNK_BYTES));
        }
        assert_eq!(capacities, expected);
        for chunk in &outbox.queue {
            assert_eq!(chunk.bytes().len() % 100, 0, "a frame was split");
        }
        assert_eq!(outbox.queued_bytes(), count * 100);
    }

    #[test]
    fn empty_frames_are_not_queued() {
        let mut outbox = Outbox::new();
        outbox.push(&Bytes::new(), 0).unwrap();
        outbox.push_copy(&[], 0).unwrap();
        assert!(outbox.is_empty());
        assert_eq!(outbox.queue.capacity(), 0);
    }

    #[test]
    fn partial_writes_at_every_offset_reproduce_the_stream() {
        let frames = frames();
        let all = concatenation(&frames);
        for first in 0..=all.len() {
            for step in [1, 2, 3, 5, 64, 600, all.len()] {
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

    /// Pushes, partial writes and discards in a seeded random order, against a plain byte
    /// string as the model of what the peer receives.
    #[test]
    fn random_pushes_and_writes_match_a_byte_string_model() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..200 {
            let mut outbox = Outbox::new();
            let mut queued: Vec<u8> = Vec::new();
            let mut sent: Vec<u8> = Vec::new();
            let mut model_sent: Vec<u8> = Vec::new();
            let mut counter = 0u8;
            for _ in 0..200 {
                match next(10) {
                    0..=5 => {
                        let len = [1, 20, 100, COPY_LIMIT, COPY_LIMIT + 1, 3000][next(6)];
                        let frame: Vec<u8> = (0..len)
                            .map(|_| {
                                counter = counter.wrapping_add(1);
                                counter
                            })
                            .collect();
                        if next(2) == 0 {
                            outbox.push(&Bytes::from(frame.clone()), BIG).unwrap();
                        } else {
                            outbox.push_copy(&frame, BIG).unwrap();
                        }
                        queued.extend_from_slice(&frame);
                    }
                    6..=8 => {
                        let mut iov = [IoSlice::new(&[]); 4];
                        let count = outbox.io_slices(&mut iov);
                        let offered: Vec<u8> = iov[..count]
                            .iter()
                            .flat_map(|s| s.iter().copied())
                            .collect();
                        assert_eq!(offered, queued[..offered.len()]);
                        let n = next(offered.len() + 1);
                        sent.extend_from_slice(&offered[..n]);
                        model_sent.extend(queued.drain(..n));
                        outbox.advance(n);
                    }
                    _ => {
                        // What survives a discard is a prefix of what was queued, whole frames
                        // and the rest of the started chunk: check it is a prefix.
                        outbox.discard_unstarted();
                        let kept = unsent(&outbox);
                        assert_eq!(kept, queued[..kept.len()]);
                        queued.truncate(kept.len());
                    }
                }
                assert_eq!(outbox.queued_bytes(), queued.len());
                assert_eq!(unsent(&outbox), queued);
            }
            assert_eq!(sent, model_sent);
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
        assert_eq!(&*iov[1], &frames[2][..]);
        assert_eq!(outbox.io_slices(&mut []), 0);
    }

    #[test]
    fn budget_admits_exactly_up_to_the_limit() {
        let mut outbox = Outbox::new();
        outbox.push(&Bytes::from_static(b"1234"), 10).unwrap();
        outbox.push_copy(b"567890", 10).unwrap();
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(outbox.push(&Bytes::from_static(b"x"), 10), Err(Overflow));
        assert_eq!(outbox.push_copy(b"x", 10), Err(Overflow));
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(unsent(&outbox), b"1234567890");

        outbox.advance(3);
        outbox.push(&Bytes::from_static(b"abc"), 10).unwrap();
        assert_eq!(outbox.push_copy(b"d", 10), Err(Overflow));
        assert_eq!(unsent(&outbox), b"4567890abc");
    }

    #[test]
    fn a_frame_larger_than_the_budget_is_refused_on_an_empty_queue() {
        let mut outbox = Outbox::new();
        assert_eq!(outbox.push(&Bytes::from_static(b"12345"), 4), Err(Overflow));
        let large = Bytes::from(vec![0u8; COPY_LIMIT + 1]);
        assert_eq!(outbox.push(&large, COPY_LIMIT), Err(Overflow));
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
    fn discard_keeps_the_rest_of_a_started_chunk_and_drops_the_others() {
        let frames = frames();
        let mut outbox = filled(&frames);
        outbox.advance(2);
        // "abcdef" was started: its rest stays; the shared frame and "ghijklmnop" go.
        assert_eq!(outbox.discard_unstarted(), frames[2].len() + 10);
        assert_eq!(outbox.queued_bytes(), 4);
        outbox.push_copy(b"CLOSE", BIG).unwrap();
        assert_eq!(unsent(&outbox), b"cdefCLOSE");
    }

    #[test]
    fn discard_keeps_the_rest_of_a_started_shared_frame() {
        let frames = frames();
        let mut outbox = filled(&frames);
        outbox.advance(6 + 10);
        let rest = frames[2].len() - 10;
        assert_eq!(outbox.discard_unstarted(), 10);
        assert_eq!(outbox.queued_bytes(), rest);
        assert_eq!(unsent(&outbox), &frames[2][10..]);
    }

    #[test]
    fn discard_drops_everything_when_nothing_is_started() {
        let frames = frames();
        let all = concatenation(&frames).len();
        let mut outbox = filled(&frames);
        outbox.advance(6);
        assert_eq!(outbox.discard_unstarted(), all - 6);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
        assert_eq!(outbox.discard_unstarted(), 0);
    }

    #[test]
    fn shrink_frees_storage_only_when_empty() {
        let frames = frames();
        let mut outbox = filled(&frames);
        assert!(outbox.queue.capacity() >= 3);
        outbox.advance(4);
        outbox.shrink();
        assert!(outbox.queue.capacity() >= 3);
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
        outbox.advance(100_000);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn a_large_shared_frame_is_never_copied_and_a_small_one_always_is() {
        let large = Bytes::from(vec![0x81; COPY_LIMIT + 1]);
        let small = Bytes::from(vec![0x81, 3, b'a', b'b', b'c']);
        let mut outboxes: Vec<Outbox> = (0..100).map(|_| Outbox::new()).collect();
        for outbox in &mut outboxes {
            outbox.push(&large, BIG).unwrap();
        }
        for outbox in &mut outboxes {
            {
                let mut iov = [IoSlice::new(&[])];
                assert_eq!(outbox.io_slices(&mut iov), 1);
                assert_eq!(iov[0].as_ptr(), large.as_ptr());
                assert_eq!(iov[0].len(), large.len());
            }
            outbox.advance(2);
            let mut iov = [IoSlice::new(&[])];
            assert_eq!(outbox.io_slices(&mut iov), 1);
            assert_eq!(iov[0].as_ptr(), large[2..].as_ptr());
        }

        let mut copied = Outbox::new();
        copied.push(&small, BIG).unwrap();
        let mut iov = [IoSlice::new(&[])];
        assert_eq!(copied.io_slices(&mut iov), 1);
        assert_ne!(iov[0].as_ptr(), small.as_ptr());
        assert_eq!(&*iov[0], &small[..]);
    }

    #[test]
    fn debug_shows_sizes_not_contents() {
        let mut outbox = Outbox::new();
        outbox.push_copy(b"secret", BIG).unwrap();
        outbox.advance(2);
        let text = format!("{outbox:?}");
        assert_eq!(
            text,
            "Outbox { chunks: 1, queued_bytes: 4, front_written: 2 }"
        );
    }
}
