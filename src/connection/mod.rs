//! One upgraded WebSocket connection as a pure state machine (docs/protocol.md §3, §4, §6; RFC 6455):
//! frames in, replies and a `CloseReason` out, with `now` always an argument. It owns every time
//! rule of an open connection (the auth deadline, keepalive ping and 4408, the token's expiry,
//! the message rate limit) and frame dispatch (ping → pong, close, the pre-authentication
//! limits, data messages to the `Handler`). What it needs from outside comes out as an
//! [`Effect`] ([`Connection::poll_effect`]): a ticket to redeem, whose answer comes back in
//! [`Connection::handle_redeemed`] (until then input waits, and the auth deadline runs), and a
//! new identity for the index revocations search. Group operations (join, leave, publish) are
//! the core's own and never wait: they go through `Groups` while a message is handled. The
//! runtime moves bytes, keeps one timer slot armed at [`Connection::poll_timeout`], calls
//! [`Connection::handle_timeout`] when it fires, and carries the effects out. The upgrade's
//! decision order is [`upgrade`]. Uses only pure modules (proto, session, config, tables,
//! metrics' atomic counters).

pub mod upgrade;

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::auth::Identity;
use crate::auth::tickets::{TicketError, TicketId};
use crate::config::Settings;
use crate::limits::TokenBucket;
use crate::metrics::CoreStats;
use crate::proto::close::CloseCode;
use crate::proto::frame::{self, FrameError, OpCode};
use crate::proto::handshake::Upgrade;
use crate::proto::message::{Assembler, Message};
use crate::session::{self, Groups, Verdict};
use crate::tables::Tables;

/// What the connection asks of the application side of one WebSocket (the gateway's
/// [`session::Session`], or a test server's echo).
pub trait Handler: 'static {
    /// Right after the 101 is queued: may queue messages (the auth result) or close.
    fn on_open(
        &mut self,
        upgrade: &Upgrade<'_>,
        s: &Settings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict;
    /// A complete text message; `groups` is this connection's view of its core's groups.
    fn on_text(
        &mut self,
        text: &str,
        s: &Settings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
        groups: &mut dyn Groups,
    ) -> Verdict;
    /// A complete binary message.
    fn on_binary(&mut self, data: &[u8], s: &Settings, now: u64, out: &mut Vec<u8>) -> Verdict;
    /// Whether the auth deadline still runs.
    fn awaiting_auth(&self) -> bool;
    /// When the credential in force expires (Unix seconds), if it does.
    fn expires_at(&self) -> Option<u64> {
        None
    }
    /// The user id and token jti, once after each (re)authentication: revocations find
    /// connections by them.
    fn take_changed_identity(&mut self) -> Option<(&str, Option<&str>)> {
        None
    }
    /// A ticket to redeem, handed out once; the answer comes to [`Handler::on_redeemed`].
    fn take_redeem(&mut self) -> Option<TicketId> {
        None
    }
    /// Whether an answer from outside is awaited (input waits until it comes).
    fn awaits_answer(&self) -> bool {
        false
    }
    /// The answer to the redemption [`Handler::take_redeem`] asked for.
    fn on_redeemed(
        &mut self,
        _redeemed: Result<Identity, TicketError>,
        _tables: &Tables,
        _now: u64,
        _out: &mut Vec<u8>,
    ) -> Verdict {
        Verdict::Continue
    }
}

/// What a connection needs carried out by its core; see the module docs.
#[derive(Debug, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Redeem this ticket (exactly once, in the shared table) and give the answer to
    /// [`Connection::handle_redeemed`].
    Redeem(TicketId),
    /// A new identity is in force (an authentication, a refresh): revocations find the
    /// connection by this user id and token jti from now on.
    Identity {
        /// The user id.
        user: &'a str,
        /// The token's jti, if it has one.
        jti: Option<&'a str>,
    },
}

/// Every way a WebSocket connection ends, with its close code, the reason sent in the Close
/// frame and its label in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer broke RFC 6455: 1002, 1007 (invalid UTF-8) or 1009 (too big).
    Protocol(FrameError),
    /// The handler ended it: a failed authentication (the 401/403 message is already queued,
    /// 4401/4403), or a first message that is not `authenticate` (1008).
    Refused(CloseCode, &'static str),
    /// No authentication within the auth timeout: 4408.
    AuthTimeout,
    /// No frame at all within the keepalive timeout: 4408.
    KeepaliveTimeout,
    /// The token's `exp` passed without a refresh: the 401 message, then 4401.
    TokenExpired,
    /// The token or its user was revoked: the 401 message, then 4401.
    Revoked,
    /// More messages than the rate limit allows: 4429.
    RateLimited,
    /// Its outbound queue went over budget (a slow consumer): 1008.
    SlowConsumer,
    /// The server is shutting down: 1001.
    GoingAway,
    /// The peer sent a Close (with its code, if any): answered with the same code.
    PeerClosed(Option<CloseCode>),
}

