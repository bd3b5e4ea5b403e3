//! Regression tests for holes found by probing the gateway from outside, one or more per
//! finding, each reproducing the attack over a real socket (README "Security: limits and what a
//! client sees"). The attack first, then what the gateway must answer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// `2^63`, `2^63 - leeway` and `u64::MAX` as a token's `exp`: the values that once overflowed
/// the worker's deadline arithmetic.
const HUGE_EXPS: [u64; 3] = [1 << 63, (1 << 63) - 30, u64::MAX];

fn huge_exp_token(user: &str, exp: u64) -> String {
    token_with(
        json!({"token_type": "access", "exp": exp, "iat": now(), "user_id": user,
        "groups": ["room.*"]}),
    )
}

/// The gateway still serves: `/healthz` is 200 and a fresh member authenticates.
fn still_serving(addr: std::net::SocketAddr) {
    let health = http_call(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        health.status,
        200,
        "{}",
        String::from_utf8_lossy(&health.body)
    );
    let (_ws, reply) = ws_authenticated(addr, json!("after"));
    assert_eq!(reply, auth_ok("after"));
}

/// Finding 1: an `exp` of 2^63 or more is refused as a lifetime beyond the bound, through every
/// method that carries a token.
#[test]
fn a_huge_exp_is_refused_by_every_method() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        for exp in HUGE_EXPS {
            let token = huge_exp_token("7", exp);
            let refused = auth_failure(401, "token lifetime too long");
            // First frame.
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            let cmd = json!({"action": "authenticate", "token": token});
            assert_eq!(ws_command(&mut ws, cmd), refused, "{driver} {exp}");
            // Header.
            let bearer = format!("Bearer {token}");
            let (mut ws, _) = ws_connect(srv.addr, &[("Authorization", &bearer)]).unwrap();
            assert_eq!(next_json(&mut ws), refused, "{driver} {exp}");
            // Subprotocol.
            let offer = format!("wsgate.v1, wsgate.bearer.{token}");
            let (mut ws, _) = ws_connect(srv.addr, &[("Sec-WebSocket-Protocol", &offer)]).unwrap();
            assert_eq!(next_json(&mut ws), refused, "{driver} {exp}");
            // Ticket: no ticket for such a token.
            let r = post_ws_auth(srv.addr, Some(&token));
            assert_eq!(r.status, 401, "{driver} {exp}");
            assert_eq!(r.json()["error"], "token lifetime too long");
            // Refresh.
            let (mut ws, _) = ws_authenticated(srv.addr, json!("7"));
            let cmd = json!({"action": "refresh", "token": token});
            assert_eq!(ws_command(&mut ws, cmd), refused, "{driver} {exp}");
        }
        still_serving(srv.addr);
    }
}

/// Finding 1, the arithmetic itself: with the lifetime bound lifted (`u64::MAX`), such tokens
/// authenticate by every method, and the worker lives on to serve the next client.
#[test]
fn a_huge_exp_without_a_lifetime_bound_leaves_the_worker_alive() {
    let unbounded = u64::MAX.to_string();
    for driver in drivers() {
        let srv = start_api(driver, &["--max-token-lifetime-secs", &unbounded]);
        for exp in HUGE_EXPS {
            let token = huge_exp_token("7", exp);
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            let cmd = json!({"action": "authenticate", "token": token});
            assert_eq!(ws_command(&mut ws, cmd), auth_ok("7"), "{driver} {exp}");
            let bearer = format!("Bearer {token}");
            let (mut ws2, _) = ws_connect(srv.addr, &[("Authorization", &bearer)]).unwrap();
            assert_eq!(next_json(&mut ws2), auth_ok("7"));
            let offer = format!("wsgate.v1, wsgate.bearer.{token}");
            let (mut ws3, _) = ws_connect(srv.addr, &[("Sec-WebSocket-Protocol", &offer)]).unwrap();
            assert_eq!(next_json(&mut ws3), auth_ok("7"));
            let ticket = ticket_for(srv.addr, &token);
            let (mut ws4, _) =
                ws_connect_path(srv.addr, &format!("/ws?ticket={ticket}"), &[]).unwrap();
            assert_eq!(next_json(&mut ws4), auth_ok("7"));
            let (mut ws5, _) = ws_authenticated(srv.addr, json!("7"));
            let cmd = json!({"action": "refresh", "token": token});
            assert_eq!(ws_command(&mut ws5, cmd), auth_ok("7"));
            // Each connection still answers on its worker.
            for ws in [&mut ws, &mut ws2, &mut ws3, &mut ws4, &mut ws5] {
                let reply = ws_command(ws, json!({"action": "join", "group": "room.1"}));
                assert_eq!(reply, json!({"action": "joined", "group": "room.1"}));
            }
        }
        still_serving(srv.addr);
    }
}

