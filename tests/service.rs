//! The binary as a service manager runs it: graceful shutdown on SIGTERM (every connection gets
//! 1001, exit 0 within the deadline), a second signal, SIGHUP reloads that keep connections and
//! refuse broken files, the notify protocol against a datagram socket this test owns (READY,
//! RELOADING, STOPPING, WATCHDOG withheld while a worker is stuck), the log line per connection,
//! and `--check-config`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, SECRET};
use serde_json::{Value, json};
use tungstenite::Message;

/// A scratch directory for one test, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wsgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &TempDir) -> Self {
        let path = dir.path("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self { socket, path }
    }

    /// The next notification, or `None` when nothing came within `wait`.
    fn next(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => return Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            }
        }
    }

    /// Skips notifications until one has the line `line`; returns it.
    fn until(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            match self.next(wait) {
                Some(state) if state.lines().any(|l| l == line) => return state,
                Some(_) => continue,
                None => break,
            }
        }
        panic!("no notification with {line:?} within 10 s");
    }
}

use common::{Process as Gateway, wsgate_binary as wsgate};

/// An authenticated tungstenite client with this Origin.
fn member(addr: SocketAddr, origin: &str, user: &str) -> common::Ws {
    let (mut ws, _) = common::ws_connect(addr, &[("Origin", origin)]).unwrap();
    let token = common::group_token(user, &["room.*"]);
    let cmd = json!({"action": "authenticate", "token": token});
    ws.send(Message::text(cmd.to_string())).unwrap();
    assert_eq!(common::next_json(&mut ws), common::auth_ok(user));
    ws
}

/// The status of a bare upgrade with this Origin.
fn upgrade_status(addr: SocketAddr, origin: &str) -> u16 {
    let request = common::upgrade_request(addr, "/ws", &[&format!("Origin: {origin}")]);
    let (_, head) = common::raw_exchange(addr, request.as_bytes());
    common::status(&head)
}

/// One command and its answer.
fn round_trip(ws: &mut common::Ws, cmd: Value) -> Value {
    ws.send(Message::text(cmd.to_string())).unwrap();
    common::next_json(ws)
}

#[test]
fn sigterm_closes_every_connection_with_1001_and_exits_0_in_time() {
    for driver in common::drivers() {
        let mut gateway = Gateway::start(&mut wsgate(&[
            "--driver",
            driver,
            "--workers",
            "2",
            "--allowed-origins",
            "*",
            "--shutdown-timeout",
            "5",
        ]));
        let mut members: Vec<_> = (0..100)
            .map(|i| member(gateway.addr, "http://a.example", &format!("u{i}")))
            .collect();
        // A message queued before the signal is still delivered, ahead of the Close.
        let joined = round_trip(
            &mut members[0],
            json!({"action": "join", "group": "room.1"}),
        );
        assert_eq!(joined, json!({"action": "joined", "group": "room.1"}));
        members[0]
            .send(Message::text(
                json!({"action": "send", "group": "room.1", "data": "last words"}).to_string(),
            ))
            .unwrap();
        members[0].flush().unwrap();
        gateway.signal("TERM");
        for (i, ws) in members.iter_mut().enumerate() {
            let (texts, close) = common::read_until_close(ws);
            let (code, reason) = close.unwrap_or_else(|| panic!("member {i}: no close code"));
            assert_eq!(code, 1001, "member {i} ({driver}): {reason}");
            if i == 0 {
                let expected =
                    json!({"action": "message", "group": "room.1", "data": "last words"});
                let got: Vec<Value> = texts
                    .iter()
                    .map(|t| serde_json::from_str(t).unwrap())
                    .collect();
                assert_eq!(got, vec![expected], "{driver}");
            }
            // Answer the close handshake, as a well-behaved client does.
            let _ = ws.flush();
        }
        drop(members);
        let (status, took) = gateway.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "{driver}: {status:?}");
        assert!(took < Duration::from_secs(5), "{driver}: {took:?}");
        let log = gateway.log();
        let ended: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("connection ended"))
            .collect();
        assert_eq!(
            ended.len(),
            100,
            "{driver}: one line per connection; the lines: {ended:#?}"
        );
    }
}

