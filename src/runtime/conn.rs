//! One connection, from accept to close. The task waits for readiness (io_uring POLL_ADD or
//! epoll), then reads into the worker's scratch buffer and parses in place, so an idle connection
//! holds no read buffer; replies are staged in the worker's cork buffer and sent at once, and only
//! what the socket does not take is queued in the connection's outbox, the same queue group
//! fan-out fills (so order holds). Deadlines end the connection; they never cancel a read that
//! has completed (readiness carries no data, so dropping it loses nothing).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::Service;
use super::member::Member;
use super::sys::{self, Transfer};
use super::timer;
use super::worker::{GroupCtx, Worker};
use crate::api;
use crate::config::Settings;
use crate::connection::upgrade::{self, Decision};
use crate::connection::{CloseReason, Connection, Core, Effect};
use crate::limits::TokenBucket;
use crate::metrics::Rejection;
use crate::proto::close::CloseCode;
use crate::proto::frame::{self, OpCode};
use crate::proto::http;
use crate::session::Verdict;

/// The socket and the bytes a connection must keep between wake-ups.
struct Conn {
    stream: TcpStream,
    fd: RawFd,
    /// Input that arrived in pieces (a partial head or frame, an API request's head and body);
    /// empty when idle.
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
    fn flush<S: Service>(&self, worker: &Worker<S>) -> io::Result<()> {
        let sent = self.member.flush()?;
        worker
            .stats()
            .bytes_out
            .fetch_add(sent as u64, Ordering::Relaxed);
        Ok(())
    }

    /// [`Self::flush`] when a FIN follows: the last segment waits for it.
    fn flush_before_fin<S: Service>(&self, worker: &Worker<S>) -> io::Result<()> {
        let sent = self.member.flush_with(true)?;
        worker
            .stats()
            .bytes_out
            .fetch_add(sent as u64, Ordering::Relaxed);
        Ok(())
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

/// What a head is decided with on this worker now.
fn decision_context<'a, S: Service>(
    worker: &'a Worker<S>,
    settings: &'a Settings,
    peer: std::net::IpAddr,
) -> upgrade::Context<'a> {
    upgrade::Context {
        settings,
        tables: worker.tables(),
        stats: worker.stats(),
        peer,
        unix: unix_now(),
        clock_ms: worker.clock_ms(),
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
        let timer = worker.timers().slot();
        let admitted = match worker.admit() {
            Some(admission) => {
                let settings = worker.settings();
                let ctx = decision_context(&worker, &settings, peer.ip());
                upgrade::admit_peer(&ctx).map(|slot| {
                    // Boxed: only gateways with per-address limits pay for it in each connection.
                    conn.member.ip_slot.set(slot.map(Box::new));
                    admission
                })
            }
            None => {
                worker.stats().reject(Rejection::Unavailable503);
                tracing::debug!(worker = worker.id(), %peer, "connection limit reached: 503");
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
                let plan = match handshake(&worker, &mut conn, &timer, peer).await {
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
                            worker = worker.id(),
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
                        worker.stats().reject(Rejection::Timeout);
                        tracing::debug!(worker = worker.id(), %peer, "handshake timeout");
                        return;
                    }
                    Err(_) => return,
                };
                match http_request(&worker, &mut conn, plan, &timer).await {
                    // Keep-alive: the next request may follow on the same connection (not
                    // while shutting down).
                    Ok(true) if !worker.is_draining() => continue,
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
        let registration = worker.register(conn.member.clone());
        let started = Instant::now();
        let key = registration.key();
        let (code, reason) = websocket(&worker, &mut conn, &mut ws, &timer, key).await;
        drop(registration);
        // One line per connection, never with a token: the user is not logged either.
        tracing::info!(
            worker = worker.id(),
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
    /// An answer is queued; the connection closes after it.
    Answered,
}

/// An HTTP API request accepted on its head, which waits at the start of `pending`.
#[derive(Clone, Copy)]
struct HttpPlan {
    api: api::Plan,
    head_len: usize,
    client: std::net::IpAddr,
}

/// Reads the request head and has it decided ([`upgrade::decide`]). `Err`: the peer went away,
/// the deadline passed, or the upgraded handler closed at once.
async fn handshake<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    timer: &timer::Slot<'_>,
    peer: SocketAddr,
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
        let mut scratch = worker.scratch();
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
                upgrade::respond(&mut answer, e.status(), &[]);
                c.queue(&answer);
                worker.stats().reject(Rejection::TooLarge431);
                return Ok(Head::Answered);
            }
        };
        // The answer goes out through the cork; only what the socket refuses stays with us.
        let mut cork = worker.cork();
        let ctx = decision_context(worker, &settings, peer.ip());
        let service = worker.service();
        let answer =
            |method: &str, target: &str, out: &mut Vec<u8>| service.answer(method, target, out);
        let decision = upgrade::decide(
            &buf[..head_len],
            &ctx,
            (|| worker.handler(), answer),
            &mut cork,
        );
        // Straight out unless an earlier answer is still queued (order first).
        let sent = if c.has_output() {
            0
        } else {
            send_now(worker, &c.member, &cork).unwrap_or(cork.len())
        };
        c.queue(&cork[sent..]);
        cork.clear();
        let keep_head = matches!(decision, Decision::Api { .. });
        if from_scratch {
            // An API request's head stays for its handler; frames the client sent right
            // behind an upgrade's head stay for the WebSocket loop.
            let from = if keep_head { 0 } else { head_len };
            c.pending.extend_from_slice(&scratch[from..n]);
        } else if !keep_head {
            c.pending.drain(..head_len);
        }
        return match decision {
            Decision::Answered => Ok(Head::Answered),
            Decision::Api { plan, slot, client } => {
                if let Some(slot) = slot {
                    // A keep-alive connection's next request replaces (and so releases) the
                    // last one's place.
                    c.member.ip_slot.set(Some(Box::new(slot)));
                }
                Ok(Head::Http(HttpPlan {
                    api: plan,
                    head_len,
                    client,
                }))
            }
            Decision::Upgraded {
                handler,
                verdict,
                slot,
            } => {
                if let Some(slot) = slot {
                    c.member.ip_slot.set(Some(Box::new(slot)));
                }
                match verdict {
                    Verdict::Continue => Ok(Head::Upgraded(handler)),
                    Verdict::Close(code, reason) => {
                        Err(Stop::Close(CloseReason::Refused(code, reason)))
                    }
                }
            }
        };
    }
}

