//! The checks behind the cargo-fuzz targets in `fuzz/fuzz_targets/` and the stable replay of
//! their seed corpus in `tests/fuzz_corpus.rs`: one function per target, each taking the raw
//! fuzz input, never panicking on its own account, and asserting (panicking) only when wsgate
//! breaks a rule or disagrees with its oracle. Uses only crates the root crate already has, so
//! the replay builds on stable with no new dependency.
//!
//! Input layouts (`fuzz/seeds.py` writes the seed corpus in them):
//!
//! - `jwt`: `[mode u8][now u64 LE][leeway u16 LE][max_lifetime u32 LE]` then the token. `mode % 3`
//!   is 0: the token as given; 1: its signature segment (after the last `.`) replaced by the
//!   HS256 signature of what precedes it under [`JWT_SECRET`]; 2: the rest is the header JSON, a
//!   0x00 byte and the claims JSON (no 0x00: all claims, header `{"alg":"HS256","typ":"JWT"}`),
//!   encoded and signed here. Modes 1 and 2 let the fuzzer reach the claim rules past the
//!   signature.
//! - `http_head`: `[step u8][limit u8]` then the bytes a client sends. They arrive in chunks of
//!   1 to `step + 1` bytes; the head limit is 8 KiB (the default) when `limit >= 128`, else
//!   `limit` bytes.
//! - `frame`: `[flags u8][max_frame u32 LE][max_message u32 LE]` then the bytes a client sends
//!   after the upgrade. `flags & 1`: the connection starts unauthenticated (the pre-auth cap
//!   applies until the first data message); `flags >> 1`: chunk step, as for `http_head`.
//! - `envelope`: one text frame's payload (non-UTF-8 input is skipped).
//! - `upgrade`: a request head, as `find_head_end` would hand it to the parser.
//! - `origin`: `[mode u8]` then a pattern list, a 0x00 byte and an `Origin` header value (no
//!   0x00, or `mode & 4`: no header). `mode & 3` says where the list comes from (see `origin`).
//! - `connection`: `[settings u8]` then a script of reads, clock moves and timer firings for one
//!   upgraded connection (see `connection` for the ops). The interpreter, [`Script`], is the one
//!   place that knows how the runtime drives `Connection`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use wsgate::auth::Verifier;
use wsgate::auth::groups::GroupPattern;
use wsgate::config::{Config, DevSecret, Env, Settings};
use wsgate::connection::{CloseReason, Connection, Core, Effect, Handler as _};
use wsgate::envelope::{self, ClientCommand, MAX_DATA_DEPTH, RawJson, parse_command};
use wsgate::hub::table::Join;
use wsgate::limits::{TokenBucket, TrustedProxies};
use wsgate::metrics::CoreStats;
use wsgate::origin::OriginPolicy;
use wsgate::proto::frame::{self, FrameError, OpCode};
use wsgate::proto::handshake;
use wsgate::proto::http::{self, HeadError, MAX_HEADERS, Redacted};
use wsgate::proto::message::{Assembler, Message};
use wsgate::session::{Groups, MAX_PRE_AUTH_MESSAGE, Session, Verdict};
use wsgate::tables::Tables;

/// The HS256 secret of the `jwt` check; the seed tokens are signed with it.
pub const JWT_SECRET: &[u8] = b"wsgate fuzz secret";

/// The default `--max-head-bytes`.
const DEFAULT_MAX_HEAD: usize = 8 * 1024;

/// The path the `http_head` check validates upgrades on (the default `--ws-path`).
const WS_PATH: &str = "/ws";

/// xorshift64: chunk sizes from one input byte, reproducibly.
struct Chunks {
    state: u64,
    max: u64,
}

impl Chunks {
    /// Chunks of 1 to `step + 1` bytes.
    fn new(step: u8) -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15 ^ u64::from(step),
            max: u64::from(step) + 1,
        }
    }

    fn next_len(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        1 + (self.state % self.max) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// jwt

/// `Verifier::hs256(JWT_SECRET)` with the input's leeway and lifetime bound verifies the token
/// at the input's `now` without panicking. When it accepts, jsonwebtoken (HS256 only, `exp`
/// required, the same leeway, no `aud` check) plus the wsgate-specific rules that
/// `tests/jwt_differential.rs`'s oracle adds must accept too, and the user must be `user_id`
/// or else `sub`. The other direction is not checked: wsgate is stricter on purpose (that test's
/// `documented_differences`, and the lifetime bound).
pub fn jwt(data: &[u8]) {
    let Some((params, rest)) = data.split_first_chunk::<15>() else {
        // Too short for the parameters: still never a panic.
        let _ = Verifier::hs256(JWT_SECRET).verify(data, 1_700_000_000);
        return;
    };
    let mode = params[0] % 3;
    let now = u64::from_le_bytes(params[1..9].try_into().unwrap());
    let leeway = u64::from(u16::from_le_bytes(params[9..11].try_into().unwrap()));
    let max_lifetime = u64::from(u32::from_le_bytes(params[11..15].try_into().unwrap()));
    // jsonwebtoken computes `now - leeway` in u64, so its rules exist only from `now >= leeway`
    // on (a real clock is always there).
    let now = now.max(leeway);

    let token = match mode {
        0 => rest.to_vec(),
        1 => resign(rest),
        _ => sign_json(rest),
    };
    let verifier = Verifier::hs256(JWT_SECRET)
        .with_leeway(leeway)
        .with_max_lifetime(max_lifetime);
    let Ok(identity) = verifier.verify(&token, now) else {
        return;
    };

    let shown = String::from_utf8_lossy(&token);
    let text = std::str::from_utf8(&token)
        .unwrap_or_else(|_| panic!("accepted a token that is not UTF-8: {shown}"));
    let claims = match jwt_oracle(text, now, leeway) {
        Err(why) if why == TOLERATED => return,
        other => other,
    };
    let claims = claims.unwrap_or_else(|why| {
        panic!(
            "wsgate accepted (user {:?}) what jsonwebtoken+rules refuse: {why}\n  \
             now {now}, leeway {leeway}, max lifetime {max_lifetime}\n  token {text}",
            identity.user
        )
    });

    let user = claims.get("user_id").or_else(|| claims.get("sub"));
    let expected = match user {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        other => panic!("accepted with user claim {other:?}: {text}"),
    };
    assert_eq!(identity.user.as_str(), expected, "user of {text}");

    // The deadline is exp plus the leeway, and the lifetime bound keeps it within
    // max_lifetime + 2 * leeway of now (whether or not the token has an `iat`).
    let bound = i128::from(now) + i128::from(max_lifetime) + 2 * i128::from(leeway);
    assert!(
        i128::from(identity.exp) <= bound,
        "deadline {} beyond now {now} + max lifetime {max_lifetime} + 2 x leeway {leeway}: {text}",
        identity.exp
    );
    let exp = claims.get("exp").and_then(int_value).unwrap();
    // Past 2^64 - 1 the deadline is 2^64 - 1 (it was 0, a connection expiring at once).
    let deadline = u64::try_from(exp + i128::from(leeway)).unwrap_or(u64::MAX);
    assert_eq!(identity.exp, deadline, "deadline of {text}");
    assert!(deadline > now, "accepted a token past its deadline: {text}");
}

/// The oracle's answer for a JSON-reading difference between serde_json's `Value` and the
/// verifier that is accepted (see `jwt_oracle`).
const TOLERATED: &str = "a tolerated JSON-reading difference";

/// `token` with its last segment replaced by the right HS256 signature of what precedes it.
fn resign(token: &[u8]) -> Vec<u8> {
    let input = match token.iter().rposition(|&b| b == b'.') {
        Some(dot) => &token[..dot],
        None => token,
    };
    let mut out = input.to_vec();
    out.push(b'.');
    out.extend_from_slice(hs256(input).as_bytes());
    out
}

/// A token over raw header and claims JSON texts (`header 0x00 claims`, or only claims).
fn sign_json(rest: &[u8]) -> Vec<u8> {
    let (header, claims) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = hs256(input.as_bytes());
    format!("{input}.{sig}").into_bytes()
}

/// The base64url HS256 signature of `input` under `JWT_SECRET`, by jsonwebtoken.
fn hs256(input: &[u8]) -> String {
    jsonwebtoken::crypto::sign(
        input,
        &EncodingKey::from_secret(JWT_SECRET),
        Algorithm::HS256,
    )
    .unwrap()
}

fn is_json_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn int_value(v: &Value) -> Option<i128> {
    v.as_i64()
        .map(i128::from)
        .or_else(|| v.as_u64().map(i128::from))
}

fn valid_id(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty() && s.len() <= 64,
        other => is_json_int(other),
    }
}

