//! Issue 6 end to end, against a real gateway with clients that share no code with it
//! (tungstenite, raw sockets, hand-written HTTP): tickets from `POST /ws-auth` (single use,
//! racing redeemers on two cores, expiry, a bounded table, never logged), token expiry and
//! `refresh`, `POST /api/revoke` by user and by jti, and the message and per-address limits
//! with their counters. The time rules themselves (a ticket's TTL, expiry, refresh, the leeway,
//! the message rate) are unit-tested on an injected clock beside their code; the one test here
//! that waits for time proves the runtime arms a token's expiry, and reads with a bound rather
//! than sleeping. Everything else waits on the server's own counters.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Barrier;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;
use wsgate::metrics::Rejection;

/// A simplejwt-shaped access token for `user` (string or integer) allowed into `groups`, with
/// the claims in `extra` set on top (`exp`, `iat`, `jti`, `token_type`, ...).
fn access(user: Value, groups: &[&str], extra: Value) -> String {
    let mut claims = json!({
        "token_type": "access",
        "exp": now() + 300,
        "iat": now(),
        "user_id": user,
        "groups": groups,
    });
    for (key, value) in extra.as_object().unwrap() {
        claims[key] = value.clone();
    }
    token_with(claims)
}

/// A raw upgrade of `path` with these extra header lines: the status, the head, the socket.
fn upgrade(addr: SocketAddr, path: &str, extra: &[&str]) -> (u16, String, TcpStream) {
    let (s, head) = raw_exchange(addr, upgrade_request(addr, path, extra).as_bytes());
    (status(&head), head, s)
}

/// The value of header `name` in a response head (case-insensitive).
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts a 503 head carries `Retry-After` with a whole number of seconds, at least 1.
fn assert_retry_after(head: &str) {
    let secs = header(head, "retry-after")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no usable Retry-After in {head}"));
    assert!(secs >= 1, "{head}");
}

/// A raw client that upgraded and sent `{"action":"authenticate","token":token}`; the reply.
fn first_frame(addr: SocketAddr, token: &str) -> (TcpStream, Value) {
    let mut s = raw_ws(addr, &[]);
    let cmd = json!({"action": "authenticate", "token": token}).to_string();
    send_frame(&mut s, 0x81, cmd.as_bytes());
    let reply = read_json(&mut s);
    (s, reply)
}

/// A raw client authenticated by `Authorization: Bearer` on the upgrade (plus `extra` lines),
/// or the status it was refused with.
fn header_member(addr: SocketAddr, token: &str, extra: &[&str]) -> Result<TcpStream, u16> {
    let auth = format!("Authorization: Bearer {token}");
    let mut lines = vec![auth.as_str()];
    lines.extend_from_slice(extra);
    let (code, head, mut s) = upgrade(addr, "/ws", &lines);
    if code != 101 {
        return Err(code);
    }
    let reply = read_json(&mut s);
    assert_eq!(reply["payload"]["status_code"], 200, "{head}{reply}");
    Ok(s)
}

/// A raw client authenticated with `ticket`; its first message.
fn ticket_member(addr: SocketAddr, ticket: &str) -> (TcpStream, Value) {
    let (code, head, mut s) = upgrade(addr, &format!("/ws?ticket={ticket}"), &[]);
    assert_eq!(code, 101, "{head}");
    let reply = read_json(&mut s);
    (s, reply)
}

/// Asserts a raw client's next frames are the 401 `authentication` message with `detail` and a
/// Close 4401.
fn assert_refused_401(s: &mut TcpStream, detail: &str, what: &str) {
    assert_eq!(read_json(s), auth_failure(401, detail), "{what}");
    assert_eq!(read_close_code(s), Some(4401), "{what}");
}

/// Reads a tungstenite client up to the Close: the texts before it as JSON, and the Close.
fn json_until_close(ws: &mut Ws) -> (Vec<Value>, Option<(u16, String)>) {
    let (texts, close) = read_until_close(ws);
    let texts = texts
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    (texts, close)
}

