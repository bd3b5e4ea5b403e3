//! Envelope benchmarks (docs/protocol.md §3, §4): parsing a client command borrowed from its frame
//! and writing server messages into a reused buffer. Each iteration asserts what it produced.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wsgate::envelope::{ClientCommand, parse_command, write_auth_ok, write_message};

const TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwiZXhwIjoxNzAwMDAwMzAwLCJpYXQiOjE3MDAwMDAwMDAsImp0aSI6IjNmNWU4YzFkOWE3YjRlMmY4YzZkNGIyYTBlOWY3YzVhIiwidXNlcl9pZCI6IjQyIn0.c2lnbmF0dXJlLW5vdC1jaGVja2VkLWhlcmUtLS0tLS0tLS0";

fn bench_envelope(c: &mut Criterion) {
    let authenticate = format!(r#"{{"action":"authenticate","token":"{TOKEN}"}}"#);
    c.bench_function("parse authenticate command", |b| {
        b.iter(|| match parse_command(black_box(&authenticate)).unwrap() {
            ClientCommand::Authenticate { token } => assert_eq!(token.len(), TOKEN.len()),
            other => panic!("unexpected {other:?}"),
        })
    });

    let mut out = Vec::with_capacity(256);
    c.bench_function("write auth-OK payload", |b| {
        b.iter(|| {
            out.clear();
            write_auth_ok(&mut out, black_box("42"));
            assert_eq!(out.len(), 111);
        })
    });

    let send = r#"{"action":"send","group":"room.1","data":{"text":"hello, room","seq":12345,"from":"42"}}"#;
    c.bench_function("parse send + write message", |b| {
        b.iter(|| {
            let Ok(ClientCommand::Send {
                group,
                data: Some(data),
            }) = parse_command(black_box(send))
            else {
                panic!("not a send");
            };
            out.clear();
            write_message(&mut out, &group, data);
            assert_eq!(out.len(), 91);
        })
    });

    // The echo path's command, as wsgate-load sends it (80 bytes).
    let echo =
        r#"{"action":"send","group":"load.echo.12","data":{"c":12,"s":345,"t":1234567890123}}"#;
    c.bench_function("parse echo send command", |b| {
        b.iter(|| match parse_command(black_box(echo)).unwrap() {
            ClientCommand::Send {
                group,
                data: Some(data),
            } => assert_eq!(group.len() + data.get().len(), 12 + 34),
            other => panic!("unexpected {other:?}"),
        })
    });

    let nested = r#"{"action":"send","group":"g","data":{"a":[{"b":[1,{"c":[true,null,-0.5e3]}]}],"d":[[[["x"]]]]}}"#;
    c.bench_function("parse send with nested data", |b| {
        b.iter(|| match parse_command(black_box(nested)).unwrap() {
            ClientCommand::Send { data: Some(d), .. } => assert_eq!(d.get().len(), 58),
            other => panic!("unexpected {other:?}"),
        })
    });

    let escaped = r#"{"action":"join","group":"room\u002e1","extra":"caf\u00e9"}"#;
    c.bench_function("parse join with escapes", |b| {
        b.iter(|| match parse_command(black_box(escaped)).unwrap() {
            ClientCommand::Join { group } => assert_eq!(group, "room.1"),
            other => panic!("unexpected {other:?}"),
        })
    });
}

criterion_group!(benches, bench_envelope);
criterion_main!(benches);
