//! One connection, from accept to close. The task waits for readiness (io_uring POLL_ADD or
//! epoll), then reads into the worker's scratch buffer and parses in place, so an idle connection
//! holds no read buffer; replies are staged in the worker's cork buffer and sent at once, and only
//! what the socket does not take is queued in the connection's outbox, the same queue group
//! fan-out fills (so order holds). Deadlines end the connection; they never cancel a read that
//! has completed (readiness carries no data, so dropping it loses nothing).

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::groups::{GroupCtx, Member, Members};
use super::sys::{self, Transfer};
use super::timer::{self, Timers};
use super::{Service, WorkerShared};
use crate::api::{self, Endpoint};
use crate::auth::tickets::IssueError;
use crate::config::Settings;
use crate::connection::{CloseReason, Connection, Core};
use crate::hub::LocalHub;
use crate::hub::table::GroupTable;
use crate::limits::{Refusal, TokenBucket};
use crate::metrics::{CoreStats, Rejection};
use crate::proto::close::CloseCode;
use crate::proto::frame::{self, OpCode};
use crate::proto::handshake;
use crate::proto::http;
use crate::session::{self, Verdict};

/// Size of the per-worker read buffer every readable connection reads into.
const SCRATCH_BYTES: usize = 64 * 1024;

pub use crate::connection::Handler;

/// Per-worker state shared by the worker's connections (single thread: `Cell`/`RefCell`).
pub(crate) struct Worker<S> {
    pub(crate) shared: WorkerShared<S>,
    /// This core's copy of the settings; a reload replaces it (connections keep the copy they
    /// hold, so nothing changes under a request being served).
    settings: RefCell<Rc<Settings>>,
    /// Shutting down: no keep-alive, and every WebSocket that opens is told to go away.
    pub(crate) draining: Cell<bool>,
    /// The drain waiting for the last connection to end.
    drained: Cell<Option<std::task::Waker>>,
    /// Origin of the millisecond clock of the connections' message-rate buckets.
    epoch: Instant,
    scratch: RefCell<Box<[u8]>>,
    cork: RefCell<Vec<u8>>,
    open: Cell<usize>,
    /// Deadlines of this worker's WebSocket connections.
    pub(crate) timers: Timers,
    /// This core's connections that fan-out can reach, by key.
    pub(crate) members: RefCell<Members>,
    /// This core's group membership.
    pub(crate) table: RefCell<GroupTable<u64>>,
    /// This core's side of the cross-core hub.
    pub(crate) hub: LocalHub,
    /// Members with queued frames, flushed once per batch.
    pub(crate) dirty: RefCell<Vec<u64>>,
    /// This core's counters.
    pub(crate) stats: Arc<CoreStats>,
}

impl<S: Service> Worker<S> {
    pub(crate) fn new(shared: WorkerShared<S>, hub: LocalHub, stats: Arc<CoreStats>) -> Self {
        Self {
            settings: RefCell::new(Rc::new(Settings::clone(&shared.settings))),
            draining: Cell::new(false),
            drained: Cell::new(None),
            epoch: Instant::now(),
            shared,
            scratch: RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice()),
            cork: RefCell::new(Vec::with_capacity(SCRATCH_BYTES)),
            open: Cell::new(0),
            timers: Timers::default(),
            members: RefCell::new(Members::default()),
            table: RefCell::new(GroupTable::new()),
            hub,
            dirty: RefCell::new(Vec::new()),
            stats,
        }
    }

    /// The settings in force now (a reload may replace them between two calls).
    pub(crate) fn settings(&self) -> Rc<Settings> {
        self.settings.borrow().clone()
    }

    /// Puts reloaded settings in force for every request and message from now on.
    pub(crate) fn replace_settings(&self, settings: &Settings) {
        *self.settings.borrow_mut() = Rc::new(settings.clone());
    }

    /// Graceful shutdown of this core (the accept loop has stopped): every WebSocket is closed
    /// with 1001 after what is queued for it, and this resolves when the last connection ended
    /// or the shutdown deadline passed, whichever comes first.
    pub(crate) async fn drain(&self) {
        self.draining.set(true);
        let deadline = Instant::now() + self.settings().timeouts.shutdown;
        let members: Vec<Rc<Member>> = self.members.borrow().iter().cloned().collect();
        for member in members {
            member.go_away();
        }
        let all_closed = std::future::poll_fn(|cx| {
            if self.open.get() == 0 {
                return std::task::Poll::Ready(());
            }
            self.drained.set(Some(cx.waker().clone()));
            std::task::Poll::Pending
        });
        monoio::select! {
            _ = all_closed => {}
            _ = monoio::time::sleep_until(deadline) => {
                tracing::warn!(
                    worker = self.shared.id,
                    open = self.open.get(),
                    "shutdown deadline passed; dropping the connections still open"
                );
            }
        }
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
        worker
            .stats
            .open_connections
            .fetch_add(1, Ordering::Relaxed);
        Some(Self { worker })
    }
}

