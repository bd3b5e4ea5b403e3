//! One connection, from accept to close. The task waits for readiness (io_uring POLL_ADD or
//! epoll), then reads into the worker's scratch buffer and parses in place, so an idle connection
//! holds no read buffer; replies are staged in the worker's cork buffer and only what the socket
//! does not take is kept per connection. Deadlines end the connection; they never cancel a read
//! that has completed (readiness carries no data, so dropping it loses nothing).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::sys::{self, Transfer};
use super::timer::{self, Timers};
use super::{Service, WorkerShared};
use crate::config::Settings;
use crate::proto::close::CloseCode;
use crate::proto::frame::{self, OpCode};
use crate::proto::handshake::{self, Upgrade};
use crate::proto::http;
use crate::proto::message::{Assembler, Message};
use crate::session::{self, Verdict};

/// Size of the per-worker read buffer every readable connection reads into.
const SCRATCH_BYTES: usize = 64 * 1024;

/// What the runtime asks of the application side of one WebSocket connection.
pub trait Handler: 'static {
    /// Right after the 101 is queued: may queue messages (the auth result) or close.
    fn on_open(
        &mut self,
        upgrade: &Upgrade<'_>,
        s: &Settings,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict;
    /// A complete text message.
    fn on_text(&mut self, text: &str, s: &Settings, now: u64, out: &mut Vec<u8>) -> Verdict;
    /// A complete binary message.
    fn on_binary(&mut self, data: &[u8], s: &Settings, now: u64, out: &mut Vec<u8>) -> Verdict;
    /// Whether the auth deadline still runs.
    fn awaiting_auth(&self) -> bool;
}

/// Per-worker state shared by the worker's connections (single thread: `Cell`/`RefCell`).
pub(crate) struct Worker<S> {
    pub(crate) shared: WorkerShared<S>,
    scratch: RefCell<Box<[u8]>>,
    cork: RefCell<Vec<u8>>,
    open: Cell<usize>,
    /// Deadlines of this worker's WebSocket connections.
    pub(crate) timers: Timers,
}

impl<S: Service> Worker<S> {
    pub(crate) fn new(shared: WorkerShared<S>) -> Self {
        Self {
            shared,
            scratch: RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice()),
            cork: RefCell::new(Vec::with_capacity(SCRATCH_BYTES)),
            open: Cell::new(0),
            timers: Timers::default(),
        }
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }
}

/// Holds one connection's place in the worker and global counts.
struct Admission<'w, S> {
    worker: &'w Worker<S>,
}