/// A NumericDate as jsonwebtoken reads it (`validation.rs`, `numeric_type`): a u64, or a
/// finite non-negative float below 2^64 rounded; anything else fails to parse.
fn jsonwebtoken_date(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

/// `tests/jwt_differential.rs`'s oracle at an injected `now` with a leeway: jsonwebtoken's
/// verdict, then the wsgate-specific claim rules it does not implement. jsonwebtoken reads the
/// system clock for `exp` and `nbf`, so those two checks are switched off in its `Validation`
/// and done here with its own formulas at `now`; everything else is its `decode`.
fn jwt_oracle(token: &str, now: u64, leeway: u64) -> Result<Map<String, Value>, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = leeway;
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(JWT_SECRET);
    let claims = match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
        Ok(data) => data.claims,
        // Reading JSON into serde_json's `Value` is stricter than wsgate's verifier, which
        // skips members it does not use: a lone surrogate escape, nesting beyond 128 levels or
        // a number beyond f64 in an unread member, or a non-string `kid`. These differences
        // are accepted (documented in tests/jwt_differential.rs's terms); what must still hold
        // is that both segments are UTF-8 JSON (RFC 7519 §7.2), which wsgate checks itself.
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::Json(_)) => {
            let segments: Vec<&str> = token.split('.').collect();
            for segment in &segments[..2] {
                let bytes = URL_SAFE_NO_PAD
                    .decode(segment)
                    .map_err(|e| format!("segment not base64url: {e}"))?;
                std::str::from_utf8(&bytes).map_err(|_| "a segment is not UTF-8".to_owned())?;
            }
            return Err(TOLERATED.to_owned());
        }
        Err(e) => return Err(format!("jsonwebtoken: {e}")),
    };

    // jsonwebtoken's time rules (`exp` is required and parsed, or decode failed above).
    let (now, leeway) = (i128::from(now), i128::from(leeway));
    if let Some(exp) = jsonwebtoken_date(claims.get("exp"))
        && i128::from(exp) < now - leeway
    {
        return Err(format!("jsonwebtoken: expired (exp {exp})"));
    }
    if let Some(nbf) = jsonwebtoken_date(claims.get("nbf"))
        && i128::from(nbf) > now + leeway
    {
        return Err(format!("jsonwebtoken: immature (nbf {nbf})"));
    }

    // The rules the differential test adds on top, with its leeway of 0 generalised.
    let int_or_absent = |name: &str| claims.get(name).is_none_or(is_json_int);
    if !(int_or_absent("exp") && int_or_absent("nbf") && int_or_absent("iat")) {
        return Err("exp, nbf or iat not an integer".to_owned());
    }
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| i128::from(iat) > now + leeway)
    {
        return Err("iat in the future".to_owned());
    }
    if claims
        .get("token_type")
        .is_some_and(|t| t.as_str() != Some("access"))
    {
        return Err("token_type not access".to_owned());
    }
    match claims.get("user_id").or_else(|| claims.get("sub")) {
        Some(user) if valid_id(user) => {}
        other => return Err(format!("bad user {other:?}")),
    }
    if claims
        .get("jti")
        .is_some_and(|j| j.as_str().is_none_or(|s| s.len() > 64))
    {
        return Err("bad jti".to_owned());
    }
    if let Some(groups) = claims.get("groups") {
        let Some(list) = groups.as_array() else {
            return Err("groups not an array".to_owned());
        };
        if !list
            .iter()
            .all(|g| g.as_str().and_then(GroupPattern::parse).is_some())
        {
            return Err("bad group pattern".to_owned());
        }
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------------------------
// http_head

/// The incremental end-of-head scan over the input fed in chunks agrees with a one-shot scan
/// of the same bytes and with its documented contract; then the head (and, separately, the
/// whole input) is parsed, and a parsed request validated as an upgrade, without a panic. A
/// head with a bare `\n` never parses. For a parsed request: a redacted target shows no query
/// value, and the client address behind trusted proxies is the one `X-Forwarded-For` names.
pub fn http_head(data: &[u8]) {
    let Some(([step, limit], stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = if *limit >= 128 {
        DEFAULT_MAX_HEAD
    } else {
        usize::from(*limit)
    };

    let mut chunks = Chunks::new(*step);
    let (mut len, mut scanned) = (0, 0);
    // One-shot rescans of every prefix cost O(n^2): compare each step only within a budget
    // (64 KiB scanned), and always the last one.
    let mut budget: usize = 1 << 16;
    let found = loop {
        len = (len + chunks.next_len()).min(stream.len());
        let buf = &stream[..len];
        let got = http::find_head_end(buf, scanned, max);
        let last = !matches!(got, Ok(None)) || len == stream.len();
        if last || budget >= len {
            budget = budget.saturating_sub(len);
            assert_eq!(
                got,
                http::find_head_end(buf, 0, max),
                "incremental scan (scanned {scanned}) and one-shot disagree on {len} bytes, \
                 max {max}"
            );
        }
        if last {
            break got;
        }
        scanned = len;
    };
    let buf = &stream[..len];
    assert_eq!(
        found,
        head_end_reference(buf, max),
        "{len} bytes, max {max}"
    );

    if let Ok(Some(end)) = found {
        check_head(&stream[..end]);
    }
    // The parser on its own, on any bytes (the API path hands it heads found the same way,
    // but it must hold its rules whatever it is given).
    check_head(stream);
}

/// What `find_head_end(buf, 0, max)` must answer, from its documentation.
fn head_end_reference(buf: &[u8], max: usize) -> Result<Option<usize>, HeadError> {
    let window = &buf[..buf.len().min(max)];
    match window.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => Ok(Some(at + 4)),
        None if buf.len() >= max => Err(HeadError::TooLarge),
        None => Ok(None),
    }
}

fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

fn check_head(head: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let parsed = http::parse_request(head, &mut headers);
    let Ok(req) = parsed else {
        return;
    };
    assert!(
        !has_bare_lf(head),
        "parse_request accepted a head with a bare LF: {:?}",
        String::from_utf8_lossy(head)
    );
    if let Some(target) = req.path {
        check_redacted(target);
    }
    check_forwarded_for(&req);
    if let Ok(upgrade) = handshake::validate(&req, WS_PATH) {
        assert_eq!(upgrade.key.len(), 24, "key {:?}", upgrade.key);
        let _ = handshake::accept_key(upgrade.key);
        assert_eq!(
            req.path.map(|t| http::split_target(t).0),
            Some(WS_PATH),
            "validated an upgrade on another path"
        );
    }
}

/// `Redacted` shows the path, then for each query pair nothing, `[redacted]`, or a name (plain
/// and short, or `[redacted]`) followed by `=` and, when there was a value, `=[redacted]`.
fn check_redacted(target: &str) {
    let shown = Redacted(target).to_string();
    let (path, query) = http::split_target(target);
    let Some(rest) = shown.strip_prefix(path) else {
        panic!("{shown:?} does not start with the path of {target:?}");
    };
    let Some(query) = query else {
        assert!(rest.is_empty(), "{shown:?} for {target:?}");
        return;
    };
    let Some(pairs) = rest.strip_prefix('?') else {
        panic!("{shown:?} lost the `?` of {target:?}");
    };
    assert_eq!(
        pairs.split('&').count(),
        query.split('&').count(),
        "{shown:?} for {target:?}"
    );
    let plain = |name: &str| {
        name == "[redacted]"
            || (name.len() <= 32
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))
    };
    for piece in pairs.split('&') {
        let ok = match piece.split_once('=') {
            None => piece.is_empty() || piece == "[redacted]",
            Some((name, value)) => plain(name) && (value.is_empty() || value == "[redacted]"),
        };
        assert!(ok, "{piece:?} in {shown:?} may show a secret of {target:?}");
    }
}

fn trusted_proxies() -> &'static TrustedProxies {
    static PROXIES: OnceLock<TrustedProxies> = OnceLock::new();
    PROXIES.get_or_init(|| TrustedProxies::parse(&["10.0.0.0/8", "::1"]).unwrap())
}

/// `client_ip` over every `X-Forwarded-For` line, against the walk its documentation gives.
fn check_forwarded_for(req: &httparse::Request<'_, '_>) {
    let values: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|h| h.value)
        .collect();
    let proxies = trusted_proxies();
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let got = proxies.client_ip(peer, &values);

    // From the right: skip trusted entries; the first untrusted one is the client; a
    // non-address stops the walk at the last address read (or the peer).
    let entries: Vec<&[u8]> = values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
        .collect();
    let mut want = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = std::str::from_utf8(entry)
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            break;
        };
        want = ip;
        if !proxies.contains(ip) {
            break;
        }
    }
    assert_eq!(got, want, "X-Forwarded-For {values:?}");

    // An untrusted peer is the client, whatever the headers say.
    let outsider = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(proxies.client_ip(outsider, &values), outsider);
}

// ---------------------------------------------------------------------------------------------
// frame

/// What a connection's read loop saw, owned, to compare two runs.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    Failed(FrameError),
    /// Bytes left undecoded at the end of the input.
    Pending(usize),
}

/// `frame::decode` and `message::Assembler` driven as `runtime::conn`'s `process` drives them
/// (pre-auth cap until the first data message, then the configured limits) never panic; a
/// decoded frame is within the frame limit in force and within the buffer; a completed message
/// is within the message limit in force (text being UTF-8); control payloads are at most 125
/// bytes. The input fed whole and fed in chunks gives the same messages and the same error.
pub fn frame(data: &[u8]) {
    let Some((params, stream)) = data.split_first_chunk::<9>() else {
        return;
    };
    let flags = params[0];
    let max_frame = u32::from_le_bytes(params[1..5].try_into().unwrap()) as usize;
    let max_message = u32::from_le_bytes(params[5..9].try_into().unwrap()) as usize;
    let pre_auth = flags & 1 != 0;
    let whole = read_loop(stream, max_frame, max_message, pre_auth, None);
    let chunked = read_loop(
        stream,
        max_frame,
        max_message,
        pre_auth,
        Some(Chunks::new(flags >> 1)),
    );
    assert_eq!(
        whole, chunked,
        "whole and chunked reads differ (max frame {max_frame}, max message {max_message})"
    );
}