impl<S> Drop for Admission<'_, S> {
    fn drop(&mut self) {
        self.worker.open.set(self.worker.open.get() - 1);
        if self.worker.open.get() == 0
            && let Some(waker) = self.worker.drained.take()
        {
            waker.wake();
        }
        self.worker.shared.open.fetch_sub(1, Ordering::Relaxed);
        self.worker
            .stats
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A WebSocket connection's place in the fan-out; leaves every group when dropped.
struct Registration<'w, S: Service> {
    worker: &'w Worker<S>,
    key: u64,
}

impl<S: Service> Drop for Registration<'_, S> {
    fn drop(&mut self) {
        self.worker.leave_all(self.key);
    }
}

/// The socket and the bytes a connection must keep between wake-ups.
struct Conn {
    stream: TcpStream,
    fd: RawFd,
    /// Input that arrived in pieces (a partial head or frame); empty when idle.
    pending: Vec<u8>,
    /// The outbox (output the socket has not taken yet) and the fan-out's view of us.
    member: Rc<Member>,
}

impl Conn {
    /// Queues bytes behind everything already queued (HTTP answers, pings, Close frames).
    fn queue(&self, bytes: &[u8]) {
        // Unbounded on purpose: these are a few bytes each, and a Close must always fit.
        let _ = self.member.outbox.borrow_mut().push_copy(bytes, usize::MAX);
    }

    fn has_output(&self) -> bool {
        !self.member.outbox.borrow().is_empty()
    }

    /// Sends what the socket takes now from the outbox, counting the bytes.
    fn flush<S>(&self, worker: &Worker<S>) -> io::Result<()> {
        self.count_sent(worker, self.member.flush()?);
        Ok(())
    }

    /// [`Self::flush`] when a FIN follows: the last segment waits for it.
    fn flush_before_fin<S>(&self, worker: &Worker<S>) -> io::Result<()> {
        self.count_sent(worker, self.member.flush_with(true)?);
        Ok(())
    }

    fn count_sent<S>(&self, worker: &Worker<S>, sent: usize) {
        worker
            .stats
            .bytes_out
            .fetch_add(sent as u64, Ordering::Relaxed);
    }
}

/// Why processing stopped.
enum Stop {
    /// The peer is gone (EOF, reset); nothing more can be sent.
    Gone,
    /// The handshake deadline passed.
    TimedOut,
    /// Close for this reason (and its code), then end.
    Close(CloseReason),
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
        member: Rc::new(Member::new(fd)),
    };
    async move {
        let timer = worker.timers.slot();
        let admitted = match Admission::take(&worker) {
            Some(admission) => count_address(&worker, &conn.member, peer).map(|()| admission),
            None => {
                worker.stats.reject(Rejection::Unavailable503);
                tracing::debug!(worker = worker.shared.id, %peer, "connection limit reached: 503");
                Err(worker.settings().retry_after_secs)
            }
        };
        let _admission = match admitted {
            Ok(admission) => admission,
            Err(retry_after) => {
                let retry = retry_after.to_string();
                let mut answer = Vec::new();
                http::write_response(&mut answer, 503, &[("Retry-After", &retry)], b"");
                conn.queue(&answer);
                finish(&worker, &mut conn, &timer).await;
                return;
            }
        };
        // Small frames must not wait for Nagle; failure only costs latency.
        let _ = conn.stream.set_nodelay(true);
        // No await inside the match, and no Option around the handler: either would keep a
        // second copy alive next to `ws` for the connection's whole life.
        let handler = 'upgrade: {
            loop {
                // Only the small plan leaves this match: the handshake's result must not stay
                // alive across an await next to `ws`.
                let plan = match handshake(&worker, &mut conn, &timer).await {
                    Ok(Head::Upgraded(handler)) => break 'upgrade handler,
                    Ok(Head::Http(plan)) => plan,
                    Ok(Head::Answered) => break,
                    Err(Stop::Close(why)) => {
                        // Upgraded, then refused at once (an upgrade-time credential failed):
                        // a connection all the same, with its one line.
                        let (code, reason) =
                            (why.code().unwrap_or(CloseCode::POLICY), why.reason());
                        let mut close = Vec::new();
                        frame::write_close(&mut close, code, reason);
                        conn.queue(&close);
                        tracing::info!(
                            worker = worker.shared.id,
                            %peer,
                            duration_ms = 0u64,
                            close_code = code.0,
                            reason,
                            bytes_in = conn.member.bytes_in.get(),
                            bytes_out = conn.member.bytes_out.get(),
                            "connection ended"
                        );
                        break;
                    }
                    Err(Stop::TimedOut) => {
                        worker.stats.reject(Rejection::Timeout);
                        tracing::debug!(worker = worker.shared.id, %peer, "handshake timeout");
                        return;
                    }
                    Err(_) => return,
                };
                match http_request(&worker, &mut conn, plan, &timer).await {
                    // Keep-alive: the next request may follow on the same connection (not
                    // while shutting down).
                    Ok(true) if !worker.draining.get() => continue,
                    Ok(true) => break,
                    Ok(false) => break,
                    Err(_) => return,
                }
            }
            finish(&worker, &mut conn, &timer).await;
            return;
        };
        conn.member
            .bucket
            .set(TokenBucket::new(worker.settings().rate.burst, 0));
        let mut ws = Connection::new(handler, &worker.settings(), Instant::now().into_std());
        note_identity(&worker, &conn.member, &mut ws);
        let key = worker.members.borrow_mut().insert(conn.member.clone());
        if worker.draining.get() {
            // Upgraded while the core shuts down: closed 1001 at once, like the others.
            conn.member.go_away();
        }
        let registration = Registration {
            worker: &worker,
            key,
        };
        let started = Instant::now();
        let (code, reason) = websocket(&worker, &mut conn, &mut ws, &timer, key).await;
        drop(registration);
        // One line per connection, never with a token: the user is not logged either.
        tracing::info!(
            worker = worker.shared.id,
            %peer,
            duration_ms = started.elapsed().as_millis() as u64,
            close_code = code.map(|c| c.0),
            reason,
            bytes_in = conn.member.bytes_in.get(),
            bytes_out = conn.member.bytes_out.get(),
            "connection ended"
        );
    }
}

