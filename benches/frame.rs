//! Frame-layer hot paths (RFC 6455 §5): unmasking throughput of the u64 path against the byte
//! loop at 64 B, 1 KiB and 64 KiB, and decoding a small masked text frame, each result checked.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsgate::proto::frame::{OpCode, decode};
use wsgate::proto::mask::{apply_mask, apply_mask_bytewise};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [64usize, 1024, 64 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; size];
        // Masking twice restores the input, so each iteration starts from alternating contents;
        // the check compares against the first byte's two possible values.
        group.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| {
                apply_mask(black_box(&mut buf), KEY);
                assert!(buf[size - 1] == 0 || buf[size - 1] == KEY[(size - 1) % 4]);
            })
        });
        group.bench_with_input(
            BenchmarkId::new("apply_mask_bytewise", size),
            &size,
            |b, _| {
                b.iter(|| {
                    apply_mask_bytewise(black_box(&mut buf), KEY);
                    assert!(buf[size - 1] == 0 || buf[size - 1] == KEY[(size - 1) % 4]);
                })
            },
        );
    }
    group.finish();
}

/// A masked client text frame carrying a typical 32-byte command.
fn small_text_frame() -> Vec<u8> {
    let payload = br#"{"action":"join","group":"r.1"}"#;
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&KEY);
    frame.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
    frame
}

fn decode_small(c: &mut Criterion) {
    let template = small_text_frame();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(template.len() as u64));
    group.bench_function("decode masked text frame (31 B payload)", |b| {
        let mut buf = template.clone();
        b.iter(|| {
            buf.copy_from_slice(&template);
            let header = decode(black_box(&mut buf), 1 << 20).ok().flatten();
            let Some(header) = header else {
                panic!("the frame must decode");
            };
            assert_eq!(header.opcode, OpCode::Text);
            assert_eq!(
                &buf[header.payload_range()],
                br#"{"action":"join","group":"r.1"}"#
            );
        })
    });
    group.finish();
}

criterion_group!(benches, unmask, decode_small);
criterion_main!(benches);