impl<'w, S: Service> Admission<'w, S> {
    fn take(worker: &'w Worker<S>) -> Option<Self> {
        let s = worker.settings();
        if worker.open.get() >= s.max_connections_per_worker {
            return None;
        }
        if worker.shared.open.fetch_add(1, Ordering::Relaxed) >= s.max_connections {
            worker.shared.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        worker.open.set(worker.open.get() + 1);
        Some(Self { worker })
    }
}

impl<S> Drop for Admission<'_, S> {
    fn drop(&mut self) {
        self.worker.open.set(self.worker.open.get() - 1);
        self.worker.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The socket and the bytes a connection must keep between wake-ups.
struct Conn {
    stream: TcpStream,
    fd: RawFd,
    /// Input that arrived in pieces (a partial head or frame); empty when idle.
    pending: Vec<u8>,
    /// Output the socket has not taken yet; empty when idle.
    out: Vec<u8>,
}

/// Why processing stopped.
enum Stop {
    /// The peer is gone (EOF, reset); nothing more can be sent.
    Gone,
    /// The handshake deadline passed.
    TimedOut,
    /// Close with this code and reason, then end.
    Close(CloseCode, &'static str),
    /// The peer sent a Close frame (its code, if any): answer it, then end.
    PeerClose(Option<CloseCode>),
}

impl From<io::Error> for Stop {
    fn from(_: io::Error) -> Self {
        Self::Gone
    }
}

/// Serves one accepted socket to the end.
///
/// Every deadline of the connection (handshake, auth, keepalive, closing) is one slot in the
/// worker's timer structure, and replies leave through the worker's cork buffer, so neither the
/// idle state nor the handshake costs an allocation of its own (see README "Idle connections").
pub(crate) fn serve<S: Service>(
    worker: Rc<Worker<S>>,
    stream: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> {
    // A plain fn returning an `async move` block: captured values are used in place, while an
    // async fn keeps a second copy of its arguments for the connection's whole life.
    let fd = stream.as_raw_fd();
    let mut conn = Conn {
        stream,
        fd,
        pending: Vec::new(),
        out: Vec::new(),
    };
    async move {
        let timer = worker.timers.slot();
        let settings = worker.settings();
        let Some(_admission) = Admission::take(&worker) else {
            let retry = settings.retry_after_secs.to_string();
            http::write_response(&mut conn.out, 503, &[("Retry-After", &retry)], b"");
            tracing::debug!(worker = worker.shared.id, %peer, "connection limit reached: 503");
            finish(&worker, &mut conn, &timer).await;
            return;
        };
        // Small frames must not wait for Nagle; failure only costs latency.
        let _ = conn.stream.set_nodelay(true);
        // No await inside the match, and no Option around the handler: either would keep a
        // second copy alive next to `ws` for the connection's whole life.
        let handler = 'upgrade: {
            match handshake(&worker, &mut conn, &timer).await {
                Ok(Some(handler)) => break 'upgrade handler,
                Ok(None) => {}
                Err(Stop::Close(code, reason)) => frame::write_close(&mut conn.out, code, reason),
                Err(Stop::TimedOut) => {
                    tracing::debug!(worker = worker.shared.id, %peer, "handshake timeout");
                    return;
                }
                Err(_) => return,
            }
            finish(&worker, &mut conn, &timer).await;
            return;
        };
        let mut ws = Ws::new(handler, settings);
        let started = Instant::now();
        let code = websocket(&worker, &mut conn, &mut ws, &timer).await;
        tracing::debug!(
            worker = worker.shared.id,
            %peer,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = code.map(|c| c.0),
            "connection ended"
        );
    }
}

/// Reads the request head and answers it. `Ok(Some)`: upgraded (101 and any open messages are
/// queued); `Ok(None)`: an HTTP error response is queued; `Err`: the peer went away or the handler
/// closed at once.
async fn handshake<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    timer: &timer::Slot<'_>,
) -> Result<Option<S::Handler>, Stop> {
    let settings = worker.settings();
    timer.reset(Instant::now() + settings.timeouts.handshake);
    let mut scanned = 0;
    loop {
        monoio::select! {
            r = c.stream.readable(false) => r?,
            _ = timer.expired() => return Err(Stop::TimedOut),
        }
        let mut scratch = worker.scratch.borrow_mut();
        let n = match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => return Err(Stop::Gone),
            Transfer::Done(n) => n,
            Transfer::WouldBlock => continue,
        };
        // Parse straight from the scratch buffer when the head came in one read (the usual case).
        let from_scratch = c.pending.is_empty();
        if !from_scratch {
            c.pending.extend_from_slice(&scratch[..n]);
        }
        let buf: &[u8] = if from_scratch {
            &scratch[..n]
        } else {
            &c.pending
        };
        let head_len = match http::find_head_end(buf, scanned, settings.limits.max_head_bytes) {
            Ok(Some(len)) => len,
            Ok(None) => {
                scanned = buf.len();
                if from_scratch {
                    c.pending.extend_from_slice(&scratch[..n]);
                }
                continue;
            }
            Err(e) => {
                respond(&mut c.out, e.status(), &[]);
                return Ok(None);
            }
        };
        let now = unix_now();
        // The answer goes out through the cork; only what the socket refuses stays with us.
        let mut cork = worker.cork.borrow_mut();
        let decision = decide(worker, &buf[..head_len], now, &mut cork);
        let sent = send_now(c.fd, &cork).unwrap_or(cork.len());
        c.out.extend_from_slice(&cork[sent..]);
        cork.clear();
        // Frames the client sent right behind the head stay for the WebSocket loop.
        let rest = if from_scratch {
            &scratch[head_len..n]
        } else {
            &[][..]
        };
        if from_scratch {
            c.pending.extend_from_slice(rest);
        } else {
            c.pending.drain(..head_len);
        }
        return match decision {
            Decision::Respond => Ok(None),
            Decision::Upgraded(handler, Verdict::Continue) => Ok(Some(handler)),
            Decision::Upgraded(_, Verdict::Close(code, reason)) => Err(Stop::Close(code, reason)),
        };
    }
}

enum Decision<H> {
    Respond,
    Upgraded(H, Verdict),
}

/// PROTOCOL.md §1-2 for one complete head: an HTTP error, or the 101 plus the handler's opening.
fn decide<S: Service>(
    worker: &Worker<S>,
    head: &[u8],
    now: u64,
    out: &mut Vec<u8>,
) -> Decision<S::Handler> {
    let settings = worker.settings();
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let request = match http::parse_request(head, &mut headers) {
        Ok(request) => request,
        Err(e) => {
            respond(out, e.status(), &[]);
            return Decision::Respond;
        }
    };
    let upgrade = match handshake::validate(&request, &settings.ws_path) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let status = e.status();
            tracing::debug!(
                worker = worker.shared.id,
                target = %http::Redacted(request.path.unwrap_or("")),
                status,
                "handshake refused: {e}"
            );
            respond(out, status, e.response_headers());
            return Decision::Respond;
        }
    };
    if !settings.origin.allows(upgrade.origin) {
        tracing::debug!(worker = worker.shared.id, "origin refused: 403");
        respond(out, 403, &[]);
        return Decision::Respond;
    }
    let accept = handshake::accept_key(upgrade.key);
    handshake::write_101(out, &accept, upgrade.offers_v1);
    let mut handler = worker.shared.service.handler();
    let verdict = handler.on_open(&upgrade, settings, now, out);
    Decision::Upgraded(handler, verdict)
}