impl CloseReason {
    /// The code of our Close frame (`None`: an empty Close, the answer to an empty one).
    pub fn code(&self) -> Option<CloseCode> {
        Some(match self {
            Self::Protocol(e) => e.close_code(),
            Self::Refused(code, _) => *code,
            Self::AuthTimeout | Self::KeepaliveTimeout => CloseCode::TIMEOUT,
            Self::TokenExpired | Self::Revoked => CloseCode::TOKEN_INVALID,
            Self::RateLimited => CloseCode::RATE_LIMITED,
            Self::SlowConsumer => CloseCode::POLICY,
            Self::GoingAway => CloseCode::GOING_AWAY,
            Self::PeerClosed(code) => return *code,
        })
    }

    /// The reason text of our Close frame (empty when answering the peer's Close).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Protocol(e) => match e.close_code() {
                CloseCode::INVALID_PAYLOAD => "invalid UTF-8",
                CloseCode::TOO_BIG => "message too big",
                _ => "protocol error",
            },
            Self::Refused(_, reason) => reason,
            Self::AuthTimeout => session::REASON_AUTH_TIMEOUT,
            Self::KeepaliveTimeout => session::REASON_KEEPALIVE_TIMEOUT,
            Self::TokenExpired => "token expired",
            Self::Revoked => "token revoked",
            Self::RateLimited => "rate limit exceeded",
            Self::SlowConsumer => "outbound limit exceeded",
            Self::GoingAway => "server shutting down",
            Self::PeerClosed(_) => "",
        }
    }

    /// A short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Protocol(e) => match e.close_code() {
                CloseCode::INVALID_PAYLOAD => "invalid_utf8",
                CloseCode::TOO_BIG => "too_big",
                _ => "protocol_error",
            },
            Self::Refused(CloseCode::POLICY, _) => "auth_required",
            Self::Refused(CloseCode::FORBIDDEN, _) => "forbidden",
            Self::Refused(..) => "auth_failed",
            Self::AuthTimeout => "auth_timeout",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::TokenExpired => "token_expired",
            Self::Revoked => "revoked",
            Self::RateLimited => "rate_limited",
            Self::SlowConsumer => "slow_consumer",
            Self::GoingAway => "going_away",
            Self::PeerClosed(_) => "closed_by_client",
        }
    }

    /// The close a core-side decision asks for (`Member::closing`): a revocation or expiry
    /// (4401), a slow consumer or a lost cross-core message (1008), a shutdown (1001).
    pub fn of_closing(code: CloseCode) -> Self {
        match code {
            CloseCode::POLICY => Self::SlowConsumer,
            CloseCode::GOING_AWAY => Self::GoingAway,
            CloseCode::TOKEN_INVALID => Self::Revoked,
            code => Self::Refused(code, ""),
        }
    }
}

/// The longest the connection's timer waits for a token's `exp`: a later `exp` (any value a
/// token may carry, up to `u64::MAX`) is looked at again when this wait ends, so no deadline
/// arithmetic ever sees a time from the network unbounded.
pub const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(3600);

/// What a connection's input needs from its core besides the bytes.
pub struct Core<'a> {
    /// The shared tables (revocations, for an authentication or refresh).
    pub tables: &'a Tables,
    /// This connection's view of its core's groups.
    pub groups: &'a mut dyn Groups,
    /// The connection's message-rate bucket (kept with its fan-out state).
    pub bucket: &'a Cell<TokenBucket>,
    /// The core's counters.
    pub stats: &'a CoreStats,
    /// Origin of the millisecond clock of the rate buckets.
    pub epoch: Instant,
}

/// The state of an upgraded connection between wake-ups; see the module docs.
#[derive(Debug)]
pub struct Connection<H> {
    handler: H,
    assembler: Assembler,
    /// When the client last sent a frame (any frame).
    last_rx: Instant,
    /// A ping went out since `last_rx`.
    pinged: bool,
    /// When an unauthenticated connection is closed 4408.
    auth_deadline: Instant,
}

impl<H: Handler> Connection<H> {
    /// A connection upgraded at `now` (its auth deadline starts here).
    pub fn new(handler: H, settings: &Settings, now: Instant) -> Self {
        Self {
            handler,
            assembler: Assembler::new(
                settings
                    .limits
                    .max_message_bytes
                    .min(session::MAX_PRE_AUTH_MESSAGE),
            ),
            last_rx: now,
            pinged: false,
            auth_deadline: now + settings.timeouts.auth,
        }
    }

