//! Test support: a real gateway on 127.0.0.1:0 started from real flags, on each I/O driver, and
//! clients that share no code with it (tungstenite, raw sockets; tokens minted by jsonwebtoken).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use wsgate::config::{Config, DevSecret, Env};
use wsgate::runtime::{self, Gateway, Server};

/// The binary's `--test-hooks` routes, for the servers these tests start in-process.
#[path = "../../src/hooks.rs"]
mod hooks;

/// The HS256 secret every test server uses.
pub const SECRET: &str = "integration-test-secret";
/// Every socket gives up after this long: a hang fails the test instead of stalling it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The drivers this machine offers: epoll always, io_uring where the kernel allows it. Every
/// test that runs once per driver asks here, so this is where a missing io_uring is said, with
/// the test's name: a test whose io_uring half did not run must not look like one that passed on
/// both drivers.
pub fn drivers() -> Vec<&'static str> {
    if runtime::io_uring_available() {
        return vec!["epoll", "io-uring"];
    }
    // The harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("(a test on an unnamed thread)");
    let line = format!(
        "io_uring unavailable here: {}::{test} ran on epoll only\n",
        env!("CARGO_CRATE_NAME")
    );
    // Straight to the process's stderr in one write: `eprintln!` would be captured by the
    // harness and shown only if the test failed.
    let _ = std::io::stderr().write_all(line.as_bytes());
    vec!["epoll"]
}