fn respond(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let body = http::reason_phrase(status);
    http::write_response(out, status, headers, body.as_bytes());
}

/// Per-connection WebSocket state that lives between wake-ups.
struct Ws<H> {
    handler: H,
    assembler: Assembler,
    last_rx: Instant,
    pinged: bool,
    auth_deadline: Instant,
}

enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Timer,
}

impl<H: Handler> Ws<H> {
    fn new(handler: H, settings: &Settings) -> Self {
        let now = Instant::now();
        Self {
            handler,
            assembler: Assembler::new(settings.limits.max_message_bytes),
            last_rx: now,
            pinged: false,
            auth_deadline: now + settings.timeouts.auth,
        }
    }
}

/// Runs the frame loop until the connection ends; returns the close code sent, if any.
async fn websocket<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Ws<S::Handler>,
    timer: &timer::Slot<'_>,
) -> Option<CloseCode> {
    let settings = worker.settings();
    // Frames that arrived together with the head.
    let mut stop = if c.pending.is_empty() {
        None
    } else {
        process_pending(worker, c, ws).err()
    };
    loop {
        if stop.is_none() {
            if let Err(e) = flush(c) {
                stop = Some(e.into());
            } else if c.out.len() > settings.limits.max_outbound_bytes {
                stop = Some(Stop::Close(CloseCode::POLICY, "outbound limit exceeded"));
            }
        }
        if let Some(stop) = stop.take() {
            return end(worker, c, stop, timer).await;
        }
        timer.arm(next_deadline(ws, settings));
        let event = if c.out.is_empty() {
            monoio::select! {
                r = c.stream.readable(false) => Event::Readable(r),
                _ = timer.expired() => Event::Timer,
            }
        } else {
            monoio::select! {
                r = c.stream.readable(false) => Event::Readable(r),
                r = c.stream.writable(false) => Event::Writable(r),
                _ = timer.expired() => Event::Timer,
            }
        };
        stop = match event {
            Event::Readable(Err(_)) | Event::Writable(Err(_)) => Some(Stop::Gone),
            Event::Readable(Ok(())) => read_and_process(worker, c, ws).err(),
            Event::Writable(Ok(())) => None,
            Event::Timer => on_timer(c, ws, settings),
        };
    }
}