#[test]
fn both_io_uring_task_run_modes_serve_and_broadcast() {
    if !wsgate::runtime::io_uring_available() {
        // Both modes are io_uring's: there is nothing to run, and the output says so.
        let line = "io_uring unavailable here: service::both_io_uring_task_run_modes_serve_and_broadcast ran nothing\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    for mode in ["coop", "signal"] {
        let mut gateway = Gateway::start(&mut wsgate(&[
            "--driver",
            "io-uring",
            "--uring-taskrun",
            mode,
            "--workers",
            "2",
            "--allowed-origins",
            "*",
        ]));
        let mut members: Vec<_> = (0..4)
            .map(|i| member(gateway.addr, "http://a.example", &format!("u{i}")))
            .collect();
        for ws in &mut members {
            let joined = round_trip(ws, json!({"action": "join", "group": "room.1"}));
            assert_eq!(
                joined,
                json!({"action": "joined", "group": "room.1"}),
                "{mode}"
            );
        }
        let send = json!({"action": "send", "group": "room.1", "data": mode});
        members[0].send(Message::text(send.to_string())).unwrap();
        let expected = json!({"action": "message", "group": "room.1", "data": mode});
        for ws in &mut members {
            assert_eq!(common::next_json(ws), expected, "{mode}");
        }
        drop(members);
        gateway.signal("TERM");
        let (status, _) = gateway.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{mode}: {status:?}");
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = TempDir::new("second-signal");
    let notify = NotifySocket::bind(&dir);
    let mut gateway = Gateway::start(
        wsgate(&[
            "--allowed-origins",
            "*",
            "--shutdown-timeout",
            "60",
            "--close-timeout-ms",
            "60000",
        ])
        .env("NOTIFY_SOCKET", &notify.path),
    );
    notify.until("READY=1");
    // This client never answers the Close: the drain would wait for it for a minute.
    let _silent = member(gateway.addr, "http://a.example", "silent");
    gateway.signal("TERM");
    notify.until("STOPPING=1");
    gateway.signal("INT");
    let (status, took) = gateway.wait_exit(Duration::from_secs(10));
    assert!(
        !status.success(),
        "a forced exit is not a clean one: {status:?}"
    );
    assert!(took < Duration::from_secs(10));
}

#[test]
fn sighup_adds_an_allowed_origin_and_refuses_a_broken_file_without_dropping_anyone() {
    let dir = TempDir::new("reload");
    let origins = dir.path("origins");
    std::fs::write(&origins, "# who may connect\nhttp://a.example\n").unwrap();
    let notify = NotifySocket::bind(&dir);
    let gateway = Gateway::start(
        wsgate(&[
            "--workers",
            "2",
            "--allowed-origins-file",
            origins.to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &notify.path),
    );
    notify.until("READY=1");
    let mut existing: Vec<_> = (0..4)
        .map(|i| member(gateway.addr, "http://a.example", &format!("a{i}")))
        .collect();
    assert_eq!(upgrade_status(gateway.addr, "http://b.example"), 403);

    std::fs::write(&origins, "http://a.example\nhttp://b.example\n").unwrap();
    gateway.signal("HUP");
    notify.until("RELOADING=1");
    let ready = notify.until("READY=1");
    assert!(!ready.contains("refused"), "{ready}");
    // Every worker answers with the new list (several upgrades land on both).
    for _ in 0..8 {
        assert_eq!(upgrade_status(gateway.addr, "http://b.example"), 101);
    }
    for ws in &mut existing {
        let joined = round_trip(ws, json!({"action": "join", "group": "room.2"}));
        assert_eq!(joined, json!({"action": "joined", "group": "room.2"}));
    }

    // A broken file: refused, logged, and the list in force stays.
    std::fs::write(&origins, "http://c.example\n*.example.com\n").unwrap();
    gateway.signal("HUP");
    notify.until("RELOADING=1");
    let ready = notify.until("READY=1");
    assert!(ready.contains("STATUS=reload refused"), "{ready}");
    for _ in 0..8 {
        assert_eq!(upgrade_status(gateway.addr, "http://b.example"), 101);
        assert_eq!(upgrade_status(gateway.addr, "http://c.example"), 403);
    }
    for ws in &mut existing {
        let left = round_trip(ws, json!({"action": "leave", "group": "room.2"}));
        assert_eq!(left, json!({"action": "left", "group": "room.2"}));
    }
    let log = gateway.log();
    assert!(
        log.iter()
            .any(|l| l.contains("reload refused") && l.contains("*.example.com")),
        "{log:?}"
    );
}

#[test]
fn ready_comes_after_listen_and_stopping_on_shutdown() {
    let dir = TempDir::new("ready");
    let notify = NotifySocket::bind(&dir);
    let mut gateway = Gateway::start(
        wsgate(&["--allowed-origins", "*", "--workers", "2"]).env("NOTIFY_SOCKET", &notify.path),
    );
    let ready = notify.until("READY=1");
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=0 connections")),
        "{ready}"
    );
    // READY means listening: a connection made right now is served.
    let _ws = member(gateway.addr, "http://a.example", "first");
    gateway.signal("TERM");
    notify.until("STOPPING=1");
    let (status, _) = gateway.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

#[test]
fn watchdog_pings_stop_while_a_worker_is_stuck_and_resume_after() {
    let dir = TempDir::new("watchdog");
    let notify = NotifySocket::bind(&dir);
    let gateway = Gateway::start(
        wsgate(&["--allowed-origins", "*", "--test-hooks", "--workers", "1"])
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "200000"),
    );
    notify.until("READY=1");
    // Pings every 100 ms while the worker runs.
    for _ in 0..3 {
        let state = notify.until("WATCHDOG=1");
        assert!(state.contains("STATUS="), "{state}");
    }
    // Block the only worker's thread for 1.5 s, from another thread (the answer comes after).
    let (done_tx, done_rx) = mpsc::channel();
    let addr = gateway.addr;
    let started = Instant::now();
    std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /debug/stall?ms=1500 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 64];
        let n = s.read(&mut answer).unwrap();
        done_tx
            .send(String::from_utf8_lossy(&answer[..n]).into_owned())
            .unwrap();
    });
    let mut pings = Vec::new();
    let answer = loop {
        if let Some(state) = notify.next(Duration::from_millis(20))
            && state.lines().any(|l| l == "WATCHDOG=1")
        {
            pings.push(started.elapsed());
        }
        if let Ok(answer) = done_rx.try_recv() {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stall never ended"
        );
    };
    let stalled_until = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(stalled_until >= Duration::from_millis(1500));
    // Within the stall (after the first probe that found it), no ping at all.
    let window = Duration::from_millis(400)..stalled_until - Duration::from_millis(50);
    let inside: Vec<_> = pings.iter().filter(|t| window.contains(*t)).collect();
    assert!(
        inside.is_empty(),
        "pings while stuck: {inside:?} in {window:?}"
    );
    // And they come back once the worker runs again.
    notify.until("WATCHDOG=1");
    let log = gateway.log();
    assert!(
        log.iter().any(|l| l.contains("worker not responding")),
        "{log:?}"
    );
}