/// `POST /api/revoke` with this body and, when given, this API key.
fn revoke(addr: SocketAddr, body: &str, key: Option<&str>) -> HttpResponse {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    http_call(
        addr,
        &format!(
            "POST /api/revoke HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn join(group: &str) -> Value {
    json!({"action": "join", "group": group})
}

fn joined(group: &str) -> Value {
    json!({"action": "joined", "group": group})
}

fn rejected_503(srv: &TestServer) -> u64 {
    srv.stats()
        .iter()
        .map(|s| {
            s.rejected(Rejection::Unavailable503)
                .load(Ordering::Relaxed)
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 1. Tickets
// ---------------------------------------------------------------------------------------------

#[test]
fn a_ticket_authenticates_one_upgrade_as_its_tokens_user_and_groups() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let token = access(json!("ann"), &["room.*"], json!({}));
        let r = post_ws_auth(srv.addr, Some(&token));
        assert_eq!(
            r.status,
            201,
            "{driver}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.head);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body = r.json();
        let ticket = body["ticket"].as_str().unwrap().to_owned();
        assert_eq!(
            body,
            json!({"ticket": ticket, "expires_in": 10}),
            "{driver}"
        );
        assert!(
            ticket.len() >= 22
                && ticket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{ticket:?}: 128 bits or more, URL-safe"
        );

        let (mut ws, _) = ws_connect_path(srv.addr, &format!("/ws?ticket={ticket}"), &[]).unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("ann"), "{driver}");
        assert_eq!(ws_command(&mut ws, join("room.1")), joined("room.1"));
        let denied = ws_command(&mut ws, join("admin"));
        assert_eq!(denied["action"], "error", "{denied}");
        assert_eq!(denied["payload"]["status_code"], 403, "{denied}");

        // Single use; unknown, malformed and empty tickets get the same answer.
        for bad in [
            ticket.as_str(),
            "AAAAAAAAAAAAAAAAAAAAAA",
            "not-a-ticket",
            "",
        ] {
            let (mut refused, response) =
                ws_connect_path(srv.addr, &format!("/ws?ticket={bad}"), &[]).unwrap();
            assert_eq!(response.status(), 101);
            let (texts, close) = json_until_close(&mut refused);
            assert_eq!(
                texts,
                vec![auth_failure(401, "invalid or expired ticket")],
                "{driver}: {bad:?}"
            );
            assert_eq!(close.map(|c| c.0), Some(4401), "{driver}: {bad:?}");
        }
        // The connection that redeemed it is not disturbed.
        assert_eq!(
            ws_command(&mut ws, json!({"action":"leave","group":"room.1"})),
            json!({"action":"left","group":"room.1"})
        );
        assert_eq!(stat_sum(&srv, |s| &s.tickets_issued), 1, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.tickets_redeemed), 1, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.tickets_refused), 4, "{driver}");
        assert_eq!(metric_sum(srv.addr, "wsgate_tickets_issued_total"), 1);
        assert_eq!(metric_sum(srv.addr, "wsgate_tickets_redeemed_total"), 1);
        assert_eq!(metric_sum(srv.addr, "wsgate_tickets_refused_total"), 4);

        // A ticket never outlives its token.
        let short = access(json!("ann"), &[], json!({"exp": now() + 4}));
        let expires_in = post_ws_auth(srv.addr, Some(&short)).json()["expires_in"]
            .as_u64()
            .unwrap();
        assert!((3..=4).contains(&expires_in), "{driver}: {expires_in}");
    }
}

#[test]
fn racing_redeemers_of_each_ticket_have_exactly_one_winner_on_both_cores() {
    const MIN_TICKETS: usize = 24;
    const MAX_TICKETS: usize = 200;
    for driver in drivers() {
        let srv = start_open(driver, &["--workers", "2"]);
        let redeemed_per_core = || -> Vec<u64> {
            srv.stats()
                .iter()
                .map(|s| s.tickets_redeemed.load(Ordering::Relaxed))
                .collect()
        };
        let mut tickets = 0;
        while tickets < MIN_TICKETS || redeemed_per_core().contains(&0) {
            assert!(
                tickets < MAX_TICKETS,
                "{driver}: every winner on one core: {:?}",
                redeemed_per_core()
            );
            let user = format!("racer{tickets}");
            let ticket = ticket_for(srv.addr, &access(json!(user), &["room.*"], json!({})));
            let request = upgrade_request(srv.addr, &format!("/ws?ticket={ticket}"), &[]);
            let start = Barrier::new(2);
            let outcomes: Vec<Value> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut s = tcp(srv.addr);
                            start.wait();
                            s.write_all(request.as_bytes()).unwrap();
                            let head = read_head(&mut s);
                            assert_eq!(status(&head), 101, "{head}");
                            let reply = read_json(&mut s);
                            if reply["payload"]["status_code"] != 200 {
                                assert_eq!(read_close_code(&mut s), Some(4401), "{reply}");
                            }
                            reply
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let won = outcomes.iter().filter(|r| **r == auth_ok(&user)).count();
            let lost = outcomes
                .iter()
                .filter(|r| **r == auth_failure(401, "invalid or expired ticket"))
                .count();
            assert_eq!(
                (won, lost),
                (1, 1),
                "{driver}: ticket {tickets}: {outcomes:?}"
            );
            tickets += 1;
        }
        let n = tickets as u64;
        assert_eq!(stat_sum(&srv, |s| &s.tickets_issued), n, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.tickets_redeemed), n, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.tickets_refused), n, "{driver}");
        let per_core: Vec<u64> = srv
            .stats()
            .iter()
            .map(|s| s.handshakes_ok.load(Ordering::Relaxed))
            .collect();
        assert!(per_core.iter().all(|&c| c > 0), "{driver}: {per_core:?}");
        assert!(
            redeemed_per_core().iter().all(|&c| c > 0),
            "{driver}: {:?}",
            redeemed_per_core()
        );
    }
}