/// Finding 1, the failure mode: a worker that panics is reported by `/healthz` on the others
/// (503 naming it) at once.
#[test]
fn a_panicked_worker_turns_healthz_503() {
    for driver in drivers() {
        let srv = start_open(driver, &["--workers", "2", "--test-hooks"]);
        let mut s = tcp(srv.addr);
        s.write_all(b"POST /debug/panic HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        // The panicking worker never answers.
        let mut nothing = [0u8; 1];
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(!matches!(s.read(&mut nothing), Ok(1)), "{driver}");
        // Its listener is shut down once the panic is caught, so that every new connection
        // reaches the other worker; one that raced into the dying listener's backlog is reset.
        let body = (0..250)
            .find_map(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut s = TcpStream::connect_timeout(&srv.addr, IO_TIMEOUT).ok()?;
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                    .ok()?;
                let mut answer = String::new();
                s.read_to_string(&mut answer).ok()?;
                let (head, body) = answer.split_once("\r\n\r\n")?;
                // (Until the panic is caught, the other worker still answers 200.)
                head.starts_with("HTTP/1.1 503").then(|| body.to_owned())
            })
            .expect("/healthz never answered 503 after a worker panicked");
        assert!(
            body == "workers not responding: 0" || body == "workers not responding: 1",
            "{driver}: {body}"
        );
    }
}

/// Finding 1, the failure mode as a service manager sees it: the process logs the panic and
/// exits with status 70, so that `Restart=on-failure` starts a whole gateway again.
#[test]
fn a_panicked_worker_ends_the_process_with_status_70() {
    let mut gw = Process::start(&mut wsgate_binary(&[
        "--workers",
        "2",
        "--test-hooks",
        "--allowed-origins",
        "*",
    ]));
    let mut s = tcp(gw.addr);
    s.write_all(b"POST /debug/panic HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let (status, _) = gw.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(70), "{:?}", gw.log());
    let log = gw.log().join("\n");
    assert!(log.contains("worker panicked"), "{log}");
    assert!(log.contains("/debug/panic"), "{log}");
}

/// Finding 1, the watchdog without systemd: while a worker is stuck, `/healthz` (answered by
/// another) says so; once it runs again, 200.
#[test]
fn a_stuck_worker_turns_healthz_503_until_it_runs_again() {
    let srv = start_open("epoll", &["--workers", "2", "--test-hooks"]);
    let mut stalled = tcp(srv.addr);
    stalled
        .write_all(b"POST /debug/stall?ms=4000 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    // Ask until a request lands on the other worker after the liveness probe found the stall
    // (one landing on the stuck worker waits; its short timeout moves on to the next).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
    while seen.is_none() && Instant::now() < deadline {
        let mut s = tcp(srv.addr);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if answer.starts_with("HTTP/1.1 503") {
            seen = Some(answer);
        }
    }
    let answer = seen.expect("no 503 from /healthz while a worker was stuck");
    assert!(answer.contains("workers not responding: "), "{answer}");
    // The stall ends (its own answer arrives), and the next probes find every worker again.
    assert_eq!(read_http_response(&mut stalled).status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http_call(
            srv.addr,
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {}", r.status);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 2: one user filling the ticket store locks out only itself.
#[test]
fn one_user_cannot_exhaust_the_ticket_store() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-tickets", "50"]);
        let greedy = token(json!("greedy"));
        let statuses: Vec<u16> = (0..60)
            .map(|_| post_ws_auth(srv.addr, Some(&greedy)).status)
            .collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 201).count(),
            10,
            "{statuses:?}"
        );
        let refused = post_ws_auth(srv.addr, Some(&greedy));
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(
            refused.json()["error"],
            "too many tickets outstanding for this user"
        );
        // Everyone else still gets tickets.
        for user in ["a", "b", "c"] {
            let r = post_ws_auth(srv.addr, Some(&token(json!(user))));
            assert_eq!(r.status, 201, "{driver} {user}");
        }
        assert_eq!(
            metric_sum(srv.addr, "wsgate_tickets_not_issued_total"),
            51,
            "{driver}"
        );
    }
}

/// Finding 2, per address: many users from one address share one quota.
#[test]
fn one_address_cannot_exhaust_the_ticket_store() {
    let srv = start_open(
        "epoll",
        &["--max-tickets-per-user", "0", "--max-tickets-per-ip", "5"],
    );
    for user in 0..5 {
        let r = post_ws_auth(srv.addr, Some(&token(json!(user.to_string()))));
        assert_eq!(r.status, 201);
    }
    let r = post_ws_auth(srv.addr, Some(&token(json!("6"))));
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["error"],
        "too many tickets outstanding for this address"
    );
}