#[test]
fn the_connection_end_line_says_who_how_long_why_and_how_much_without_the_token() {
    let mut gateway = Gateway::start(&mut wsgate(&["--allowed-origins", "*", "--workers", "1"]));
    let token = common::group_token("logged", &["room.*"]);
    let (mut ws, _) = common::ws_connect(gateway.addr, &[]).unwrap();
    ws.send(Message::text(
        json!({"action": "authenticate", "token": token}).to_string(),
    ))
    .unwrap();
    assert_eq!(common::next_json(&mut ws), common::auth_ok("logged"));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    drop(ws);
    gateway.signal("TERM");
    gateway.wait_exit(Duration::from_secs(10));
    let log = gateway.log();
    let line = log
        .iter()
        .find(|l| l.contains("connection ended"))
        .unwrap_or_else(|| panic!("{log:?}"));
    let entry: Value = serde_json::from_str(line).unwrap();
    let fields = &entry["fields"];
    assert_eq!(entry["level"], "INFO");
    assert_eq!(fields["worker"], 0);
    assert!(fields["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(fields["duration_ms"].is_u64());
    assert_eq!(fields["reason"], "closed by the client");
    assert!(fields["bytes_in"].as_u64().unwrap() > token.len() as u64);
    assert!(fields["bytes_out"].as_u64().unwrap() > 129);
    let all = log.join("\n");
    assert!(!all.contains(&token), "a token reached the log");
    assert!(!all.contains(SECRET), "the secret reached the log");
}

#[test]
fn handshake_rejections_are_counted_and_logged_only_at_debug() {
    let gateway = Gateway::start(&mut wsgate(&["--allowed-origins", "http://a.example"]));
    for _ in 0..20 {
        assert_eq!(upgrade_status(gateway.addr, "http://evil.example"), 403);
    }
    let mut s = TcpStream::connect(gateway.addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).unwrap();
    let forbidden: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("wsgate_handshakes_total") && l.contains("\"forbidden\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(forbidden, 20, "{metrics}");
    let log = gateway.log();
    assert!(
        !log.iter().any(|l| l.contains("origin refused")),
        "rejections must not reach the default log: {log:?}"
    );
}

fn check_config(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WSGATE_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .arg("--check-config")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn check_config_passes_a_good_configuration_and_names_what_is_wrong_in_a_bad_one() {
    let dir = TempDir::new("check-config");
    let origins = write(&dir.path("origins"), "https://app.example\n.example.org\n");
    let keys = write(&dir.path("keys"), "an-api-key-of-enough-length\n");
    let secret = write(&dir.path("secret"), "a-secret\n");
    let previous = write(&dir.path("previous"), "the-old-secret\n");
    let good = [
        "--allowed-origins-file",
        &origins,
        "--api-key-file",
        &keys,
        "--jwt-secret-file",
        &secret,
        "--jwt-previous-secret-file",
        &previous,
        "--jwt-previous-secret-until",
        "2030-01-01T00:00:00Z",
    ];
    let (ok, stdout, stderr) = check_config(&good, &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("configuration OK"), "{stdout}");
    assert!(stdout.contains("2 pattern(s)") && stdout.contains("api keys          1"));
    assert!(stdout.contains("uring taskrun     Coop"), "{stdout}");
    assert!(
        stdout.contains("(first-frame, header, subprotocol, ticket)"),
        "{stdout}"
    );
    // An empty hosts list is an empty list: with --debug, the local hosts (flag or env file).
    let secret_env = ("WSGATE_JWT_SECRET", "s");
    let (ok, stdout, stderr) = check_config(&["--allowed-hosts", "", "--debug"], &[secret_env]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("origins           3 pattern(s)"),
        "{stdout}"
    );
    let env = [
        secret_env,
        ("WSGATE_ALLOWED_HOSTS", ""),
        ("WSGATE_DEBUG", "true"),
    ];
    let (ok, stdout, stderr) = check_config(&[], &env);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("origins           3 pattern(s)"),
        "{stdout}"
    );
    // Levels and per-target filters still pass.
    for level in [
        "debug",
        "WARN",
        "info,wsgate=debug",
        "wsgate::runtime=trace",
    ] {
        let (ok, _, stderr) = check_config(&good, &[("WSGATE_LOG_LEVEL", level)]);
        assert!(ok, "{level}: {stderr}");
    }
    assert!(!stdout.contains("a-secret") && !stdout.contains("an-api-key"));

    let broken = write(&dir.path("broken"), "*.example.com\n");
    let short_key = write(&dir.path("short"), "short\n");
    // (flags, environment, what the error must name)
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        (vec![], &[], "WSGATE_JWT_SECRET"),
        (
            vec![
                "--allowed-origins-file",
                &broken,
                "--jwt-secret-file",
                &secret,
            ],
            &[],
            "*.example.com",
        ),
        (
            vec!["--allowed-origins-file", "/nonexistent/origins"],
            &[("WSGATE_JWT_SECRET", "s")],
            "--allowed-origins-file",
        ),
        (
            vec!["--api-key-file", &short_key],
            &[("WSGATE_JWT_SECRET", "s")],
            "16 bytes",
        ),
        (
            vec!["--jwt-previous-secret-file", &previous],
            &[("WSGATE_JWT_SECRET", "s")],
            "--jwt-previous-secret-until",
        ),
        (
            vec![
                "--jwt-previous-secret-file",
                &previous,
                "--jwt-previous-secret-until",
                "next tuesday",
            ],
            &[("WSGATE_JWT_SECRET", "s")],
            "RFC 3339",
        ),
        (
            vec!["--log-level", "wsgate=loud"],
            &[("WSGATE_JWT_SECRET", "s")],
            "--log-level",
        ),
        (
            vec!["--keepalive-timeout-ms", "10", "--ping-interval-ms", "20"],
            &[("WSGATE_JWT_SECRET", "s")],
            "--keepalive-timeout-ms",
        ),
        (
            vec!["--uring-taskrun", "sometimes"],
            &[("WSGATE_JWT_SECRET", "s")],
            "--uring-taskrun",
        ),
        // A word that is no level would silence every log line.
        (
            vec![],
            &[("WSGATE_JWT_SECRET", "s"), ("WSGATE_LOG_LEVEL", "verbose")],
            "--log-level",
        ),
        (
            vec!["--log-level", "info,wsgate=chatty"],
            &[("WSGATE_JWT_SECRET", "s")],
            "--log-level",
        ),
    ];
    for (args, env, named) in cases {
        let (ok, _, stderr) = check_config(&args, env);
        assert!(!ok, "{args:?} passed");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[test]
fn a_previous_hs256_secret_is_accepted_until_its_time_then_refused() {
    let now = common::now();
    let old = "the-previous-secret";
    let token = {
        let claims = json!({"user_id": "rotated", "exp": now + 600, "token_type": "access"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(old.as_bytes()),
        )
        .unwrap()
    };
    for (until, accepted) in [(now + 3600, true), (now - 1, false)] {
        let until = until.to_string();
        let gateway = Gateway::start(
            wsgate(&[
                "--allowed-origins",
                "*",
                "--jwt-previous-secret-until",
                &until,
            ])
            .env("WSGATE_JWT_PREVIOUS_SECRET", old),
        );
        let (mut ws, _) = common::ws_connect(gateway.addr, &[]).unwrap();
        let cmd = json!({"action": "authenticate", "token": token});
        ws.send(Message::text(cmd.to_string())).unwrap();
        let reply = common::next_json(&mut ws);
        if accepted {
            assert_eq!(reply, common::auth_ok("rotated"));
        } else {
            assert_eq!(reply["payload"]["status_code"], 401, "{reply}");
            let (_, close) = common::read_until_close(&mut ws);
            assert_eq!(close.unwrap().0, 4401);
        }
    }
}

#[test]
fn a_key_rotation_is_a_file_change_and_a_sighup() {
    let dir = TempDir::new("rotation");
    let notify = NotifySocket::bind(&dir);
    let current = dir.path("jwt-secret");
    let previous = dir.path("jwt-previous");
    std::fs::write(&current, "secret-one\n").unwrap();
    // The previous-secret file is configured once; it does not exist until a rotation.
    let gateway = Gateway::start(
        wsgate(&[
            "--allowed-origins",
            "*",
            "--jwt-secret-file",
            current.to_str().unwrap(),
            "--jwt-previous-secret-file",
            previous.to_str().unwrap(),
        ])
        .env_remove("WSGATE_JWT_SECRET")
        .env("NOTIFY_SOCKET", &notify.path),
    );
    notify.until("READY=1");
    let now = common::now();
    let mint = |secret: &str| {
        let claims = json!({"user_id": "r", "exp": now + 600, "token_type": "access"});
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let status = |token: &str| {
        let (mut ws, _) = common::ws_connect(gateway.addr, &[]).unwrap();
        let cmd = json!({"action": "authenticate", "token": token});
        ws.send(Message::text(cmd.to_string())).unwrap();
        common::next_json(&mut ws)["payload"]["status_code"].clone()
    };
    let reload = || {
        gateway.signal("HUP");
        notify.until("RELOADING=1");
        let ready = notify.until("READY=1");
        assert!(!ready.contains("refused"), "{ready}");
    };
    let (one, two) = (mint("secret-one"), mint("secret-two"));
    // A connection made before the rotation stays open through it.
    let (mut before, _) = common::ws_connect(gateway.addr, &[]).unwrap();
    let cmd = json!({"action": "authenticate", "token": one});
    before.send(Message::text(cmd.to_string())).unwrap();
    assert_eq!(common::next_json(&mut before), common::auth_ok("r"));
    assert_eq!(status(&one), 200);
    assert_eq!(status(&two), 401);

    // Rotate: the new secret in force, the old one accepted for another hour.
    std::fs::write(&current, "secret-two\n").unwrap();
    std::fs::write(&previous, format!("secret-one\nuntil={}\n", now + 3600)).unwrap();
    reload();
    assert_eq!(status(&two), 200);
    assert_eq!(status(&one), 200);

    // The window closes (its time is past): the old secret is refused.
    std::fs::write(&previous, format!("secret-one\nuntil={}\n", now - 1)).unwrap();
    reload();
    assert_eq!(status(&two), 200);
    assert_eq!(status(&one), 401);
    let answer = round_trip(&mut before, json!({"action": "leave", "group": "room.1"}));
    assert_eq!(answer, json!({"action": "left", "group": "room.1"}));
}
