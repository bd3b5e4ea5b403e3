//! The whole first-frame authentication path on one core, as the runtime runs it: decode and
//! unmask the client's frame in place, assemble the message, parse the `authenticate` command,
//! verify the HS256 token, and write the auth-OK frame into the connection's buffer. Also the
//! full connection opening: browser upgrade parse, origin check, accept key and 101, then the
//! first frame. No sockets; the result is checked inside the timed loop.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use wsgate::auth::Verifier;
use wsgate::envelope::{self, ClientCommand};
use wsgate::origin::OriginPolicy;
use wsgate::proto::frame;
use wsgate::proto::handshake;
use wsgate::proto::http;
use wsgate::proto::message::{Assembler, Message};

const SECRET: &[u8] = b"django-insecure-0123456789abcdefghijklmnopqrstuvwxyz";
const NOW: u64 = 1_790_000_000;
/// The docs/protocol.md §3 success message for user "42" (111 bytes) behind a 2-byte frame header.
const AUTH_OK_FRAME_LEN: usize = 113;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) \
AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\nUpgrade: websocket\r\n\
Origin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n\
Cookie: csrftoken=Yq3mXk0b8J2vQ9nR4sT7uW1xZ5aC6dE8; sessionid=k2j3h4g5f6d7s8a9q0w1e2r3t4y5u6i7\r\n\
Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// A simplejwt-shaped access token inside a masked `authenticate` frame.
fn first_frame() -> Vec<u8> {
    let claims = json!({"token_type": "access", "exp": NOW + 300, "iat": NOW,
        "jti": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8", "user_id": "42"});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    let payload = json!({"action": "authenticate", "token": token}).to_string();
    let mask = [0xa1, 0x5b, 0x07, 0xee];
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Runs the first-frame path over `buf`; returns the bytes written to `out`.
fn authenticate(
    buf: &mut [u8],
    verifier: &Verifier,
    assembler: &mut Assembler,
    out: &mut Vec<u8>,
) -> usize {
    let header = frame::decode(buf, 1 << 20).unwrap().unwrap();
    let payload = &buf[header.header_len..header.header_len + header.payload_len];
    let Some(Message::Text(text)) = assembler.push(&header, payload).unwrap() else {
        panic!("expected a text message");
    };
    let ClientCommand::Authenticate { token } = envelope::parse_command(text).unwrap() else {
        panic!("expected authenticate");
    };
    let identity = verifier.verify(token.as_bytes(), NOW).unwrap();
    let before = out.len();
    frame::write_text_with(out, |o| envelope::write_auth_ok(o, identity.user.as_str()));
    out.len() - before
}

fn bench(c: &mut Criterion) {
    let verifier = Verifier::hs256(SECRET);
    let origins = OriginPolicy::parse(&["https://.example.com", "http://localhost:3000"]).unwrap();
    let frame = first_frame();
    let mut group = c.benchmark_group("first frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode + unmask + parse + HS256 verify + auth-OK", |b| {
        let mut out = Vec::with_capacity(4096);
        let mut assembler = Assembler::new(1 << 20);
        b.iter_batched_ref(
            || frame.clone(),
            |buf| {
                out.clear();
                assert_eq!(
                    authenticate(buf, &verifier, &mut assembler, &mut out),
                    AUTH_OK_FRAME_LEN
                );
            },
            BatchSize::SmallInput,
        );
    });
    group.bench_function("upgrade + origin + 101 + first frame", |b| {
        let head = UPGRADE.as_bytes();
        let mut out = Vec::with_capacity(4096);
        let mut assembler = Assembler::new(1 << 20);
        b.iter_batched_ref(
            || frame.clone(),
            |buf| {
                out.clear();
                let len = http::find_head_end(head, 0, 8192).unwrap().unwrap();
                let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
                let request = http::parse_request(&head[..len], &mut headers).unwrap();
                let upgrade = handshake::validate(&request, "/ws").unwrap();
                assert!(origins.allows(upgrade.origin));
                let accept = handshake::accept_key(upgrade.key);
                handshake::write_101(&mut out, &accept, upgrade.offers_v1);
                assert_eq!(
                    authenticate(buf, &verifier, &mut assembler, &mut out),
                    AUTH_OK_FRAME_LEN
                );
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
