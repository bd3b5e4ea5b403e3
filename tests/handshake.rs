//! docs/protocol.md §1: every row of the handshake table, over real sockets, on each driver.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn upgrade_answers_101_with_the_rfc_accept_key() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let (_s, head) = raw_exchange(srv.addr, upgrade_request(srv.addr, "/ws", &[]).as_bytes());
        assert_eq!(status(&head), 101, "{driver}: {head}");
        // RFC 6455 §1.3's example key and answer.
        assert!(
            head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
            "{head}"
        );
    }
}

#[test]
fn a_head_arriving_one_byte_at_a_time_still_upgrades() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let mut s = tcp(srv.addr);
        for byte in upgrade_request(srv.addr, "/ws", &["Origin: http://x.test"]).bytes() {
            s.write_all(&[byte]).unwrap();
        }
        assert_eq!(status(&read_head(&mut s)), 101, "{driver}");
    }
}

#[test]
fn wsgate_v1_is_selected_and_deflate_is_declined() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let extra = [
            "Sec-WebSocket-Protocol: chat, wsgate.v1",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        ];
        let (_s, head) = raw_exchange(
            srv.addr,
            upgrade_request(srv.addr, "/ws", &extra).as_bytes(),
        );
        assert_eq!(status(&head), 101, "{head}");
        assert!(
            head.contains("Sec-WebSocket-Protocol: wsgate.v1\r\n"),
            "{head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("extensions"),
            "{driver}: {head}"
        );
    }
}

#[test]
fn no_subprotocol_is_selected_unless_wsgate_v1_is_offered() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let extra = ["Sec-WebSocket-Protocol: chat, superchat"];
        let (_s, head) = raw_exchange(
            srv.addr,
            upgrade_request(srv.addr, "/ws", &extra).as_bytes(),
        );
        assert_eq!(status(&head), 101, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("sec-websocket-protocol"),
            "{driver}: {head}"
        );
    }
}

fn assert_refused(driver: &str, request: &str, expected: u16) -> String {
    let srv = start_open(driver, &[]);
    let (mut s, head) = raw_exchange(srv.addr, request.as_bytes());
    assert_eq!(status(&head), expected, "{driver}: {request:?} -> {head}");
    assert!(
        closed_by_server(&mut s),
        "{driver}: connection left open after {expected}"
    );
    head
}

#[test]
fn malformed_requests_get_400() {
    for driver in drivers() {
        let cases = [
            "GARBAGE\r\n\r\n".to_owned(),
            "GET /ws HTTP/1.1\r\nHost x\r\n\r\n".to_owned(),
            // Missing key, bad key (decodes to 15 bytes), two keys.
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
                .to_owned(),
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n\r\n"
                .to_owned(),
            "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not base64!!\r\n\r\n"
                .to_owned(),
            // No Upgrade / Connection tokens, POST, HTTP/1.0.
            "GET /ws HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_owned(),
            "POST /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_owned(),
            "GET /ws HTTP/1.0\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_owned(),
        ];
        for request in &cases {
            assert_refused(driver, request, 400);
        }
        // Several Origin headers.
        let srv = start_open(driver, &[]);
        let req = upgrade_request(
            srv.addr,
            "/ws",
            &["Origin: http://a.test", "Origin: http://b.test"],
        );
        let (_s, head) = raw_exchange(srv.addr, req.as_bytes());
        assert_eq!(status(&head), 400, "{head}");
    }
}

#[test]
fn other_versions_get_426_naming_13() {
    for driver in drivers() {
        let req = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let head = assert_refused(driver, req, 426);
        assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
    }
}

#[test]
fn heads_over_the_limit_get_431() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let big = format!("X-Filler: {}", "a".repeat(9000));
        let req = upgrade_request(srv.addr, "/ws", &[&big]);
        let mut s = tcp(srv.addr);
        // The server may answer (and close) before it has read everything we send.
        let _ = s.write_all(req.as_bytes());
        let head = read_head(&mut s);
        assert_eq!(status(&head), 431, "{driver}: {head}");
        // The limit is a flag: a larger one admits the same request.
        let srv = start_open(driver, &["--max-head-bytes", "16384"]);
        let (_s, head) = raw_exchange(srv.addr, req.as_bytes());
        assert_eq!(status(&head), 101, "{driver}: {head}");
    }
}

#[test]
fn unknown_paths_get_404() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let req = upgrade_request(srv.addr, "/elsewhere", &[]);
        let (mut s, head) = raw_exchange(srv.addr, req.as_bytes());
        assert_eq!(status(&head), 404, "{head}");
        assert!(closed_by_server(&mut s));
        let (_s, head) = raw_exchange(srv.addr, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status(&head), 404, "{driver}: {head}");
    }
}

#[test]
fn connections_over_the_limit_get_503_with_retry_after() {
    for driver in drivers() {
        let srv = start_open(
            driver,
            &["--max-connections", "1", "--retry-after-secs", "7"],
        );
        let (_held, head) =
            raw_exchange(srv.addr, upgrade_request(srv.addr, "/ws", &[]).as_bytes());
        assert_eq!(status(&head), 101, "{head}");
        let (mut s, head) =
            raw_exchange(srv.addr, upgrade_request(srv.addr, "/ws", &[]).as_bytes());
        assert_eq!(status(&head), 503, "{driver}: {head}");
        assert!(head.contains("Retry-After: 7\r\n"), "{head}");
        assert!(closed_by_server(&mut s));
    }
}

#[test]
fn per_worker_limit_also_gives_503() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-connections-per-worker", "1"]);
        let (_held, head) =
            raw_exchange(srv.addr, upgrade_request(srv.addr, "/ws", &[]).as_bytes());
        assert_eq!(status(&head), 101, "{head}");
        let (_s, head) = raw_exchange(srv.addr, upgrade_request(srv.addr, "/ws", &[]).as_bytes());
        assert_eq!(status(&head), 503, "{driver}: {head}");
    }
}

/// The runtime arms the handshake deadline: a head that never completes is closed without an
/// answer, not before `--handshake-timeout-ms` and within ten times it.
#[test]
fn an_incomplete_head_is_closed_at_the_handshake_timeout() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(200);
    on_every_driver_at_once(|driver| {
        let srv = start_open(driver, &["--handshake-timeout-ms", "200"]);
        // Before connecting, so the server's deadline cannot start earlier.
        let began = Instant::now();
        let mut s = tcp(srv.addr);
        read_at_most_tenfold(&s, HANDSHAKE_TIMEOUT);
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: slow").unwrap();
        let mut answer = Vec::new();
        let closed = match s.read_to_end(&mut answer) {
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
        let waited = began.elapsed();
        assert!(closed, "{driver}: a slow-loris connection left open");
        assert!(
            answer.is_empty(),
            "{driver}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            waited >= HANDSHAKE_TIMEOUT,
            "{driver}: closed after {waited:?}"
        );
    });
}