#[test]
fn the_ticket_table_is_bounded_and_a_bad_bearer_gets_401() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-tickets", "3"]);
        let token = access(json!("fay"), &[], json!({}));
        let tickets: Vec<String> = (0..3).map(|_| ticket_for(srv.addr, &token)).collect();
        let full = post_ws_auth(srv.addr, Some(&token));
        assert_eq!(full.status, 503, "{driver}");
        assert_retry_after(&full.head);
        assert!(full.json()["error"].is_string(), "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.tickets_issued), 3, "{driver}");
        // Redeeming one frees its place.
        let (_fay, reply) = ticket_member(srv.addr, &tickets[0]);
        assert_eq!(reply, auth_ok("fay"));
        assert_eq!(post_ws_auth(srv.addr, Some(&token)).status, 201, "{driver}");
        assert_eq!(post_ws_auth(srv.addr, Some(&token)).status, 503, "{driver}");

        let expired = access(
            json!("fay"),
            &[],
            json!({"exp": now() - 10, "iat": now() - 310}),
        );
        let refresh = access(json!("fay"), &[], json!({"token_type": "refresh"}));
        let cases = [
            (Some(expired.as_str()), Some("token expired")),
            (Some(refresh.as_str()), Some("not an access token")),
            (Some("not.a.jwt"), None),
            (None, Some("missing bearer token")),
        ];
        for (bearer, detail) in cases {
            let r = post_ws_auth(srv.addr, bearer);
            assert_eq!(r.status, 401, "{driver}: {detail:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", r.head);
            let error = r.json()["error"].clone();
            assert!(error.is_string(), "{error}");
            if let Some(detail) = detail {
                assert_eq!(error, detail, "{driver}");
            }
        }
        assert_eq!(stat_sum(&srv, |s| &s.tickets_issued), 4, "{driver}");

        // Without the ticket method there is no ticket endpoint.
        let off = start_open(driver, &["--auth-methods", "first-frame,header"]);
        assert_eq!(post_ws_auth(off.addr, Some(&token)).status, 404, "{driver}");
    }
}

/// The gateway binary with the test secret and JSON logs at debug level; stderr collected.
fn logged_gateway(driver: &str) -> Process {
    Process::start(&mut wsgate_binary(&[
        "--workers",
        "1",
        "--log-level",
        "debug",
        "--allowed-origins",
        "*",
        "--shutdown-timeout",
        "2",
        "--driver",
        driver,
    ]))
}