fn read_loop(
    stream: &[u8],
    max_frame: usize,
    max_message: usize,
    mut awaiting_auth: bool,
    mut chunks: Option<Chunks>,
) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut assembler = Assembler::new(max_message);
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    while fed < stream.len() {
        let n = chunks.as_mut().map_or(stream.len(), Chunks::next_len);
        let end = (fed + n).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;

        let mut pos = 0;
        while pos < buf.len() {
            let (frame_limit, message_limit) = if awaiting_auth {
                (
                    max_frame.min(MAX_PRE_AUTH_MESSAGE),
                    max_message.min(MAX_PRE_AUTH_MESSAGE),
                )
            } else {
                (max_frame, max_message)
            };
            assembler.set_max_message(message_limit);
            let header = match frame::decode(&mut buf[pos..], frame_limit) {
                Ok(Some(header)) => header,
                Ok(None) => break,
                Err(e) => {
                    seen.push(Seen::Failed(e));
                    return seen;
                }
            };
            assert!(
                header.payload_len <= frame_limit,
                "frame of {} bytes passed the {frame_limit}-byte limit",
                header.payload_len
            );
            assert!(
                header.frame_len() <= buf.len() - pos,
                "frame of {} bytes decoded from {} buffered",
                header.frame_len(),
                buf.len() - pos
            );
            assert!(matches!(header.header_len, 6 | 8 | 14), "{header:?}");
            let start = pos + header.header_len;
            pos = start + header.payload_len;
            let message = match assembler.push(&header, &buf[start..pos]) {
                Ok(Some(message)) => message,
                Ok(None) => continue,
                Err(e) => {
                    seen.push(Seen::Failed(e));
                    return seen;
                }
            };
            match message {
                Message::Text(text) => {
                    assert!(std::str::from_utf8(text.as_bytes()).is_ok());
                    assert!(
                        text.len() <= message_limit,
                        "text message of {} bytes passed the {message_limit}-byte limit",
                        text.len()
                    );
                    awaiting_auth = false;
                    seen.push(Seen::Text(text.to_owned()));
                }
                Message::Binary(bytes) => {
                    assert!(
                        bytes.len() <= message_limit,
                        "binary message of {} bytes passed the {message_limit}-byte limit",
                        bytes.len()
                    );
                    awaiting_auth = false;
                    seen.push(Seen::Binary(bytes.to_vec()));
                }
                Message::Ping(p) => {
                    assert!(p.len() <= frame::MAX_CONTROL_PAYLOAD);
                    seen.push(Seen::Ping(p.to_vec()));
                }
                Message::Pong(p) => {
                    assert!(p.len() <= frame::MAX_CONTROL_PAYLOAD);
                    seen.push(Seen::Pong(p.to_vec()));
                }
                Message::Close(close) => {
                    if let Some((code, reason)) = close {
                        assert!(code.is_valid_on_wire(), "{code:?}");
                        assert!(reason.len() <= frame::MAX_CLOSE_REASON);
                    }
                    seen.push(Seen::Close(
                        close.map(|(code, reason)| (code.0, reason.to_owned())),
                    ));
                    return seen;
                }
            }
        }
        buf.drain(..pos);
        if !assembler.in_progress() {
            assembler.shrink();
        }
    }
    seen.push(Seen::Pending(buf.len()));
    seen
}

// ---------------------------------------------------------------------------------------------
// envelope

/// `parse_command` agrees exactly with the serde_json implementation it replaced (the oracle
/// `tests/envelope_differential.rs` keeps, copied below): the command, every string (borrowed
/// from where, or owned), the `data` slice, or the error. For a `send` with `data`,
/// `nests_deeper_than` agrees with a depth counted here from the raw text (itself checked
/// against serde_json's parser where its recursion limit lets it through).
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let got = new_outcome(text);
    let want = oracle_outcome(text);
    assert_eq!(got, want, "input: {text:?}");

    if let Ok(ClientCommand::Send {
        data: Some(data), ..
    }) = parse_command(text)
    {
        let raw = data.get();
        let depth = nesting_depth(raw);
        if let Ok(Depth(counted)) = serde_json::from_str::<Depth>(raw) {
            assert_eq!(depth, counted, "depth of {}", abbreviated(raw));
        }
        for max in [MAX_DATA_DEPTH, depth, depth.saturating_sub(1), 0] {
            assert_eq!(
                data.nests_deeper_than(max),
                depth > max,
                "nests_deeper_than({max}) for depth {depth}: {}",
                abbreviated(raw)
            );
        }
    }
}

fn abbreviated(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{:?}{}",
        &text[..end],
        if end < text.len() { "…" } else { "" }
    )
}

/// Deepest array/object nesting of valid JSON text: strings are jumped over whole (a `\`
/// always takes the byte after it along), brackets counted outside them.
fn nesting_depth(json: &str) -> usize {
    let bytes = json.as_bytes();
    let (mut open, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                open += 1;
                deepest = deepest.max(open);
            }
            b']' | b'}' => open -= 1,
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The same depth as serde_json's parser sees it (every member, repeated keys included; up to
/// its recursion limit of 128, beyond which it fails).
struct Depth(usize);

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DepthVisitor)
    }
}

struct DepthVisitor;

impl<'de> Visitor<'de> for DepthVisitor {
    type Value = Depth;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Depth, E> {
        Ok(Depth(0))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some(Depth(d)) = seq.next_element()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Depth, A::Error> {
        let mut deepest = 0;
        while let Some((IgnoredAny, Depth(d))) = map.next_entry()? {
            deepest = deepest.max(d);
        }
        Ok(Depth(deepest + 1))
    }
}

#[path = "../support/envelope_oracle.rs"]
mod envelope_oracle;

use envelope_oracle::{new_outcome, oracle_outcome};

// ---------------------------------------------------------------------------------------------
// upgrade

/// The GUID RFC 6455 §1.3 appends to the key, for the independent accept key.
const RFC6455_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A request head that parses is validated as an upgrade on `/ws` without a panic, and the
/// outcome is the one an independent reading of the rules gives (docs/protocol.md §1, in the
/// order `handshake::validate` documents): the same refusal status, or the same fields. An
/// accepted key is the padded base64 of 16 bytes, its accept key is base64(SHA-1(key + GUID))
/// computed here, and the 101 parses as one (with `wsgate.v1` exactly when offered). A refusal
/// is 400, 404 or 426, and the response the gateway writes for it parses, with
/// `Sec-WebSocket-Version: 13` on a 426 only.
pub fn upgrade(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(req) = http::parse_request(data, &mut headers) else {
        return;
    };
    let shown = String::from_utf8_lossy(data);
    let want = upgrade_oracle(&req);
    match handshake::validate(&req, WS_PATH) {
        Ok(got) => {
            let want = want.unwrap_or_else(|status| {
                panic!("accepted an upgrade the rules answer with {status}: {shown:?}")
            });
            assert_eq!(got.key, want.key, "key of {shown:?}");
            assert_eq!(got.origin, want.origin, "origin of {shown:?}");
            assert_eq!(
                got.authorization, want.authorization,
                "authorization of {shown:?}"
            );
            assert_eq!(
                got.offers_v1, want.offers_v1,
                "wsgate.v1 offer in {shown:?}"
            );
            assert_eq!(
                got.bearer_protocol, want.bearer_protocol,
                "bearer subprotocol of {shown:?}"
            );
            assert_eq!(got.query, want.query, "query of {shown:?}");
            assert!(is_websocket_key(got.key), "key {:?}", got.key);
            check_accept(got.key, got.offers_v1);
        }
        Err(e) => {
            let status = e.status();
            assert_eq!(
                Err(status),
                want.map(|_| ()),
                "refused with {status} ({e}): {shown:?}"
            );
            assert!(
                matches!(status, 400 | 404 | 426),
                "status {status} for {e:?}"
            );
            check_refusal(status, e.response_headers());
        }
    }
}

/// What `handshake::validate` must return, read off the request independently.
#[derive(Debug)]
struct WantUpgrade<'b> {
    key: &'b [u8],
    origin: Option<&'b [u8]>,
    authorization: Option<&'b [u8]>,
    offers_v1: bool,
    bearer_protocol: Option<&'b [u8]>,
    query: Option<&'b str>,
}

/// HTTP optional whitespace around a header value (RFC 9110 §5.5).
fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |at| at + 1);
    &value[start..end]
}

/// The trimmed values of every header line named `name` (any case).
fn header_values<'b>(req: &httparse::Request<'_, 'b>, name: &str) -> Vec<&'b [u8]> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| trim_ows(h.value))
        .collect()
}

