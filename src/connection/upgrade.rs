//! docs/protocol.md §1–2 and §5 for one complete request head, in the protocol's order: parse
//! (400, 431 before it) → route (the WebSocket path, else the HTTP API's [`api::check`]) →
//! validate the upgrade (400, 426) → origin (403) → per-address limits (503) → the 101 and the
//! handler's opening (upgrade-time authentication). Also the per-address count taken at
//! accept, before any byte is read. Pure: the client's address, the time and the shared tables
//! are arguments; answers are appended to `out`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::Handler;
use crate::api;
use crate::config::Settings;
use crate::limits::{IpSlot, Refusal};
use crate::metrics::{CoreStats, Rejection};
#[cfg(test)]
use crate::proto::close::CloseCode;
use crate::proto::{handshake, http};
use crate::session::Verdict;
use crate::tables::Tables;

/// What a head is decided with besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The settings in force on the serving core.
    pub settings: &'a Settings,
    /// The shared tables (per-address counts; tickets and revocations for the handler).
    pub tables: &'a Tables,
    /// The serving core's counters.
    pub stats: &'a CoreStats,
    /// The TCP peer.
    pub peer: IpAddr,
    /// Unix seconds (token and ticket times).
    pub unix: u64,
    /// Milliseconds on the per-address limits' clock.
    pub clock_ms: u64,
}

/// What a complete head led to.
#[derive(Debug)]
pub enum Decision<H> {
    /// An answer is written; the connection closes after it.
    Answered,
    /// An HTTP API request: read `plan.body_len` body bytes, then [`api::handle`] it. `slot`
    /// (a trusted proxy's client counted) replaces the connection's place, if any.
    Api {
        /// What the head decided.
        plan: api::Plan,
        /// The forwarded client's place in the per-address count.
        slot: Option<IpSlot>,
        /// The client (the forwarded one behind a trusted proxy).
        client: IpAddr,
    },
    /// Upgraded: the 101 and the handler's opening are written; `verdict` says whether the
    /// connection lives on.
    Upgraded {
        /// The application side, opened.
        handler: H,
        /// Its verdict on opening (a refused upgrade-time credential closes at once).
        verdict: Verdict,
        /// The forwarded client's place in the per-address count.
        slot: Option<IpSlot>,
    },
}

/// The per-address count at accept (docs/protocol.md §1's 503 row): a peer that is not a
/// trusted proxy takes its address's place before a byte of its request is read, so half-open
/// heads and API connections count as upgrades do. A trusted proxy's connections are counted
/// for the client it names, at the head ([`decide`]). `Err`: the Retry-After seconds of the 503.
pub fn admit_peer(ctx: &Context<'_>) -> Result<Option<IpSlot>, u32> {
    let limits = &ctx.tables.addresses;
    if !limits.is_limited() || ctx.settings.rate.trusted_proxies.contains(ctx.peer) {
        return Ok(None);
    }
    limits
        .connect(ctx.peer, ctx.clock_ms)
        .map(Some)
        .map_err(|refusal| refused(ctx, ctx.peer, refusal))
}