/// What a complete request head led to.
enum Head<H> {
    /// Upgraded: the 101 and any opening messages are queued.
    Upgraded(H),
    /// An HTTP API request whose body is still to be read.
    Http(HttpPlan),
    /// An error answer is queued; the connection closes after it.
    Answered,
}

/// An HTTP API request accepted on its head.
#[derive(Clone, Copy)]
struct HttpPlan {
    endpoint: Endpoint,
    body_len: usize,
    keep_alive: bool,
}

/// Reads the request head and answers it. `Err`: the peer went away, the deadline passed, or the
/// handler closed at once.
async fn handshake<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    timer: &timer::Slot<'_>,
) -> Result<Head<S::Handler>, Stop> {
    let settings = worker.settings();
    timer.reset(Instant::now() + settings.timeouts.handshake);
    let mut scanned = 0;
    // A keep-alive client may have sent its next request already: look at it before waiting.
    let mut buffered = !c.pending.is_empty();
    loop {
        if !buffered {
            monoio::select! {
                r = c.stream.readable(false) => r?,
                _ = timer.expired() => return Err(Stop::TimedOut),
            }
        }
        let mut scratch = worker.scratch.borrow_mut();
        let n = if std::mem::take(&mut buffered) {
            0
        } else {
            match sys::recv(c.fd, &mut scratch)? {
                Transfer::Done(0) => return Err(Stop::Gone),
                Transfer::Done(n) => {
                    c.member.bytes_in.set(c.member.bytes_in.get() + n as u64);
                    n
                }
                Transfer::WouldBlock => continue,
            }
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
                let mut answer = Vec::new();
                respond(&mut answer, e.status(), &[]);
                c.queue(&answer);
                worker.stats.reject(Rejection::TooLarge431);
                return Ok(Head::Answered);
            }
        };
        let now = unix_now();
        // The answer goes out through the cork; only what the socket refuses stays with us.
        let mut cork = worker.cork.borrow_mut();
        let decision = decide(worker, &buf[..head_len], (now, &c.member), &mut cork);
        // Straight out unless an earlier answer is still queued (order first).
        let sent = if c.has_output() {
            0
        } else {
            send_now(worker, &c.member, &cork).unwrap_or(cork.len())
        };
        c.queue(&cork[sent..]);
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
            Decision::Respond => Ok(Head::Answered),
            Decision::Http(plan) => Ok(Head::Http(plan)),
            Decision::Upgraded(handler, Verdict::Continue) => Ok(Head::Upgraded(handler)),
            Decision::Upgraded(_, Verdict::Close(code, reason)) => {
                Err(Stop::Close(CloseReason::Refused(code, reason)))
            }
        };
    }
}

enum Decision<H> {
    Respond,
    Http(HttpPlan),
    Upgraded(H, Verdict),
}

