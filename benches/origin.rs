//! Origin match cost per upgrade request (docs/protocol.md §2): one `Origin` value checked against
//! 1, 10 and 100 patterns mixing exact hosts, dotted domains and scheme patterns, where only the
//! last pattern matches, so every pattern is tried.

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use wsgate::origin::OriginPolicy;

const ORIGIN: &[u8] = b"https://chat.eu.target.example:443";
const MATCHING: &str = "https://.target.example";

/// `n` patterns, none matching `ORIGIN` except the last one.
fn patterns(n: usize) -> Vec<String> {
    let mut list: Vec<String> = (0..n.saturating_sub(1))
        .map(|i| match i % 3 {
            0 => format!("host{i}.example.com"),
            1 => format!(".tenant{i}.example.org"),
            _ => format!("https://app{i}.example.net:8443"),
        })
        .collect();
    list.push(MATCHING.to_owned());
    list
}

fn origin_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("origin_allows");
    for n in [1, 10, 100] {
        let policy = match OriginPolicy::parse(&patterns(n)) {
            Ok(policy) => policy,
            Err(err) => panic!("bench patterns must parse: {err}"),
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &policy, |b, policy| {
            b.iter(|| assert!(policy.allows(Some(black_box(ORIGIN)))));
        });
    }
    group.finish();
}

criterion_group!(benches, origin_match);
criterion_main!(benches);
