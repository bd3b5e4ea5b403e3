//! Proves the connection path up to the auth-OK message performs no heap allocation: head parse →
//! upgrade validation → origin check → accept key → 101 → first-frame decode and unmask → message
//! assembly → `authenticate` parse → HS256 verify → auth-OK frame written into the connection's
//! buffer. A counting global allocator counts every allocation made on the measuring thread.

use serde_json::json;
use wsgate::auth::Verifier;
use wsgate::envelope::{self, ClientCommand};
use wsgate::hub::table::Join;
use wsgate::origin::OriginPolicy;
use wsgate::proto::frame;
use wsgate::proto::handshake;
use wsgate::proto::http;
use wsgate::proto::message::{Assembler, Message};
use wsgate::session::{Groups, Session, Verdict};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

const SECRET: &[u8] = b"django-insecure-0123456789abcdefghijklmnopqrstuvwxyz";
const NOW: u64 = 1_790_000_000;

/// A real Chrome upgrade request, with the cookie and deflate offer browsers send.
fn browser_upgrade() -> Vec<u8> {
    concat!(
        "GET /ws HTTP/1.1\r\n",
        "Host: app.example.com\r\n",
        "Connection: Upgrade\r\n",
        "Pragma: no-cache\r\n",
        "Cache-Control: no-cache\r\n",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) ",
        "Chrome/131.0.0.0 Safari/537.36\r\n",
        "Upgrade: websocket\r\n",
        "Origin: https://app.example.com\r\n",
        "Sec-WebSocket-Version: 13\r\n",
        "Accept-Encoding: gzip, deflate, br, zstd\r\n",
        "Accept-Language: en-GB,en-US;q=0.9,en;q=0.8\r\n",
        "Cookie: csrftoken=Yq3mXk0b8J2vQ9nR4sT7uW1xZ5aC6dE8; sessionid=k2j3h4g5f6d7s8a9q0w1e2r3t4y5u6i7; ",
        "_ga=GA1.1.123456789.1700000000; theme=dark\r\n",
        "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        "\r\n"
    )
    .as_bytes()
    .to_vec()
}

/// A token exactly as djangorestframework-simplejwt 5.5 issues it.
fn simplejwt_token() -> String {
    let claims = json!({
        "token_type": "access",
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "9f1c2b3a4d5e6f708192a3b4c5d6e7f8",
        "user_id": "42",
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// The client's first frame as a browser sends it: masked text.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0xa1, 0x5b, 0x07, 0xee];
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[test]
fn upgrade_origin_and_first_frame_auth_allocate_nothing() {
    // Start-up work, outside the measurement: policy, verifier, the connection's buffers.
    let origins = OriginPolicy::parse(&["https://.example.com", "http://localhost:3000"]).unwrap();
    let verifier = Verifier::hs256(SECRET);
    let head = browser_upgrade();
    let command = json!({"action": "authenticate", "token": simplejwt_token()}).to_string();
    let mut first_frame = masked_frame(command.as_bytes());
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut assembler = Assembler::new(1 << 20);

    let (count, user) = allocations(|| {
        // Head: incremental end scan, then httparse over the read buffer.
        let len = http::find_head_end(&head, 0, 8192).unwrap().unwrap();
        let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let request = http::parse_request(&head[..len], &mut headers).unwrap();
        let upgrade = handshake::validate(&request, "/ws").unwrap();
        assert!(origins.allows(upgrade.origin));
        let accept = handshake::accept_key(upgrade.key);
        handshake::write_101(&mut out, &accept, upgrade.offers_v1);

        // First frame: decode + unmask in place, assemble, parse, verify, answer.
        let header = frame::decode(&mut first_frame, 1 << 20).unwrap().unwrap();
        let payload = &first_frame[header.header_len..header.header_len + header.payload_len];
        let Some(Message::Text(text)) = assembler.push(&header, payload).unwrap() else {
            panic!("expected a text message");
        };
        let ClientCommand::Authenticate { token } = envelope::parse_command(text).unwrap() else {
            panic!("expected authenticate");
        };
        let identity = verifier.verify(token.as_bytes(), NOW).unwrap();
        frame::write_text_with(&mut out, |o| {
            envelope::write_auth_ok(o, identity.user.as_str())
        });
        identity.user
    });
    assert_eq!(user.as_str(), "42");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(
        text.contains("HSmrc0sMlYUkAGmm5OPpG2HaGWk="),
        "RFC accept key for this request: {text}"
    );
    assert!(
        text.ends_with(r#""data":{"detail":"OK","user":"42"}}}"#),
        "{text}"
    );
    assert_eq!(
        count, 0,
        "the upgrade + first-frame auth path allocated {count} times"
    );
}

/// Authentication never touches groups; any use here would be a bug.
struct NoGroups;

impl Groups for NoGroups {
    fn join(&mut self, _: &str) -> Join {
        unreachable!("authentication joined a group")
    }
    fn leave(&mut self, _: &str) {
        unreachable!("authentication left a group")
    }
    fn is_member(&self, _: &str) -> bool {
        unreachable!("authentication asked for membership")
    }
    fn joined(&self) -> Vec<std::sync::Arc<str>> {
        unreachable!("authentication listed the joined groups")
    }
    fn publish(&mut self, _: &str, _: envelope::RawJson<'_>, _: &mut Vec<u8>) {
        unreachable!("authentication published")
    }
}

#[test]
fn the_session_layer_adds_no_allocation_either() {
    let verifier = Verifier::hs256(SECRET);
    let auth = wsgate::config::AuthSettings {
        verifier,
        first_frame: true,
        header: true,
        subprotocol: true,
        query_token: false,
        ticket: true,
        // Made before counting starts: a revocation list and ticket store that exist but are
        // empty, as in a running gateway.
        state: std::sync::Arc::new(wsgate::config::AuthState::new(10, 1000, 3600, 1000)),
    };
    let command = json!({"action": "authenticate", "token": simplejwt_token()}).to_string();
    let mut session = Session::new();
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let (count, verdict) =
        allocations(|| session.on_text(&command, &auth, NOW, &mut out, &mut NoGroups));
    assert_eq!(verdict, Verdict::Continue);
    assert!(session.is_authenticated());
    assert_eq!(
        count, 0,
        "Session::on_text(authenticate) allocated {count} times"
    );
}

#[test]
fn the_counter_counts() {
    // The proof is only as good as the counter: it must see an allocation when there is one.
    let (count, v) = allocations(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(count >= 1, "the counting allocator missed an allocation");
}