fn next_deadline<H: Handler>(ws: &Ws<H>, settings: &Settings) -> Instant {
    let t = &settings.timeouts;
    let idle = ws.last_rx + if ws.pinged { t.keepalive } else { t.ping_after };
    if ws.handler.awaiting_auth() {
        idle.min(ws.auth_deadline)
    } else {
        idle
    }
}

fn on_timer<H: Handler>(c: &mut Conn, ws: &mut Ws<H>, settings: &Settings) -> Option<Stop> {
    let now = Instant::now();
    let t = &settings.timeouts;
    if ws.handler.awaiting_auth() && now >= ws.auth_deadline {
        return Some(Stop::Close(
            CloseCode::TIMEOUT,
            session::REASON_AUTH_TIMEOUT,
        ));
    }
    if now >= ws.last_rx + t.keepalive {
        return Some(Stop::Close(
            CloseCode::TIMEOUT,
            session::REASON_KEEPALIVE_TIMEOUT,
        ));
    }
    if !ws.pinged && now >= ws.last_rx + t.ping_after {
        frame::write_frame(&mut c.out, OpCode::Ping, b"");
        ws.pinged = true;
    }
    None
}

/// Drains the socket through the scratch buffer, parsing each read in place.
fn read_and_process<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Ws<S::Handler>,
) -> Result<(), Stop> {
    let settings = worker.settings();
    loop {
        let mut scratch = worker.scratch.borrow_mut();
        let n = match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => return Err(Stop::Gone),
            Transfer::Done(n) => n,
            Transfer::WouldBlock => return Ok(()),
        };
        let mut cork = worker.cork.borrow_mut();
        // Keep output in order: once something is queued on the connection, append there.
        let corked = c.out.is_empty();
        let out: &mut Vec<u8> = if corked { &mut cork } else { &mut c.out };
        let now = (Instant::now(), unix_now());
        let result = if c.pending.is_empty() {
            process(&mut scratch[..n], ws, settings, out, now).map(|used| {
                c.pending.extend_from_slice(&scratch[used..n]);
            })
        } else {
            c.pending.extend_from_slice(&scratch[..n]);
            process(&mut c.pending, ws, settings, out, now).map(|used| {
                c.pending.drain(..used);
                if c.pending.is_empty() {
                    // Partial frames are the exception: an idle connection keeps no buffer.
                    c.pending = Vec::new();
                }
            })
        };
        if corked && !cork.is_empty() {
            let sent = send_now(c.fd, &cork)?;
            c.out.extend_from_slice(&cork[sent..]);
            cork.clear();
        }
        result?;
        if n < scratch.len() {
            // A short read: the socket is (almost certainly) drained; readiness says if not.
            return Ok(());
        }
    }
}

fn process_pending<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Ws<S::Handler>,
) -> Result<(), Stop> {
    let now = (Instant::now(), unix_now());
    let used = process(&mut c.pending, ws, worker.settings(), &mut c.out, now)?;
    c.pending.drain(..used);
    Ok(())
}

/// Decodes every complete frame in `buf`; returns how many bytes were consumed.
fn process<H: Handler>(
    buf: &mut [u8],
    ws: &mut Ws<H>,
    settings: &Settings,
    out: &mut Vec<u8>,
    (now, unix): (Instant, u64),
) -> Result<usize, Stop> {
    let mut pos = 0;
    while pos < buf.len() {
        let header = match frame::decode(&mut buf[pos..], settings.limits.max_frame_bytes) {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(e) => return Err(Stop::Close(e.close_code(), failure_reason(e.close_code()))),
        };
        let start = pos + header.header_len;
        pos = start + header.payload_len;
        ws.last_rx = now;
        ws.pinged = false;
        let message = match ws.assembler.push(&header, &buf[start..pos]) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(e) => return Err(Stop::Close(e.close_code(), failure_reason(e.close_code()))),
        };
        let verdict = match message {
            Message::Ping(payload) => {
                frame::write_frame(out, OpCode::Pong, payload);
                Verdict::Continue
            }
            Message::Pong(_) => Verdict::Continue,
            Message::Close(close) => return Err(Stop::PeerClose(close.map(|(code, _)| code))),
            Message::Text(text) => ws.handler.on_text(text, settings, unix, out),
            Message::Binary(data) => ws.handler.on_binary(data, settings, unix, out),
        };
        if let Verdict::Close(code, reason) = verdict {
            return Err(Stop::Close(code, reason));
        }
    }
    if !ws.assembler.in_progress() {
        ws.assembler.shrink();
    }
    Ok(pos)
}

