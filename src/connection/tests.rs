//! Every time rule of an open connection on an injected clock: no test sleeps.

use super::*;
use crate::config::{Config, DevSecret, Env};
use crate::envelope;
use crate::hub::table::Join;
use crate::session::Session;
use clap::Parser;

const SECRET: &str = "connection-test-secret";
/// A Unix time for the tests' wall clock.
const UNIX: u64 = 1_800_000_000;

fn settings(flags: &[&str]) -> Settings {
    let mut argv = vec!["wsgate", "--allowed-origins", "*"];
    argv.extend_from_slice(flags);
    let env = Env {
        jwt_secret: Some(SECRET.into()),
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

struct NoGroups;
impl Groups for NoGroups {
    fn join(&mut self, _: &str) -> Join {
        Join::AlreadyMember
    }
    fn leave(&mut self, _: &str) {}
    fn is_member(&self, _: &str) -> bool {
        false
    }
    fn joined(&self) -> Vec<std::sync::Arc<str>> {
        Vec::new()
    }
    fn publish(&mut self, _: &str, _: envelope::RawJson<'_>, _: &mut Vec<u8>) {}
}

/// A masked client frame.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7, 1, 9, 3];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A connection, the moment it opened, its settings and its core's counters.
struct Fixture {
    conn: Connection<Session>,
    settings: Settings,
    tables: Tables,
    stats: CoreStats,
    bucket: Cell<TokenBucket>,
    t0: Instant,
}

impl Fixture {
    fn new(flags: &[&str]) -> Self {
        let settings = settings(flags);
        let t0 = Instant::now();
        Self {
            conn: Connection::new(Session::new(), &settings, t0),
            bucket: Cell::new(TokenBucket::new(settings.rate.burst, 0)),
            tables: Tables::new(&settings.tables),
            settings,
            stats: CoreStats::default(),
            t0,
        }
    }

    /// The moment `ms` after the connection opened, and the Unix seconds then.
    fn at(&self, ms: u64) -> (Instant, u64) {
        (self.t0 + Duration::from_millis(ms), UNIX + ms / 1000)
    }

    fn wall(&self, ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(UNIX * 1000 + ms)
    }

    /// Feeds `bytes` at `ms`; the replies and the outcome.
    fn input(&mut self, bytes: &[u8], ms: u64) -> (Vec<u8>, Result<usize, CloseReason>) {
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        let core = Core {
            tables: &self.tables,
            groups: &mut NoGroups,
            bucket: &self.bucket,
            stats: &self.stats,
            epoch: self.t0,
        };
        let now = self.at(ms);
        let result = self
            .conn
            .handle_frames(&mut buf, &self.settings, now, core, &mut out);
        (out, result)
    }

    fn timeout(&mut self, ms: u64) -> (Vec<u8>, Option<CloseReason>) {
        let mut out = Vec::new();
        let now = self.at(ms);
        let why = self
            .conn
            .handle_timeout(&self.settings, now, &self.stats, &mut out);
        (out, why)
    }

    /// When the timer is due, in ms after the opening.
    fn next_ms(&self, ms: u64) -> u128 {
        let (now, _) = self.at(ms);
        let due = self.conn.poll_timeout(&self.settings, now, self.wall(ms));
        due.duration_since(self.t0).as_millis()
    }

    fn authenticate(&mut self, claims: &str, ms: u64) {
        let cmd = format!(r#"{{"action":"authenticate","token":"{}"}}"#, token(claims));
        let (out, result) = self.input(&client_frame(0x81, cmd.as_bytes()), ms);
        assert!(result.is_ok(), "{result:?}");
        assert!(String::from_utf8_lossy(&out).contains(r#""status_code":200"#));
    }
}

#[test]
fn no_authentication_within_the_auth_timeout_is_4408() {
    let mut f = Fixture::new(&["--auth-timeout-ms", "5000"]);
    assert_eq!(f.next_ms(0), 5000);
    assert_eq!(f.timeout(4999), (Vec::new(), None));
    let (out, why) = f.timeout(5000);
    assert!(out.is_empty(), "no message before a 4408");
    assert_eq!(why, Some(CloseReason::AuthTimeout));
    assert_eq!(why.unwrap().code(), Some(CloseCode::TIMEOUT));
    assert_eq!(why.unwrap().reason(), "authentication timeout");
    assert_eq!(f.stats.auth_timeout.load(Ordering::Relaxed), 1);
}

#[test]
fn silence_brings_a_ping_then_4408_and_any_frame_resets_both() {
    let mut f = Fixture::new(&[
        "--ping-interval-ms",
        "20000",
        "--keepalive-timeout-ms",
        "30000",
    ]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 3600), 0);
    assert_eq!(f.next_ms(0), 20_000);
    let (out, why) = f.timeout(20_000);
    assert_eq!((out, why), (vec![0x89, 0x00], None), "an empty ping");
    assert_eq!(f.next_ms(20_000), 30_000, "then the keepalive deadline");
    assert_eq!(
        f.timeout(20_001),
        (Vec::new(), None),
        "one ping per idle period"
    );
    // A pong (any frame) at 25 s resets both clocks.
    let (_, result) = f.input(&client_frame(0x8a, b""), 25_000);
    assert_eq!(result, Ok(6));
    assert_eq!(f.next_ms(25_000), 45_000);
    assert_eq!(f.timeout(30_000), (Vec::new(), None));
    f.timeout(45_000);
    let (_, why) = f.timeout(55_000);
    assert_eq!(why, Some(CloseReason::KeepaliveTimeout));
    assert_eq!(why.unwrap().reason(), "keepalive timeout");
}

#[test]
fn the_token_expires_with_the_401_message_then_4401_unless_refreshed() {
    let mut f = Fixture::new(&[]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 10), 0);
    assert_eq!(f.next_ms(0), 10_000, "the expiry is the next deadline");
    assert_eq!(f.timeout(9_999), (Vec::new(), None));
    // A refresh at 9 s moves it.
    let refresh = format!(
        r#"{{"action":"refresh","token":"{}"}}"#,
        token(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 15))
    );
    let (out, result) = f.input(&client_frame(0x81, refresh.as_bytes()), 9_000);
    assert!(result.is_ok());
    assert!(String::from_utf8_lossy(&out).contains(r#""status_code":200"#));
    assert_eq!(f.next_ms(9_000), 15_000);
    assert_eq!(f.timeout(10_000), (Vec::new(), None));
    let (out, why) = f.timeout(15_000);
    assert_eq!(why, Some(CloseReason::TokenExpired));
    assert_eq!(why.unwrap().code(), Some(CloseCode::TOKEN_INVALID));
    assert!(
        String::from_utf8_lossy(&out).contains(
            r#"{"action":"authentication","payload":{"status_code":401,"status_text":"Unauthorized","data":{"detail":"token expired"}}}"#
        )
    );
    assert_eq!(f.stats.expired_closes.load(Ordering::Relaxed), 1);
}

#[test]
fn only_authentication_lifts_the_auth_deadline_not_other_frames() {
    // A ping before authentication is answered, and the deadline still stands.
    let mut f = Fixture::new(&["--auth-timeout-ms", "5000"]);
    let (out, result) = f.input(&client_frame(0x89, b""), 3_000);
    assert_eq!((out, result), (vec![0x8a, 0x00], Ok(6)));
    assert_eq!(f.next_ms(3_000), 5_000);
    assert_eq!(f.timeout(5_000).1, Some(CloseReason::AuthTimeout));
    // Authenticating a millisecond before the deadline: the deadline is gone.
    let mut f = Fixture::new(&["--auth-timeout-ms", "5000", "--ping-interval-ms", "20000"]);
    f.authenticate(
        &format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 3600),
        4_999,
    );
    assert_eq!(f.next_ms(4_999), 24_999, "the next deadline is the ping");
    assert_eq!(f.timeout(5_000), (Vec::new(), None));
    assert_eq!(f.timeout(60_000).1, Some(CloseReason::KeepaliveTimeout));
    assert_eq!(f.stats.auth_timeout.load(Ordering::Relaxed), 0);
}

#[test]
fn a_data_message_or_a_ping_from_the_client_resets_the_keepalive_too() {
    let mut f = Fixture::new(&[
        "--ping-interval-ms",
        "20000",
        "--keepalive-timeout-ms",
        "30000",
    ]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 3600), 0);
    assert_eq!(f.timeout(20_000).0, vec![0x89, 0x00]);
    // A text message at 29 s (not a pong) resets both clocks.
    let leave = client_frame(0x81, br#"{"action":"leave","group":"g"}"#);
    assert!(f.input(&leave, 29_000).1.is_ok());
    assert_eq!(f.next_ms(29_000), 49_000);
    assert_eq!(f.timeout(30_000), (Vec::new(), None));
    assert_eq!(f.timeout(49_000).0, vec![0x89, 0x00], "a new ping");
    // A ping from the client at 58 s does too.
    assert!(f.input(&client_frame(0x89, b""), 58_000).1.is_ok());
    assert_eq!(f.next_ms(58_000), 78_000);
    assert_eq!(f.timeout(59_000), (Vec::new(), None));
    assert_eq!(f.timeout(88_000).1, Some(CloseReason::KeepaliveTimeout));
}

/// `--jwt-leeway-secs` stretches a token's life: the 401 message and 4401 come at
/// `exp + leeway`, not at `exp`.
#[test]
fn with_a_leeway_the_token_expires_at_exp_plus_leeway_not_at_exp() {
    let mut f = Fixture::new(&[
        "--jwt-leeway-secs",
        "30",
        "--ping-interval-ms",
        "60000",
        "--keepalive-timeout-ms",
        "90000",
    ]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 10), 0);
    assert_eq!(f.next_ms(0), 40_000);
    assert_eq!(f.timeout(10_000), (Vec::new(), None), "exp itself passes");
    assert_eq!(f.timeout(39_999), (Vec::new(), None));
    let (out, why) = f.timeout(40_000);
    assert_eq!(why, Some(CloseReason::TokenExpired));
    assert!(String::from_utf8_lossy(&out).contains(r#""detail":"token expired""#));
}

/// A token already past its `exp` but within the leeway authenticates, serves, and is closed
/// when `exp + leeway` comes.
#[test]
fn a_token_past_exp_but_within_the_leeway_lives_until_exp_plus_leeway() {
    let mut f = Fixture::new(&[
        "--jwt-leeway-secs",
        "30",
        "--ping-interval-ms",
        "60000",
        "--keepalive-timeout-ms",
        "90000",
    ]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX - 5), 0);
    assert_eq!(f.next_ms(0), 25_000);
    let leave = client_frame(0x81, br#"{"action":"leave","group":"g"}"#);
    let (out, result) = f.input(&leave, 24_000);
    assert!(result.is_ok(), "{result:?}");
    assert!(String::from_utf8_lossy(&out).contains(r#""action":"left""#));
    assert_eq!(f.timeout(24_999), (Vec::new(), None));
    assert_eq!(f.timeout(25_000).1, Some(CloseReason::TokenExpired));
    // Without the leeway the same token is refused outright.
    let mut f = Fixture::new(&[]);
    let cmd = format!(
        r#"{{"action":"authenticate","token":"{}"}}"#,
        token(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX - 5))
    );
    let (out, result) = f.input(&client_frame(0x81, cmd.as_bytes()), 0);
    assert_eq!(
        result,
        Err(CloseReason::Refused(
            CloseCode::TOKEN_INVALID,
            "token expired"
        ))
    );
    assert!(String::from_utf8_lossy(&out).contains(r#""status_code":401"#));
}

/// The token in force is the last one: a refresh with a valid token that expires sooner than
/// the current one brings the expiry forward.
#[test]
fn a_refresh_with_an_earlier_exp_brings_the_expiry_forward() {
    let mut f = Fixture::new(&[]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 100), 0);
    assert_eq!(f.next_ms(0), 20_000, "the ping comes first");
    let refresh = format!(
        r#"{{"action":"refresh","token":"{}"}}"#,
        token(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 12))
    );
    let (out, result) = f.input(&client_frame(0x81, refresh.as_bytes()), 1_000);
    assert!(result.is_ok(), "{result:?}");
    assert!(String::from_utf8_lossy(&out).contains(r#""status_code":200"#));
    assert_eq!(f.next_ms(1_000), 12_000);
    assert_eq!(f.timeout(12_000).1, Some(CloseReason::TokenExpired));
}

/// A refresh that fails ends the connection whatever the old token's `exp`: expired (beyond
/// the leeway), badly signed or malformed is the 401 message then 4401; another user's is 403
/// then 4403.
#[test]
fn a_failed_refresh_is_401_then_4401_or_403_then_4403_for_another_user() {
    let other_key = {
        let t = token(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 60));
        let (signed, _) = t.rsplit_once('.').unwrap();
        format!("{signed}.AAAA")
    };
    let cases = [
        (
            token(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 4)),
            CloseCode::TOKEN_INVALID,
            "token expired",
        ),
        (other_key, CloseCode::TOKEN_INVALID, "bad signature"),
        (
            "not-a-jwt".to_owned(),
            CloseCode::TOKEN_INVALID,
            "malformed token",
        ),
        (
            token(&format!(r#"{{"exp":{},"user_id":"2"}}"#, UNIX + 600)),
            CloseCode::FORBIDDEN,
            "token is for another user",
        ),
    ];
    for (new, code, detail) in cases {
        let mut f = Fixture::new(&["--jwt-leeway-secs", "1"]);
        f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 300), 0);
        let refresh = format!(r#"{{"action":"refresh","token":"{new}"}}"#);
        // At 5 s an `exp` of 4 s is past even with the second of leeway.
        let (out, result) = f.input(&client_frame(0x81, refresh.as_bytes()), 5_000);
        assert_eq!(result, Err(CloseReason::Refused(code, detail)), "{detail}");
        let text = String::from_utf8_lossy(&out);
        let status = if code == CloseCode::FORBIDDEN {
            403
        } else {
            401
        };
        assert!(
            text.contains(&format!(r#""status_code":{status}"#))
                && text.contains(&format!(r#""detail":"{detail}""#)),
            "{text}"
        );
    }
}

/// A user's revocation refuses a refresh with a token issued up to the revocation's second
/// (or without `iat`); a token issued after it is accepted.
#[test]
fn a_refresh_with_a_token_issued_up_to_a_users_revocation_is_401_then_4401() {
    let revoked_at = UNIX + 5;
    for (iat, refused) in [
        (Some(UNIX), true),
        (Some(revoked_at), true),
        (None, true),
        (Some(revoked_at + 1), false),
    ] {
        let mut f = Fixture::new(&[]);
        f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 300), 0);
        f.tables.revocations.revoke_user("1", revoked_at).unwrap();
        let iat = iat.map_or(String::new(), |iat| format!(r#","iat":{iat}"#));
        let new = token(&format!(r#"{{"exp":{}{iat},"user_id":"1"}}"#, UNIX + 300));
        let refresh = format!(r#"{{"action":"refresh","token":"{new}"}}"#);
        let (out, result) = f.input(&client_frame(0x81, refresh.as_bytes()), 6_000);
        let text = String::from_utf8_lossy(&out);
        if refused {
            let why = Err(CloseReason::Refused(
                CloseCode::TOKEN_INVALID,
                "token revoked",
            ));
            assert_eq!(result, why, "iat {iat:?}");
            assert!(text.contains(r#""status_code":401"#), "{text}");
        } else {
            assert!(result.is_ok(), "iat {iat:?}: {result:?}");
            assert!(text.contains(r#""status_code":200"#), "{text}");
        }
    }
}

/// An `exp` of up to 2^64 - 1 (a lifetime bound lifted) never reaches an overflow: the
/// expiry deadline waits at most an hour, then looks again.
#[test]
fn a_huge_exp_waits_at_most_an_hour_at_a_time() {
    let unbounded = u64::MAX.to_string();
    for exp in [1u64 << 63, u64::MAX] {
        let mut f = Fixture::new(&[
            "--max-token-lifetime-secs",
            &unbounded,
            "--ping-interval-ms",
            "86400000",
            "--keepalive-timeout-ms",
            "86400001",
        ]);
        f.authenticate(&format!(r#"{{"exp":{exp},"user_id":"1"}}"#), 0);
        assert_eq!(f.next_ms(0), 3_600_000);
        assert_eq!(f.timeout(3_600_000), (Vec::new(), None));
    }
}

#[test]
fn pings_are_answered_and_a_close_ends_with_its_code() {
    let mut f = Fixture::new(&[]);
    let (out, result) = f.input(&client_frame(0x89, b"hi"), 0);
    assert_eq!((out, result), (vec![0x8a, 2, b'h', b'i'], Ok(8)));
    let (_, result) = f.input(&client_frame(0x88, &[0x03, 0xe8]), 1);
    assert_eq!(
        result,
        Err(CloseReason::PeerClosed(Some(CloseCode::NORMAL)))
    );
    let (_, result) = f.input(&client_frame(0x88, b""), 2);
    assert_eq!(result, Err(CloseReason::PeerClosed(None)));
    assert_eq!(CloseReason::PeerClosed(None).code(), None);
}

#[test]
fn before_authentication_16_kib_is_the_limit_and_after_it_the_configured_one() {
    let mut f = Fixture::new(&[]);
    // Decided from the header alone: the payload is not even there.
    let header = [0x81, 0x80 | 126, 0x40, 0x01, 1, 2, 3, 4];
    let (_, result) = f.input(&header, 0);
    assert_eq!(result, Err(CloseReason::Protocol(FrameError::FrameTooBig)));
    assert_eq!(result.unwrap_err().code(), Some(CloseCode::TOO_BIG));
    // A partial frame within the limit waits for more.
    let mut f = Fixture::new(&[]);
    let (_, result) = f.input(&client_frame(0x81, &[b' '; 16 * 1024])[..100], 0);
    assert_eq!(result, Ok(0));
    // Fragments may not add up past it either.
    let mut f = Fixture::new(&[]);
    let piece = [b' '; 8 * 1024];
    let mut frames = client_frame(0x01, &piece);
    frames.extend(client_frame(0x00, &piece));
    frames.extend(client_frame(0x00, &piece));
    let (_, result) = f.input(&frames, 0);
    assert_eq!(
        result,
        Err(CloseReason::Protocol(FrameError::MessageTooBig))
    );
    // After authentication, 100 KiB is an ordinary message.
    let mut f = Fixture::new(&[]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 60), 0);
    let text = format!(r#"{{"action":"x","pad":"{}"}}"#, "p".repeat(100 * 1024));
    let (out, result) = f.input(&client_frame(0x81, text.as_bytes()), 1);
    assert!(result.is_ok(), "{result:?}");
    assert!(String::from_utf8_lossy(&out).contains("unknown action"));
}

#[test]
fn a_first_message_that_is_not_authenticate_is_1008_without_a_message() {
    let mut f = Fixture::new(&[]);
    let (out, result) = f.input(&client_frame(0x81, br#"{"action":"join","group":"g"}"#), 0);
    assert!(out.is_empty());
    let why = result.unwrap_err();
    assert_eq!(why.code(), Some(CloseCode::POLICY));
    assert_eq!(why.reason(), "authentication required");
    assert_eq!(why.label(), "auth_required");
}

#[test]
fn beyond_the_message_rate_the_connection_is_closed_4429() {
    let mut f = Fixture::new(&["--max-messages-per-sec", "1", "--burst", "2"]);
    f.bucket.set(TokenBucket::new(2, 0));
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 60), 0);
    let unknown = client_frame(0x81, br#"{"action":"x"}"#);
    assert!(f.input(&unknown, 1).1.is_ok(), "the burst's second token");
    assert_eq!(f.input(&unknown, 2).1, Err(CloseReason::RateLimited));
    // A second later the bucket has a token again.
    let mut f = Fixture::new(&["--max-messages-per-sec", "1", "--burst", "1"]);
    f.bucket.set(TokenBucket::new(1, 0));
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 60), 0);
    assert!(f.input(&unknown, 1_000).1.is_ok());
    assert_eq!(
        CloseReason::RateLimited.code(),
        Some(CloseCode::RATE_LIMITED)
    );
}

/// 50 messages a second with a burst of 5: a client that spent its burst and then sends
/// exactly at the rate for ten simulated seconds is never closed; one message sooner is 4429.
#[test]
fn a_client_within_the_message_rate_is_never_closed_and_one_above_it_is_4429() {
    let mut f = Fixture::new(&["--max-messages-per-sec", "50", "--burst", "5"]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 3600), 0);
    let leave = client_frame(0x81, br#"{"action":"leave","group":"g"}"#);
    // The authentication took one token of the five; these take the other four.
    for _ in 0..4 {
        assert!(f.input(&leave, 0).1.is_ok());
    }
    // From now on every message has exactly one token, refilled in the 20 ms before it.
    for ms in (20..=10_000).step_by(20) {
        let (out, result) = f.input(&leave, ms);
        assert!(result.is_ok(), "at {ms} ms: {result:?}");
        assert!(String::from_utf8_lossy(&out).contains(r#""action":"left""#));
        // Control frames are not messages: they take nothing from the budget.
        assert!(f.input(&client_frame(0x89, b""), ms + 1).1.is_ok());
    }
    assert_eq!(f.stats.rate_limited_closes.load(Ordering::Relaxed), 0);
    assert_eq!(f.input(&leave, 10_019).1, Err(CloseReason::RateLimited));
    assert_eq!(f.stats.rate_limited_closes.load(Ordering::Relaxed), 1);
}

/// A pause refills the bucket up to the burst and no further: after a minute of silence, six
/// messages at once get five answers and then 4429.
#[test]
fn a_pause_refills_only_the_burst_and_a_burst_above_it_is_4429() {
    let mut f = Fixture::new(&["--max-messages-per-sec", "50", "--burst", "5"]);
    f.authenticate(&format!(r#"{{"exp":{},"user_id":"1"}}"#, UNIX + 3600), 0);
    let leave = client_frame(0x81, br#"{"action":"leave","group":"g"}"#);
    let burst: Vec<u8> = std::iter::repeat_n(leave, 6).flatten().collect();
    let (out, result) = f.input(&burst, 60_000);
    assert_eq!(result, Err(CloseReason::RateLimited));
    let answered = String::from_utf8_lossy(&out)
        .matches(r#""action":"left""#)
        .count();
    assert_eq!(answered, 5);
}

#[test]
fn every_close_reason_knows_its_code_reason_and_label() {
    let table = [
        (
            CloseReason::Protocol(FrameError::Unmasked),
            Some(1002),
            "protocol error",
            "protocol_error",
        ),
        (
            CloseReason::Protocol(FrameError::InvalidUtf8),
            Some(1007),
            "invalid UTF-8",
            "invalid_utf8",
        ),
        (
            CloseReason::Protocol(FrameError::MessageTooBig),
            Some(1009),
            "message too big",
            "too_big",
        ),
        (
            CloseReason::Refused(CloseCode::TOKEN_INVALID, "bad signature"),
            Some(4401),
            "bad signature",
            "auth_failed",
        ),
        (
            CloseReason::Refused(CloseCode::FORBIDDEN, "token is for another user"),
            Some(4403),
            "token is for another user",
            "forbidden",
        ),
        (
            CloseReason::AuthTimeout,
            Some(4408),
            "authentication timeout",
            "auth_timeout",
        ),
        (
            CloseReason::KeepaliveTimeout,
            Some(4408),
            "keepalive timeout",
            "keepalive_timeout",
        ),
        (
            CloseReason::TokenExpired,
            Some(4401),
            "token expired",
            "token_expired",
        ),
        (CloseReason::Revoked, Some(4401), "token revoked", "revoked"),
        (
            CloseReason::RateLimited,
            Some(4429),
            "rate limit exceeded",
            "rate_limited",
        ),
        (
            CloseReason::SlowConsumer,
            Some(1008),
            "outbound limit exceeded",
            "slow_consumer",
        ),
        (
            CloseReason::GoingAway,
            Some(1001),
            "server shutting down",
            "going_away",
        ),
        (
            CloseReason::PeerClosed(Some(CloseCode(4000))),
            Some(4000),
            "",
            "closed_by_client",
        ),
    ];
    for (why, code, reason, label) in table {
        assert_eq!(why.code().map(|c| c.0), code, "{why:?}");
        assert_eq!(why.reason(), reason, "{why:?}");
        assert_eq!(why.label(), label, "{why:?}");
    }
    assert_eq!(
        CloseReason::of_closing(CloseCode::POLICY),
        CloseReason::SlowConsumer
    );
    assert_eq!(
        CloseReason::of_closing(CloseCode::GOING_AWAY),
        CloseReason::GoingAway
    );
    assert_eq!(
        CloseReason::of_closing(CloseCode::TOKEN_INVALID),
        CloseReason::Revoked
    );
}