/// docs/protocol.md §1-2 for one complete head: an HTTP error, or the 101 plus the handler's opening.
fn decide<S: Service>(
    worker: &Worker<S>,
    head: &[u8],
    (now, member): (u64, &Member),
    out: &mut Vec<u8>,
) -> Decision<S::Handler> {
    let settings = worker.settings();
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let request = match http::parse_request(head, &mut headers) {
        Ok(request) => request,
        Err(e) => {
            respond(out, e.status(), &[]);
            worker.stats.reject(Rejection::BadRequest400);
            return Decision::Respond;
        }
    };
    let (path, _) = http::split_target(request.path.unwrap_or(""));
    if path != settings.ws_path {
        if let Err(retry_after) = admit_address(worker, &settings, &request, member, false) {
            respond(out, 503, &[("Retry-After", &retry_after.to_string())]);
            return Decision::Respond;
        }
        return http_head(worker, &request, (path, now, member), out);
    }
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
            if let Some(why) = Rejection::from_status(status) {
                worker.stats.reject(why);
            }
            return Decision::Respond;
        }
    };
    if !settings.origin.allows(upgrade.origin) {
        tracing::debug!(worker = worker.shared.id, "origin refused: 403");
        respond(out, 403, &[]);
        worker.stats.reject(Rejection::Forbidden403);
        return Decision::Respond;
    }
    if let Err(retry_after) = admit_address(worker, &settings, &request, member, true) {
        respond(out, 503, &[("Retry-After", &retry_after.to_string())]);
        return Decision::Respond;
    }
    worker.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let accept = handshake::accept_key(upgrade.key);
    handshake::write_101(out, &accept, upgrade.offers_v1);
    let mut handler = worker.shared.service.handler();
    let before = out.len();
    let verdict = handler.on_open(&upgrade, &settings, now, out);
    if out.len() > before {
        worker.stats.messages_out.fetch_add(1, Ordering::Relaxed);
    }
    if settings.auth.ticket
        && upgrade
            .query
            .is_some_and(|q| http::query_param(q, "ticket").is_some())
    {
        let counter = if handler.awaiting_auth() {
            &worker.stats.tickets_refused
        } else {
            &worker.stats.tickets_redeemed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    worker.stats.count_auth(handler.awaiting_auth(), verdict);
    Decision::Upgraded(handler, verdict)
}

/// The per-address count from accept (docs/protocol.md §1's 503 row): a connection from a peer
/// that is not a trusted proxy takes its address's place before a byte of its request is read,
/// so half-open heads and API connections count as upgrades do. A trusted proxy's connections
/// are counted for the client it names, once its request head arrives ([`admit_address`]).
/// `Err` carries the Retry-After seconds.
fn count_address<S: Service>(
    worker: &Worker<S>,
    member: &Member,
    peer: SocketAddr,
) -> Result<(), u32> {
    let settings = worker.settings();
    let limits = &settings.rate.per_ip;
    let ip = peer.ip();
    if !limits.is_limited() || settings.rate.trusted_proxies.contains(ip) {
        return Ok(());
    }
    match limits.connect(ip, worker.shared.clock_ms()) {
        // Boxed: only gateways with per-address limits pay for the slot in each connection.
        Ok(slot) => {
            member.ip_slot.set(Some(Box::new(slot)));
            Ok(())
        }
        Err(refusal) => Err(refused_address(worker, &settings, ip, refusal)),
    }
}

/// The per-client-address limits at the request head: the client is the peer, or the address a
/// trusted proxy forwarded for. An upgrade takes one of the client's upgrade tokens; a trusted
/// proxy's connection takes the forwarded client's place in the count (a peer that is not a
/// proxy took its own at accept). `Err` carries the Retry-After seconds.
fn admit_address<S: Service>(
    worker: &Worker<S>,
    settings: &Settings,
    request: &httparse::Request<'_, '_>,
    member: &Member,
    upgrade: bool,
) -> Result<(), u32> {
    let limits = &settings.rate.per_ip;
    if !limits.is_limited() {
        return Ok(());
    }
    // Asked of the socket only here (a gateway with per-address limits), so that no
    // connection carries its address around.
    let Some(peer) = sys::peer_ip(member.fd) else {
        return Ok(());
    };
    let now = worker.shared.clock_ms();
    if !settings.rate.trusted_proxies.contains(peer) {
        if !upgrade {
            return Ok(());
        }
        return limits
            .upgrade(peer, now)
            .map_err(|refusal| refused_address(worker, settings, peer, refusal));
    }
    let client = forwarded_client(settings, request, peer);
    let admitted = if upgrade {
        limits.admit(client, now)
    } else {
        limits.connect(client, now)
    };
    match admitted {
        Ok(slot) => {
            // A keep-alive connection's next request replaces (and so releases) the last one.
            member.ip_slot.set(Some(Box::new(slot)));
            Ok(())
        }
        Err(refusal) => Err(refused_address(worker, settings, client, refusal)),
    }
}

/// The client's address: the peer, or the address a trusted proxy forwarded for.
fn client_address(
    settings: &Settings,
    request: &httparse::Request<'_, '_>,
    fd: RawFd,
) -> Option<std::net::IpAddr> {
    sys::peer_ip(fd).map(|peer| forwarded_client(settings, request, peer))
}

/// The client a trusted proxy names in `X-Forwarded-For` (the peer itself when it is not one).
fn forwarded_client(
    settings: &Settings,
    request: &httparse::Request<'_, '_>,
    peer: std::net::IpAddr,
) -> std::net::IpAddr {
    let proxies = &settings.rate.trusted_proxies;
    if proxies.is_empty() {
        return peer;
    }
    // Every X-Forwarded-For line counts (the head is bounded to `MAX_HEADERS` lines): the
    // proxy's own line is last, and a client that sends lines of its own must not push it out
    // of sight.
    let mut forwarded: [&[u8]; http::MAX_HEADERS] = [&[]; http::MAX_HEADERS];
    let mut n = 0;
    for h in request.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-forwarded-for") && n < forwarded.len() {
            forwarded[n] = h.value;
            n += 1;
        }
    }
    proxies.client_ip(peer, &forwarded[..n])
}