/// Reads an API request's body (within the handshake deadline), has [`api::handle`] answer
/// it, and carries its command out. `Ok(true)`: the connection stays open for another request.
async fn http_request<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    plan: HttpPlan,
    timer: &timer::Slot<'_>,
) -> Result<bool, Stop> {
    let request_len = plan.head_len + plan.api.body_len;
    while c.pending.len() < request_len {
        // Never wait for input with work deferred from earlier pipelined requests.
        worker.after_batch();
        c.flush(worker)?;
        monoio::select! {
            r = c.stream.readable(false) => r?,
            _ = timer.expired() => return Err(Stop::TimedOut),
        }
        let mut scratch = worker.scratch();
        match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => return Err(Stop::Gone),
            // Bytes past the body belong to the next request: they stay, in order.
            Transfer::Done(n) => {
                c.member.bytes_in.set(c.member.bytes_in.get() + n as u64);
                c.pending.extend_from_slice(&scratch[..n]);
            }
            Transfer::WouldBlock => {}
        }
    }
    let settings = worker.settings();
    let mut answer = Vec::with_capacity(256);
    let (head, body) = c.pending[..request_len].split_at(plan.head_len);
    let (keep_alive, revoke) = worker.with_api_context(&settings, Some(plan.client), |ctx| {
        let handled = api::handle(head, body, ctx, unix_now(), &mut answer);
        let revoke = match handled.command {
            Some(api::Command::Publish { group, data }) => {
                worker.publish(&group, data);
                None
            }
            Some(api::Command::Revoke {
                by_user,
                key,
                keep_alive,
            }) => Some((by_user, key, keep_alive)),
            None => None,
        };
        (handled.keep_alive, revoke)
    });
    if let Some((by_user, key, keep_alive)) = revoke {
        // Boxed: its wait would otherwise sit in every connection's state (a rare request).
        let closed = Box::pin(worker.revoke_everywhere(by_user, key)).await;
        api::write_revoked(&mut answer, closed, keep_alive);
    }
    c.pending.drain(..request_len);
    c.queue(&answer);
    // While the client has pipelined another request, keep going: the fan-out is sent and other
    // cores are woken once per burst, as for a batch of WebSocket input, so members get many
    // messages per write instead of one. A client that pipelines without reading may not
    // queue more than the outbound budget of answers before we wait for it.
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
    // What the opening asked for (a ticket to redeem), then the frames that arrived together
    // with the head.
    let mut stop = {
        let mut cork = worker.cork();
        let mut result = carry_out(worker, &c.member, ws, &mut cork);
        if result.is_ok() && !c.pending.is_empty() {
            let mut groups = worker.groups(key, &c.member);
            result = process(
                &mut c.pending,
                ws,
                worker,
                &mut cork,
                (&mut groups, &c.member),
            )
            .map(|used| drop(c.pending.drain(..used)))
            .and_then(|()| carry_out(worker, &c.member, ws, &mut cork));
        }
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
                let stop = ws.handle_timeout(&settings, now, worker.stats(), &mut out);
                if !out.is_empty() {
                    c.queue(&out);
                }
                stop.map(Stop::Close)
            }
        };
    }
}