    /// The application side.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Decodes and handles every complete frame in `buf` (unmasking in place) at `now`
    /// (`unix`: the same moment in Unix seconds); replies are appended to `out`. Returns how
    /// many bytes were consumed (a partial frame stays for the next call), or why the
    /// connection ends.
    pub fn handle_frames(
        &mut self,
        buf: &mut [u8],
        settings: &Settings,
        (now, unix): (Instant, u64),
        core: Core<'_>,
        out: &mut Vec<u8>,
    ) -> Result<usize, CloseReason> {
        let mut pos = 0;
        // Waiting for a redemption's answer: input keeps until it came.
        while pos < buf.len() && !self.handler.awaits_answer() {
            // Before authentication the only valid message is a small `authenticate`: a client
            // that has not authenticated may not make us hold more than that.
            let limits = &settings.limits;
            let (max_frame, max_message) = if self.handler.awaiting_auth() {
                let cap = session::MAX_PRE_AUTH_MESSAGE;
                (
                    limits.max_frame_bytes.min(cap),
                    limits.max_message_bytes.min(cap),
                )
            } else {
                (limits.max_frame_bytes, limits.max_message_bytes)
            };
            self.assembler.set_max_message(max_message);
            let header = match frame::decode(&mut buf[pos..], max_frame) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => return Err(CloseReason::Protocol(e)),
            };
            let start = pos + header.header_len;
            pos = start + header.payload_len;
            self.last_rx = now;
            self.pinged = false;
            let message = match self.assembler.push(&header, &buf[start..pos]) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => return Err(CloseReason::Protocol(e)),
            };
            // Every branch below writes at most one frame, except a refresh that leaves
            // groups: a longer `out` means replies were queued.
            let before = out.len();
            let verdict = match message {
                Message::Ping(payload) => {
                    frame::write_frame(out, OpCode::Pong, payload);
                    Verdict::Continue
                }
                Message::Pong(_) => Verdict::Continue,
                Message::Close(close) => {
                    return Err(CloseReason::PeerClosed(close.map(|(code, _)| code)));
                }
                Message::Text(_) | Message::Binary(_)
                    if !within_rate(core.bucket, settings, now, core.epoch) =>
                {
                    core.stats
                        .rate_limited_closes
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(CloseReason::RateLimited);
                }
                Message::Text(text) => {
                    core.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                    let awaiting = self.handler.awaiting_auth();
                    let verdict = self.handler.on_text(
                        text,
                        settings,
                        core.tables,
                        unix,
                        out,
                        &mut *core.groups,
                    );
                    if awaiting {
                        core.stats.count_auth(self.handler.awaiting_auth(), verdict);
                    }
                    verdict
                }
                Message::Binary(data) => {
                    core.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                    self.handler.on_binary(data, settings, unix, out)
                }
            };
            if out.len() > before {
                core.stats.messages_out.fetch_add(1, Ordering::Relaxed);
            }
            if let Verdict::Close(code, reason) = verdict {
                return Err(CloseReason::Refused(code, reason));
            }
        }
        if !self.assembler.in_progress() {
            self.assembler.shrink();
        }
        Ok(pos)
    }

    /// What the connection needs from outside now, if anything; see [`Effect`]. Each effect is
    /// handed out once; call again until `None`.
    pub fn poll_effect(&mut self) -> Option<Effect<'_>> {
        if let Some(ticket) = self.handler.take_redeem() {
            return Some(Effect::Redeem(ticket));
        }
        self.handler
            .take_changed_identity()
            .map(|(user, jti)| Effect::Identity { user, jti })
    }

    /// Whether input waits for an answer from outside (the runtime stops reading meanwhile).
    pub fn awaits_answer(&self) -> bool {
        self.handler.awaits_answer()
    }

    /// The answer to an [`Effect::Redeem`] at `unix` (Unix seconds): the opening message is
    /// appended to `out`, or the 401 message before the close.
    pub fn handle_redeemed(
        &mut self,
        redeemed: Result<Identity, TicketError>,
        tables: &Tables,
        unix: u64,
        stats: &CoreStats,
        out: &mut Vec<u8>,
    ) -> Result<(), CloseReason> {
        let counter = if redeemed.is_ok() {
            &stats.tickets_redeemed
        } else {
            &stats.tickets_refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let before = out.len();
        let verdict = self.handler.on_redeemed(redeemed, tables, unix, out);
        if out.len() > before {
            stats.messages_out.fetch_add(1, Ordering::Relaxed);
        }
        stats.count_auth(self.handler.awaiting_auth(), verdict);
        match verdict {
            Verdict::Continue => Ok(()),
            Verdict::Close(code, reason) => Err(CloseReason::Refused(code, reason)),
        }
    }

    /// When the connection's timer must fire next: the auth deadline while it has not
    /// authenticated, the token's expiry once it has (at most [`MAX_EXPIRY_WAIT`] ahead), and
    /// the next keepalive step (a ping, then 4408). `wall` is the Unix clock at `now`.
    pub fn poll_timeout(&self, settings: &Settings, now: Instant, wall: SystemTime) -> Instant {
        let t = &settings.timeouts;
        let idle = self.last_rx
            + if self.pinged {
                t.keepalive
            } else {
                t.ping_after
            };
        if self.handler.awaiting_auth() {
            idle.min(self.auth_deadline)
        } else if let Some(exp) = self.handler.expires_at() {
            // Computed at each wait rather than stored: no field in every connection's state.
            let left = UNIX_EPOCH
                .checked_add(Duration::from_secs(exp))
                .map_or(MAX_EXPIRY_WAIT, |at| {
                    at.duration_since(wall).unwrap_or_default()
                });
            idle.min(now + left.min(MAX_EXPIRY_WAIT))
        } else {
            idle
        }
    }

    /// The timer fired at `now` (`unix`: the same moment in Unix seconds): the close that is
    /// due, if any, with the 401 message queued first on expiry; otherwise a ping queued when
    /// the client has been silent for the ping interval.
    pub fn handle_timeout(
        &mut self,
        settings: &Settings,
        (now, unix): (Instant, u64),
        stats: &CoreStats,
        out: &mut Vec<u8>,
    ) -> Option<CloseReason> {
        let t = &settings.timeouts;
        if self.handler.expires_at().is_some_and(|exp| exp <= unix) {
            // PROTOCOL §3: the token passed its exp without a refresh.
            stats.expired_closes.fetch_add(1, Ordering::Relaxed);
            session::write_auth_failure(401, CloseReason::TokenExpired.reason(), out);
            return Some(CloseReason::TokenExpired);
        }
        if self.handler.awaiting_auth() && now >= self.auth_deadline {
            stats.auth_timeout.fetch_add(1, Ordering::Relaxed);
            return Some(CloseReason::AuthTimeout);
        }
        if now >= self.last_rx + t.keepalive {
            return Some(CloseReason::KeepaliveTimeout);
        }
        if !self.pinged && now >= self.last_rx + t.ping_after {
            frame::write_frame(out, OpCode::Ping, b"");
            stats.messages_out.fetch_add(1, Ordering::Relaxed);
            self.pinged = true;
        }
        None
    }
}