fn failure_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::INVALID_PAYLOAD => "invalid UTF-8",
        CloseCode::TOO_BIG => "message too big",
        _ => "protocol error",
    }
}

/// Ends the WebSocket: sends the Close frame the stop calls for, then closes gracefully.
async fn end<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    stop: Stop,
    timer: &timer::Slot<'_>,
) -> Option<CloseCode> {
    let code = match stop {
        Stop::Gone | Stop::TimedOut => return None,
        Stop::Close(code, reason) => {
            frame::write_close(&mut c.out, code, reason);
            Some(code)
        }
        // RFC 6455 §5.5.1: answer with the code received, or an empty Close when none came.
        Stop::PeerClose(Some(code)) => {
            frame::write_close(&mut c.out, code, "");
            Some(code)
        }
        Stop::PeerClose(None) => {
            frame::write_frame(&mut c.out, OpCode::Close, b"");
            None
        }
    };
    finish(worker, c, timer).await;
    code
}

/// Sends what is queued, half-closes, and drains input until the peer closes, all within the
/// close timeout. Draining matters: closing with unread input would turn our last frame into a
/// reset that the peer may never read.
async fn finish<S: Service>(worker: &Worker<S>, c: &mut Conn, timer: &timer::Slot<'_>) {
    timer.reset(Instant::now() + worker.settings().timeouts.close);
    while !c.out.is_empty() {
        if flush(c).is_err() {
            return;
        }
        if c.out.is_empty() {
            break;
        }
        monoio::select! {
            r = c.stream.writable(false) => if r.is_err() { return },
            _ = timer.expired() => return,
        }
    }
    sys::shutdown_write(c.fd);
    loop {
        monoio::select! {
            r = c.stream.readable(false) => if r.is_err() { return },
            _ = timer.expired() => return,
        }
        let mut scratch = worker.scratch.borrow_mut();
        loop {
            match sys::recv(c.fd, &mut scratch) {
                Ok(Transfer::Done(0)) | Err(_) => return,
                Ok(Transfer::Done(_)) => continue,
                Ok(Transfer::WouldBlock) => break,
            }
        }
    }
}

/// Sends as much of `c.out` as the socket takes now.
fn flush(c: &mut Conn) -> io::Result<()> {
    if c.out.is_empty() {
        return Ok(());
    }
    let sent = send_now(c.fd, &c.out)?;
    c.out.drain(..sent);
    if c.out.is_empty() {
        // Only backpressure or the handshake fill `out`; an idle connection keeps no buffer.
        c.out = Vec::new();
    }
    Ok(())
}

/// Sends from `buf` until done or the socket would block; returns the bytes sent.
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match sys::send(fd, &buf[sent..])? {
            Transfer::Done(n) => sent += n,
            Transfer::WouldBlock => break,
        }
    }
    Ok(sent)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DevSecret, Env};
    use crate::runtime::Gateway;
    use clap::Parser;

    /// The connection task is most of an idle connection's memory (README "Idle connections"):
    /// keep its state machine inside the allocator's 1 KiB size class. A field added to `Ws` or
    /// `Conn`, or an await that keeps a large temporary alive, shows up here first.
    #[test]
    fn the_connection_task_stays_small() {
        let config = Config::try_parse_from(["wsgate", "--allowed-origins", "*"]).unwrap();
        let env = Env {
            jwt_secret: Some("k".into()),
        };
        let settings = config
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap();
        let shared = WorkerShared {
            id: 0,
            settings: std::sync::Arc::new(settings),
            service: std::sync::Arc::new(Gateway),
            open: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let worker = Rc::new(Worker::new(shared));
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let task = serve(worker, stream, addr);
            let size = std::mem::size_of_val(&task);
            assert!(size <= 1_000, "connection future grew to {size} bytes");
        });
    }
}