/// Finding 3: behind a proxy that appends its own `X-Forwarded-For` line, a client that sends
/// eight lines of its own does not hide the proxy's: the per-address limit holds.
#[test]
fn every_x_forwarded_for_line_is_read() {
    for driver in drivers() {
        let srv = start_open(
            driver,
            &[
                "--trusted-proxies",
                "127.0.0.1",
                "--max-connections-per-ip",
                "1",
            ],
        );
        let forged = |n: u8| -> Vec<String> {
            let mut lines: Vec<String> = (0..8)
                .map(|i| format!("X-Forwarded-For: 198.51.100.{}", n * 8 + i))
                .collect();
            // What the proxy appends: the real client.
            lines.push("X-Forwarded-For: 203.0.113.9".into());
            lines
        };
        let first = forged(1);
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let _held = raw_ws(srv.addr, &first);
        let second = forged(2);
        let second: Vec<&str> = second.iter().map(String::as_str).collect();
        let (_s, head) = raw_exchange(
            srv.addr,
            upgrade_request(srv.addr, "/ws", &second).as_bytes(),
        );
        assert_eq!(status(&head), 503, "{driver}: {head}");
        assert!(head.contains("Retry-After:"), "{head}");
    }
}

/// Finding 4: a refresh to fewer groups leaves the groups it no longer allows, says so, and
/// no longer delivers them.
#[test]
fn a_refresh_to_fewer_groups_leaves_the_others() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        let mut member = raw_member(srv.addr, "5", &["room.*"]);
        for group in ["room.1", "room.2"] {
            let reply = command(&mut member, json!({"action": "join", "group": group}));
            assert_eq!(reply["action"], "joined");
        }
        let narrower = group_token("5", &["room.2"]);
        let reply = command(&mut member, json!({"action": "refresh", "token": narrower}));
        assert_eq!(reply, auth_ok("5"), "{driver}");
        assert_eq!(
            read_json(&mut member),
            json!({"action": "left", "group": "room.1", "reason": "not allowed"}),
            "{driver}"
        );
        for group in ["room.1", "room.2"] {
            let body = json!({"group": group, "data": group}).to_string();
            let r = http_call(
                srv.addr,
                &format!(
                    "POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                ),
            );
            assert_eq!(r.status, 202);
        }
        // Only room.2's message arrives.
        assert_eq!(
            read_json(&mut member),
            json!({"action": "message", "group": "room.2", "data": "room.2"}),
            "{driver}"
        );
        let again = command(&mut member, json!({"action": "join", "group": "room.1"}));
        assert_eq!(again["payload"]["status_code"], 403, "{driver}");
    }
}

/// Finding 5: before authentication a frame announcing more than the pre-auth limit is
/// refused from its header (1009), without waiting for (or holding) its payload.
#[test]
fn before_authentication_a_big_frame_is_refused_from_its_header() {
    for driver in drivers() {
        let srv = start_open(driver, &["--auth-timeout-ms", "60000"]);
        let mut s = raw_ws(srv.addr, &[]);
        // A text frame announcing 1 MiB (the post-auth limit), then only part of it.
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[b'x'; 4096]);
        s.write_all(&frame).unwrap();
        assert_eq!(read_close_code(&mut s), Some(1009), "{driver}");
    }
}

/// Finding 5, fragments: small fragments that add up past the pre-auth limit are refused too.
#[test]
fn before_authentication_fragments_cannot_add_up() {
    for driver in drivers() {
        let srv = start_open(driver, &["--auth-timeout-ms", "60000"]);
        let mut s = raw_ws(srv.addr, &[]);
        let piece = vec![b' '; 8 * 1024];
        send_frame(&mut s, 0x01, &piece);
        send_frame(&mut s, 0x00, &piece);
        send_frame(&mut s, 0x00, &piece);
        assert_eq!(read_close_code(&mut s), Some(1009), "{driver}");
    }
}

/// Finding 5, the other side: the largest token still fits before authentication, and after it
/// the configured limits (1 MiB) apply again.
#[test]
fn after_authentication_the_configured_limits_apply() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        // A token near the verifier's largest (a 4 KiB claims set).
        let padding = "p".repeat(3900);
        let big = token_with(json!({"exp": now() + 300, "user_id": "9", "groups": ["*"],
            "pad": padding}));
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        let cmd = json!({"action": "authenticate", "token": big});
        assert_eq!(ws_command(&mut ws, cmd), auth_ok("9"), "{driver}");
        ws_command(&mut ws, json!({"action": "join", "group": "g"}));
        let data = "d".repeat(200_000);
        let send = json!({"action": "send", "group": "g", "data": data});
        let reply = ws_command(&mut ws, send);
        assert_eq!(
            reply["data"].as_str().map(str::len),
            Some(200_000),
            "{driver}"
        );
    }
}