/// Whether a comma-separated list header named `name` lists `token` (any case).
fn lists_token(req: &httparse::Request<'_, '_>, name: &str, token: &str) -> bool {
    header_values(req, name).iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The §1 rules in `validate`'s documented order (path, method, version, Host, Upgrade,
/// Connection, Sec-WebSocket-Version present and single, then 13, then the key, Origin and
/// Authorization); the status of the first that fails. (The table in docs/protocol.md §1 lists
/// the 426 after all the 400s; `validate` and its unit test judge the version before the key.)
fn upgrade_oracle<'b>(req: &httparse::Request<'_, 'b>) -> Result<WantUpgrade<'b>, u16> {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(400);
    };
    let (path, query) = match target.find('?') {
        Some(at) => (&target[..at], Some(&target[at + 1..])),
        None => (target, None),
    };
    if path != WS_PATH {
        return Err(404);
    }
    if method != "GET" || version != 1 || header_values(req, "host").len() != 1 {
        return Err(400);
    }
    if !lists_token(req, "upgrade", "websocket") || !lists_token(req, "connection", "upgrade") {
        return Err(400);
    }
    match header_values(req, "sec-websocket-version")[..] {
        [b"13"] => {}
        [_] => return Err(426),
        _ => return Err(400),
    }
    let key = match header_values(req, "sec-websocket-key")[..] {
        [key] if is_websocket_key(key) => key,
        _ => return Err(400),
    };
    let origin = match header_values(req, "origin")[..] {
        [] => None,
        [origin] => Some(origin),
        _ => return Err(400),
    };
    let authorization = match header_values(req, "authorization")[..] {
        [] => None,
        [value] => Some(value),
        _ => return Err(400),
    };
    let protocols: Vec<&[u8]> = header_values(req, "sec-websocket-protocol")
        .into_iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim_ows)
        .collect();
    Ok(WantUpgrade {
        key,
        origin,
        authorization,
        offers_v1: protocols.contains(&&b"wsgate.v1"[..]),
        bearer_protocol: protocols
            .iter()
            .find_map(|p| p.strip_prefix(b"wsgate.bearer.")),
        query,
    })
}

/// A Sec-WebSocket-Key: 22 base64 characters and `==`, the last character carrying no bits
/// beyond the 128 of the nonce, so that it decodes to exactly 16 bytes (RFC 6455 §4.1).
fn is_websocket_key(key: &[u8]) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sextet = |b: &u8| ALPHABET.iter().position(|a| a == b);
    let shaped = key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| sextet(b).is_some())
        && sextet(&key[21]).is_some_and(|v| v % 16 == 0);
    if shaped {
        let nonce = base64::engine::general_purpose::STANDARD.decode(key);
        assert_eq!(nonce.map(|n| n.len()), Ok(16), "key {key:?}");
    }
    shaped
}

/// The accept key against SHA-1 and base64 computed here, and the 101 written with it.
fn check_accept(key: &[u8], offers_v1: bool) {
    use sha1::Digest as _;
    let accept = handshake::accept_key(key);
    let mut sha1 = sha1::Sha1::new();
    sha1.update(key);
    sha1.update(RFC6455_GUID.as_bytes());
    let want = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    assert_eq!(want.len(), 28);
    assert_eq!(&accept[..], want.as_bytes(), "accept key of {key:?}");

    for select_v1 in [offers_v1, !offers_v1] {
        let mut out = Vec::new();
        handshake::write_101(&mut out, &accept, select_v1);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&out);
        assert_eq!(
            parsed,
            Ok(httparse::Status::Complete(out.len())),
            "101 {:?}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(response.code, Some(101));
        assert_eq!(response.version, Some(1));
        let value = |name: &str| -> Vec<&[u8]> {
            response
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
                .collect()
        };
        assert!(lists_in(&value("upgrade"), "websocket"));
        assert!(lists_in(&value("connection"), "upgrade"));
        assert_eq!(value("sec-websocket-accept"), [want.as_bytes()]);
        let selected: &[&[u8]] = if select_v1 { &[b"wsgate.v1"] } else { &[] };
        assert_eq!(value("sec-websocket-protocol"), selected);
        assert!(value("sec-websocket-extensions").is_empty());
    }
}

fn lists_in(values: &[&[u8]], token: &str) -> bool {
    values.iter().any(|v| {
        v.split(|&b| b == b',')
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A refusal's extra headers are well-formed (token names, visible-ASCII values), the 426
/// names version 13 and nothing else does, and the response written with them parses.
fn check_refusal(status: u16, extra: &[(&str, &str)]) {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    for (name, value) in extra {
        assert!(
            !name.is_empty() && name.bytes().all(tchar),
            "header name {name:?}"
        );
        assert!(
            value
                .bytes()
                .all(|b| b == b'\t' || (b' '..=b'~').contains(&b)),
            "header value {value:?}"
        );
    }
    let names_13 = extra
        .iter()
        .any(|&(n, v)| n.eq_ignore_ascii_case("sec-websocket-version") && v == "13");
    assert_eq!(names_13, status == 426, "{status} with {extra:?}");

    let mut out = Vec::new();
    http::write_response(
        &mut out,
        status,
        extra,
        http::reason_phrase(status).as_bytes(),
    );
    let mut headers = [httparse::EMPTY_HEADER; 8];
    let mut response = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(len)) = response.parse(&out) else {
        panic!("refusal {:?} does not parse", String::from_utf8_lossy(&out));
    };
    assert_eq!(response.code, Some(status));
    assert_eq!(&out[len..], http::reason_phrase(status).as_bytes());
    for (name, value) in extra {
        assert!(
            response
                .headers
                .iter()
                .any(|h| h.name == *name && h.value == value.as_bytes()),
            "{name}: {value} missing from the {status}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// origin

/// The pattern list is built from the input as `Config::origin_policy` builds it (src/config.rs)
/// from one source: `mode & 3` is 0 for `--allowed-origins` (split at commas, blank items
/// dropped, the allowed-hosts mode when none is left), 1 for `--allowed-origins-file` (lines, `#`
/// comments, trimmed, blank lines dropped), 2 and 3 for `--allowed-hosts` without and with
/// `--debug`. The policy accepts the list exactly when every pattern is valid by the rules
/// (docs/protocol.md §2 and `origin`'s docs, re-implemented here), and then `allows` agrees with
/// the same rules on the header (absent when `mode & 4`), on an origin derived from each
/// pattern (which it must admit), and never panics, whatever the bytes. A fixed policy with
/// every form of pattern checks the header too, whether or not the list was valid.
pub fn origin(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (list, header) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], (mode & 4 == 0).then_some(&rest[at + 1..])),
        None => (rest, None),
    };

    let (fixed, fixed_wanted) = fixed_origin_policy();
    assert_eq!(
        fixed.allows(header),
        origin_oracle_allows(fixed_wanted, header),
        "fixed patterns {FIXED_ORIGIN_PATTERNS:?}, origin {:?}",
        header.map(String::from_utf8_lossy)
    );

    // Flags and files are text: clap and read_to_string refuse anything else.
    let Ok(list) = std::str::from_utf8(list) else {
        return;
    };
    let present = |items: Vec<&str>| -> Vec<String> {
        items
            .into_iter()
            .filter(|item| !item.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (patterns, built) = match mode & 3 {
        0 => {
            let patterns = present(list.split(',').collect());
            if patterns.is_empty() {
                (patterns, OriginPolicy::allowed_hosts::<String>(&[], false))
            } else {
                let built = OriginPolicy::parse(&patterns);
                (patterns, built)
            }
        }
        1 => {
            let patterns: Vec<String> = list
                .lines()
                .map(|line| line.split('#').next().unwrap_or("").trim())
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            let built = OriginPolicy::parse(&patterns);
            (patterns, built)
        }
        hosts => {
            let debug = hosts == 3;
            let hosts = present(list.split(',').collect());
            let built = OriginPolicy::allowed_hosts(&hosts, debug);
            if hosts.is_empty() && debug {
                // §2: an empty list in debug mode stands for these three.
                let local = ["localhost", "127.0.0.1", "[::1]"];
                (local.map(str::to_owned).to_vec(), built)
            } else {
                (hosts, built)
            }
        }
    };

    let parsed: Result<Vec<Option<WantPattern>>, String> = patterns
        .iter()
        .map(|p| want_pattern(p).map_err(|why| format!("{p:?}: {why}")))
        .collect();
    let (policy, wanted) = match (built, parsed) {
        (Ok(policy), Ok(wanted)) => (policy, wanted),
        (Err(_), Err(_)) => return,
        (Ok(_), Err(why)) => panic!("accepted the invalid pattern {why} (list {patterns:?})"),
        (Err(e), Ok(_)) => panic!("refused the valid list {patterns:?}: {e}"),
    };
    let shown = header.map(String::from_utf8_lossy);
    assert_eq!(
        policy.allows(header),
        origin_oracle_allows(&wanted, header),
        "patterns {patterns:?}, origin {shown:?}"
    );
    assert_eq!(policy.rejects_everything(), patterns.is_empty());
    // Each pattern admits the origin it describes.
    for (pattern, want) in patterns.iter().zip(&wanted) {
        let Some(derived) = want.as_ref().map(derived_origin) else {
            continue;
        };
        assert!(
            policy.allows(Some(derived.as_bytes())),
            "{pattern:?} does not admit {derived:?}"
        );
        assert!(
            origin_oracle_allows(std::slice::from_ref(want), Some(derived.as_bytes())),
            "the oracle's {pattern:?} does not admit {derived:?}"
        );
    }
}

/// One pattern of every form in the §2 table (no `*`, which would admit everything).
const FIXED_ORIGIN_PATTERNS: [&str; 9] = [
    "example.com",
    ".example.org",
    "https://app.example.net",
    "https://.example.io:8443",
    "localhost:8000",
    "[::1]",
    "http://[2001:db8::1]:8080",
    "chrome-extension://abcdef",
    "bücher.example",
];

/// [`FIXED_ORIGIN_PATTERNS`] as wsgate and as the oracle read them, once.
fn fixed_origin_policy() -> &'static (OriginPolicy, Vec<Option<WantPattern>>) {
    static POLICY: OnceLock<(OriginPolicy, Vec<Option<WantPattern>>)> = OnceLock::new();
    POLICY.get_or_init(|| {
        let wanted = FIXED_ORIGIN_PATTERNS.map(|p| want_pattern(p).unwrap());
        (
            OriginPolicy::parse(&FIXED_ORIGIN_PATTERNS).unwrap(),
            wanted.to_vec(),
        )
    })
}

/// A host as §2 compares it.
#[derive(Debug, Clone, PartialEq)]
enum WantHost {
    /// A name, lower-case ASCII (a pattern's after IDNA conversion).
    Name(String),
    /// `.domain`: the domain and its subdomains (stored without the dot).
    Domain(String),
    /// A bracketed IPv6 literal, compared as an address.
    Ipv6(Ipv6Addr),
}

#[derive(Debug, Clone)]
struct WantPattern {
    /// Lower-case; `None`: any scheme.
    scheme: Option<String>,
    host: WantHost,
    /// `None`: any port; `Some(p)`: the origin's effective port must be `p` (`Some(None)`: an
    /// unknown scheme without a port, which admits only origins without one).
    port: Option<Option<u16>>,
}

/// A pattern by §2 and the `OriginPolicy` docs: `Ok(None)` is `*`.
fn want_pattern(raw: &str) -> Result<Option<WantPattern>, &'static str> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("empty");
    }
    if text == "*" {
        return Ok(None);
    }
    if text.contains('*') {
        return Err("a star that is not the whole pattern");
    }
    let (scheme, authority) = match text.find("://") {
        Some(at) => (Some(&text[..at]), &text[at + 3..]),
        None => (None, text),
    };
    if scheme.is_some_and(|s| !is_scheme(s)) {
        return Err("scheme");
    }
    let (host, port) = want_authority(authority)?;
    let host = match host {
        AuthorityHost::Ipv6(addr) => WantHost::Ipv6(addr),
        AuthorityHost::Name(name) => match name.strip_prefix('.') {
            Some(domain) => WantHost::Domain(pattern_host(domain)?),
            None => WantHost::Name(pattern_host(name)?),
        },
    };
    let scheme = scheme.map(str::to_ascii_lowercase);
    let port = match (&scheme, port) {
        (Some(scheme), port) => Some(port.or_else(|| well_known_port(scheme))),
        (None, Some(port)) => Some(Some(port)),
        (None, None) => None,
    };
    Ok(Some(WantPattern { scheme, host, port }))
}

/// The host and port of an origin or pattern, before the host's characters are judged.
enum AuthorityHost<'a> {
    Name(&'a str),
    Ipv6(Ipv6Addr),
}

/// `host [":" port]` or `"[" ipv6 "]" [":" port]`, with no path, query, fragment or user info.
fn want_authority(authority: &str) -> Result<(AuthorityHost<'_>, Option<u16>), &'static str> {
    if authority.contains(['/', '?', '#', '@']) {
        return Err("path, query, fragment or user info");
    }
    if let Some(inner) = authority.strip_prefix('[') {
        let (literal, after) = inner.split_once(']').ok_or("unclosed IPv6 literal")?;
        let addr = literal.parse().map_err(|_| "bad IPv6 literal")?;
        let port = match after {
            "" => None,
            _ => Some(want_port(after.strip_prefix(':').ok_or("junk after ']'")?)?),
        };
        return Ok((AuthorityHost::Ipv6(addr), port));
    }
    let (name, port) = match authority.split_once(':') {
        None => (authority, None),
        Some((_, port)) if port.contains(':') => return Err("unbracketed IPv6"),
        Some((name, port)) => (name, Some(want_port(port)?)),
    };
    if name.is_empty() {
        return Err("no host");
    }
    Ok((AuthorityHost::Name(name), port))
}

/// 1 to 65535 in decimal, at most five digits (leading zeros allowed within them, as
/// `origin::parse_port` documents).
fn want_port(digits: &str) -> Result<u16, &'static str> {
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port");
    }
    match digits.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err("port out of range"),
    }
}

