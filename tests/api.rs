//! docs/protocol.md §5, the HTTP API on the WebSocket port, with a raw HTTP client: healthz, metrics
//! with per-core labels, publish reaching members on every core, the API key, and bad input
//! answered with the right status and a JSON body, with nothing half-applied.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;
use serde_json::{Value, json};

/// One HTTP response: status, head, body.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response (head, then a Content-Length body) from `s`.
fn read_response(s: &mut TcpStream) -> Response {
    let head = read_head(s);
    let len = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Content-Length: ")
                .or_else(|| l.strip_prefix("content-length: "))
        })
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    Response {
        status: status(&head),
        head,
        body,
    }
}

fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut s = tcp(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_response(&mut s)
}

fn publish_request(body: &str, key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn healthz_and_metrics_with_per_core_labels() {
    for driver in drivers() {
        let srv = start_api(driver, &["--workers", "2"]);
        let r = request(
            srv.addr,
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{driver}");
        let _member = raw_member(srv.addr, "m", &["*"]);
        let r = request(
            srv.addr,
            "GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 200);
        assert!(r.head.contains("text/plain; version=0.0.4"), "{}", r.head);
        let text = String::from_utf8(r.body).unwrap();
        for needle in [
            "wsgate_open_connections{core=\"0\"}",
            "wsgate_open_connections{core=\"1\"}",
            "wsgate_handshakes_total{core=\"0\",outcome=\"ok\"}",
            "wsgate_auth_total{",
            "wsgate_fanout_deliveries_total{",
            "wsgate_cross_core_queue_messages{",
            "wsgate_slow_consumer_closes_total{",
        ] {
            assert!(
                text.contains(needle),
                "{driver}: {needle} missing from\n{text}"
            );
        }
        // The member's authentication was counted on some core.
        let auth_ok: u64 = text
            .lines()
            .filter(|l| l.starts_with("wsgate_auth_total{") && l.contains("outcome=\"ok\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!(auth_ok, 1, "{driver}\n{text}");
    }
}

#[test]
fn publish_reaches_members_on_every_core() {
    for driver in drivers() {
        let srv = start_api(driver, &["--workers", "2"]);
        let mut members = Vec::new();
        for i in 0..64 {
            let mut m = raw_member(srv.addr, &format!("u{i}"), &["news"]);
            assert_eq!(
                command(&mut m, json!({"action":"join","group":"news"}))["action"],
                "joined"
            );
            members.push(m);
            if members.len() >= 4 && srv.open_per_core().iter().all(|&c| c > 0) {
                break;
            }
        }
        assert!(
            srv.open_per_core().iter().all(|&c| c > 0),
            "members on one core only"
        );
        let data = json!({"headline": "ünïcode", "n": 3});
        let r = request(
            srv.addr,
            &publish_request(
                &json!({"group":"news","data":data}).to_string(),
                Some(API_KEY),
            ),
        );
        assert_eq!(r.status, 202, "{driver}");
        assert_eq!(r.json(), json!({"ok": true}));
        for m in &mut members {
            assert_eq!(
                read_json(m),
                json!({"action":"message","group":"news","data":data}),
                "{driver}"
            );
        }
    }
}

#[test]
fn the_api_key_is_required() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        let body = json!({"group":"g","data":1}).to_string();
        for key in [
            None,
            Some("wrong-key-0123456789"),
            Some(&API_KEY[..API_KEY.len() - 1]),
        ] {
            let r = request(srv.addr, &publish_request(&body, key));
            assert_eq!(r.status, 401, "{driver}: {key:?}");
            assert!(r.json()["error"].is_string());
        }
        // No key configured at all: the publish endpoint is closed to everyone.
        let srv = start_open(driver, &[]);
        let r = request(srv.addr, &publish_request(&body, Some(API_KEY)));
        assert_eq!(r.status, 403, "{driver}");
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn bad_input_gets_its_status_and_a_json_error_and_nothing_is_applied() {
    for driver in drivers() {
        let srv = start_api(driver, &["--max-body-bytes", "1024"]);
        let mut member = raw_member(srv.addr, "m", &["g"]);
        assert_eq!(
            command(&mut member, json!({"action":"join","group":"g"}))["action"],
            "joined"
        );
        let bad_bodies = [
            ("{not json", 400),
            ("[1,2]", 400),
            (r#"{"data":1}"#, 400),
            (r#"{"group":"g"}"#, 400),
            (r#"{"group":"bad name","data":1}"#, 400),
            (r#"{"group":7,"data":1}"#, 400),
            (r#"{"group":"g","data":1,"extra":true}"#, 400),
        ];
        for (body, expected) in bad_bodies {
            let r = request(srv.addr, &publish_request(body, Some(API_KEY)));
            assert_eq!(r.status, expected, "{driver}: {body}");
            assert!(r.json()["error"].is_string(), "{driver}: {body}");
        }
        let big = json!({"group":"g","data":"x".repeat(2000)}).to_string();
        let r = request(srv.addr, &publish_request(&big, Some(API_KEY)));
        assert_eq!(r.status, 413, "{driver}");
        let no_length = format!(
            "POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        assert_eq!(request(srv.addr, &no_length).status, 411, "{driver}");
        let r = request(
            srv.addr,
            "GET /api/publish HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 405, "{driver}");
        assert!(r.head.contains("Allow: POST"), "{}", r.head);
        assert_eq!(
            request(srv.addr, "GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n").status,
            404
        );
        // None of the refused publishes reached the member: the first message it sees is this one.
        let r = request(
            srv.addr,
            &publish_request(r#"{"group":"g","data":"good"}"#, Some(API_KEY)),
        );
        assert_eq!(r.status, 202);
        assert_eq!(read_json(&mut member)["data"], "good", "{driver}");
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        let mut s = tcp(srv.addr);
        let body = r#"{"group":"g","data":1}"#;
        let publish = format!(
            "POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        // Pipelined: three requests in one write, three answers in order.
        let all = format!(
            "GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n{publish}GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
        );
        s.write_all(all.as_bytes()).unwrap();
        assert_eq!(read_response(&mut s).status, 200, "{driver}");
        assert_eq!(read_response(&mut s).status, 202, "{driver}");
        assert_eq!(read_response(&mut s).status, 200, "{driver}");
    }
}

#[test]
fn pipelined_publishes_are_all_answered_and_delivered_in_order() {
    for driver in drivers() {
        let srv = start_api(driver, &["--workers", "2"]);
        let mut member = raw_member(srv.addr, "m", &["g"]);
        assert_eq!(
            command(&mut member, json!({"action":"join","group":"g"}))["action"],
            "joined"
        );
        let mut burst = String::new();
        for seq in 0..200 {
            let body = json!({"group":"g","data":{"seq":seq}}).to_string();
            burst.push_str(&format!(
                "POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        let mut s = tcp(srv.addr);
        s.write_all(burst.as_bytes()).unwrap();
        for seq in 0..200 {
            assert_eq!(read_response(&mut s).status, 202, "{driver}: answer {seq}");
        }
        for seq in 0..200 {
            assert_eq!(
                read_json(&mut member)["data"]["seq"],
                seq,
                "{driver}: order per HTTP connection"
            );
        }
    }
}