/// The gateway's application side: docs/protocol.md's session.
impl Handler for session::Session {
    fn on_open(
        &mut self,
        up: &Upgrade<'_>,
        s: &Settings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        self.on_upgrade(up, &s.auth, tables, now, out)
    }

    fn on_text(
        &mut self,
        text: &str,
        s: &Settings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
        groups: &mut dyn Groups,
    ) -> Verdict {
        session::Session::on_text(self, text, &s.auth, tables, now, out, groups)
    }

    fn on_binary(&mut self, _: &[u8], _: &Settings, _: u64, out: &mut Vec<u8>) -> Verdict {
        session::Session::on_binary(self, out)
    }

    fn awaiting_auth(&self) -> bool {
        !self.is_authenticated()
    }

    fn expires_at(&self) -> Option<u64> {
        session::Session::expires_at(self)
    }

    fn take_changed_identity(&mut self) -> Option<(&str, Option<&str>)> {
        self.take_changed_identity()
            .map(|id| (id.user.as_str(), id.jti.as_ref().map(|j| j.as_str())))
    }

    fn take_redeem(&mut self) -> Option<TicketId> {
        session::Session::take_redeem(self)
    }

    fn awaits_answer(&self) -> bool {
        self.is_redeeming()
    }

    fn on_redeemed(
        &mut self,
        redeemed: Result<Identity, TicketError>,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        session::Session::on_redeemed(self, redeemed, tables, now, out)
    }
}

/// Takes one message from the connection's bucket (always true without a limit).
fn within_rate(
    bucket: &Cell<TokenBucket>,
    settings: &Settings,
    now: Instant,
    epoch: Instant,
) -> bool {
    let rate = &settings.rate;
    rate.messages_per_sec == 0 || {
        let ms = u64::try_from(now.saturating_duration_since(epoch).as_millis());
        let mut current = bucket.get();
        let allowed = current.take(rate.messages_per_sec, rate.burst, ms.unwrap_or(u64::MAX));
        bucket.set(current);
        allowed
    }
}

#[cfg(test)]
mod tests;