#[test]
fn tickets_never_reach_the_log() {
    for driver in drivers() {
        let gateway = logged_gateway(driver);
        let addr = gateway.addr;
        let token = access(json!("lou"), &["room.*"], json!({}));
        let redeemed = ticket_for(addr, &token);
        let (mut ws, _) = ws_connect_path(addr, &format!("/ws?ticket={redeemed}"), &[]).unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("lou"));
        assert_eq!(ws_command(&mut ws, join("room.1")), joined("room.1"));
        ws.close(None).unwrap();
        while ws_read(&mut ws).is_ok() {}
        drop(ws);
        // Used again: refused (with the ticket in the request line once more).
        let (mut again, reply) = ticket_member(addr, &redeemed);
        assert_eq!(reply, auth_failure(401, "invalid or expired ticket"));
        assert_eq!(read_close_code(&mut again), Some(4401));
        drop(again);
        // A refused handshake logs its target at debug level.
        let refused = ticket_for(addr, &token);
        let request = upgrade_request(addr, &format!("/ws?ticket={refused}"), &[])
            .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12");
        let (_, head) = raw_exchange(addr, request.as_bytes());
        assert_eq!(status(&head), 426, "{head}");
        let unused = ticket_for(addr, &token);
        let log = gateway.stop();
        assert!(
            log.iter().any(|l| l.contains("\"DEBUG\"")),
            "{driver}: no debug line in {log:?}"
        );
        assert!(
            log.iter().any(|l| l.contains("ticket=[redacted]")),
            "{driver}: the refused target was not logged: {log:?}"
        );
        for secret in [&redeemed, &refused, &unused, &token] {
            let leaks: Vec<_> = log.iter().filter(|l| l.contains(secret.as_str())).collect();
            assert!(leaks.is_empty(), "{driver}: {secret} logged: {leaks:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Expiry and refresh
// ---------------------------------------------------------------------------------------------

/// The runtime arms the expiry of the token in force, leeway included: a token already past its
/// `exp` but within `--jwt-leeway-secs` authenticates, and its connection gets the 401 message
/// and 4401 when `exp + leeway` comes, not before, and within ten times the (at most 1.3 s)
/// wait. The rules themselves, and refresh, are unit tests in `connection::tests`:
/// - `the_token_expires_with_the_401_message_then_4401_unless_refreshed`,
/// - `with_a_leeway_the_token_expires_at_exp_plus_leeway_not_at_exp`,
/// - `a_token_past_exp_but_within_the_leeway_lives_until_exp_plus_leeway`.
#[test]
fn a_token_within_the_leeway_is_closed_at_exp_plus_leeway() {
    const LEEWAY: u64 = 5;
    on_every_driver_at_once(|driver| {
        let srv = start_open(driver, &["--jwt-leeway-secs", &LEEWAY.to_string()]);
        // The token's end, exp + leeway: a whole second at least 300 ms away, so the server
        // still accepts the token when it checks it, and at most 1.3 s away.
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ends = (wall + Duration::from_millis(300)).as_secs() + 1;
        let exp = ends - LEEWAY;
        assert!(exp < now(), "the token is past its exp");
        let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
        read_at_most_tenfold(ws.get_ref(), Duration::from_millis(1300));
        let token = access(json!("eve"), &["room.*"], json!({"exp": exp}));
        let cmd = json!({"action": "authenticate", "token": token});
        assert_eq!(ws_command(&mut ws, cmd), auth_ok("eve"), "{driver}");

        let (texts, close) = json_until_close(&mut ws);
        let closed_at = SystemTime::now();
        assert_eq!(texts, vec![auth_failure(401, "token expired")], "{driver}");
        assert_eq!(close, Some((4401, "token expired".to_owned())), "{driver}");
        // The server closes once its wall clock reads `ends`; the slack only allows for the
        // clock being slewed in between.
        let ends_at = UNIX_EPOCH + Duration::from_secs(ends);
        assert!(
            closed_at + Duration::from_millis(50) >= ends_at,
            "{driver}: closed {:?} before exp + leeway",
            ends_at.duration_since(closed_at).unwrap_or_default()
        );
        assert_eq!(stat_sum(&srv, |s| &s.expired_closes), 1, "{driver}");
        assert_eq!(metric_sum(srv.addr, "wsgate_expired_closes_total"), 1);
    });
}

#[test]
fn a_refresh_for_another_user_is_403_and_an_invalid_one_401() {
    for driver in drivers() {
        let srv = start_open(driver, &[]);
        let member = |user: Value| {
            let (mut ws, _) = ws_connect(srv.addr, &[]).unwrap();
            let cmd = json!({"action": "authenticate", "token": access(user.clone(), &["room.*"], json!({}))});
            let reply = ws_command(&mut ws, cmd);
            assert_eq!(reply["payload"]["status_code"], 200, "{reply}");
            ws
        };
        let other_secret = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"token_type": "access", "exp": now() + 60, "user_id": "eve"}),
            &jsonwebtoken::EncodingKey::from_secret(b"another secret"),
        )
        .unwrap();
        let cases = [
            (
                access(json!("mallory"), &["*"], json!({})),
                auth_failure(403, "token is for another user"),
                4403,
            ),
            (
                access(json!("eve"), &[], json!({"exp": now() - 5})),
                auth_failure(401, "token expired"),
                4401,
            ),
            (
                access(json!("eve"), &[], json!({"token_type": "refresh"})),
                auth_failure(401, "not an access token"),
                4401,
            ),
            (other_secret, auth_failure(401, "bad signature"), 4401),
            (
                "not-a-jwt".to_owned(),
                auth_failure(401, "malformed token"),
                4401,
            ),
        ];
        for (token, message, code) in cases {
            let mut ws = member(json!("eve"));
            ws.send(Message::text(
                json!({"action": "refresh", "token": token}).to_string(),
            ))
            .unwrap();
            let (texts, close) = json_until_close(&mut ws);
            assert_eq!(texts, vec![message], "{driver}");
            assert_eq!(close.map(|c| c.0), Some(code), "{driver}");
        }
        // The user id compares as text: a token with `user_id: 7` refreshes with `"7"`, and the
        // new token's groups are in force.
        let mut seven = member(json!(7));
        let refresh =
            json!({"action": "refresh", "token": access(json!("7"), &["lobby"], json!({}))});
        assert_eq!(ws_command(&mut seven, refresh), auth_ok("7"), "{driver}");
        assert_eq!(ws_command(&mut seven, join("lobby")), joined("lobby"));
        let denied = ws_command(&mut seven, join("room.1"));
        assert_eq!(denied["payload"]["status_code"], 403, "{denied}");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Revocation
// ---------------------------------------------------------------------------------------------

#[test]
fn revoking_a_user_closes_every_connection_on_every_core_and_refuses_older_tokens() {
    for driver in drivers() {
        // The leeway lets a token issued a second from now in, as a backend's clock may be.
        let srv = start_api(driver, &["--workers", "2", "--jwt-leeway-secs", "5"]);
        let earlier = now() - 10;
        let bob_old = access(
            json!("bob"),
            &["room.*"],
            json!({"iat": earlier, "jti": "bob-old"}),
        );
        let al_token = access(json!("al"), &["room.*"], json!({"iat": earlier}));
        let (mut al, reply) = first_frame(srv.addr, &al_token);
        assert_eq!(reply, auth_ok("al"));
        let mut bobs = Vec::new();
        let mut cores = BTreeSet::new();
        for _ in 0..64 {
            let before = srv.open_per_core();
            let (bob, reply) = first_frame(srv.addr, &bob_old);
            assert_eq!(reply, auth_ok("bob"));
            let after = srv.open_per_core();
            cores.insert((0..after.len()).find(|&i| after[i] > before[i]).unwrap());
            bobs.push(bob);
            if bobs.len() >= 3 && cores.len() == 2 {
                break;
            }
        }
        assert_eq!(cores.len(), 2, "{driver}: bob on one core only");
        // Upgrade-time authentication is found by a revocation too.
        bobs.push(header_member(srv.addr, &bob_old, &[]).unwrap());
        let ticket = ticket_for(srv.addr, &bob_old);
        let (bob, reply) = ticket_member(srv.addr, &ticket);
        assert_eq!(reply, auth_ok("bob"));
        bobs.push(bob);

        // A ticket bought before the revocation is worth nothing after it.
        let pending = ticket_for(srv.addr, &bob_old);

        let r = revoke(srv.addr, r#"{"user":"bob"}"#, Some(API_KEY));
        assert_eq!(
            r.status,
            200,
            "{driver}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.json(),
            json!({"ok": true, "closed": bobs.len()}),
            "{driver}"
        );
        for (i, bob) in bobs.iter_mut().enumerate() {
            assert_refused_401(bob, "token revoked", &format!("{driver}: bob {i}"));
        }
        assert_eq!(
            command(&mut al, join("room.1")),
            joined("room.1"),
            "{driver}"
        );
        let n = bobs.len() as u64;
        assert_eq!(stat_sum(&srv, |s| &s.revoked_closes), n, "{driver}");
        assert_eq!(metric_sum(srv.addr, "wsgate_revoked_closes_total"), n);

        // The old token is refused everywhere: first frame, header, ticket, ticket endpoint.
        let (mut again, reply) = first_frame(srv.addr, &bob_old);
        assert_eq!(reply, auth_failure(401, "token revoked"), "{driver}");
        assert_eq!(read_close_code(&mut again), Some(4401));
        let (code, head, mut again) = upgrade(
            srv.addr,
            "/ws",
            &[&format!("Authorization: Bearer {bob_old}")],
        );
        assert_eq!(code, 101, "{head}");
        assert_refused_401(&mut again, "token revoked", driver);
        let (mut again, reply) = ticket_member(srv.addr, &pending);
        assert_eq!(reply, auth_failure(401, "token revoked"), "{driver}");
        assert_eq!(read_close_code(&mut again), Some(4401));
        let r = post_ws_auth(srv.addr, Some(&bob_old));
        assert_eq!(r.status, 401, "{driver}");
        assert_eq!(r.json(), json!({"error": "token revoked"}));

        // A token issued after the revocation's second is accepted.
        let bob_new = access(
            json!("bob"),
            &["room.*"],
            json!({"iat": now() + 1, "jti": "bob-new"}),
        );
        let (mut bob, reply) = first_frame(srv.addr, &bob_new);
        assert_eq!(reply, auth_ok("bob"), "{driver}");
        assert_eq!(command(&mut bob, join("room.2")), joined("room.2"));
        assert_eq!(command(&mut al, join("room.2")), joined("room.2"));
    }
}

#[test]
fn revoking_a_jti_closes_just_that_tokens_connections() {
    for driver in drivers() {
        let srv = start_api(driver, &["--workers", "2"]);
        let a = access(json!("carol"), &["room.*"], json!({"jti": "carol-a"}));
        let b = access(json!("carol"), &["room.*"], json!({"jti": "carol-b"}));
        let (mut a1, reply) = first_frame(srv.addr, &a);
        assert_eq!(reply, auth_ok("carol"));
        let (mut a2, reply) = ticket_member(srv.addr, &ticket_for(srv.addr, &a));
        assert_eq!(reply, auth_ok("carol"));
        let (mut b1, reply) = first_frame(srv.addr, &b);
        assert_eq!(reply, auth_ok("carol"));
        let mut seven = header_member(srv.addr, &access(json!(7), &[], json!({})), &[]).unwrap();

        let r = revoke(srv.addr, r#"{"jti":"carol-a"}"#, Some(API_KEY));
        assert_eq!(r.status, 200, "{driver}");
        assert_eq!(r.json(), json!({"ok": true, "closed": 2}), "{driver}");
        assert_refused_401(&mut a1, "token revoked", driver);
        assert_refused_401(&mut a2, "token revoked", driver);
        assert_eq!(
            command(&mut b1, join("room.1")),
            joined("room.1"),
            "{driver}"
        );
        let (mut again, reply) = first_frame(srv.addr, &a);
        assert_eq!(reply, auth_failure(401, "token revoked"), "{driver}");
        assert_eq!(read_close_code(&mut again), Some(4401));
        let (_b2, reply) = first_frame(srv.addr, &b);
        assert_eq!(reply, auth_ok("carol"), "{driver}");

        // An integer user id is the same user as its decimal text.
        let r = revoke(srv.addr, r#"{"user":7}"#, Some(API_KEY));
        assert_eq!(r.json(), json!({"ok": true, "closed": 1}), "{driver}");
        assert_refused_401(&mut seven, "token revoked", driver);
        let r = revoke(srv.addr, r#"{"jti":"nobody-has-it"}"#, Some(API_KEY));
        assert_eq!(r.json(), json!({"ok": true, "closed": 0}), "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.revoked_closes), 3, "{driver}");
        assert_eq!(
            command(&mut b1, json!({"action":"leave","group":"room.1"})),
            json!({"action":"left","group":"room.1"})
        );
    }
}

#[test]
fn revoke_refuses_bad_bodies_and_requires_the_api_key() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        let (mut al, reply) = first_frame(srv.addr, &access(json!("al"), &["*"], json!({})));
        assert_eq!(reply, auth_ok("al"));
        for body in [
            "{}",
            r#"{"user":1,"jti":"x"}"#,
            r#"{"other":1}"#,
            r#"{"user":"al","other":1}"#,
            r#"{"user":""}"#,
            r#"{"user":null}"#,
            r#"{"user":["al"]}"#,
            r#"{"jti":5}"#,
            "[]",
            "not json",
        ] {
            let r = revoke(srv.addr, body, Some(API_KEY));
            assert_eq!(r.status, 400, "{driver}: {body}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert!(r.json()["error"].is_string(), "{driver}: {body}");
        }
        for key in [None, Some("wrong-key-0123456789")] {
            let r = revoke(srv.addr, r#"{"user":"al"}"#, key);
            assert_eq!(r.status, 401, "{driver}: {key:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(r.json()["error"].is_string());
        }
        // Nothing was applied: al is still connected and may still authenticate.
        assert_eq!(command(&mut al, join("g")), joined("g"), "{driver}");
        let (_al2, reply) = first_frame(srv.addr, &access(json!("al"), &[], json!({})));
        assert_eq!(reply, auth_ok("al"), "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.revoked_closes), 0, "{driver}");
        // No API key configured: the endpoint is closed to everyone.
        let keyless = start_open(driver, &[]);
        let r = revoke(keyless.addr, r#"{"user":"al"}"#, Some(API_KEY));
        assert_eq!(r.status, 403, "{driver}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Rate limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flood_of_messages_is_answered_up_to_the_burst_then_closed_4429() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-messages-per-sec", "5", "--burst", "5"]);
        // Header authentication: no message is spent on it.
        let bearer = format!("Bearer {}", access(json!("ray"), &["*"], json!({})));
        let (mut ws, _) = ws_connect(srv.addr, &[("Authorization", &bearer)]).unwrap();
        assert_eq!(next_json(&mut ws), auth_ok("ray"));
        for i in 0..20 {
            let cmd = json!({"action": "leave", "group": format!("g{i}")});
            ws.write(Message::text(cmd.to_string())).unwrap();
        }
        ws.flush().unwrap();
        let (texts, close) = json_until_close(&mut ws);
        let answered: Vec<Value> = (0..5)
            .map(|i| json!({"action": "left", "group": format!("g{i}")}))
            .collect();
        assert_eq!(texts, answered, "{driver}");
        assert_eq!(
            close,
            Some((4429, "rate limit exceeded".to_owned())),
            "{driver}"
        );
        assert_eq!(stat_sum(&srv, |s| &s.rate_limited_closes), 1, "{driver}");
        assert_eq!(metric_sum(srv.addr, "wsgate_rate_limited_closes_total"), 1);
    }
}

#[test]
fn the_third_concurrent_upgrade_from_one_address_gets_503_until_one_closes() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-connections-per-ip", "2"]);
        let token = access(json!("ida"), &["*"], json!({}));
        let first = header_member(srv.addr, &token, &[]).unwrap();
        let mut second = header_member(srv.addr, &token, &[]).unwrap();
        let (code, head, refused) = upgrade(srv.addr, "/ws", &[]);
        assert_eq!(code, 503, "{driver}: {head}");
        assert_retry_after(&head);
        drop(refused);
        // Every connection counts from accept, the HTTP API's too: it is refused at the cap.
        let r = http_call(
            srv.addr,
            "GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(r.status, 503, "{driver}");
        drop(first);
        wait_for("the closed connection to end", || {
            srv.open_per_core().iter().sum::<u64>() == 1
        });
        let third = header_member(srv.addr, &token, &[]).unwrap();
        assert_eq!(command(&mut second, join("g")), joined("g"));
        assert_eq!(stat_sum(&srv, |s| &s.ip_concurrent_refusals), 2, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.ip_rate_refusals), 0, "{driver}");
        assert_eq!(rejected_503(&srv), 2, "{driver}");
        drop((second, third));
        wait_for("the members to end", || {
            srv.open_per_core().iter().sum::<u64>() == 0
        });
        assert_eq!(
            metric_sum(srv.addr, "wsgate_ip_concurrent_refusals_total"),
            2
        );
    }
}

#[test]
fn upgrades_beyond_the_per_address_rate_get_503() {
    for driver in drivers() {
        let srv = start_open(
            driver,
            &["--max-upgrades-per-ip-per-sec", "2", "--upgrade-burst", "2"],
        );
        // Three upgrades at once: the connections first, then the three requests together.
        let mut sockets: Vec<TcpStream> = (0..3).map(|_| tcp(srv.addr)).collect();
        let request = upgrade_request(srv.addr, "/ws", &[]);
        for s in &mut sockets {
            s.write_all(request.as_bytes()).unwrap();
        }
        let heads: Vec<String> = sockets.iter_mut().map(read_head).collect();
        let mut codes: Vec<u16> = heads.iter().map(|h| status(h)).collect();
        codes.sort_unstable();
        assert_eq!(codes, [101, 101, 503], "{driver}: {heads:?}");
        let refused = heads.iter().find(|h| status(h) == 503).unwrap();
        assert_retry_after(refused);
        assert_eq!(stat_sum(&srv, |s| &s.ip_rate_refusals), 1, "{driver}");
        assert_eq!(stat_sum(&srv, |s| &s.ip_concurrent_refusals), 0, "{driver}");
        assert_eq!(rejected_503(&srv), 1, "{driver}");
        assert_eq!(metric_sum(srv.addr, "wsgate_ip_rate_refusals_total"), 1);
    }
}

#[test]
fn x_forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
    let from = |ip: &str| format!("X-Forwarded-For: {ip}");
    for driver in drivers() {
        let trusted = start_open(
            driver,
            &[
                "--max-connections-per-ip",
                "1",
                "--trusted-proxies",
                "127.0.0.1",
            ],
        );
        let addr = trusted.addr;
        let (code, head, _seven) = upgrade(addr, "/ws", &[&from("203.0.113.7")]);
        assert_eq!(code, 101, "{driver}: {head}");
        let (code, head, _) = upgrade(addr, "/ws", &[&from("203.0.113.7")]);
        assert_eq!(code, 503, "{driver}: the same client again: {head}");
        assert_retry_after(&head);
        let (code, head, _eight) = upgrade(addr, "/ws", &[&from("203.0.113.8")]);
        assert_eq!(code, 101, "{driver}: another client: {head}");
        // The proxy itself, with no header, is a client of its own.
        let (code, head, _proxy) = upgrade(addr, "/ws", &[]);
        assert_eq!(code, 101, "{driver}: {head}");
        assert_eq!(stat_sum(&trusted, |s| &s.ip_concurrent_refusals), 1);

        // Not trusted: the header is ignored and both share the peer's quota.
        let untrusted = start_open(driver, &["--max-connections-per-ip", "1"]);
        let addr = untrusted.addr;
        let (code, head, _seven) = upgrade(addr, "/ws", &[&from("203.0.113.7")]);
        assert_eq!(code, 101, "{driver}: {head}");
        let (code, head, _) = upgrade(addr, "/ws", &[&from("203.0.113.8")]);
        assert_eq!(code, 503, "{driver}: the header was believed: {head}");
        assert_eq!(stat_sum(&untrusted, |s| &s.ip_concurrent_refusals), 1);
    }
}