/// Carries out what the connection asks of its core, until it asks nothing more: a ticket is
/// redeemed in the shared table (at once: the table is in this process) and the answer handed
/// back; a new identity (authentication, refresh) updates the fingerprints a revocation finds
/// this connection by.
fn carry_out<S: Service>(
    worker: &Worker<S>,
    member: &Member,
    ws: &mut Connection<S::Handler>,
    out: &mut Vec<u8>,
) -> Result<(), Stop> {
    let tables = worker.tables();
    loop {
        match ws.poll_effect() {
            None => return Ok(()),
            Some(Effect::Identity { user, jti }) => {
                member.user_key.set(tables.fingerprint(user));
                member
                    .jti_key
                    .set(jti.map_or(0, |jti| tables.fingerprint(jti)));
            }
            Some(Effect::Redeem(ticket)) => {
                let unix = unix_now();
                let redeemed = tables.tickets.redeem(ticket.as_str(), unix);
                ws.handle_redeemed(redeemed, tables, unix, worker.stats(), out)
                    .map_err(Stop::Close)?;
            }
        }
    }
}

/// Drains the socket through the scratch buffer, parsing each read in place.
fn read_and_process<S: Service>(
    worker: &Worker<S>,
    c: &mut Conn,
    ws: &mut Connection<S::Handler>,
    key: u64,
) -> Result<(), Stop> {
    let result = loop {
        let mut scratch = worker.scratch();
        let n = match sys::recv(c.fd, &mut scratch)? {
            Transfer::Done(0) => break Err(Stop::Gone),
            Transfer::Done(n) => {
                c.member.bytes_in.set(c.member.bytes_in.get() + n as u64);
                n
            }
            Transfer::WouldBlock => break Ok(()),
        };
        worker
            .stats()
            .bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut cork = worker.cork();
        let mut groups = worker.groups(key, &c.member);
        let result = if c.pending.is_empty() {
            process(
                &mut scratch[..n],
                ws,
                worker,
                &mut cork,
                (&mut groups, &c.member),
            )
            .map(|used| {
                c.pending.extend_from_slice(&scratch[used..n]);
            })
        } else {
            c.pending.extend_from_slice(&scratch[..n]);
            process(
                &mut c.pending,
                ws,
                worker,
                &mut cork,
                (&mut groups, &c.member),
            )
            .map(|used| {
                c.pending.drain(..used);
                if c.pending.is_empty() {
                    // Partial frames are the exception: an idle connection keeps no buffer.
                    c.pending = Vec::new();
                }
            })
        };
        let result = result.and_then(|()| carry_out(worker, &c.member, ws, &mut cork));
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

/// Hands a batch of input to the connection's state machine at this moment.
fn process<S: Service>(
    buf: &mut [u8],
    ws: &mut Connection<S::Handler>,
    worker: &Worker<S>,
    out: &mut Vec<u8>,
    (groups, member): (&mut GroupCtx<'_, S>, &Member),
) -> Result<usize, Stop> {
    let settings = worker.settings();
    let core = Core {
        tables: worker.tables(),
        bucket: &member.bucket,
        groups,
        stats: worker.stats(),
        epoch: worker.epoch(),
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
        let mut scratch = worker.scratch();
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
fn send_now<S: Service>(worker: &Worker<S>, member: &Member, buf: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    while sent < buf.len() {
        match sys::send(member.fd, &buf[sent..])? {
            Transfer::Done(n) => sent += n,
            Transfer::WouldBlock => break,
        }
    }
    worker
        .stats()
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
    use crate::hub::LocalHub;
    use crate::metrics::CoreStats;
    use crate::runtime::{Gateway, WorkerShared};
    use crate::tables::Tables;
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
        let tables = std::sync::Arc::new(Tables::new(&settings.tables));
        let shared = WorkerShared {
            id: 0,
            tables,
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
            let worker = Rc::new(Worker::new(shared, hub));
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