/// Counts and logs a per-address refusal; returns its Retry-After seconds.
fn refused_address<S: Service>(
    worker: &Worker<S>,
    settings: &Settings,
    client: std::net::IpAddr,
    refusal: Refusal,
) -> u32 {
    let counter = match refusal {
        Refusal::Rate { .. } => &worker.stats.ip_rate_refusals,
        _ => &worker.stats.ip_concurrent_refusals,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    worker.stats.reject(Rejection::Unavailable503);
    tracing::debug!(worker = worker.shared.id, %client, "per-address limit: {refusal}");
    refusal.retry_after_secs(settings.retry_after_secs)
}

/// docs/protocol.md §5 for a request head on any path but the WebSocket's: what can be decided before
/// the body arrives. Every refusal answers and closes (the body is not read).
fn http_head<S: Service>(
    worker: &Worker<S>,
    request: &httparse::Request<'_, '_>,
    (path, now, member): (&str, u64, &Member),
    out: &mut Vec<u8>,
) -> Decision<S::Handler> {
    let settings = worker.settings();
    worker.stats.http_requests.fetch_add(1, Ordering::Relaxed);
    if settings.test_hooks && path == "/debug/stall" {
        stall(request.path.unwrap_or(""));
        respond(out, 200, &[]);
        return Decision::Respond;
    }
    if settings.test_hooks && path == "/debug/panic" {
        // The tests of what a panicking worker leaves behind (nothing half-dead) use this.
        panic!("--test-hooks: /debug/panic");
    }
    let headers = &*request.headers;
    let keep_alive = api::wants_keep_alive(request.version.unwrap_or(0), headers);
    let plan = api::route(request.method.unwrap_or(""), path).and_then(|endpoint| {
        let body_len = api::expected_body(endpoint, headers, settings.max_body_bytes)?;
        if matches!(endpoint, Endpoint::Publish | Endpoint::Revoke) {
            api::authorize(&settings.api_keys, headers)?;
            api::check_content_type(headers)?;
        }
        if endpoint == Endpoint::WsAuth {
            // Answered from the head; the (ignored) body is still read, for keep-alive.
            let client = client_address(&settings, request, member.fd);
            issue_ticket(worker, &settings, headers, (now, client), out, keep_alive)?;
        }
        Ok(HttpPlan {
            endpoint,
            body_len,
            keep_alive,
        })
    });
    match plan {
        Ok(plan) => Decision::Http(plan),
        Err(e) => {
            if e.status() == 404 {
                worker.stats.reject(Rejection::NotFound404);
            }
            api::write_error(out, &e, false);
            Decision::Respond
        }
    }
}

/// `POST /ws-auth`: a ticket for the bearer JWT, as `201 {"ticket":..,"expires_in":..}`.
fn issue_ticket<S: Service>(
    worker: &Worker<S>,
    settings: &Settings,
    headers: &[httparse::Header<'_>],
    (now, client): (u64, Option<std::net::IpAddr>),
    out: &mut Vec<u8>,
    keep_alive: bool,
) -> Result<(), api::ApiError> {
    if !settings.auth.ticket {
        return Err(api::ApiError::NotFound);
    }
    let token = api::single_header(headers, "authorization")
        .and_then(session::bearer_token)
        .ok_or(api::ApiError::Token(401, "missing bearer token"))?;
    let state = &settings.auth.state;
    let identity = settings
        .auth
        .verifier
        .verify(token, now)
        .and_then(|identity| {
            if state.revocations.is_revoked(&identity, now) {
                Err(crate::auth::AuthError::Revoked)
            } else {
                Ok(identity)
            }
        })
        .map_err(|e| api::ApiError::Token(e.status(), e.detail()))?;
    let ticket = state
        .tickets
        .issue_from(identity, client, now)
        .map_err(|e| {
            worker
                .stats
                .tickets_not_issued
                .fetch_add(1, Ordering::Relaxed);
            match e {
                IssueError::Full => api::ApiError::Unavailable("too many tickets outstanding"),
                IssueError::UserQuota => {
                    api::ApiError::TooManyRequests("too many tickets outstanding for this user")
                }
                IssueError::AddressQuota => {
                    api::ApiError::TooManyRequests("too many tickets outstanding for this address")
                }
            }
        })?;
    worker.stats.tickets_issued.fetch_add(1, Ordering::Relaxed);
    api::write_ticket(out, ticket.as_str(), ticket.expires_in(), keep_alive);
    Ok(())
}

/// `POST /api/revoke`: records the revocation, then has every worker close the matching
/// connections (4401) and waits for their count, at most five seconds.
async fn revoke<S: Service>(worker: &Worker<S>, body: &[u8]) -> Result<usize, api::ApiError> {
    let target = api::parse_revoke(body)?;
    let settings = worker.settings();
    let state = &settings.auth.state;
    let now = unix_now();
    let (by_user, id) = match &target {
        api::RevokeTarget::User(user) => (true, user.as_ref()),
        api::RevokeTarget::Jti(jti) => (false, jti.as_ref()),
    };
    let recorded = if by_user {
        state.revocations.revoke_user(id, now)
    } else {
        state.revocations.revoke_jti(id, now)
    };
    recorded.map_err(|_| api::ApiError::Unavailable("too many revocations kept"))?;
    let done = Arc::new(super::control::Countdown::new(worker.shared.controls.len()));
    let job = super::control::Revoke {
        by_user,
        key: state.fingerprint(id),
        done: done.clone(),
    };
    for control in worker.shared.controls.iter() {
        control.post_revoke(job.clone());
    }
    let wait = settings
        .timeouts
        .close
        .max(std::time::Duration::from_secs(5));
    let closed = monoio::select! {
        closed = done.wait() => closed,
        _ = monoio::time::sleep(wait) => {
            tracing::warn!("revocation: a worker did not report in time");
            done.closed_so_far()
        }
    };
    tracing::info!(by_user, closed, "revoked");
    Ok(closed)
}

/// Reads an API request's body (within the handshake deadline), runs it, and queues the answer.
/// `Ok(true)`: the connection stays open for another request.
async fn http_request<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    plan: HttpPlan,
    timer: &timer::Slot<'_>,
) -> Result<bool, Stop> {
    while c.pending.len() < plan.body_len {
        // Never wait for input with work deferred from earlier pipelined requests.
        worker.after_batch();
        c.flush(worker)?;
        monoio::select! {
            r = c.stream.readable(false) => r?,
            _ = timer.expired() => return Err(Stop::TimedOut),
        }
        let mut scratch = worker.scratch.borrow_mut();
        match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => return Err(Stop::Gone),
            // Bytes past the body belong to the next request: they stay, in order.
            Transfer::Done(n) => c.pending.extend_from_slice(&scratch[..n]),
            Transfer::WouldBlock => {}
        }
    }
    let mut answer = Vec::with_capacity(256);
    let body = &c.pending[..plan.body_len];
    let keep_alive = match plan.endpoint {
        Endpoint::Healthz => {
            let unresponsive = worker.shared.liveness.unresponsive();
            api::write_healthz(&mut answer, &unresponsive, plan.keep_alive);
            plan.keep_alive
        }
        Endpoint::Metrics => {
            let mut text = String::with_capacity(8 * 1024);
            let cores: Vec<&crate::metrics::CoreStats> =
                worker.shared.all_stats.iter().map(|s| &**s).collect();
            crate::metrics::render(&cores, &mut text);
            api::write_metrics(&mut answer, &text, plan.keep_alive);
            plan.keep_alive
        }
        // Answered from the head already.
        Endpoint::WsAuth => plan.keep_alive,
        Endpoint::Revoke => {
            let body = body.to_vec();
            // Boxed: its wait would otherwise sit in every connection's state (a rare request).
            match Box::pin(revoke(worker, &body)).await {
                Ok(closed) => api::write_revoked(&mut answer, closed, plan.keep_alive),
                Err(e) => api::write_error(&mut answer, &e, plan.keep_alive),
            }
            plan.keep_alive
        }
        Endpoint::Publish => match api::parse_publish(body) {
            Ok(publish) => {
                worker.stats.api_publishes.fetch_add(1, Ordering::Relaxed);
                worker.publish(&publish.group, publish.data);
                api::write_accepted(&mut answer, plan.keep_alive);
                plan.keep_alive
            }
            Err(e) => {
                api::write_error(&mut answer, &e, plan.keep_alive);
                plan.keep_alive
            }
        },
    };
    c.pending.drain(..plan.body_len);
    c.queue(&answer);
    // While the client has pipelined another request, keep going: the fan-out is sent and other
    // cores are woken once per burst, as for a batch of WebSocket input, so members get many
    // messages per write instead of one. A client that pipelines without reading may not
    // queue more than the outbound budget of answers before we wait for it.
    let settings = worker.settings();
    let budget = settings.limits.max_outbound_bytes;
    let more = matches!(
        http::find_head_end(&c.pending, 0, settings.limits.max_head_bytes),
        Ok(Some(_))
    );
    if !(keep_alive && more) || c.member.outbox.borrow().queued_bytes() > budget {
        worker.after_batch();
        c.flush(worker)?;
        while c.member.outbox.borrow().queued_bytes() > budget {
            monoio::select! {
                r = c.stream.writable(false) => r?,
                _ = timer.expired() => return Err(Stop::TimedOut),
            }
            c.flush(worker)?;
        }
    }
    if keep_alive {
        timer.reset(Instant::now() + worker.settings().timeouts.handshake);
    }
    Ok(keep_alive)
}

