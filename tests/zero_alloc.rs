//! Proves the connection path up to the auth-OK message performs no heap allocation, driving the
//! code the runtime runs: the per-address count, `connection::upgrade::decide` (head parse,
//! route, upgrade validation, origin, per-address limits, accept key, 101), then the
//! `Connection` state machine on the first frame (decode and unmask, message assembly,
//! `authenticate` parse, HS256 verify, revocation check, auth-OK frame) and its effects. A
//! counting global allocator counts every allocation made on the measuring thread.

use std::cell::Cell;
use std::net::IpAddr;
use std::time::Instant;

use clap::Parser;
use serde_json::json;
use wsgate::auth::Verifier;
use wsgate::config::{Config, DevSecret, Env, Settings};
use wsgate::connection::upgrade::{self, Decision};
use wsgate::connection::{Connection, Core, Effect};
use wsgate::envelope;
use wsgate::hub::table::Join;
use wsgate::limits::TokenBucket;
use wsgate::metrics::CoreStats;
use wsgate::proto::http;
use wsgate::session::{Groups, Session, Verdict};
use wsgate::tables::Tables;

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

/// The gateway's settings for this test: the browser's origin allowed, the HS256 secret.
fn settings() -> Settings {
    let config = Config::try_parse_from([
        "wsgate",
        "--allowed-origins",
        "https://.example.com,http://localhost:3000",
    ])
    .unwrap();
    let env = Env {
        jwt_secret: Some(String::from_utf8(SECRET.to_vec()).unwrap()),
        ..Env::default()
    };
    config
        .into_settings(&env, 1, || DevSecret(Vec::new()))
        .unwrap()
}

#[test]
fn upgrade_origin_and_first_frame_auth_allocate_nothing() {
    // Start-up work, outside the measurement: settings, the shared tables, the counters, the
    // connection's buffers (the runtime's scratch and cork buffers are allocated once per core).
    let settings = settings();
    let tables = Tables::new(&settings.tables);
    let stats = CoreStats::default();
    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    let head = browser_upgrade();
    let command = json!({"action": "authenticate", "token": simplejwt_token()}).to_string();
    let mut first_frame = masked_frame(command.as_bytes());
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let bucket = Cell::new(TokenBucket::new(settings.rate.burst, 0));
    let t0 = Instant::now();
    // The per-address table holds an entry per client address: the first upgrade from an
    // address creates it (a table sized at start could not know the addresses). Measured is a
    // client the table already knows, as every upgrade after its first is.
    let ctx = upgrade::Context {
        settings: &settings,
        tables: &tables,
        stats: &stats,
        peer,
        unix: NOW,
        clock_ms: 0,
    };
    let no_answer = |_: &str, _: &str, _: &mut Vec<u8>| false;
    let warm = upgrade::admit_peer(&ctx).unwrap();
    drop(warm);

    let (count, identity) = allocations(|| {
        // What the runtime does for one accepted socket: the head decided (parse, route,
        // validate, origin, per-address limits, 101), the connection opened, its first frame
        // handled, its effects taken.
        let slot = upgrade::admit_peer(&ctx).unwrap();
        let len = http::find_head_end(&head, 0, 8192).unwrap().unwrap();
        let Decision::Upgraded {
            handler, verdict, ..
        } = upgrade::decide(&head[..len], &ctx, (Session::new, no_answer), &mut out)
        else {
            panic!("expected an upgrade");
        };
        assert_eq!(verdict, Verdict::Continue);
        let mut conn = Connection::new(handler, &settings, t0);
        assert!(conn.poll_effect().is_none());
        let core = Core {
            tables: &tables,
            groups: &mut NoGroups,
            bucket: &bucket,
            stats: &stats,
            epoch: t0,
        };
        let used = conn
            .handle_frames(&mut first_frame, &settings, (t0, NOW), core, &mut out)
            .unwrap();
        assert_eq!(used, first_frame.len());
        let identity = match conn.poll_effect() {
            Some(Effect::Identity { user, jti }) => (user == "42", jti.is_some()),
            other => panic!("expected the new identity, got {other:?}"),
        };
        drop(slot);
        identity
    });
    assert_eq!(identity, (true, true));
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
    };
    // Made before counting starts: a revocation list and ticket store that exist but are
    // empty, as in a running gateway.
    let tables = Tables::new(&settings().tables);
    let command = json!({"action": "authenticate", "token": simplejwt_token()}).to_string();
    let mut session = Session::new();
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let (count, verdict) =
        allocations(|| session.on_text(&command, &auth, &tables, NOW, &mut out, &mut NoGroups));
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