/// Runs `test` once per driver, the drivers at the same time, each on a thread of its own: an
/// end-to-end test of a deadline then waits for it once rather than once per driver.
pub fn on_every_driver_at_once(test: impl Fn(&'static str) + Sync) {
    let drivers = drivers();
    std::thread::scope(|scope| {
        for driver in drivers {
            let test = &test;
            scope.spawn(move || test(driver));
        }
    });
}

/// Makes reads on `s` give up after ten times `configured`, a deadline the test expects the
/// server to keep: generous on a loaded machine, and a deadline that never fires fails the read
/// (and so the test) instead of being waited out with a sleep.
pub fn read_at_most_tenfold(s: &TcpStream, configured: Duration) {
    s.set_read_timeout(Some(configured * 10)).unwrap();
}

/// A running gateway, shut down when dropped.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestServer {
    /// Open connections per worker, from the server's own counters.
    pub fn open_per_core(&self) -> Vec<u64> {
        let server = self.server.as_ref().unwrap();
        server
            .stats()
            .iter()
            .map(|s| {
                s.open_connections
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .collect()
    }

    /// The server's counters, by worker.
    pub fn stats(&self) -> &[std::sync::Arc<wsgate::metrics::CoreStats>] {
        self.server.as_ref().unwrap().stats()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Starts a gateway with these flags (plus `--listen 127.0.0.1:0 --workers 1` unless given).
pub fn start(driver: &str, flags: &[&str]) -> TestServer {
    start_with_env(
        driver,
        flags,
        Env {
            jwt_secret: Some(SECRET.into()),
            ..Env::default()
        },
    )
}

/// Like `start`, with the given environment (e.g. no HS256 secret, for public-key tests).
pub fn start_with_env(driver: &str, flags: &[&str], env: Env) -> TestServer {
    let mut argv = vec!["wsgate", "--listen", "127.0.0.1:0", "--driver", driver];
    if !flags.contains(&"--workers") {
        argv.extend(["--workers", "1"]);
    }
    argv.extend_from_slice(flags);
    let config = Config::try_parse_from(&argv).expect("flags parse");
    let hooks = config.test_hooks;
    let settings = config
        .into_settings(&env, 1, || DevSecret(Vec::new()))
        .expect("valid settings");
    let server = if hooks {
        runtime::start(settings, hooks::Hooked(Gateway))
    } else {
        runtime::start(settings, Gateway)
    }
    .expect("server starts");
    let addr = server.local_addr();
    TestServer {
        server: Some(server),
        addr,
    }
}

/// The HTTP API key of `start_api` servers.
pub const API_KEY: &str = "test-api-key-0123456789";

/// A gateway allowing every origin, with the HTTP API key `API_KEY` configured.
pub fn start_api(driver: &str, flags: &[&str]) -> TestServer {
    let mut all = vec!["--allowed-origins", "*"];
    all.extend_from_slice(flags);
    let env = Env {
        jwt_secret: Some(SECRET.into()),
        api_key: Some(API_KEY.into()),
        ..Env::default()
    };
    start_with_env(driver, &all, env)
}

/// Starts a gateway allowing every origin.
pub fn start_open(driver: &str, extra: &[&str]) -> TestServer {
    let mut flags = vec!["--allowed-origins", "*"];
    flags.extend_from_slice(extra);
    start(driver, &flags)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token shaped like djangorestframework-simplejwt's, signed by jsonwebtoken.
pub fn token(user_id: Value) -> String {
    token_with(json!({
        "token_type": "access",
        "exp": now() + 300,
        "iat": now(),
        "jti": "0123456789abcdef0123456789abcdef",
        "user_id": user_id,
    }))
}

/// Signs arbitrary claims with HS256 and the test secret.
pub fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A TCP connection with timeouts on both directions.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A browser-like upgrade request for `path` with the given extra header lines.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[&str]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req
}

/// Sends raw bytes and reads the response head (up to the blank line).
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut s = tcp(addr);
    s.write_all(request).unwrap();
    let head = read_head(&mut s);
    (s, head)
}

/// Reads one HTTP response head from `s`, byte by byte (so nothing after it is consumed).
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!(
                "reading the response head: {e} (got {:?})",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).unwrap()
}

/// The status code of a response head.
pub fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Reads until the server closes the connection; true when it did (EOF or reset) in time.
pub fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

pub type Ws = WebSocket<TcpStream>;

/// A tungstenite client; `headers` are extra request headers.
pub fn ws_connect(
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    client_handshake(request, addr)
}

/// Connects and authenticates with a first-frame token; returns the socket and the reply.
pub fn ws_authenticated(addr: SocketAddr, user: Value) -> (Ws, Value) {
    let (mut ws, _) = ws_connect(addr, &[]).unwrap();
    let cmd = json!({"action": "authenticate", "token": token(user)});
    ws.send(Message::text(cmd.to_string())).unwrap();
    let reply = next_json(&mut ws);
    (ws, reply)
}

/// `ws.read()`, retried when a signal interrupts the blocking read.
pub fn ws_read(ws: &mut Ws) -> Result<Message, tungstenite::Error> {
    loop {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            other => return other,
        }
    }
}

/// The next text message as JSON (skipping pings/pongs).
pub fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws_read(ws).unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server's Close frame and returns its code and reason. Text messages
/// before it are returned too.
pub fn read_until_close(ws: &mut Ws) -> (Vec<String>, Option<(u16, String)>) {
    let mut texts = Vec::new();
    loop {
        match ws_read(ws) {
            Ok(Message::Text(t)) => texts.push(t.to_string()),
            Ok(Message::Close(frame)) => {
                let close =
                    frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                return (texts, close);
            }
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a Close frame: {e} (texts {texts:?})"),
        }
    }
}

/// The exact authentication success message docs/protocol.md §3 specifies.
pub fn auth_ok(user: &str) -> Value {
    json!({"action":"authentication","payload":{"status_code":200,"status_text":"OK","data":{"detail":"OK","user":user}}})
}

/// A raw WebSocket client: the upgrade by hand, frames encoded here (client side, masked), so
/// tests can send what a library refuses to and stay silent where a library would answer.
pub fn raw_ws(addr: SocketAddr, extra: &[&str]) -> TcpStream {
    let (s, head) = raw_exchange(addr, upgrade_request(addr, "/ws", extra).as_bytes());
    assert_eq!(status(&head), 101, "{head}");
    s
}

/// Writes one client frame: `first` is the FIN/RSV/opcode byte; the payload is masked.
pub fn send_frame(s: &mut TcpStream, first: u8, payload: &[u8]) {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// Reads one server frame: (first byte, payload). Server frames are never masked.
pub fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

/// Reads frames until a Close and returns its code (None for an empty Close).
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    loop {
        let (first, payload) = read_frame(s);
        if first & 0x0f == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

/// The authenticate command for a fresh token of `user`.
pub fn authenticate_cmd(user: &str) -> String {
    json!({"action": "authenticate", "token": token(json!(user))}).to_string()
}

/// A token for `user` allowed into the groups matching `patterns`.
pub fn group_token(user: &str, patterns: &[&str]) -> String {
    token_with(
        json!({"token_type": "access", "exp": now() + 300, "user_id": user, "groups": patterns}),
    )
}

/// A raw client: upgraded and authenticated as `user` with group `patterns`.
pub fn raw_member(addr: SocketAddr, user: &str, patterns: &[&str]) -> TcpStream {
    let mut s = raw_ws(addr, &[]);
    let cmd = json!({"action": "authenticate", "token": group_token(user, patterns)}).to_string();
    send_frame(&mut s, 0x81, cmd.as_bytes());
    let reply = read_json(&mut s);
    assert_eq!(reply["payload"]["status_code"], 200, "{reply}");
    s
}

/// The next text frame from a raw client, as JSON (pings are skipped).
pub fn read_json(s: &mut TcpStream) -> Value {
    loop {
        let (first, payload) = read_frame(s);
        match first & 0x0f {
            0x1 => return serde_json::from_slice(&payload).unwrap(),
            0x9 | 0xa => continue,
            op => panic!(
                "expected a text frame, got opcode {op}: {:?}",
                String::from_utf8_lossy(&payload)
            ),
        }
    }
}

/// Sends one command from a raw client and returns the reply.
pub fn command(s: &mut TcpStream, cmd: Value) -> Value {
    send_frame(s, 0x81, cmd.to_string().as_bytes());
    read_json(s)
}

/// The exact authentication failure message docs/protocol.md §6 specifies (401 or 403).
pub fn auth_failure(status: u16, detail: &str) -> Value {
    let text = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        other => panic!("no authentication failure has status {other}"),
    };
    json!({"action":"authentication","payload":{"status_code":status,"status_text":text,"data":{"detail":detail}}})
}

/// One HTTP response: status, head, and the body its `Content-Length` announced.
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON (panics, showing the body, when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head, then a `Content-Length` body) from `s`.
pub fn read_http_response(s: &mut TcpStream) -> HttpResponse {
    let head = read_head(s);
    let mut response = HttpResponse {
        status: status(&head),
        head,
        body: Vec::new(),
    };
    let len = response
        .header("content-length")
        .map_or(0, |v| v.parse::<usize>().unwrap());
    response.body = vec![0; len];
    s.read_exact(&mut response.body).unwrap();
    response
}

/// Sends one raw HTTP request on a new connection and reads the response.
pub fn http_call(addr: SocketAddr, raw: &str) -> HttpResponse {
    let mut s = tcp(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_http_response(&mut s)
}

/// `POST /ws-auth`, with `Authorization: Bearer <bearer>` when given.
pub fn post_ws_auth(addr: SocketAddr, bearer: Option<&str>) -> HttpResponse {
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http_call(
        addr,
        &format!(
            "POST /ws-auth HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    )
}

/// A ticket for `token` from `POST /ws-auth` (which must answer 201).
pub fn ticket_for(addr: SocketAddr, token: &str) -> String {
    let r = post_ws_auth(addr, Some(token));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["ticket"].as_str().unwrap().to_owned()
}

/// A tungstenite client on `path` (which may carry a query); `headers` are extra request headers.
pub fn ws_connect_path(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    client_handshake(request, addr)
}

/// Sends one command from a tungstenite client and returns the next text message.
pub fn ws_command(ws: &mut Ws, cmd: Value) -> Value {
    ws.send(Message::text(cmd.to_string())).unwrap();
    next_json(ws)
}

/// The sum over every core of one of the server's counters.
pub fn stat_sum(
    srv: &TestServer,
    field: fn(&wsgate::metrics::CoreStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    srv.stats()
        .iter()
        .map(|s| field(s).load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// `GET /metrics` and the sum of the samples of `family` (every core, every label).
pub fn metric_sum(addr: SocketAddr, family: &str) -> u64 {
    let r = http_call(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let samples: Vec<u64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!samples.is_empty(), "{family} missing from\n{text}");
    samples.iter().sum()
}

/// Polls `condition` (the server's state, never the clock) until it holds; fails after 5 s.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "still waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---- the binary, as an operator or a service manager runs it ----

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The gateway binary with a clean environment, the test secret, and its address on stdout.
pub fn wsgate_binary(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WSGATE_") || key.starts_with("NOTIFY_") || key.starts_with("WATCHDOG_")
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("WSGATE_JWT_SECRET", SECRET)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--print-addr",
            "--log-format",
            "json",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running gateway process: killed when the test ends, however it ends.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// Reads stderr until the process closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn start(cmd: &mut Command) -> Self {
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no address: {line:?}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let deadline = started + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let took = started.elapsed();
                // Every line the process wrote is in `log` once its stderr is closed.
                if let Some(reader) = self.reader.take() {
                    reader.join().unwrap();
                }
                return (status, took);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}; log: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then every line the process wrote once it has exited.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10));
        self.log()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The blocking tungstenite handshake on a new connection. It is never retried: a retry would be
/// a second connection the server counts and logs.
fn client_handshake(
    request: tungstenite::handshake::client::Request,
    addr: SocketAddr,
) -> Result<(Ws, tungstenite::handshake::client::Response), tungstenite::Error> {
    match tungstenite::client(request, tcp(addr)) {
        Ok(connected) => Ok(connected),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("a blocking handshake cannot be interrupted")
        }
    }
}