/// `--test-hooks` only: blocks this worker's thread for `?ms=N` (at most a minute), as a core
/// stuck in a long computation would be; the watchdog tests use it.
fn stall(target: &str) {
    let (_, query) = http::split_target(target);
    let ms = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse::<u64>().ok())
        .unwrap_or(0)
        .min(60_000);
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

fn respond(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let body = http::reason_phrase(status);
    http::write_response(out, status, headers, body.as_bytes());
}

enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Timer,
    Notified,
}

/// Runs the frame loop until the connection ends; returns the close code sent, if any.
async fn websocket<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Connection<S::Handler>,
    timer: &timer::Slot<'_>,
    key: u64,
) -> (Option<CloseCode>, &'static str) {
    let settings = worker.settings();
    // Frames that arrived together with the head.
    let mut stop = if c.pending.is_empty() {
        None
    } else {
        let mut cork = worker.cork.borrow_mut();
        let mut groups = GroupCtx {
            worker,
            key,
            member: &c.member,
        };
        let result = process(&mut c.pending, ws, worker, &mut cork, &mut groups)
            .map(|used| drop(c.pending.drain(..used)));
        note_identity(worker, &c.member, ws);
        // Same exit as every other batch: straight out, or queued within the budget.
        let result = uncork(worker, c, &mut cork).map_err(Stop::from).and(result);
        worker.after_batch();
        result.err()
    };
    loop {
        if stop.is_none() {
            stop = match c.flush(worker) {
                Err(e) => Some(e.into()),
                Ok(()) => c
                    .member
                    .closing
                    .get()
                    .map(|code| Stop::Close(CloseReason::of_closing(code))),
            };
        }
        if let Some(stop) = stop.take() {
            return end(worker, c, stop, timer).await;
        }
        let deadline = ws.poll_timeout(&settings, Instant::now().into_std(), SystemTime::now());
        timer.arm(Instant::from_std(deadline));
        let event = if c.has_output() {
            monoio::select! {
                r = c.stream.readable(false) => Event::Readable(r),
                r = c.stream.writable(false) => Event::Writable(r),
                _ = timer.expired() => Event::Timer,
                _ = c.member.notified() => Event::Notified,
            }
        } else {
            monoio::select! {
                r = c.stream.readable(false) => Event::Readable(r),
                _ = timer.expired() => Event::Timer,
                _ = c.member.notified() => Event::Notified,
            }
        };
        stop = match event {
            Event::Readable(Err(_)) | Event::Writable(Err(_)) => Some(Stop::Gone),
            Event::Readable(Ok(())) => read_and_process(worker, c, ws, key).err(),
            Event::Writable(Ok(())) | Event::Notified => None,
            Event::Timer => {
                let mut out = Vec::new();
                let now = (Instant::now().into_std(), unix_now());
                let stop = ws.handle_timeout(&settings, now, &worker.stats, &mut out);
                if !out.is_empty() {
                    c.queue(&out);
                }
                stop.map(Stop::Close)
            }
        };
    }
}

