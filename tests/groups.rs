//! docs/protocol.md §4 against a gateway with two workers, so members really sit on different cores:
//! exact replies and envelope, permissions and names, every message to every member in publisher
//! order, and a slow member closed with 1008 while the others receive everything.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};

use common::*;
use serde_json::{Value, json};

/// Connects `n` members until both workers hold at least one (the kernel spreads connections
/// over the SO_REUSEPORT listeners by hash, so a few more may be needed).
fn members_on_both_cores(srv: &TestServer, n: usize, patterns: &[&str]) -> Vec<TcpStream> {
    let mut members = Vec::new();
    for i in 0..64 {
        members.push(raw_member(srv.addr, &format!("u{i}"), patterns));
        let per_core = srv.open_per_core();
        if members.len() >= n && per_core.iter().all(|&c| c > 0) {
            return members;
        }
    }
    panic!(
        "64 connections all landed on one core: {:?}",
        srv.open_per_core()
    );
}

#[test]
fn join_send_leave_with_the_exact_envelope() {
    for driver in drivers() {
        let srv = start_open(driver, &["--workers", "2"]);
        let mut members = members_on_both_cores(&srv, 2, &["room.*"]);
        for m in &mut members {
            assert_eq!(
                command(m, json!({"action":"join","group":"room.1"})),
                json!({"action":"joined","group":"room.1"})
            );
        }
        let data = json!({"text": "héllo", "n": [1, 2.5, null]});
        send_frame(
            &mut members[0],
            0x81,
            json!({"action":"send","group":"room.1","data":data})
                .to_string()
                .as_bytes(),
        );
        for (i, m) in members.iter_mut().enumerate() {
            let got = read_json(m);
            assert_eq!(
                got,
                json!({"action":"message","group":"room.1","data":data}),
                "{driver}: member {i}"
            );
        }
        assert_eq!(
            command(&mut members[1], json!({"action":"leave","group":"room.1"})),
            json!({"action":"left","group":"room.1"})
        );
        // After leaving, member 1 gets nothing: the next thing it reads is its own next reply.
        send_frame(
            &mut members[0],
            0x81,
            json!({"action":"send","group":"room.1","data":2})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(read_json(&mut members[0])["data"], 2);
        assert_eq!(
            command(&mut members[1], json!({"action":"leave","group":"x"})),
            json!({"action":"left","group":"x"})
        );
    }
}

#[test]
fn permissions_names_and_limits_give_errors_that_keep_the_connection() {
    for driver in drivers() {
        let srv = start_open(driver, &["--max-groups-per-connection", "2"]);
        let mut m = raw_member(srv.addr, "1", &["room.*", "a", "b", "c"]);
        let status = |v: Value| v["payload"]["status_code"].as_u64().unwrap();
        let err = |v: &Value| v["action"] == "error" && v["payload"]["detail"].is_string();
        let denied = command(&mut m, json!({"action":"join","group":"admin"}));
        assert!(
            err(&denied) && status(denied.clone()) == 403,
            "{driver}: {denied}"
        );
        for bad in ["room 1", "room.1\n", "", "é", &"a".repeat(100)] {
            let reply = command(&mut m, json!({"action":"join","group":bad}));
            assert!(
                err(&reply) && status(reply.clone()) == 400,
                "{driver}: {bad:?} -> {reply}"
            );
        }
        let not_member = command(&mut m, json!({"action":"send","group":"room.1","data":1}));
        assert!(
            err(&not_member) && status(not_member.clone()) == 403,
            "{not_member}"
        );
        assert_eq!(
            command(&mut m, json!({"action":"join","group":"a"}))["action"],
            "joined"
        );
        assert_eq!(
            command(&mut m, json!({"action":"join","group":"b"}))["action"],
            "joined"
        );
        let full = command(&mut m, json!({"action":"join","group":"c"}));
        assert!(err(&full) && status(full.clone()) == 400, "{full}");
        let no_data = command(&mut m, json!({"action":"send","group":"a"}));
        assert!(err(&no_data) && status(no_data.clone()) == 400, "{no_data}");
        // Still open and serving.
        send_frame(
            &mut m,
            0x81,
            json!({"action":"send","group":"a","data":"ok"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(read_json(&mut m)["data"], "ok", "{driver}");
        // A token without a groups claim may join nothing.
        let mut plain = raw_ws(srv.addr, &[]);
        send_frame(&mut plain, 0x81, authenticate_cmd("2").as_bytes());
        assert_eq!(read_json(&mut plain)["payload"]["status_code"], 200);
        assert_eq!(
            status(command(&mut plain, json!({"action":"join","group":"a"}))),
            403
        );
    }
}

#[test]
fn every_member_on_every_core_gets_every_message_in_publisher_order() {
    const PUBLISHERS: usize = 3;
    const PER_PUBLISHER: u64 = 400;
    let groups = ["room.a", "room.b"];
    for driver in drivers() {
        let srv = start_open(driver, &["--workers", "2"]);
        let mut members = members_on_both_cores(&srv, 8, &["room.*"]);
        // Everyone joins both groups; the first PUBLISHERS members also publish.
        for m in &mut members {
            for g in groups {
                assert_eq!(
                    command(m, json!({"action":"join","group":g}))["action"],
                    "joined"
                );
            }
        }
        let n = members.len();
        let expected = PUBLISHERS as u64 * PER_PUBLISHER * groups.len() as u64;
        let start = Arc::new(Barrier::new(n + PUBLISHERS));
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for (i, m) in members.into_iter().enumerate() {
            if i < PUBLISHERS {
                let mut w = m.try_clone().unwrap();
                let start = start.clone();
                writers.push(std::thread::spawn(move || {
                    start.wait();
                    for seq in 0..PER_PUBLISHER {
                        for g in groups {
                            let cmd = json!({"action":"send","group":g,"data":{"p":i,"seq":seq}});
                            send_frame(&mut w, 0x81, cmd.to_string().as_bytes());
                        }
                    }
                }));
            }
            let start = start.clone();
            readers.push(std::thread::spawn(move || {
                let mut m = m;
                start.wait();
                // (group, publisher) -> next expected sequence number
                let mut next: HashMap<(String, u64), u64> = HashMap::new();
                for _ in 0..expected {
                    let msg = read_json(&mut m);
                    assert_eq!(msg["action"], "message", "member {i}: {msg}");
                    let key = (
                        msg["group"].as_str().unwrap().to_owned(),
                        msg["data"]["p"].as_u64().unwrap(),
                    );
                    let seq = msg["data"]["seq"].as_u64().unwrap();
                    let want = next.entry(key.clone()).or_insert(0);
                    assert_eq!(seq, *want, "member {i}: {key:?} out of order or lost");
                    *want += 1;
                }
                next.values().sum::<u64>()
            }));
        }
        for w in writers {
            w.join().unwrap();
        }
        for r in readers {
            assert_eq!(r.join().unwrap(), expected, "{driver}");
        }
        let delivered: u64 = srv
            .stats()
            .iter()
            .map(|s| {
                s.fanout_deliveries
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        assert_eq!(
            delivered,
            expected * n as u64,
            "{driver}: counted deliveries"
        );
    }
}

#[test]
fn a_member_that_stops_reading_is_closed_1008_and_the_others_get_everything() {
    /// Messages the publisher may run ahead of the slowest reading member: 4 x 60 KB stays far
    /// below the 1 MiB outbound budget, so only a member that stops reading can exceed it.
    const WINDOW: u64 = 4;
    for driver in drivers() {
        let srv = start_open(driver, &["--workers", "2"]);
        let mut members = members_on_both_cores(&srv, 3, &["*"]);
        for m in &mut members {
            assert_eq!(
                command(m, json!({"action":"join","group":"big"}))["action"],
                "joined"
            );
        }
        let mut slow = members.pop().unwrap();
        let mut publisher = members.remove(0);
        let payload = "x".repeat(60_000);
        let count: u64 = 300; // 18 MB: far more than a stalled reader's kernel buffers hold
        let (acks, progress) = std::sync::mpsc::channel::<(usize, u64)>();
        let readers: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(id, mut m)| {
                let acks = acks.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    for _ in 0..count {
                        let seq = read_json(&mut m)["data"]["seq"].as_u64().unwrap();
                        seen.push(seq);
                        let _ = acks.send((id, seq));
                    }
                    seen
                })
            })
            .collect();
        drop(acks);
        let mut received = vec![0u64; readers.len()]; // messages each reader has acknowledged
        for seq in 0..count {
            while received.iter().any(|&r| r + WINDOW <= seq) {
                let (id, _) = progress.recv().expect("a reader stopped early");
                received[id] += 1;
            }
            let cmd = json!({"action":"send","group":"big","data":{"seq":seq,"pad":payload}});
            send_frame(&mut publisher, 0x81, cmd.to_string().as_bytes());
            assert_eq!(
                read_json(&mut publisher)["data"]["seq"],
                seq,
                "{driver}: own copy"
            );
        }
        let all: Vec<u64> = (0..count).collect();
        for r in readers {
            assert_eq!(
                r.join().unwrap(),
                all,
                "{driver}: a reading member lost or reordered messages"
            );
        }
        // The stalled member finds, after what the kernel held, a Close 1008.
        slow.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        assert_eq!(read_close_code(&mut slow), Some(1008), "{driver}");
        let closes: u64 = srv
            .stats()
            .iter()
            .map(|s| {
                s.slow_consumer_closes
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum();
        assert_eq!(closes, 1, "{driver}");
    }
}

/// A member that stops reading for 3 s while its group is busy is closed 1008; when it reads
/// again it gets an in-order prefix of the group's messages and then the 1008 Close frame: the
/// Close waits for the socket (up to `--close-flush-timeout-ms`) instead of being dropped.
#[test]
fn a_slow_member_that_reads_again_gets_a_prefix_then_the_1008() {
    for driver in drivers() {
        let srv = start_api(driver, &[]);
        let mut slow = raw_member(srv.addr, "slow", &["*"]);
        assert_eq!(
            command(&mut slow, json!({"action":"join","group":"busy"}))["action"],
            "joined"
        );
        let mut api = tcp(srv.addr);
        let payload = "x".repeat(60_000);
        let mut published = 0u64;
        // Publish until the gateway gives up on the member (1 MiB budget beyond the kernel's
        // buffers), each publish answered before the next.
        while srv
            .stats()
            .iter()
            .map(|s| {
                s.slow_consumer_closes
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum::<u64>()
            == 0
        {
            assert!(published < 1_000, "{driver}: the member was never closed");
            let body = json!({"group":"busy","data":{"seq":published,"pad":payload}}).to_string();
            write!(
                api,
                "POST /api/publish HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            assert_eq!(read_http_response(&mut api).status, 202);
            published += 1;
        }
        // The member is still not reading, for 3 s in all.
        std::thread::sleep(std::time::Duration::from_secs(3));
        let mut next = 0u64;
        let code = loop {
            let (first, payload) = read_frame(&mut slow);
            match first & 0x0f {
                0x1 => {
                    let message: Value = serde_json::from_slice(&payload).unwrap();
                    assert_eq!(message["data"]["seq"], next, "{driver}: out of order");
                    next += 1;
                }
                0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
                0x9 | 0xa => {}
                op => panic!("{driver}: opcode {op}"),
            }
        };
        assert_eq!(code, 1008, "{driver}");
        assert!(
            next > 0 && next < published,
            "{driver}: {next} of {published}"
        );
    }
}

/// A connection on the given core: opens connections (each `open` finishes with a round trip
/// that bumps `counter`, a monotonic per-core count) until one bumps that core's (the kernel
/// spreads connections over the workers' listeners by hash).
fn connection_on_core(
    srv: &TestServer,
    core: usize,
    counter: fn(&wsgate::metrics::CoreStats) -> &std::sync::atomic::AtomicU64,
    open: impl Fn() -> TcpStream,
) -> TcpStream {
    let count = |c: usize| counter(&srv.stats()[c]).load(std::sync::atomic::Ordering::SeqCst);
    let mut elsewhere = Vec::new();
    for _ in 0..64 {
        let before = count(core);
        let s = open();
        if count(core) > before {
            return s;
        }
        elsewhere.push(s);
    }
    panic!("64 connections and none on core {core}");
}

/// A worker that stops draining its queue of publishes from the other worker loses what does
/// not fit, never silently: the loss is counted where it happened, and the group's members on
/// that worker are closed 1008 before anything newer reaches them.
#[test]
fn a_full_cross_core_queue_closes_its_members_1008_and_is_counted() {
    let srv = start_open(
        "epoll",
        &[
            "--workers",
            "2",
            "--hub-queue-messages",
            "4",
            "--test-hooks",
        ],
    );
    let member = |user: &'static str| move || raw_member(srv.addr, user, &["*"]);
    let mut publisher = connection_on_core(&srv, 0, |s| &s.handshakes_ok, member("p"));
    let mut far = connection_on_core(&srv, 1, |s| &s.handshakes_ok, member("m"));
    for s in [&mut publisher, &mut far] {
        assert_eq!(
            command(s, json!({"action":"join","group":"g"}))["action"],
            "joined"
        );
    }
    // Core 1 stops for 1.5 s: it counts the request, then blocks without turning its loop.
    let requests = || {
        srv.stats()[1]
            .http_requests
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    // A keep-alive connection on core 1: its /healthz is counted there.
    let mut stall = connection_on_core(
        &srv,
        1,
        |s| &s.http_requests,
        || {
            let mut s = tcp(srv.addr);
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(read_http_response(&mut s).status, 200);
            s
        },
    );
    let before = requests();
    stall
        .write_all(b"POST /debug/stall?ms=1500 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    wait_for("core 1 to take the stall", || requests() > before);
    // Ten publishes from core 0 while core 1 stands: four fit in its queue, six are lost.
    for seq in 0..10 {
        let cmd = json!({"action":"send","group":"g","data":seq});
        assert_eq!(command(&mut publisher, cmd)["data"], seq);
    }
    assert_eq!(read_http_response(&mut stall).status, 200);
    assert_eq!(read_close_code(&mut far), Some(1008));
    assert_eq!(
        stat_sum(&srv, |s| &s.cross_core_lost),
        6,
        "counted on the core that could not hand them over"
    );
    assert_eq!(metric_sum(srv.addr, "wsgate_cross_core_lost_total"), 6);
}
