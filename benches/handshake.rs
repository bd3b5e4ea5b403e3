//! Handshake cost per connection (docs/protocol.md §1): httparse over a realistic Chrome upgrade
//! request, `handshake::validate`, and the accept key, with the result checked inside the loop.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wsgate::proto::handshake::{accept_key, validate};
use wsgate::proto::http::{MAX_HEADERS, find_head_end, parse_request};

/// An upgrade request as Chrome sends it, with a session cookie of about 200 bytes.
pub const CHROME_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\n\
Host: chat.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://chat.example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7\r\n\
Cookie: csrftoken=Xq3LmT9vR2bN8kP4wZ7yH1cJ6fD0sA5gE3uI9oK2lM8nB4vC7xQ1; \
    sessionid=k7z9q2w4e6r8t0y1u3i5o7p9a2s4d6f8; _ga=GA1.1.1234567890.1714000000; \
    theme=dark; tz=Europe%2FBerlin; consent=analytics%3Dno\r\n\
Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn browser_upgrade(c: &mut Criterion) {
    c.bench_function("browser upgrade: parse + validate + accept key", |b| {
        b.iter(|| {
            let buf = black_box(CHROME_UPGRADE);
            let head_len = find_head_end(buf, 0, 8192).ok().flatten();
            assert_eq!(head_len, Some(buf.len()));
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let request = parse_request(buf, &mut headers);
            let upgrade = request.ok().and_then(|req| validate(&req, "/ws").ok());
            let Some(upgrade) = upgrade else {
                panic!("the Chrome request must be accepted");
            };
            assert_eq!(upgrade.origin, Some(&b"https://chat.example.com"[..]));
            let accept = accept_key(upgrade.key);
            assert_eq!(&accept, b"HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
            accept
        })
    });
}

criterion_group!(benches, browser_upgrade);
criterion_main!(benches);