/// After input or the upgrade: a new identity (authentication, refresh) updates the
/// fingerprints a revocation finds this connection by.
fn note_identity<S: Service>(worker: &Worker<S>, member: &Member, ws: &mut Connection<S::Handler>) {
    let Some((user, jti)) = ws.handler_mut().take_changed_identity() else {
        return;
    };
    let settings = worker.settings();
    let state = &settings.auth.state;
    member.user_key.set(state.fingerprint(user));
    member
        .jti_key
        .set(jti.map_or(0, |jti| state.fingerprint(jti)));
}

/// Drains the socket through the scratch buffer, parsing each read in place.
fn read_and_process<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Connection<S::Handler>,
    key: u64,
) -> Result<(), Stop> {
    let result = loop {
        let mut scratch = worker.scratch.borrow_mut();
        let n = match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => break Err(Stop::Gone),
            Transfer::Done(n) => {
                c.member.bytes_in.set(c.member.bytes_in.get() + n as u64);
                n
            }
            Transfer::WouldBlock => break Ok(()),
        };
        worker.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let mut cork = worker.cork.borrow_mut();
        let mut groups = GroupCtx {
            worker,
            key,
            member: &c.member,
        };
        let result = if c.pending.is_empty() {
            process(&mut scratch[..n], ws, worker, &mut cork, &mut groups).map(|used| {
                c.pending.extend_from_slice(&scratch[used..n]);
            })
        } else {
            c.pending.extend_from_slice(&scratch[..n]);
            process(&mut c.pending, ws, worker, &mut cork, &mut groups).map(|used| {
                c.pending.drain(..used);
                if c.pending.is_empty() {
                    // Partial frames are the exception: an idle connection keeps no buffer.
                    c.pending = Vec::new();
                }
            })
        };
        note_identity(worker, &c.member, ws);
        uncork(worker, c, &mut cork)?;
        if result.is_err() || n < scratch.len() {
            // A short read: the socket is (almost certainly) drained; readiness says if not.
            break result;
        }
    };
    worker.after_batch();
    result
}

/// Sends the replies staged in the cork, straight to the socket when nothing is queued before
/// them; what the socket does not take is queued (within the outbound budget).
fn uncork<S: Service>(worker: &Worker<S>, c: &Conn, cork: &mut Vec<u8>) -> io::Result<()> {
    if cork.is_empty() {
        return Ok(());
    }
    let sent = if c.has_output() {
        0
    } else {
        send_now(worker, &c.member, cork)?
    };
    if sent < cork.len() {
        let budget = worker.settings().limits.max_outbound_bytes;
        if c.member
            .outbox
            .borrow_mut()
            .push_copy(&cork[sent..], budget)
            .is_err()
        {
            c.member.closing.set(Some(CloseCode::POLICY));
        }
    }
    cork.clear();
    Ok(())
}

