//! Encode-once fan-out into 1k and 10k outbound queues (docs/protocol.md §4): one group on one
//! core, every member with its own `Outbox`. Each iteration encodes the server frame once, looks
//! up the group's members and runs the gateway's own fan-out loop (`hub::fanout::fan_out`, the
//! code every core runs) over them, then plays the socket by writing every queue out. No
//! sockets, no threads.
//! Throughput is deliveries (one frame queued for one member).

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::io::IoSlice;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wsgate::hub::fanout::{self, Recipient};
use wsgate::hub::outbox::{Outbox, Overflow};
use wsgate::hub::table::{GroupTable, Join};

/// The allocator the gateway runs with: outboxes allocate and free on this path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const GROUP: &str = "room.1";
const BUDGET: usize = 1 << 20;
const IN_FLIGHT: usize = 32;

/// The unmasked server text frame carrying `{"action":"message","group":"room.1","data":{"n":<n>}}`,
/// written by hand (two-byte header, payload under 126 bytes).
fn encode(n: u64) -> Bytes {
    let mut frame = Vec::with_capacity(80);
    frame.extend_from_slice(&[0x81, 0]);
    frame.extend_from_slice(br#"{"action":"message","group":""#);
    frame.extend_from_slice(GROUP.as_bytes());
    frame.extend_from_slice(br#"","data":{"n":"#);
    push_decimal(&mut frame, n);
    frame.extend_from_slice(b"}}");
    let payload = frame.len() - 2;
    assert!(payload < 126, "the bench frame must fit a two-byte header");
    frame[1] = payload as u8;
    Bytes::from(frame)
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// A member as the benchmark keeps it: its queue and the flags the fan-out sets, in the same
/// cells a connection keeps them in.
#[derive(Default)]
struct Member {
    outbox: RefCell<Outbox>,
    dirty: Cell<bool>,
    closing: Cell<bool>,
}

impl Recipient for Member {
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

/// One core's table with `n` members in `GROUP`, and one empty member per key.
fn fixture(n: usize) -> (GroupTable<u64>, Vec<Member>) {
    let mut table = GroupTable::new();
    for member in 0..n as u64 {
        assert!(matches!(table.join(member, GROUP, 1), Join::Joined { .. }));
    }
    let members = (0..n).map(|_| Member::default()).collect();
    (table, members)
}

/// Queues `frame` for every member of `GROUP` with the gateway's loop; returns how many took it.
fn fan_out(
    table: &GroupTable<u64>,
    members: &[Member],
    frame: &Bytes,
    dirty: &mut Vec<u64>,
) -> usize {
    let recipients = table
        .members(black_box(GROUP))
        .iter()
        .filter_map(|&key| members.get(key as usize).map(|member| (key, member)));
    let delivery = fanout::fan_out(recipients, frame, BUDGET, dirty);
    assert_eq!(delivery.slow, 0);
    delivery.delivered as usize
}

/// The flush after a batch: every dirty member's queue written out, its flag cleared.
fn flush(members: &[Member], dirty: &mut Vec<u64>) -> usize {
    let mut written = 0;
    for key in dirty.drain(..) {
        let member = &members[key as usize];
        member.dirty.set(false);
        written += write_out(&mut member.outbox.borrow_mut());
    }
    written
}

/// Plays a socket that takes everything offered in one vectored write; returns the bytes taken.
fn write_out(outbox: &mut Outbox) -> usize {
    let written = {
        let mut iov = [IoSlice::new(&[]); IN_FLIGHT];
        let filled = outbox.io_slices(&mut iov);
        iov[..filled].iter().map(|slice| slice.len()).sum()
    };
    outbox.advance(written);
    written
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for n in [1_000, 10_000] {
        let (table, members) = fixture(n);
        let mut dirty = Vec::with_capacity(n);
        let mut sequence = 0_u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("encode once, {n} members"), |b| {
            b.iter(|| {
                sequence += 1;
                let frame = encode(sequence);
                let delivered = fan_out(&table, &members, &frame, &mut dirty);
                assert_eq!(delivered, n);
                let written = flush(&members, &mut dirty);
                assert_eq!(written, frame.len() * n);
            });
        });

        group.throughput(Throughput::Elements((IN_FLIGHT * n) as u64));
        group.bench_function(
            format!("encode once, {IN_FLIGHT} in flight, {n} members"),
            |b| {
                b.iter(|| {
                    let mut delivered = 0;
                    let mut frame_bytes = 0;
                    for _ in 0..IN_FLIGHT {
                        sequence += 1;
                        let frame = encode(sequence);
                        delivered += fan_out(&table, &members, &frame, &mut dirty);
                        frame_bytes += frame.len();
                    }
                    assert_eq!(delivered, IN_FLIGHT * n);
                    let written = flush(&members, &mut dirty);
                    assert_eq!(written, frame_bytes * n);
                });
            },
        );
        assert!(members.iter().all(|m| m.outbox.borrow().is_empty()));
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