/// Decides one complete head (`head` ends with its blank line); see the module docs. `handler`
/// makes the application side of an upgrade; `answer` may answer a request on another path
/// itself (method, target, output), ahead of the API's routes.
pub fn decide<H: Handler>(
    head: &[u8],
    ctx: &Context<'_>,
    (handler, answer): (
        impl FnOnce() -> H,
        impl FnOnce(&str, &str, &mut Vec<u8>) -> bool,
    ),
    out: &mut Vec<u8>,
) -> Decision<H> {
    let settings = ctx.settings;
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let request = match http::parse_request(head, &mut headers) {
        Ok(request) => request,
        Err(e) => {
            respond(out, e.status(), &[]);
            ctx.stats.reject(Rejection::BadRequest400);
            return Decision::Answered;
        }
    };
    let (path, _) = http::split_target(request.path.unwrap_or(""));
    let client = forwarded_client(settings, &request, ctx.peer);
    if path != settings.ws_path {
        ctx.stats.http_requests.fetch_add(1, Ordering::Relaxed);
        let slot = match admit_client(ctx, client, false) {
            Ok(slot) => slot,
            Err(retry_after) => return unavailable(out, retry_after),
        };
        let target = request.path.unwrap_or("");
        if answer(request.method.unwrap_or(""), target, out) {
            return Decision::Answered;
        }
        return match api::check(&request, path, settings) {
            Ok(plan) => Decision::Api { plan, slot, client },
            Err(e) => {
                if e.status() == 404 {
                    ctx.stats.reject(Rejection::NotFound404);
                }
                api::write_error(out, &e, false);
                Decision::Answered
            }
        };
    }
    let upgrade = match handshake::validate(&request, &settings.ws_path) {
        Ok(upgrade) => upgrade,
        Err(e) => {
            let status = e.status();
            tracing::debug!(
                target = %http::Redacted(request.path.unwrap_or("")),
                status,
                "handshake refused: {e}"
            );
            respond(out, status, e.response_headers());
            if let Some(why) = Rejection::from_status(status) {
                ctx.stats.reject(why);
            }
            return Decision::Answered;
        }
    };
    if !settings.origin.allows(upgrade.origin) {
        tracing::debug!("origin refused: 403");
        respond(out, 403, &[]);
        ctx.stats.reject(Rejection::Forbidden403);
        return Decision::Answered;
    }
    let slot = match admit_client(ctx, client, true) {
        Ok(slot) => slot,
        Err(retry_after) => return unavailable(out, retry_after),
    };
    ctx.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let accept = handshake::accept_key(upgrade.key);
    handshake::write_101(out, &accept, upgrade.offers_v1);
    let mut handler = handler();
    let before = out.len();
    let verdict = handler.on_open(&upgrade, settings, ctx.tables, ctx.unix, out);
    if out.len() > before {
        ctx.stats.messages_out.fetch_add(1, Ordering::Relaxed);
    }
    if !handler.awaits_answer() {
        ctx.stats.count_auth(handler.awaiting_auth(), verdict);
        // A ticket refused before any redemption (not a ticket's shape at all).
        if settings.auth.ticket
            && handler.awaiting_auth()
            && upgrade
                .query
                .is_some_and(|q| http::query_param(q, "ticket").is_some())
        {
            ctx.stats.tickets_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
    Decision::Upgraded {
        handler,
        verdict,
        slot,
    }
}

/// The per-client-address limits at the head. An upgrade takes one of the client's upgrade
/// tokens; a trusted proxy's connection takes the forwarded client's place in the count (a
/// peer that is not a proxy took its own at accept, [`admit_peer`]).
fn admit_client(ctx: &Context<'_>, client: IpAddr, upgrade: bool) -> Result<Option<IpSlot>, u32> {
    let limits = &ctx.tables.addresses;
    if !limits.is_limited() {
        return Ok(None);
    }
    if !ctx.settings.rate.trusted_proxies.contains(ctx.peer) {
        if !upgrade {
            return Ok(None);
        }
        return limits
            .upgrade(ctx.peer, ctx.clock_ms)
            .map(|()| None)
            .map_err(|refusal| refused(ctx, ctx.peer, refusal));
    }
    let admitted = if upgrade {
        limits.admit(client, ctx.clock_ms)
    } else {
        limits.connect(client, ctx.clock_ms)
    };
    admitted
        .map(Some)
        .map_err(|refusal| refused(ctx, client, refusal))
}

/// The client a trusted proxy names in `X-Forwarded-For` (the peer itself when it is not one).
pub fn forwarded_client(
    settings: &Settings,
    request: &httparse::Request<'_, '_>,
    peer: IpAddr,
) -> IpAddr {
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
fn refused(ctx: &Context<'_>, client: IpAddr, refusal: Refusal) -> u32 {
    let counter = match refusal {
        Refusal::Rate { .. } => &ctx.stats.ip_rate_refusals,
        _ => &ctx.stats.ip_concurrent_refusals,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    ctx.stats.reject(Rejection::Unavailable503);
    tracing::debug!(%client, "per-address limit: {refusal}");
    refusal.retry_after_secs(ctx.settings.retry_after_secs)
}

fn unavailable<H>(out: &mut Vec<u8>, retry_after: u32) -> Decision<H> {
    respond(out, 503, &[("Retry-After", &retry_after.to_string())]);
    Decision::Answered
}

/// An error answer whose body is its reason phrase; the connection closes after it.
pub fn respond(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)]) {
    let body = http::reason_phrase(status);
    http::write_response(out, status, headers, body.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Instant;

    use clap::Parser;

    use super::*;
    use crate::config::{Config, DevSecret, Env};
    use crate::connection::{CloseReason, Connection, Effect};
    use crate::session::Session;

    const SECRET: &str = "upgrade-test-secret";
    const API_KEY: &str = "upgrade-test-api-key";
    const UNIX: u64 = 1_800_000_000;

    fn settings(flags: &[&str]) -> Settings {
        let mut argv = vec!["wsgate", "--allowed-origins", "https://app.example.com"];
        argv.extend_from_slice(flags);
        let env = Env {
            jwt_secret: Some(SECRET.into()),
            api_key: Some(API_KEY.into()),
            ..Env::default()
        };
        Config::try_parse_from(argv)
            .unwrap()
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap()
    }

    fn token(claims: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::{Hmac, Mac};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn head(target: &str, extra: &[&str]) -> Vec<u8> {
        let mut h = format!(
            "GET {target} HTTP/1.1\r\nHost: app.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for line in extra {
            h.push_str(line);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    struct Case {
        settings: Settings,
        tables: Tables,
        stats: CoreStats,
    }

    impl Case {
        fn new(flags: &[&str]) -> Self {
            let settings = settings(flags);
            Self {
                tables: Tables::new(&settings.tables),
                settings,
                stats: CoreStats::default(),
            }
        }

        fn ctx(&self, peer: &str, clock_ms: u64) -> Context<'_> {
            Context {
                settings: &self.settings,
                tables: &self.tables,
                stats: &self.stats,
                peer: peer.parse().unwrap(),
                unix: UNIX,
                clock_ms,
            }
        }

        /// The decision and the status line (or "101") of the answer.
        fn decide(&self, head: &[u8], peer: &str, clock_ms: u64) -> (Decision<Session>, String) {
            let mut out = Vec::new();
            let no_answer = |_: &str, _: &str, _: &mut Vec<u8>| false;
            let ctx = self.ctx(peer, clock_ms);
            let decision = decide(head, &ctx, (Session::new, no_answer), &mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text.lines().next().unwrap_or("").to_owned();
            (decision, status)
        }
    }

    #[test]
    fn the_decisions_come_in_the_protocols_order() {
        let case = Case::new(&["--max-upgrades-per-ip-per-sec", "1", "--upgrade-burst", "1"]);
        // A head that breaks several rules gets the first one's answer: parse before route,
        // validation before origin, origin before the per-address limit.
        let bad_origin_and_version = head(
            "/ws",
            &["Origin: https://evil.example", "Sec-WebSocket-Version: 8"],
        );
        let (_, status) = case.decide(&bad_origin_and_version, "192.0.2.1", 0);
        assert!(status.contains(" 400 "), "{status}");
        let bad_origin = head("/ws", &["Origin: https://evil.example"]);
        let (decision, status) = case.decide(&bad_origin, "192.0.2.1", 0);
        assert!(matches!(decision, Decision::Answered));
        assert!(status.contains(" 403 "), "{status}");
        // The refused origin took no upgrade token: the next good upgrade is admitted...
        let good = head("/ws", &["Origin: https://app.example.com"]);
        let (decision, status) = case.decide(&good, "192.0.2.1", 0);
        assert!(matches!(decision, Decision::Upgraded { .. }), "{status}");
        assert!(status.contains(" 101 "), "{status}");
        // ...and the one after it, within the same second, is over the rate: 503.
        let (_, status) = case.decide(&good, "192.0.2.1", 0);
        assert!(status.contains(" 503 "), "{status}");
        // A second later the bucket has a token again.
        let (_, status) = case.decide(&good, "192.0.2.1", 1000);
        assert!(status.contains(" 101 "), "{status}");
        // Another path is the API's: unknown there, 404; garbage is 400.
        let (_, status) = case.decide(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "192.0.2.1", 0);
        assert!(status.contains(" 404 "), "{status}");
        let (_, status) = case.decide(b"\x16\x03\x01 TLS\r\n\r\n", "192.0.2.1", 0);
        assert!(status.contains(" 400 "), "{status}");
        assert_eq!(case.stats.handshakes_ok.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_api_head_is_planned_and_refused_before_its_body() {
        let case = Case::new(&[]);
        let publish = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer upgrade-test-api-key\r\n\
                        Content-Length: 41\r\n\r\n";
        let (decision, _) = case.decide(publish, "192.0.2.9", 0);
        let Decision::Api { plan, client, .. } = decision else {
            panic!("expected an API plan");
        };
        assert_eq!(plan.endpoint, api::Endpoint::Publish);
        assert_eq!(plan.body_len, 41);
        assert_eq!(client, "192.0.2.9".parse::<IpAddr>().unwrap());
        let wrong_key = b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
                          Content-Length: 41\r\n\r\n";
        let (decision, status) = case.decide(wrong_key, "192.0.2.9", 0);
        assert!(matches!(decision, Decision::Answered));
        assert!(status.contains(" 401 "), "{status}");
    }

    #[test]
    fn a_trusted_proxys_client_is_counted_by_its_forwarded_address() {
        let case = Case::new(&[
            "--trusted-proxies",
            "10.0.0.1",
            "--max-connections-per-ip",
            "1",
        ]);
        // The proxy is not counted at accept; its client is, at the head.
        assert!(admit_peer(&case.ctx("10.0.0.1", 0)).unwrap().is_none());
        let forwarded = head(
            "/ws",
            &[
                "Origin: https://app.example.com",
                "X-Forwarded-For: 198.51.100.4",
            ],
        );
        let (first, _) = case.decide(&forwarded, "10.0.0.1", 0);
        let Decision::Upgraded {
            slot: Some(_held), ..
        } = first
        else {
            panic!("expected the client's slot");
        };
        let (second, status) = case.decide(&forwarded, "10.0.0.1", 0);
        assert!(matches!(second, Decision::Answered));
        assert!(status.contains(" 503 "), "{status}");
        // A peer that is not a proxy is counted at accept, by its own address.
        let direct = admit_peer(&case.ctx("198.51.100.5", 0)).unwrap();
        assert!(direct.is_some());
        assert_eq!(admit_peer(&case.ctx("198.51.100.5", 0)).err(), Some(1));
    }

    /// An upgrade with `?ticket=`: the connection asks for the redemption as an effect, keeps
    /// its input until the answer, and opens (or closes 4401) on it.
    #[test]
    fn a_ticket_is_an_effect_answered_later_and_input_waits_for_it() {
        let case = Case::new(&[]);
        let identity = case
            .settings
            .auth
            .verifier
            .verify(
                token(&format!(r#"{{"user_id":"7","exp":{}}}"#, UNIX + 60)).as_bytes(),
                UNIX,
            )
            .unwrap();
        let ticket = case
            .tables
            .tickets
            .issue_from(identity, None, UNIX)
            .unwrap();
        for (answer_ok, expected) in [(true, None), (false, Some(CloseCode::TOKEN_INVALID))] {
            let target = format!("/ws?ticket={}", ticket.as_str());
            let upgrade = head(&target, &["Origin: https://app.example.com"]);
            let (decision, status) = case.decide(&upgrade, "192.0.2.1", 0);
            assert!(status.contains(" 101 "), "{status}");
            let Decision::Upgraded {
                handler, verdict, ..
            } = decision
            else {
                panic!("expected an upgrade");
            };
            assert_eq!(verdict, Verdict::Continue);
            let t0 = Instant::now();
            let mut conn = Connection::new(handler, &case.settings, t0);
            let Some(Effect::Redeem(asked)) = conn.poll_effect() else {
                panic!("expected a redemption");
            };
            assert_eq!(asked.as_str(), ticket.as_str());
            // Asked once only; meanwhile input waits and the auth deadline still runs.
            assert!(conn.poll_effect().is_none());
            assert!(conn.awaits_answer());
            let deadline = conn.poll_timeout(&case.settings, t0, std::time::SystemTime::now());
            assert!(deadline <= t0 + case.settings.timeouts.auth);
            let answer = if answer_ok {
                case.tables.tickets.redeem(asked.as_str(), UNIX)
            } else {
                Err(crate::auth::tickets::TicketError)
            };
            let mut out = Vec::new();
            let result = conn.handle_redeemed(answer, &case.tables, UNIX, &case.stats, &mut out);
            let text = String::from_utf8_lossy(&out);
            match expected {
                None => {
                    assert_eq!(result, Ok(()));
                    assert!(text.contains(r#""status_code":200"#), "{text}");
                    assert!(matches!(
                        conn.poll_effect(),
                        Some(Effect::Identity { user: "7", .. })
                    ));
                    assert!(!conn.awaits_answer());
                }
                Some(code) => {
                    let Err(CloseReason::Refused(got, _)) = result else {
                        panic!("expected a refusal, got {result:?}");
                    };
                    assert_eq!(got, code);
                    assert!(text.contains(r#""status_code":401"#), "{text}");
                }
            }
        }
        assert_eq!(case.stats.tickets_redeemed.load(Ordering::Relaxed), 1);
        assert_eq!(case.stats.tickets_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_malformed_ticket_is_refused_at_the_upgrade_without_an_effect() {
        let case = Case::new(&[]);
        let upgrade = head("/ws?ticket=short", &["Origin: https://app.example.com"]);
        let (decision, status) = case.decide(&upgrade, "192.0.2.1", 0);
        assert!(status.contains(" 101 "), "{status}");
        let Decision::Upgraded { verdict, .. } = decision else {
            panic!("expected an upgrade");
        };
        assert!(matches!(
            verdict,
            Verdict::Close(CloseCode::TOKEN_INVALID, _)
        ));
    }
}