impl<S: Service> Worker<S> {
    /// After a batch of input: send what fan-out queued, wake the other cores sent to.
    fn after_batch(&self) {
        self.flush_dirty();
        self.hub.wake_pending();
    }
}

/// Hands a batch of input to the connection's state machine at this moment.
fn process<S: Service>(
    buf: &mut [u8],
    ws: &mut Connection<S::Handler>,
    worker: &Worker<S>,
    out: &mut Vec<u8>,
    groups: &mut GroupCtx<'_, S>,
) -> Result<usize, Stop> {
    let settings = worker.settings();
    let core = Core {
        bucket: &groups.member.bucket,
        groups: &mut *groups,
        stats: &worker.stats,
        epoch: worker.epoch.into_std(),
    };
    let now = (Instant::now().into_std(), unix_now());
    ws.handle_frames(buf, &settings, now, core, out)
        .map_err(Stop::Close)
}

/// Ends the WebSocket: sends the Close frame the stop calls for, then closes gracefully.
async fn end<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    stop: Stop,
    timer: &timer::Slot<'_>,
) -> (Option<CloseCode>, &'static str) {
    let why = match stop {
        Stop::Gone => return (None, "connection lost"),
        Stop::TimedOut => return (None, "timed out"),
        Stop::Close(why) => why,
    };
    if why == CloseReason::SlowConsumer {
        // The rest of a frame already started must still go out, or the Close would land
        // inside it; frames not started are dropped, and the 1008 says so.
        c.member.outbox.borrow_mut().discard_unstarted();
    }
    let mut close = Vec::with_capacity(32);
    match why.code() {
        // RFC 6455 §5.5.1: a peer's Close is answered with its code, or empty when it had none.
        Some(code) => frame::write_close(&mut close, code, why.reason()),
        None => frame::write_frame(&mut close, OpCode::Close, b""),
    }
    c.queue(&close);
    // Boxed: the closing wait would otherwise widen every connection's state for its whole life
    // (one allocation per close, beside a handful of syscalls).
    Box::pin(finish(worker, c, timer)).await;
    let reason = match why {
        CloseReason::PeerClosed(_) => "closed by the client",
        _ => why.reason(),
    };
    (why.code(), reason)
}

/// Sends what is queued (the Close frame last) as the socket takes it, within the close-flush
/// timeout, so a peer that stopped reading for a while still gets every byte and the close
/// code; then half-closes and drains input until the peer closes, within the close timeout.
/// Draining matters: closing with unread input would turn our last frame into a reset that the
/// peer may never read.
async fn finish<S: Service>(worker: &Worker<S>, c: &mut Conn, timer: &timer::Slot<'_>) {
    let timeouts = worker.settings().timeouts;
    timer.reset(Instant::now() + timeouts.close_flush);
    while c.has_output() {
        // MSG_MORE: the shutdown below tacks its FIN onto the Close frame's segment, one
        // transmit (and one wake-up of the peer) fewer per connection.
        if c.flush_before_fin(worker).is_err() {
            return;
        }
        if !c.has_output() {
            break;
        }
        monoio::select! {
            r = c.stream.writable(false) => if r.is_err() { return },
            _ = timer.expired() => return,
        }
    }
    sys::shutdown_write(c.fd);
    timer.reset(Instant::now() + timeouts.close);
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

/// Sends from `buf` until done or the socket would block; returns the bytes sent.
fn send_now<S>(worker: &Worker<S>, member: &Member, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match sys::send(member.fd, &buf[sent..])? {
            Transfer::Done(n) => sent += n,
            Transfer::WouldBlock => break,
        }
    }
    worker
        .stats
        .bytes_out
        .fetch_add(sent as u64, Ordering::Relaxed);
    member.bytes_out.set(member.bytes_out.get() + sent as u64);
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
            ..Env::default()
        };
        let settings = config
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap();
        let hub = crate::hub::Hub::new(1);
        let stats = std::sync::Arc::new(CoreStats::default());
        let shared = WorkerShared {
            id: 0,
            settings: std::sync::Arc::new(settings),
            service: std::sync::Arc::new(Gateway),
            open: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            hub: hub.clone(),
            stats: stats.clone(),
            all_stats: vec![stats.clone()].into(),
            controls: vec![std::sync::Arc::new(
                crate::runtime::control::Control::default(),
            )]
            .into(),
            liveness: Default::default(),
        };
        let hub = LocalHub::new(hub, 0);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let worker = Rc::new(Worker::new(shared, hub, stats));
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stream = TcpStream::connect(addr).await.unwrap();
            let task = serve(worker, stream, addr);
            let size = std::mem::size_of_val(&task);
            // 936 bytes was measured to still fit, with monoio's task header, in mimalloc's 1 KiB
            // class; at 984 the idle cost per connection jumped by 270 bytes (the next class is
            // 1,280). Widening the state needs an idle measurement, not just a new limit here.
            assert!(size <= 936, "connection future grew to {size} bytes");
        });
    }
}