/// Finding 6: connections that never upgrade count per address from accept: silent sockets
/// cannot take every slot.
#[test]
fn silent_connections_count_per_address_from_accept() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-connections-per-ip", "2"]);
        let silent: Vec<TcpStream> = (0..2).map(|_| tcp(srv.addr)).collect();
        let r = http_call(
            srv.addr,
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 503, "{driver}");
        assert!(r.header("retry-after").is_some());
        drop(silent);
        // Their places free when they go.
        wait_for("the silent connections to end", || {
            http_call(
                srv.addr,
                "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            )
            .status
                == 200
        });
    }
}

/// Finding 7: a token claiming to live longer than `--max-token-lifetime-secs` is refused, so
/// no revoked token can outlive its revocation.
#[test]
fn tokens_living_longer_than_the_revocation_window_are_refused() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-token-lifetime-secs", "600"]);
        let long = token_with(json!({"exp": now() + 3600, "iat": now(), "user_id": "1"}));
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        let cmd = json!({"action": "authenticate", "token": long});
        assert_eq!(
            ws_command(&mut ws, cmd),
            auth_failure(401, "token lifetime too long"),
            "{driver}"
        );
        let within = token_with(json!({"exp": now() + 600, "iat": now(), "user_id": "1"}));
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        let cmd = json!({"action": "authenticate", "token": within});
        assert_eq!(ws_command(&mut ws, cmd), auth_ok("1"), "{driver}");
    }
}

/// Finding 8: a bare-LF blank line does not end the head early (dropping the request behind
/// it): any bare LF is a 400.
#[test]
fn a_bare_lf_head_is_refused_and_nothing_is_dropped() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let mut s = tcp(srv.addr);
        s.write_all(
            b"GET /healthz HTTP/1.1\r\nHost: gw\n\nGET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n",
        )
        .unwrap();
        let r = read_http_response(&mut s);
        assert_eq!(r.status, 400, "{driver}");
        assert!(closed_by_server(&mut s), "{driver}");
    }
}

/// Finding 9: a token under any query parameter name never reaches a debug log line.
#[test]
fn debug_logs_never_carry_a_misnamed_token() {
    let gw = Process::start(&mut wsgate_binary(&[
        "--log-level",
        "debug",
        "--allowed-origins",
        "*",
    ]));
    let jwt = token(json!("secret-user"));
    let signature = jwt.rsplit('.').next().unwrap().to_owned();
    for query in [
        format!("access_token={jwt}"),
        format!("jwt={jwt}"),
        format!("x=1;token={jwt}"),
        format!("token%3D{jwt}"),
        jwt.clone(),
    ] {
        // Version 12: refused with 426, and the refusal is logged at debug with its target.
        let request = format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 12\r\n\r\n"
        );
        let (_, head) = raw_exchange(gw.addr, request.as_bytes());
        assert_eq!(status(&head), 426);
    }
    let log = gw.stop();
    let refusals = log
        .iter()
        .filter(|l| l.contains("handshake refused"))
        .count();
    assert_eq!(refusals, 5, "{log:?}");
    for line in &log {
        assert!(
            !line.contains(&signature),
            "a token reached the log: {line}"
        );
    }
}

/// Finding 10: `data` nested beyond 64 levels is refused with the 400 error and reaches no
/// member; accepted `data` is relayed compact.
#[test]
fn deep_data_is_refused_and_data_is_relayed_compact() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let mut sender = raw_member(srv.addr, "1", &["*"]);
        let mut peer = raw_member(srv.addr, "2", &["*"]);
        for s in [&mut sender, &mut peer] {
            command(s, json!({"action": "join", "group": "g"}));
        }
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        let cmd = format!(r#"{{"action":"send","group":"g","data":{deep}}}"#);
        send_frame(&mut sender, 0x81, cmd.as_bytes());
        let reply = read_json(&mut sender);
        assert_eq!(
            reply,
            json!({"action": "error", "payload": {"status_code": 400,
                "detail": "data nested too deeply"}}),
            "{driver}"
        );
        // 64 levels in all: the object, then 63 arrays.
        let deepest_allowed = format!("{}{}", "[".repeat(63), "]".repeat(63));
        let spaced = format!(
            r#"{{"action":"send","group":"g","data":{{ "a" : [ 1 , "b c" ], "d": {deepest_allowed} }} }}"#
        );
        send_frame(&mut sender, 0x81, spaced.as_bytes());
        // The peer's first message is the accepted one: nothing of the refused send arrived.
        let (_, payload) = read_frame(&mut peer);
        let text = String::from_utf8(payload).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"action":"message","group":"g","data":{{"a":[1,"b c"],"d":{deepest_allowed}}}}}"#
            ),
            "{driver}"
        );
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["data"]["a"], json!([1, "b c"]));
    }
}