/// RFC 3986 §3.1.
fn is_scheme(scheme: &str) -> bool {
    let mut bytes = scheme.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
}

/// Dot-separated non-empty labels of letters, digits, `-` and `_`, one trailing dot allowed.
fn is_origin_host(name: &str) -> bool {
    let labels = name.strip_suffix('.').unwrap_or(name);
    !labels.is_empty()
        && labels.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A pattern host lower-cased, or converted to punycode when written in Unicode.
fn pattern_host(name: &str) -> Result<String, &'static str> {
    let ascii = if name.is_ascii() {
        name.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(name).map_err(|_| "not an IDNA name")?
    };
    if is_origin_host(&ascii) {
        Ok(ascii)
    } else {
        Err("host characters")
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// An `Origin` value §2 can compare: `(scheme, host, explicit port)`.
fn want_origin(raw: &[u8]) -> Option<(&str, WantHost, Option<u16>)> {
    // §2 trims spaces and tabs; the code trims every ASCII whitespace byte, the same on the
    // wire (a header value carries no other control byte, and the handshake trims it so first).
    let text = std::str::from_utf8(raw.trim_ascii()).ok()?;
    if !text.is_ascii() {
        return None;
    }
    let (scheme, authority) = text.split_once("://")?;
    if !is_scheme(scheme) {
        return None;
    }
    let (host, port) = want_authority(authority).ok()?;
    let host = match host {
        AuthorityHost::Ipv6(addr) => WantHost::Ipv6(addr),
        AuthorityHost::Name(name) if is_origin_host(name) => {
            WantHost::Name(name.to_ascii_lowercase())
        }
        AuthorityHost::Name(_) => return None,
    };
    Some((scheme, host, port))
}

/// §2's verdict on `origin` under `patterns` (as `want_pattern` read them; `None` is `*`).
fn origin_oracle_allows(patterns: &[Option<WantPattern>], origin: Option<&[u8]>) -> bool {
    if patterns.iter().any(Option::is_none) {
        return true;
    }
    let Some((scheme, host, port)) = origin.and_then(want_origin) else {
        return false;
    };
    let effective_port = port.or_else(|| well_known_port(scheme));
    patterns.iter().flatten().any(|p| {
        p.scheme
            .as_ref()
            .is_none_or(|s| s.eq_ignore_ascii_case(scheme))
            && p.port.is_none_or(|want| want == effective_port)
            && match (&p.host, &host) {
                (WantHost::Name(want), WantHost::Name(name)) => want == name,
                (WantHost::Domain(domain), WantHost::Name(name)) => {
                    name == domain || name.ends_with(&format!(".{domain}"))
                }
                (WantHost::Ipv6(want), WantHost::Ipv6(addr)) => want == addr,
                _ => false,
            }
    })
}

/// The origin a pattern describes: its scheme (or `https`), its host (a subdomain for
/// `.domain`), its port if it names one.
fn derived_origin(p: &WantPattern) -> String {
    let scheme = p.scheme.as_deref().unwrap_or("https");
    let host = match &p.host {
        WantHost::Name(name) => name.clone(),
        WantHost::Domain(domain) => format!("www.{domain}"),
        WantHost::Ipv6(addr) => format!("[{addr}]"),
    };
    match p.port {
        Some(Some(port)) => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    }
}

// ---------------------------------------------------------------------------------------------
// connection

/// The Unix second at which a `connection` script starts (tokens in the seeds are dated from it).
pub const SCRIPT_START_UNIX: u64 = 1_700_000_000;

/// The clock never runs further than this (ms after the start, about 139 years): an `Instant`
/// that far ahead still exists.
const SCRIPT_MAX_MS: u64 = 1 << 42;

/// The mask of the frames the script builds (raw bytes may mask as they like).
const SCRIPT_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Runs a script against `Connection<Session>` as `runtime::conn` drives it; see
/// [`Script`] for the rules checked at each step. Layout: a settings byte (see
/// [`script_settings`]), then steps, each an op byte and its operands:
///
/// - `0x00..=0x3F`: feed the next `op` bytes as they came off the socket;
/// - `0x40..=0x7F` `lo`: feed the next `(op & 0x3F) << 8 | lo` bytes;
/// - `0x80..=0x9F` `b0` `len u16 LE`: feed one frame with first byte `b0` and a payload of
///   `len` bytes: the next `len` bytes (fewer if the input ends: the frame stays incomplete),
///   or with `op & 1` the next byte repeated `len` times; masked with [`SCRIPT_MASK`] unless
///   `op & 2`;
/// - `0xA0..=0xBF` `n`: feed an `authenticate` (`refresh` with `op & 1`) whose token is signed
///   here under [`JWT_SECRET`] over the next `n` bytes (as the `jwt` check's mode 2: claims, or
///   header 0x00 claims); with `op & 2` the text is sent in two fragments with a ping between;
/// - `0xC0..=0xDF` `x`: the clock moves on by `(x + 1) << (op & 0x1F)` ms, no timer firing;
/// - `0xE0..=0xFF` `x`: the timer fires, `x << (op & 0x0F)` ms after now, or with `op & 0x10`
///   after the deadline `poll_timeout` gave (or now, if later).
///
/// The script ends with the input, at an incomplete operand, or when the connection closes.
pub fn connection(data: &[u8]) {
    run_script(data);
}

/// Runs the script `data` (see [`connection`]); the connection as it ended, if the input had
/// its settings byte.
pub fn run_script(data: &[u8]) -> Option<Script> {
    let (&settings, mut rest) = data.split_first()?;
    let mut script = Script::new(settings);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op {
            0x00..=0x3F => {
                let (bytes, tail) = rest.split_at(rest.len().min(usize::from(op)));
                rest = tail;
                script.feed(bytes);
            }
            0x40..=0x7F => {
                let Some((&lo, tail)) = rest.split_first() else {
                    break;
                };
                let n = usize::from(op & 0x3F) << 8 | usize::from(lo);
                let (bytes, tail) = tail.split_at(tail.len().min(n));
                rest = tail;
                script.feed(bytes);
            }
            0x80..=0x9F => {
                let Some(([b0, lo, hi], tail)) = rest.split_first_chunk::<3>() else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes([*lo, *hi]));
                let payload = if op & 1 != 0 {
                    let Some((&byte, tail)) = tail.split_first() else {
                        break;
                    };
                    rest = tail;
                    vec![byte; len]
                } else {
                    let (payload, tail) = tail.split_at(tail.len().min(len));
                    rest = tail;
                    payload.to_vec()
                };
                let mask = (op & 2 == 0).then_some(SCRIPT_MASK);
                script.feed(&client_frame(*b0, len, &payload, mask));
            }
            0xA0..=0xBF => {
                let Some((&n, tail)) = rest.split_first() else {
                    break;
                };
                let (claims, tail) = tail.split_at(tail.len().min(usize::from(n)));
                rest = tail;
                let action = if op & 1 == 0 {
                    "authenticate"
                } else {
                    "refresh"
                };
                let token = String::from_utf8(sign_json(claims)).unwrap();
                let text = format!(r#"{{"action":"{action}","token":"{token}"}}"#);
                let mut bytes = Vec::new();
                if op & 2 == 0 {
                    bytes = client_frame(0x81, text.len(), text.as_bytes(), Some(SCRIPT_MASK));
                } else {
                    let (first, second) = text.as_bytes().split_at(text.len() / 2);
                    let mask = Some(SCRIPT_MASK);
                    bytes.extend(client_frame(0x01, first.len(), first, mask));
                    bytes.extend(client_frame(0x89, 1, b"p", mask));
                    bytes.extend(client_frame(0x80, second.len(), second, mask));
                }
                script.feed(&bytes);
            }
            0xC0..=0xDF => {
                let Some((&x, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                script.advance((u64::from(x) + 1) << (op & 0x1F));
            }
            0xE0..=0xFF => {
                let Some((&x, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                script.timer(op & 0x10 != 0, u64::from(x) << (op & 0x0F));
            }
        }
        if script.is_closed() {
            break;
        }
    }
    Some(script)
}

/// The settings of a script, by its first byte (32 variants, each built once): on top of
/// `--allowed-origins '*'` and the HS256 secret [`JWT_SECRET`], bit 0 lifts the token lifetime
/// bound (so that an `exp` up to 2^64 - 1 is accepted), bit 1 limits messages to 5 a second in
/// bursts of 2, bit 2 makes frames at most 512 bytes and messages 2048, and bits 3-4 pick the
/// timers: the defaults; short ones (auth 1 s, ping 2 s, keepalive 3 s) with 5 s of clock
/// leeway; a day of silence allowed (so that the token's expiry is what the timer waits for);
/// or extreme ones (auth 100 ms, ping 1 ms, keepalive 2 ms).
pub fn script_settings(variant: u8) -> &'static Settings {
    static SETTINGS: [OnceLock<Settings>; 32] = [const { OnceLock::new() }; 32];
    let variant = variant & 31;
    SETTINGS[usize::from(variant)].get_or_init(|| {
        let mut argv = vec!["wsgate", "--allowed-origins", "*"];
        if variant & 1 != 0 {
            argv.extend(["--max-token-lifetime-secs", "18446744073709551615"]);
        }
        if variant & 2 != 0 {
            argv.extend(["--max-messages-per-sec", "5", "--burst", "2"]);
        }
        if variant & 4 != 0 {
            argv.extend(["--max-frame-bytes", "512", "--max-message-bytes", "2048"]);
        }
        let (auth, ping, keepalive) = match variant >> 3 {
            0 => ("5000", "20000", "30000"),
            1 => ("1000", "2000", "3000"),
            2 => ("5000", "86400000", "86400001"),
            _ => ("100", "1", "2"),
        };
        argv.extend([
            "--auth-timeout-ms",
            auth,
            "--ping-interval-ms",
            ping,
            "--keepalive-timeout-ms",
            keepalive,
        ]);
        if variant >> 3 == 1 {
            argv.extend(["--jwt-leeway-secs", "5"]);
        }
        let env = Env {
            jwt_secret: Some(String::from_utf8(JWT_SECRET.to_vec()).unwrap()),
            ..Env::default()
        };
        Config::try_parse_from(argv)
            .unwrap()
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap()
    })
}

/// A client frame: first byte `b0`, announcing `len` payload bytes, then `payload` (which may
/// be shorter: an incomplete frame), masked with `mask` if given. Minimal length encoding.
fn client_frame(b0: u8, len: usize, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = vec![b0];
    if len < 126 {
        frame.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        frame.push(mask_bit | 126);
        frame.extend_from_slice(&short.to_be_bytes());
    } else {
        frame.push(mask_bit | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// A complete client frame as RFC 6455 §5.2 lays it out, its payload unmasked.
#[derive(Debug)]
struct ClientFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// The complete frames at the start of `bytes` and how many bytes they take; reading stops at
/// the first frame not complete (or whose length no buffer could hold).
fn client_frames(bytes: &[u8]) -> (Vec<ClientFrame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &bytes[at..];
        let [b0, b1, ..] = *rest else {
            break;
        };
        let (len, mut header) = match b1 & 0x7F {
            126 => match rest.get(2..4) {
                Some(n) => (u64::from(u16::from_be_bytes([n[0], n[1]])), 4),
                None => break,
            },
            127 => match rest.get(2..10) {
                Some(n) => (u64::from_be_bytes(n.try_into().unwrap()), 10),
                None => break,
            },
            n => (u64::from(n), 2),
        };
        let key = if b1 & 0x80 != 0 {
            let Some(key) = rest.get(header..header + 4) else {
                break;
            };
            header += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header))
        else {
            break;
        };
        let Some(payload) = rest.get(header..end) else {
            break;
        };
        let payload = match key {
            Some(key) => payload
                .iter()
                .zip(key.iter().cycle())
                .map(|(b, k)| b ^ k)
                .collect(),
            None => payload.to_vec(),
        };
        frames.push(ClientFrame {
            opcode: b0 & 0x0F,
            payload,
        });
        at += end;
    }
    (frames, at)
}

/// A frame the server sent, read by [`server_frames`].
#[derive(Debug)]
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
    /// A text frame's JSON.
    json: Option<Value>,
}

/// The close codes the server sends on its own account (docs/protocol.md §3 "Close codes").
const SERVER_CLOSE_CODES: [u16; 9] = [1001, 1002, 1007, 1008, 1009, 4401, 4403, 4408, 4429];

/// The codes a peer may send (RFC 6455 §7.4.1, §7.4.2 and the IANA registry: 1004-1006 and
/// 1015 are never sent, 1016-2999 are reserved, 3000-4999 are for libraries and applications),
/// which the server echoes.
fn is_sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads the server's output as RFC 6455 frames, independently of `proto::frame`: each is
/// unmasked, unfragmented (FIN), without RSV bits, with the minimal length encoding and a
/// known opcode that is not binary (§6); control payloads are at most 125 bytes, text is a
/// compact JSON object naming its `action` (§6), a Close carries nothing or a code and UTF-8.
/// Panics on the first violation; the output must end on a frame boundary.
fn server_frames(out: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let [b0, b1, ..] = *rest else {
            panic!("output ends inside a frame header: {rest:?}");
        };
        assert!(b0 & 0x80 != 0, "a server frame without FIN: {b0:#04x}");
        assert_eq!(b0 & 0x70, 0, "a server frame with RSV bits: {b0:#04x}");
        let opcode = b0 & 0x0F;
        assert!(
            matches!(opcode, 0x1 | 0x8 | 0x9 | 0xA),
            "server opcode {opcode:#x}"
        );
        assert_eq!(b1 & 0x80, 0, "a masked server frame");
        let (len, header) = match b1 & 0x7F {
            126 => {
                let n = rest.get(2..4).expect("16-bit length cut off");
                let n = u16::from_be_bytes([n[0], n[1]]);
                assert!(n >= 126, "16-bit length {n} is not minimal");
                (usize::from(n), 4)
            }
            127 => {
                let n = rest.get(2..10).expect("64-bit length cut off");
                let n = u64::from_be_bytes(n.try_into().unwrap());
                assert!(n > 0xFFFF && n >> 63 == 0, "64-bit length {n}");
                (usize::try_from(n).unwrap(), 10)
            }
            n => (usize::from(n), 2),
        };
        let payload = rest
            .get(header..header + len)
            .unwrap_or_else(|| panic!("a {len}-byte payload cut off at {}", rest.len()));
        if opcode >= 0x8 {
            assert!(len <= 125, "control frame of {len} bytes");
        }
        let mut json = None;
        match opcode {
            0x1 => {
                let text = std::str::from_utf8(payload).expect("server text is UTF-8");
                let value: Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("server text is not JSON ({e}): {text}"));
                assert!(is_compact_json(text), "server JSON with whitespace: {text}");
                let action = value.get("action").and_then(Value::as_str);
                assert!(
                    matches!(
                        action,
                        Some("authentication" | "error" | "joined" | "left" | "message")
                    ),
                    "server message {text}"
                );
                json = Some(value);
            }
            0x8 => {
                assert_ne!(len, 1, "a one-byte close payload");
                if let Some((code, reason)) = payload.split_first_chunk::<2>() {
                    let code = u16::from_be_bytes(*code);
                    assert!(
                        is_sendable_close_code(code),
                        "close code {code} on the wire"
                    );
                    assert!(
                        std::str::from_utf8(reason).is_ok(),
                        "close reason {reason:?}"
                    );
                }
            }
            _ => {}
        }
        frames.push(ServerFrame {
            opcode,
            payload: payload.to_vec(),
            json,
        });
        rest = &rest[header + len..];
    }
    frames
}

/// Whether JSON text has no whitespace between its tokens (outside its strings).
fn is_compact_json(text: &str) -> bool {
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if escaped {
            escaped = false;
        } else if in_string {
            escaped = b == b'\\';
            in_string = b != b'"';
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_whitespace() {
            return false;
        }
    }
    true
}

/// The `status_code` and `data` of an `authentication` message, if `frame` is one.
fn auth_message(frame: &ServerFrame) -> Option<(u64, &Value)> {
    let json = frame.json.as_ref()?;
    if json.get("action")?.as_str()? != "authentication" {
        return None;
    }
    let payload = json.get("payload")?;
    Some((payload.get("status_code")?.as_u64()?, payload.get("data")?))
}

/// The `Groups` of a script's connection: membership of at most [`SCRIPT_MAX_GROUPS`] groups,
/// and a `send` delivered back to the sender (the only member), after its queued replies.
#[derive(Default)]
struct ScriptGroups {
    joined: Vec<Arc<str>>,
}

const SCRIPT_MAX_GROUPS: usize = 4;

/// §4: 1 to 99 ASCII letters, digits, `-`, `_` or `.`.
fn is_group_name(name: &str) -> bool {
    (1..=99).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Groups for ScriptGroups {
    fn join(&mut self, group: &str) -> Join {
        assert!(is_group_name(group), "joined the invalid group {group:?}");
        if self.is_member(group) {
            Join::AlreadyMember
        } else if self.joined.len() >= SCRIPT_MAX_GROUPS {
            Join::TooManyGroups
        } else {
            self.joined.push(group.into());
            Join::Joined {
                first_on_core: true,
            }
        }
    }

    fn leave(&mut self, group: &str) {
        self.joined.retain(|g| &**g != group);
    }

    fn is_member(&self, group: &str) -> bool {
        self.joined.iter().any(|g| &**g == group)
    }

    fn joined(&self) -> Vec<Arc<str>> {
        self.joined.clone()
    }

    fn publish(&mut self, group: &str, data: RawJson<'_>, out: &mut Vec<u8>) {
        assert!(
            self.is_member(group),
            "published to {group:?} without joining"
        );
        assert!(!data.nests_deeper_than(MAX_DATA_DEPTH));
        frame::write_text_with(out, |o| envelope::write_message(o, group, data));
    }
}

/// One connection as the runtime drives it (`runtime::conn`: `Connection::new` after the 101
/// and `on_open`, `handle_frames` on each read with the bytes a previous read left, the timer
/// armed at `poll_timeout` and `handle_timeout` when it fires, a Close frame written once a
/// `CloseReason` comes back), on a clock the script moves. What every step checks:
///
/// - nothing panics, and the machine is never used after it returned a `CloseReason`;
/// - the output is whole, valid server frames ([`server_frames`]); reading yields only text
///   and pongs, one pong per ping read, with its payload; the timer yields only an empty ping
///   or, on expiry, the 401 message;
/// - `handle_frames` takes exactly the complete frames (read here, not by `proto::frame`),
///   leaves the rest untouched, and, before authentication, never leaves more than a frame
///   header and 16 KiB to hold;
/// - an authentication or refresh that succeeds is answered by the 200 message naming the
///   user; a 4401/4403 comes after the failed `authentication` message with the same detail; a
///   1008 before authentication comes with no message;
/// - every close code is one §3 lists (or the peer's own code, if a peer may send it), with a
///   reason that fits a Close frame;
/// - the timer: a timeout the docs call for (expiry at `exp`, 4408 at the auth timeout or the
///   keepalive timeout, one ping after the ping interval) happens when it fires, and nothing
///   else; before its deadline, it does nothing; `poll_timeout` is never later than what is
///   due next, never earlier than before unless a frame arrived (or time is up), and after a
///   firing that did nothing it is in the future (no busy loop), whatever the token's `exp`.
pub struct Script {
    settings: &'static Settings,
    conn: Connection<Session>,
    groups: ScriptGroups,
    /// The shared tables, empty as at start.
    tables: Tables,
    stats: CoreStats,
    bucket: Cell<TokenBucket>,
    t0: Instant,
    /// Now, in ms after `t0`.
    ms: u64,
    /// Bytes read but not consumed yet.
    pending: Vec<u8>,
    /// When the last frame arrived (ms after `t0`), and whether a ping went out since.
    last_rx: u64,
    pinged: bool,
    /// The last `poll_timeout`, in ms after `t0`.
    deadline: u128,
    closed: Option<CloseReason>,
}

impl Script {
    /// A connection just upgraded (no credential on the upgrade) with settings `variant`.
    pub fn new(variant: u8) -> Self {
        let settings = script_settings(variant);
        let t0 = Instant::now();
        let mut session = Session::new();
        let upgrade = handshake::Upgrade {
            key: b"dGhlIHNhbXBsZSBub25jZQ==",
            origin: None,
            offers_v1: true,
            bearer_protocol: None,
            authorization: None,
            query: None,
        };
        let mut out = Vec::new();
        let tables = Tables::new(&settings.tables);
        let verdict = session.on_open(&upgrade, settings, &tables, SCRIPT_START_UNIX, &mut out);
        assert_eq!(verdict, Verdict::Continue, "first-frame auth is on");
        assert!(out.is_empty());
        let mut script = Self {
            settings,
            conn: Connection::new(session, settings, t0),
            groups: ScriptGroups::default(),
            tables,
            stats: CoreStats::default(),
            bucket: Cell::new(TokenBucket::new(settings.rate.burst, 0)),
            t0,
            ms: 0,
            pending: Vec::new(),
            last_rx: 0,
            pinged: false,
            deadline: 0,
            closed: None,
        };
        script.deadline = script.poll();
        script
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// How the connection ended, if it did.
    pub fn closed_with(&self) -> Option<CloseReason> {
        self.closed
    }

    /// Whether the client has authenticated.
    pub fn is_authenticated(&mut self) -> bool {
        self.session().is_authenticated()
    }

    fn now(&self) -> (Instant, u64) {
        (
            self.t0 + Duration::from_millis(self.ms),
            SCRIPT_START_UNIX + self.ms / 1000,
        )
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(SCRIPT_START_UNIX * 1000 + self.ms)
    }

    fn poll(&self) -> u128 {
        let (now, _) = self.now();
        let due = self.conn.poll_timeout(self.settings, now, self.wall());
        due.checked_duration_since(self.t0)
            .expect("a deadline before the connection opened")
            .as_millis()
    }

    fn session(&mut self) -> &mut Session {
        self.conn.handler_mut()
    }

    /// Time passes without the timer firing.
    pub fn advance(&mut self, ms: u64) {
        assert!(self.closed.is_none());
        self.ms = self.ms.saturating_add(ms).min(SCRIPT_MAX_MS);
        self.after_step(false);
    }

    /// A read of `bytes`, handled with what earlier reads left.
    pub fn feed(&mut self, bytes: &[u8]) {
        assert!(self.closed.is_none(), "fed after a close");
        self.pending.extend_from_slice(bytes);
        let read = self.pending.clone();
        let awaiting = !self.session().is_authenticated();
        let mut out = Vec::new();
        let now = self.now();
        let core = Core {
            tables: &self.tables,
            groups: &mut self.groups,
            bucket: &self.bucket,
            stats: &self.stats,
            epoch: self.t0,
        };
        let result = self
            .conn
            .handle_frames(&mut self.pending, self.settings, now, core, &mut out);
        let (frames, complete) = client_frames(&read);
        let sent = server_frames(&out);
        let pings: Vec<&[u8]> = frames
            .iter()
            .filter(|f| f.opcode == 0x9)
            .map(|f| &f.payload[..])
            .collect();
        let pongs: Vec<&[u8]> = sent
            .iter()
            .filter(|f| f.opcode == 0xA)
            .map(|f| &f.payload[..])
            .collect();
        for frame in &sent {
            assert!(
                matches!(frame.opcode, 0x1 | 0xA),
                "reading wrote opcode {:#x}",
                frame.opcode
            );
        }
        // The effects the runtime would carry out: only a new identity can follow a read.
        let identity_changed = match self.conn.poll_effect() {
            Some(Effect::Identity { .. }) => true,
            Some(effect) => panic!("a read asked for {effect:?}"),
            None => false,
        };
        if identity_changed {
            // A token just accepted has not expired (its exp plus the leeway is ahead).
            let exp = self.session().expires_at().unwrap();
            assert!(
                exp > now.1,
                "accepted a token expiring at {exp}, now {}",
                now.1
            );
            // §3: the 200 message answers an authentication and a refresh alike.
            let user = self.session().identity().unwrap().user.as_str().to_owned();
            assert!(
                sent.iter()
                    .any(|f| auth_message(f).is_some_and(|(status, data)| {
                        status == 200 && data.get("user").and_then(Value::as_str) == Some(&user)
                    })),
                "(re)authenticated as {user:?} without the 200 message"
            );
        } else {
            assert!(
                awaiting || self.session().is_authenticated(),
                "lost the authentication without a close"
            );
        }
        match result {
            Ok(used) => {
                assert_eq!(
                    used,
                    complete,
                    "consumed {used} of {} bytes whose complete frames take {complete}",
                    read.len()
                );
                assert_eq!(
                    self.pending[used..],
                    read[used..],
                    "changed bytes it did not consume"
                );
                assert_eq!(pongs, pings, "pongs for the pings read");
                self.pending.drain(..used);
                if used > 0 {
                    self.last_rx = self.ms;
                    self.pinged = false;
                }
                if !self.session().is_authenticated() {
                    assert!(
                        self.pending.len() < frame::MAX_HEADER_LEN + MAX_PRE_AUTH_MESSAGE,
                        "holding {} bytes before authentication",
                        self.pending.len()
                    );
                }
                self.after_step(used > 0);
            }
            Err(why) => {
                assert!(
                    pings.starts_with(&pongs),
                    "pongs {pongs:?} for the pings {pings:?}"
                );
                match why {
                    CloseReason::Protocol(_) | CloseReason::PeerClosed(_) => {}
                    CloseReason::RateLimited => {
                        assert!(self.settings.rate.messages_per_sec > 0, "{why:?}");
                    }
                    CloseReason::Refused(code, reason) => {
                        let failure = sent.last().and_then(auth_message);
                        match code.0 {
                            1008 => {
                                assert!(awaiting, "1008 after authentication");
                                assert!(sent.iter().all(|f| f.opcode != 0x1), "1008 with text");
                            }
                            4401 | 4403 => {
                                let (status, data) = failure.unwrap_or_else(|| {
                                    panic!("{code:?} without the authentication message")
                                });
                                assert_eq!(status, u64::from(code.0 - 4000), "{why:?}");
                                assert_eq!(
                                    data.get("detail").and_then(Value::as_str),
                                    Some(reason),
                                    "{why:?}"
                                );
                                if code.0 == 4403 {
                                    assert!(!awaiting, "4403 before authentication");
                                }
                            }
                            _ => panic!("refused with {why:?}"),
                        }
                    }
                    _ => panic!("reading ended with {why:?}"),
                }
                self.close(why);
            }
        }
    }

    /// The timer fires: `late` ms after now, or after the deadline if `at_deadline` (and that
    /// is later than now).
    pub fn timer(&mut self, at_deadline: bool, late: u64) {
        assert!(self.closed.is_none(), "timer after a close");
        if at_deadline {
            self.ms = self
                .ms
                .max(u64::try_from(self.deadline).unwrap_or(u64::MAX));
        }
        self.ms = self.ms.saturating_add(late).min(SCRIPT_MAX_MS);
        let early = u128::from(self.ms) < self.deadline;
        let now = self.now();
        let mut out = Vec::new();
        let why = self
            .conn
            .handle_timeout(self.settings, now, &self.stats, &mut out);
        let sent = server_frames(&out);
        let t = &self.settings.timeouts;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap();
        let unix = now.1;
        let awaiting = !self.session().is_authenticated();
        let expired = self.session().expires_at().is_some_and(|exp| exp <= unix);
        let auth_due = awaiting && self.ms >= ms(t.auth);
        let keepalive_due = self.ms >= self.last_rx.saturating_add(ms(t.keepalive));
        let ping_due = !self.pinged && self.ms >= self.last_rx.saturating_add(ms(t.ping_after));
        let at = format!(
            "at {} ms (deadline {}, last frame {}, pinged {})",
            self.ms, self.deadline, self.last_rx, self.pinged
        );
        if early {
            assert!(
                why.is_none() && out.is_empty(),
                "{why:?} {out:?} before the deadline, {at}"
            );
        }
        match why {
            Some(CloseReason::TokenExpired) => {
                assert!(expired, "expired early, {at}");
                let [message] = &sent[..] else {
                    panic!("expiry wrote {sent:?}");
                };
                let (status, data) = auth_message(message).expect("the 401 message");
                assert_eq!(status, 401);
                assert_eq!(data.get("detail"), Some(&Value::from("token expired")));
            }
            Some(CloseReason::AuthTimeout) => {
                assert!(auth_due, "auth timeout early, {at}");
                assert!(out.is_empty());
            }
            Some(CloseReason::KeepaliveTimeout) => {
                assert!(keepalive_due, "keepalive timeout early, {at}");
                assert!(out.is_empty());
            }
            Some(other) => panic!("the timer closed with {other:?}"),
            None => {
                assert!(
                    !expired && !auth_due && !keepalive_due,
                    "no close when one was due (expired {expired}, auth {auth_due}, \
                     keepalive {keepalive_due}), {at}"
                );
                if ping_due {
                    let [ping] = &sent[..] else {
                        panic!("no ping when one was due, {at}: {sent:?}");
                    };
                    assert_eq!((ping.opcode, &ping.payload[..]), (0x9, &b""[..]));
                    self.pinged = true;
                } else {
                    assert!(out.is_empty(), "wrote {sent:?} with nothing due, {at}");
                }
            }
        }
        match why {
            Some(why) => self.close(why),
            None => {
                self.after_step(false);
                if out.is_empty() {
                    assert!(
                        self.deadline > u128::from(self.ms),
                        "a timer that did nothing is due again at once, {at}"
                    );
                }
            }
        }
    }

    /// After a step that did not close: the new deadline against the old one and what is due.
    fn after_step(&mut self, frames_arrived: bool) {
        let deadline = self.poll();
        if !frames_arrived {
            assert!(
                deadline >= self.deadline,
                "the deadline moved back from {} to {deadline} ms at {} ms",
                self.deadline,
                self.ms
            );
        }
        let t = &self.settings.timeouts;
        let last_rx = u128::from(self.last_rx);
        let mut due = last_rx + t.keepalive.as_millis();
        if !self.pinged {
            due = due.min(last_rx + t.ping_after.as_millis());
        }
        if !self.session().is_authenticated() {
            due = due.min(t.auth.as_millis());
        }
        if let Some(exp) = self.session().expires_at() {
            // The ms after t0 at which the wall clock reaches `exp`.
            let exp_ms =
                (u128::from(exp) * 1000).saturating_sub(u128::from(SCRIPT_START_UNIX) * 1000);
            due = due.min(exp_ms.max(u128::from(self.ms)));
        }
        assert!(
            deadline <= due.max(u128::from(self.ms)),
            "deadline {deadline} ms after {due} ms, when something is due (now {} ms)",
            self.ms
        );
        self.deadline = deadline;
    }

    /// The connection ends with `why`: its code and reason are checked, and the Close frame
    /// the runtime then writes is read back.
    fn close(&mut self, why: CloseReason) {
        match (why, why.code()) {
            (CloseReason::PeerClosed(code), got) => {
                assert_eq!(got, code);
                if let Some(code) = code {
                    assert!(is_sendable_close_code(code.0), "echoed {code:?}");
                }
            }
            (_, Some(code)) => assert!(SERVER_CLOSE_CODES.contains(&code.0), "{why:?}: {code:?}"),
            (_, None) => panic!("{why:?} has no close code"),
        }
        let reason = why.reason();
        assert!(
            reason.len() <= frame::MAX_CLOSE_REASON,
            "{why:?}: {reason:?}"
        );
        let mut close = Vec::new();
        match why.code() {
            Some(code) => frame::write_close(&mut close, code, reason),
            None => frame::write_frame(&mut close, OpCode::Close, b""),
        }
        let [sent] = &server_frames(&close)[..] else {
            panic!("close {close:?}");
        };
        let mut want = why
            .code()
            .map_or(Vec::new(), |c| c.0.to_be_bytes().to_vec());
        want.extend_from_slice(reason.as_bytes());
        assert_eq!((sent.opcode, &sent.payload), (0x8, &want), "{why:?}");
        self.closed = Some(why);
    }
}
