//! The HTTP control API on the WebSocket port (docs/protocol.md §5): routing, body framing, the API
//! key, the `POST /api/publish` body, and responses with JSON error bodies. Pure; uses
//! `proto::http`, `auth::groups`, `envelope`. Per request the runtime calls `route` →
//! `expected_body` → `authorize` (publish) → reads that many bytes → `parse_publish` → writes the
//! response, keeping the connection only once the body is consumed (read, or declared empty).
//! `/ws-auth` is answered from the head (the runtime issues the ticket); `/api/revoke` parses
//! its body here and the runtime carries the revocation to every worker.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::auth::groups::is_valid_group_name;
use crate::envelope::{self, RawJson, write_json_str};
use crate::metrics;
use crate::proto::http;

/// Path of the publish endpoint.
pub const PUBLISH_PATH: &str = "/api/publish";
/// Path of the liveness endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Ticket endpoint (docs/protocol.md §3, method 2).
pub const WS_AUTH_PATH: &str = "/ws-auth";
/// Revocation endpoint (docs/protocol.md §5).
pub const REVOKE_PATH: &str = "/api/revoke";
/// Path of the Prometheus scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// `Content-Type` of every JSON response.
pub const JSON: &str = "application/json";
/// `Content-Type` of the `/healthz` response.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// An API route the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/publish`: broadcast `data` to a group (needs the API key).
    Publish,
    /// `GET /healthz`: liveness, `200 ok`.
    Healthz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `POST /ws-auth`: a ticket for the bearer JWT (no body needed).
    WsAuth,
    /// `POST /api/revoke`: close and refuse a user's or a jti's tokens (needs the API key).
    Revoke,
}

impl Endpoint {
    /// The one method this endpoint accepts (also the `Allow` value of its 405).
    pub fn method(self) -> &'static str {
        match self {
            Self::Publish | Self::WsAuth | Self::Revoke => "POST",
            Self::Healthz | Self::Metrics => "GET",
        }
    }

    /// Whether requests to this endpoint carry a body (and so need a `Content-Length`).
    pub fn takes_body(self) -> bool {
        matches!(self, Self::Publish | Self::Revoke)
    }
}

/// Why an API request was refused; each variant knows its status and its JSON `error` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No API route at this path (404).
    #[error("not found")]
    NotFound,
    /// A known path with another method (405); carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// Missing, repeated, non-Bearer or wrong API key (401, with `WWW-Authenticate: Bearer`).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The server has no API key configured, so publishing is off (403).
    #[error("publishing is disabled: no API key configured")]
    ApiDisabled,
    /// A body-carrying request without `Content-Length` (411).
    #[error("Content-Length required")]
    LengthRequired,
    /// Any `Transfer-Encoding` (411): wsgate reads only `Content-Length`-delimited bodies.
    #[error("Transfer-Encoding is not supported; send Content-Length")]
    TransferEncoding,
    /// `Content-Length` that is not a plain decimal number, or more than one of them (400).
    #[error("invalid Content-Length")]
    BadContentLength,
    /// `Content-Length` over the configured body limit, or any body on a GET endpoint (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// A `Content-Type` other than `application/json` on a JSON endpoint (415).
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is not the JSON the endpoint expects (400); the text says what is wrong.
    #[error("{0}")]
    BadJson(&'static str),
    /// `group` is a string but not a valid group name (400).
    #[error("invalid group name")]
    BadGroup,
    /// `POST /ws-auth` without a usable bearer JWT (401, or 403 for a valid token that is not
    /// allowed); the text is the token's problem, never the token.
    #[error("{1}")]
    Token(u16, &'static str),
    /// A bounded table is full (tickets, revocations): 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The caller's own share is used up (its outstanding tickets): 429 with `Retry-After`.
    #[error("{0}")]
    TooManyRequests(&'static str),
}

impl ApiError {
    /// The HTTP status of the error response.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Unauthorized => 401,
            Self::ApiDisabled => 403,
            Self::LengthRequired | Self::TransferEncoding => 411,
            Self::BadContentLength | Self::BadJson(_) | Self::BadGroup => 400,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Token(status, _) => *status,
            Self::Unavailable(_) => 503,
            Self::TooManyRequests(_) => 429,
        }
    }

    /// The text of the JSON body's `error` member; never contains request data or a key.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::MethodNotAllowed(_) => "method not allowed",
            Self::Unauthorized => "missing or invalid API key",
            Self::ApiDisabled => "publishing is disabled: no API key configured",
            Self::LengthRequired => "Content-Length required",
            Self::TransferEncoding => "Transfer-Encoding is not supported; send Content-Length",
            Self::BadContentLength => "invalid Content-Length",
            Self::BodyTooLarge => "request body too large",
            Self::UnsupportedMediaType => "Content-Type must be application/json",
            Self::BadJson(detail) => detail,
            Self::BadGroup => "invalid group name",
            Self::Token(_, detail) | Self::Unavailable(detail) | Self::TooManyRequests(detail) => {
                detail
            }
        }
    }

    /// The header this status requires: `Allow` on 405 (RFC 9110 §15.5.6), `WWW-Authenticate`
    /// on 401 (RFC 9110 §15.5.2, scheme from RFC 6750).
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::MethodNotAllowed(allow) => Some(("Allow", *allow)),
            Self::Unauthorized | Self::Token(401, _) => Some(("WWW-Authenticate", "Bearer")),
            Self::Unavailable(_) | Self::TooManyRequests(_) => Some(("Retry-After", "1")),
            _ => None,
        }
    }

    /// Whether the connection must close after this response whatever the client asked.
    ///
    /// True for the body-framing errors: the body's end is unknown or the body is too large to
    /// skip, so the next request could not be found reliably (RFC 9112 §6.3 asks a server to
    /// close after refusing such framing; it is also the request-smuggling defence).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::LengthRequired
                | Self::TransferEncoding
                | Self::BadContentLength
                | Self::BodyTooLarge
        )
    }
}

/// Maps a method and a path (the target without its query, see `proto::http::split_target`) to
/// an endpoint.
///
/// Paths match exactly (`/healthz/` is 404) and methods case-sensitively (RFC 9110 §9.1), so
/// `get` on a known path is 405. An unknown path is 404 whatever the method. `HEAD` is not
/// served (405 with `Allow: GET`). The WebSocket path is the runtime's business, not this one's.
pub fn route(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    let endpoint = match path {
        PUBLISH_PATH => Endpoint::Publish,
        REVOKE_PATH => Endpoint::Revoke,
        WS_AUTH_PATH => Endpoint::WsAuth,
        HEALTHZ_PATH => Endpoint::Healthz,
        METRICS_PATH => Endpoint::Metrics,
        _ => return Err(ApiError::NotFound),
    };
    if method == endpoint.method() {
        Ok(endpoint)
    } else {
        Err(ApiError::MethodNotAllowed(endpoint.method()))
    }
}

/// The length of the body a request declares, decided from the head before reading any of it.
///
/// - any `Transfer-Encoding` → `TransferEncoding` (411), even alongside a `Content-Length`:
///   wsgate decodes no transfer coding, and 411 tells the client what to send instead (RFC 9112
///   §6.3 lets a server refuse a body without `Content-Length` with 411; 501 would read as
///   "endpoint not implemented");
/// - no `Content-Length` → `LengthRequired` (411);
/// - more than one `Content-Length`, even with equal values, or a value that is not 1*DIGIT
///   (after trimming spaces and tabs) → `BadContentLength` (400);
/// - a value over `max` (a number too big for `u64` included) → `BodyTooLarge` (413).
pub fn body_length(headers: &[httparse::Header<'_>], max: usize) -> Result<usize, ApiError> {
    if headers.iter().any(|h| is(h, "transfer-encoding")) {
        return Err(ApiError::TransferEncoding);
    }
    let mut lengths = headers.iter().filter(|h| is(h, "content-length"));
    let value = lengths.next().ok_or(ApiError::LengthRequired)?.value;
    if lengths.next().is_some() {
        return Err(ApiError::BadContentLength);
    }
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ApiError::BadContentLength);
    }
    let length = digits.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    usize::try_from(length)
        .ok()
        .filter(|&len| len <= max)
        .ok_or(ApiError::BodyTooLarge)
}

/// The body length to read for `endpoint`: `body_length` (and a JSON `Content-Type`) for
/// publish; for the GET endpoints 0, refusing any non-empty body.
///
/// Framing is checked before the media type, so that a 415 always has a known body length. A
/// GET that declares a body gets 413 (its limit is 0) or the framing error, and the connection
/// closes; `Content-Length: 0` on a GET is accepted.
pub fn expected_body(
    endpoint: Endpoint,
    headers: &[httparse::Header<'_>],
    max: usize,
) -> Result<usize, ApiError> {
    if endpoint == Endpoint::WsAuth {
        // Browsers' fetch sends `Content-Length: 0`, curl -X POST none; a body is ignored.
        let framed = headers
            .iter()
            .any(|h| is(h, "content-length") || is(h, "transfer-encoding"));
        return if framed {
            body_length(headers, max)
        } else {
            Ok(0)
        };
    }
    if !endpoint.takes_body() {
        let framed = headers
            .iter()
            .any(|h| is(h, "content-length") || is(h, "transfer-encoding"));
        return if framed {
            body_length(headers, 0)
        } else {
            Ok(0)
        };
    }
    let length = body_length(headers, max)?;
    check_content_type(headers)?;
    Ok(length)
}

/// Accepts a missing `Content-Type` or exactly one whose media type is `application/json`
/// (ASCII case-insensitive, parameters such as `charset` ignored); anything else is 415.
///
/// A missing one is accepted because the body is parsed as JSON regardless; `curl -d` sends
/// `application/x-www-form-urlencoded`, which is refused so the mistake shows (use `--json`).
pub fn check_content_type(headers: &[httparse::Header<'_>]) -> Result<(), ApiError> {
    let mut types = headers.iter().filter(|h| is(h, "content-type"));
    let Some(first) = types.next() else {
        return Ok(());
    };
    let media_type = first.value.split(|&b| b == b';').next().unwrap_or_default();
    if types.next().is_none()
        && media_type
            .trim_ascii()
            .eq_ignore_ascii_case(JSON.as_bytes())
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Whether the client wants the connection kept open after this request (RFC 9112 §9.3).
///
/// HTTP/1.1 (`version` 1) is persistent unless a `Connection` header lists `close`; HTTP/1.0
/// only when one lists `keep-alive`. Tokens compare ASCII case-insensitively, across every
/// `Connection` header.
pub fn wants_keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let has_token = |token: &str| {
        headers.iter().filter(|h| is(h, "connection")).any(|h| {
            h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    !has_token("close") && (version >= 1 || has_token("keep-alive"))
}

/// The value of the header `name` (ASCII case-insensitive) when it occurs exactly once.
///
/// `None` when it is absent or repeated: a repeated `Authorization` is refused, not guessed at.
pub fn single_header<'b>(headers: &[httparse::Header<'b>], name: &str) -> Option<&'b [u8]> {
    let mut found = headers.iter().filter(|h| is(h, name));
    let first = found.next()?;
    found.next().is_none().then_some(first.value)
}

fn is(header: &httparse::Header<'_>, name: &str) -> bool {
    header.name.eq_ignore_ascii_case(name)
}

/// The API keys that may publish; `Debug` shows only how many there are.
///
/// Only SHA-256 digests of the keys are kept. `check` hashes the presented key and compares the
/// 32-byte digests in constant time, so neither a key's bytes nor its length leak through timing.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Builds the set from key strings; empty keys are dropped, so a bare `Bearer` never matches.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let digests = keys
            .into_iter()
            .filter(|key| !key.as_ref().is_empty())
            .map(|key| Sha256::digest(key.as_ref()).into())
            .collect();
        Self { digests }
    }

    /// Builds the set from a key file or variable: one key per line, surrounding whitespace
    /// trimmed, blank lines and lines starting with `#` skipped.
    pub fn from_lines(text: &str) -> Self {
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#')),
        )
    }

    /// Whether no key is configured (publishing is then refused with `ApiDisabled`).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether `authorization` (the header value) is `Bearer <key>` for a configured key.
    ///
    /// The scheme is ASCII case-insensitive (RFC 9110 §11.1), followed by one or more spaces;
    /// trailing spaces and tabs are ignored. A missing header, another scheme, or an empty key is
    /// `false`. Every configured key is compared, with no early exit, so the time taken does not
    /// depend on which key matched.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some(key) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(key).into();
        let matched = self.digests.iter().fold(Choice::from(0), |acc, digest| {
            acc | digest.ct_eq(&presented)
        });
        bool::from(matched)
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.digests.len())
            .finish_non_exhaustive()
    }
}

/// The credentials of `Authorization: Bearer <credentials>`, if non-empty.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    let scheme = value.get(..SCHEME.len())?;
    let rest = value.get(SCHEME.len()..)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    let token = token
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .and_then(|last| token.get(..=last))?;
    Some(token)
}

/// Checks the API key of a publish request: `ApiDisabled` (403) when no key is configured,
/// `Unauthorized` (401) unless exactly one `Authorization` header carries a configured key.
pub fn authorize(keys: &ApiKeys, headers: &[httparse::Header<'_>]) -> Result<(), ApiError> {
    if keys.is_empty() {
        return Err(ApiError::ApiDisabled);
    }
    if keys.check(single_header(headers, "authorization")) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// A parsed `POST /api/publish` body, borrowed from the request body.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The target group: a valid group name (borrowed unless it was written with escapes).
    pub group: Cow<'a, str>,
    /// The payload exactly as the publisher wrote it (`null` included), forwarded byte for byte.
    pub data: &'a RawValue,
}

/// Parses `{"group": "...", "data": <any JSON>}`, members in any order.
///
/// Refused with 400, in this order: a body that is not UTF-8 or not JSON (a repeated member
/// counts as bad JSON), JSON that is not an object, any member other than `group` and `data`
/// (so a typo such as `"grop"` cannot silently change the meaning), a missing `group` or one
/// that is not a string, a missing `data`; then `BadGroup` for a string that is not a valid
/// group name (docs/protocol.md §4). Nothing is allocated unless `group` contains escapes.
pub fn parse_publish(body: &[u8]) -> Result<Publish<'_>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadJson("body is not UTF-8"))?;
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => ApiError::BadJson("body must be a JSON object"),
            Err(_) => ApiError::BadJson("invalid JSON"),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de
        .deserialize_map(PublishVisitor)
        .and_then(|members| de.end().map(|()| members))
        .map_err(|_| ApiError::BadJson("invalid JSON"))?;
    if let Some(problem) = members.problem {
        return Err(ApiError::BadJson(problem));
    }
    let group = match members.group {
        None => return Err(ApiError::BadJson("missing group")),
        Some(raw) if !raw.get().starts_with('"') => {
            return Err(ApiError::BadJson("group must be a string"));
        }
        Some(raw) => {
            serde_json::from_str::<JsonStr<'_>>(raw.get())
                .map_err(|_| ApiError::BadJson("group must be a string"))?
                .0
        }
    };
    let data = members.data.ok_or(ApiError::BadJson("missing data"))?;
    if !is_valid_group_name(&group) {
        return Err(ApiError::BadGroup);
    }
    if RawJson::from(data).nests_deeper_than(envelope::MAX_DATA_DEPTH) {
        return Err(ApiError::BadJson("data nested too deeply"));
    }
    Ok(Publish { group, data })
}

/// A parsed `POST /api/revoke` body: exactly one of `user` and `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget<'a> {
    /// Every token of this user issued up to now (a JSON string, or an integer written as its
    /// decimal text, as the tokens carry it).
    User(Cow<'a, str>),
    /// The token with this `jti`.
    Jti(Cow<'a, str>),
}

/// Parses `{"user": "42"}` (or `{"user": 42}`) or `{"jti": "..."}`; anything else is a 400
/// saying what is wrong (no other member, not both, non-empty strings).
pub fn parse_revoke<'a>(body: &'a [u8]) -> Result<RevokeTarget<'a>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow, default)]
        user: Option<&'a RawValue>,
        #[serde(borrow, default)]
        jti: Option<&'a RawValue>,
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadJson("body is not UTF-8"))?;
    let parsed: Body<'_> = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("unknown field") {
            ApiError::BadJson("unknown field: only user or jti is allowed")
        } else {
            ApiError::BadJson("body must be a JSON object with user or jti")
        }
    })?;
    let string = |raw: &'a RawValue, what: &'static str| -> Result<Cow<'a, str>, ApiError> {
        let value = raw.get();
        let text = if value.starts_with('"') {
            serde_json::from_str::<JsonStr<'a>>(value)
                .map_err(|_| ApiError::BadJson(what))?
                .0
        } else if what == "user must be a string or an integer"
            && value.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && value.parse::<i64>().is_ok()
        {
            Cow::Borrowed(value)
        } else {
            return Err(ApiError::BadJson(what));
        };
        if text.is_empty() {
            return Err(ApiError::BadJson(what));
        }
        Ok(text)
    };
    match (parsed.user, parsed.jti) {
        (Some(user), None) => Ok(RevokeTarget::User(string(
            user,
            "user must be a string or an integer",
        )?)),
        (None, Some(jti)) => Ok(RevokeTarget::Jti(string(jti, "jti must be a string")?)),
        (Some(_), Some(_)) => Err(ApiError::BadJson("give user or jti, not both")),
        (None, None) => Err(ApiError::BadJson("missing user or jti")),
    }
}

/// The members of a publish body as raw JSON, and the first structural problem seen.
#[derive(Default)]
struct PublishMembers<'a> {
    group: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    problem: Option<&'static str>,
}

/// A JSON string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Walks the whole object (so syntax errors win over member errors) and records the members.
struct PublishVisitor;

impl<'de> Visitor<'de> for PublishVisitor {
    type Value = PublishMembers<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with group and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = PublishMembers::default();
        while let Some(JsonStr(key)) = map.next_key::<JsonStr<'de>>()? {
            let value = map.next_value::<&'de RawValue>()?;
            let slot = match key.as_ref() {
                "group" => &mut members.group,
                "data" => &mut members.data,
                _ => {
                    members
                        .problem
                        .get_or_insert("unknown field: only group and data are allowed");
                    continue;
                }
            };
            if slot.replace(value).is_some() {
                return Err(serde::de::Error::custom("repeated member"));
            }
        }
        Ok(members)
    }
}

/// Appends a whole HTTP/1.1 response: status line, `Content-Type`, `extra_headers`,
/// `Content-Length`, `Connection`, then `body`.
///
/// `Connection: keep-alive` when `keep_alive` (explicit, so HTTP/1.0 clients keep it too),
/// otherwise `Connection: close` and the caller closes after writing. CR and LF are dropped
/// from header names and values, so no value can split the response.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    out.reserve(128 + body.len());
    http::write_status_line(out, status);
    http::write_header(out, "Content-Type", content_type);
    for (name, value) in extra_headers {
        http::write_header(out, name, value);
    }
    http::end_head(out, body.len(), keep_alive);
    out.extend_from_slice(body);
}

/// Appends a response whose body is JSON (`Content-Type: application/json`).
pub fn write_json_response(
    out: &mut Vec<u8>,
    status: u16,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    write_response(out, status, JSON, extra_headers, body, keep_alive);
}

/// Appends the error response: its status, its required header, `{"error":"<detail>"}`.
///
/// `keep_alive` is overridden to `false` when `err.closes_connection()`.
pub fn write_error(out: &mut Vec<u8>, err: &ApiError, keep_alive: bool) {
    let mut body = Vec::with_capacity(16 + err.detail().len());
    body.extend_from_slice(br#"{"error":"#);
    write_json_str(&mut body, err.detail());
    body.push(b'}');
    let header = err.header();
    let headers = header.as_slice();
    let keep_alive = keep_alive && !err.closes_connection();
    write_json_response(out, err.status(), headers, &body, keep_alive);
}

/// Appends the publish success response, `202 {"ok":true}` (docs/protocol.md §5).
pub fn write_accepted(out: &mut Vec<u8>, keep_alive: bool) {
    write_json_response(out, 202, &[], br#"{"ok":true}"#, keep_alive);
}

/// Appends the ticket response, `201 {"ticket":"...","expires_in":N}` (docs/protocol.md §3).
pub fn write_ticket(out: &mut Vec<u8>, ticket: &str, expires_in: u64, keep_alive: bool) {
    let mut body = Vec::with_capacity(64 + ticket.len());
    body.extend_from_slice(br#"{"ticket":"#);
    write_json_str(&mut body, ticket);
    body.extend_from_slice(br#","expires_in":"#);
    body.extend_from_slice(expires_in.to_string().as_bytes());
    body.push(b'}');
    // The ticket is a credential: no cache may keep the answer.
    write_json_response(
        out,
        201,
        &[("Cache-Control", "no-store")],
        &body,
        keep_alive,
    );
}

/// Appends the revocation response, `200 {"ok":true,"closed":N}`.
pub fn write_revoked(out: &mut Vec<u8>, closed: usize, keep_alive: bool) {
    let body = format!(r#"{{"ok":true,"closed":{closed}}}"#);
    write_json_response(out, 200, &[], body.as_bytes(), keep_alive);
}

/// Appends the `/healthz` response as `text/plain`: `200 ok` while every worker answers its
/// liveness probes, else `503` naming the workers that do not.
pub fn write_healthz(out: &mut Vec<u8>, unresponsive: &[usize], keep_alive: bool) {
    if unresponsive.is_empty() {
        return write_response(out, 200, TEXT, &[], b"ok", keep_alive);
    }
    // A worker that does not answer (stuck, or dead after a panic) serves no share of the
    // port: the gateway is not healthy, whichever worker answers this.
    let mut body = b"workers not responding:".to_vec();
    for worker in unresponsive {
        body.push(b' ');
        body.extend_from_slice(worker.to_string().as_bytes());
    }
    write_response(out, 503, TEXT, &[], &body, keep_alive);
}

/// Appends the `/metrics` response: `200` with `text` from `metrics::render`.
pub fn write_metrics(out: &mut Vec<u8>, text: &str, keep_alive: bool) {
    write_response(
        out,
        200,
        metrics::CONTENT_TYPE,
        &[],
        text.as_bytes(),
        keep_alive,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    /// An error, its status, whether it closes the connection, and its required header.
    type Expected = (ApiError, u16, bool, Option<(&'static str, &'static str)>);

    /// Every variant with what it must mean on the wire.
    const ALL: [Expected; 12] = [
        (ApiError::NotFound, 404, false, None),
        (
            ApiError::MethodNotAllowed("GET"),
            405,
            false,
            Some(("Allow", "GET")),
        ),
        (
            ApiError::MethodNotAllowed("POST"),
            405,
            false,
            Some(("Allow", "POST")),
        ),
        (
            ApiError::Unauthorized,
            401,
            false,
            Some(("WWW-Authenticate", "Bearer")),
        ),
        (ApiError::ApiDisabled, 403, false, None),
        (ApiError::LengthRequired, 411, true, None),
        (ApiError::TransferEncoding, 411, true, None),
        (ApiError::BadContentLength, 400, true, None),
        (ApiError::BodyTooLarge, 413, true, None),
        (ApiError::UnsupportedMediaType, 415, false, None),
        (ApiError::BadJson("invalid JSON"), 400, false, None),
        (ApiError::BadGroup, 400, false, None),
    ];

    fn error_response(err: &ApiError, keep_alive: bool) -> String {
        let mut out = Vec::new();
        write_error(&mut out, err, keep_alive);
        String::from_utf8(out).unwrap()
    }

    /// Splits a response into (status, headers, body), checking the framing on the way.
    fn split_response(text: &str) -> (u16, Vec<(String, String)>, String) {
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line[9..12].parse().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (n, v) = line.split_once(": ").unwrap();
                (n.to_owned(), v.to_owned())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n == "Content-Length")
            .unwrap()
            .1
            .parse::<usize>()
            .unwrap();
        assert_eq!(length, body.len());
        (status, headers, body.to_owned())
    }

    fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn every_error_maps_to_its_status() {
        for (err, status, closes, header) in ALL {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.closes_connection(), closes, "{err:?}");
            assert_eq!(err.header(), header, "{err:?}");
            assert_eq!(err.to_string(), err.detail(), "{err:?}");
            assert!(!http::reason_phrase(status).is_empty(), "{status}");
        }
    }

    #[test]
    fn error_bodies_are_json_with_the_detail() {
        for (err, status, closes, header) in ALL {
            for keep_alive in [false, true] {
                let text = error_response(&err, keep_alive);
                let (got_status, headers, body) = split_response(&text);
                assert_eq!(got_status, status);
                assert_eq!(header_of(&headers, "Content-Type"), Some(JSON));
                let want_conn = if keep_alive && !closes {
                    "keep-alive"
                } else {
                    "close"
                };
                assert_eq!(
                    header_of(&headers, "Connection"),
                    Some(want_conn),
                    "{err:?}"
                );
                if let Some((name, value)) = header {
                    assert_eq!(header_of(&headers, name), Some(value));
                }
                let json: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(json, serde_json::json!({ "error": err.detail() }));
                let compact = format!(
                    r#"{{"error":{}}}"#,
                    serde_json::to_string(err.detail()).unwrap()
                );
                assert_eq!(body, compact);
            }
        }
        assert_eq!(
            error_response(&ApiError::BadJson("say \"hi\""), false)
                .rsplit("\r\n")
                .next(),
            Some(r#"{"error":"say \"hi\""}"#)
        );
    }

    #[test]
    fn routes_every_method_and_path() {
        let methods = [
            "GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "get", "post",
        ];
        let paths = [
            (PUBLISH_PATH, Some(Endpoint::Publish)),
            (HEALTHZ_PATH, Some(Endpoint::Healthz)),
            (METRICS_PATH, Some(Endpoint::Metrics)),
            (REVOKE_PATH, Some(Endpoint::Revoke)),
            (WS_AUTH_PATH, Some(Endpoint::WsAuth)),
            ("/ws", None),
            ("/", None),
            ("", None),
            ("/healthz/", None),
            ("/HEALTHZ", None),
            ("/api/publish/", None),
            ("/api/publish?x", None),
            ("//healthz", None),
            ("/metrics.txt", None),
        ];
        for (path, endpoint) in paths {
            for method in methods {
                let got = route(method, path);
                match endpoint {
                    None => assert_eq!(got, Err(ApiError::NotFound), "{method} {path}"),
                    Some(e) if method == e.method() => assert_eq!(got, Ok(e)),
                    Some(e) => assert_eq!(
                        got,
                        Err(ApiError::MethodNotAllowed(e.method())),
                        "{method} {path}"
                    ),
                }
            }
        }
        assert_eq!(route("POST", "/api/publish"), Ok(Endpoint::Publish));
        assert_eq!(route("GET", "/healthz"), Ok(Endpoint::Healthz));
        assert_eq!(route("GET", "/metrics"), Ok(Endpoint::Metrics));
        assert_eq!(
            route("GET", "/api/publish"),
            Err(ApiError::MethodNotAllowed("POST"))
        );
        assert_eq!(
            route("HEAD", "/healthz"),
            Err(ApiError::MethodNotAllowed("GET"))
        );
    }

    #[test]
    fn body_length_cases() {
        let max = 1024;
        let cases: &[(&[httparse::Header<'_>], Result<usize, ApiError>)] = &[
            (&[h("Content-Length", "0")], Ok(0)),
            (&[h("Content-Length", "17")], Ok(17)),
            (&[h("content-length", "1024")], Ok(1024)),
            (&[h("CONTENT-LENGTH", " 5 \t")], Ok(5)),
            (&[h("Content-Length", "007")], Ok(7)),
            (&[h("Content-Length", "1025")], Err(ApiError::BodyTooLarge)),
            (
                &[h("Content-Length", "99999999999999999999999999")],
                Err(ApiError::BodyTooLarge),
            ),
            (&[], Err(ApiError::LengthRequired)),
            (&[h("Host", "x")], Err(ApiError::LengthRequired)),
            (&[h("Content-Length", "")], Err(ApiError::BadContentLength)),
            (
                &[h("Content-Length", "  ")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "-1")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "+5")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "5x")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "0x10")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "1 2")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "5, 5")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "\u{663}")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "5"), h("Content-Length", "5")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Content-Length", "5"), h("content-length", "6")],
                Err(ApiError::BadContentLength),
            ),
            (
                &[h("Transfer-Encoding", "chunked")],
                Err(ApiError::TransferEncoding),
            ),
            (
                &[h("Content-Length", "5"), h("Transfer-Encoding", "chunked")],
                Err(ApiError::TransferEncoding),
            ),
            (
                &[h("transfer-encoding", "identity"), h("Content-Length", "5")],
                Err(ApiError::TransferEncoding),
            ),
        ];
        for (headers, want) in cases {
            assert_eq!(body_length(headers, max), *want, "{headers:?}");
        }
        assert_eq!(
            body_length(&[h("Content-Length", "0")], 0),
            Ok(0),
            "zero fits a zero limit"
        );
        assert_eq!(
            body_length(&[h("Content-Length", "1")], 0),
            Err(ApiError::BodyTooLarge)
        );
    }

    #[test]
    fn expected_body_per_endpoint() {
        let json = h("Content-Type", "application/json");
        let cl = h("Content-Length", "10");
        assert_eq!(expected_body(Endpoint::Publish, &[cl, json], 100), Ok(10));
        assert_eq!(expected_body(Endpoint::Publish, &[cl], 100), Ok(10));
        for ok in [
            "application/json; charset=utf-8",
            "Application/JSON",
            " application/json ;charset=UTF-8",
        ] {
            assert_eq!(
                expected_body(Endpoint::Publish, &[cl, h("Content-Type", ok)], 100),
                Ok(10),
                "{ok}"
            );
        }
        for bad in [
            "application/x-www-form-urlencoded",
            "text/plain",
            "application/jsonx",
            "",
        ] {
            assert_eq!(
                expected_body(Endpoint::Publish, &[cl, h("Content-Type", bad)], 100),
                Err(ApiError::UnsupportedMediaType),
                "{bad}"
            );
        }
        assert_eq!(
            expected_body(Endpoint::Publish, &[cl, json, json], 100),
            Err(ApiError::UnsupportedMediaType)
        );
        // Framing is judged first, so a 415 always has a known length.
        assert_eq!(
            expected_body(Endpoint::Publish, &[h("Content-Type", "text/plain")], 100),
            Err(ApiError::LengthRequired)
        );
        assert_eq!(
            expected_body(Endpoint::Publish, &[json], 100),
            Err(ApiError::LengthRequired)
        );
        assert_eq!(
            expected_body(Endpoint::Publish, &[cl, json], 9),
            Err(ApiError::BodyTooLarge)
        );
        for get in [Endpoint::Healthz, Endpoint::Metrics] {
            assert_eq!(expected_body(get, &[], 100), Ok(0));
            assert_eq!(
                expected_body(get, &[h("Content-Type", "text/plain")], 100),
                Ok(0)
            );
            assert_eq!(expected_body(get, &[h("Content-Length", "0")], 100), Ok(0));
            assert_eq!(expected_body(get, &[cl], 100), Err(ApiError::BodyTooLarge));
            assert_eq!(
                expected_body(get, &[h("Transfer-Encoding", "chunked")], 100),
                Err(ApiError::TransferEncoding)
            );
            assert_eq!(
                expected_body(get, &[h("Content-Length", "x")], 100),
                Err(ApiError::BadContentLength)
            );
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let cases: &[(u8, &[httparse::Header<'_>], bool)] = &[
            (1, &[], true),
            (0, &[], false),
            (1, &[h("Connection", "close")], false),
            (1, &[h("connection", "Keep-Alive, CLOSE")], false),
            (
                1,
                &[h("Connection", "keep-alive"), h("Connection", "close")],
                false,
            ),
            (1, &[h("Connection", "keep-alive")], true),
            (1, &[h("Connection", "closed")], true),
            (0, &[h("Connection", "keep-alive")], true),
            (0, &[h("Connection", " Keep-Alive ")], true),
            (0, &[h("Connection", "keep-alive, close")], false),
            (0, &[h("Keep-Alive", "timeout=5")], false),
        ];
        for (version, headers, want) in cases {
            assert_eq!(
                wants_keep_alive(*version, headers),
                *want,
                "{version} {headers:?}"
            );
        }
    }

    #[test]
    fn single_headers() {
        let headers = [h("Authorization", "a"), h("X", "1"), h("x", "2")];
        assert_eq!(single_header(&headers, "authorization"), Some(&b"a"[..]));
        assert_eq!(single_header(&headers, "x"), None);
        assert_eq!(single_header(&headers, "missing"), None);
    }

    #[test]
    fn api_keys_check() {
        let one = ApiKeys::new(vec![b"s3cret-key".to_vec()]);
        assert_eq!(one.len(), 1);
        assert!(!one.is_empty());
        let yes: &[&[u8]] = &[
            b"Bearer s3cret-key",
            b"bearer s3cret-key",
            b"BEARER s3cret-key",
            b"Bearer   s3cret-key",
            b"Bearer s3cret-key \t",
        ];
        for value in yes {
            assert!(
                one.check(Some(value)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let no: &[&[u8]] = &[
            b"Bearer s3cret-kez",
            b"Bearer s3cret-ke",
            b"Bearer s3cret-key2",
            b"Bearer S3CRET-KEY",
            b"Bearer ",
            b"Bearer",
            b"Bearers3cret-key",
            b"Bearer\ts3cret-key",
            b"Basic s3cret-key",
            b"Basic czNjcmV0LWtleQ==",
            b"s3cret-key",
            b"Token s3cret-key",
            b"Bearer s3cret key",
            b"",
        ];
        for value in no {
            assert!(
                !one.check(Some(value)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(!one.check(None));

        let two = ApiKeys::new(["first", "second-key"]);
        assert_eq!(two.len(), 2);
        assert!(two.check(Some(b"Bearer first")));
        assert!(two.check(Some(b"Bearer second-key")));
        assert!(!two.check(Some(b"Bearer third")));
        assert!(!two.check(Some(b"Bearer firstsecond-key")));
    }

    #[test]
    fn api_keys_without_keys_accept_nothing() {
        let none = ApiKeys::new(Vec::<Vec<u8>>::new());
        assert!(none.is_empty());
        assert!(!none.check(Some(b"Bearer x")));
        let only_empty = ApiKeys::new(vec![Vec::new()]);
        assert!(only_empty.is_empty());
        assert!(!only_empty.check(Some(b"Bearer ")));
        assert!(!only_empty.check(Some(b"Bearer")));
    }

    #[test]
    fn api_keys_from_lines_and_debug() {
        let keys = ApiKeys::from_lines("# publishers\n  alpha  \n\r\n\nbeta\r\n#gamma\n");
        assert_eq!(keys.len(), 2);
        assert!(keys.check(Some(b"Bearer alpha")));
        assert!(keys.check(Some(b"Bearer beta")));
        assert!(!keys.check(Some(b"Bearer gamma")));
        assert!(!keys.check(Some(b"Bearer #gamma")));
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("alpha") && !shown.contains("beta"),
            "{shown}"
        );
        assert!(shown.contains('2'), "{shown}");
        assert!(ApiKeys::from_lines("").is_empty());
        assert!(ApiKeys::from_lines(" \n# only a comment\n").is_empty());
    }

    #[test]
    fn authorize_cases() {
        let keys = ApiKeys::new(["k"]);
        assert_eq!(authorize(&keys, &[h("Authorization", "Bearer k")]), Ok(()));
        assert_eq!(authorize(&keys, &[h("authorization", "bearer k")]), Ok(()));
        assert_eq!(authorize(&keys, &[]), Err(ApiError::Unauthorized));
        assert_eq!(
            authorize(&keys, &[h("Authorization", "Bearer x")]),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            authorize(
                &keys,
                &[
                    h("Authorization", "Bearer k"),
                    h("Authorization", "Bearer k")
                ]
            ),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            authorize(&ApiKeys::default(), &[h("Authorization", "Bearer k")]),
            Err(ApiError::ApiDisabled)
        );
    }

    #[test]
    fn parses_good_publish_bodies() {
        let cases = [
            (r#"{"group":"room.1","data":"hi"}"#, "room.1", r#""hi""#),
            (r#"{"group":"room.1","data":42}"#, "room.1", "42"),
            (r#"{"group":"room.1","data":-1.5e3}"#, "room.1", "-1.5e3"),
            (
                r#"{"group":"r","data":{"a": [1, {"b": null}], "c": "\u00e9"}}"#,
                "r",
                r#"{"a": [1, {"b": null}], "c": "\u00e9"}"#,
            ),
            (
                r#"{"group":"r","data":[1,"two",3.0]}"#,
                "r",
                r#"[1,"two",3.0]"#,
            ),
            (r#"{"group":"r","data":null}"#, "r", "null"),
            (r#"{"group":"r","data":true}"#, "r", "true"),
            (
                " \r\n\t{ \"data\" : \"x\" , \"group\" : \"A-b_c.9\" } \n",
                "A-b_c.9",
                r#""x""#,
            ),
            (r#"{"group":"room\u002e1","data":1}"#, "room.1", "1"),
            (r#"{"gr\u006fup":"g","d\u0061ta":1}"#, "g", "1"),
        ];
        for (body, group, data) in cases {
            let publish = parse_publish(body.as_bytes()).unwrap();
            assert_eq!(publish.group, group, "{body}");
            assert_eq!(publish.data.get(), data, "{body}");
        }
        let plain = parse_publish(br#"{"group":"room.1","data":1}"#).unwrap();
        assert!(matches!(plain.group, Cow::Borrowed(_)));
        let escaped = parse_publish(br#"{"group":"room\u002e1","data":1}"#).unwrap();
        assert!(matches!(escaped.group, Cow::Owned(_)));
        let longest = format!(r#"{{"group":"{}","data":0}}"#, "g".repeat(99));
        assert_eq!(parse_publish(longest.as_bytes()).unwrap().group.len(), 99);
        // `data` nests at most `MAX_DATA_DEPTH` levels (skipped without recursion up to there).
        let nested = format!("{}{}", "[".repeat(64), "]".repeat(64));
        let deep = format!(r#"{{"group":"g","data":{nested}}}"#);
        assert_eq!(parse_publish(deep.as_bytes()).unwrap().data.get(), nested);
        for depth in [65, 200_000] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let deep = format!(r#"{{"group":"g","data":{nested}}}"#);
            assert_eq!(
                parse_publish(deep.as_bytes()).unwrap_err(),
                ApiError::BadJson("data nested too deeply")
            );
        }
    }

    #[test]
    fn refuses_bad_publish_bodies() {
        let too_long = format!(r#"{{"group":"{}","data":0}}"#, "g".repeat(100));
        let cases: Vec<(&[u8], ApiError)> = vec![
            (b"", ApiError::BadJson("invalid JSON")),
            (b"   ", ApiError::BadJson("invalid JSON")),
            (b"hello", ApiError::BadJson("invalid JSON")),
            (b"{", ApiError::BadJson("invalid JSON")),
            (
                br#"{"group":"g","data":}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"g","data":1,}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"g","data":1} x"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"g","data":1}{}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{group:"g","data":1}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"g","data":NaN}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"a","group":"b","data":1}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                br#"{"group":"g","data":1,"data":2}"#,
                ApiError::BadJson("invalid JSON"),
            ),
            (
                b"\xef\xbb\xbf{\"group\":\"g\",\"data\":1}",
                ApiError::BadJson("invalid JSON"),
            ),
            (
                b"{\"group\":\"g\",\"data\":\"\xff\"}",
                ApiError::BadJson("body is not UTF-8"),
            ),
            (b"[]", ApiError::BadJson("body must be a JSON object")),
            (
                br#"["g",1]"#,
                ApiError::BadJson("body must be a JSON object"),
            ),
            (b"null", ApiError::BadJson("body must be a JSON object")),
            (b"42", ApiError::BadJson("body must be a JSON object")),
            (
                br#""group""#,
                ApiError::BadJson("body must be a JSON object"),
            ),
            (b"{}", ApiError::BadJson("missing group")),
            (br#"{"data":1}"#, ApiError::BadJson("missing group")),
            (
                br#"{"group":null,"data":1}"#,
                ApiError::BadJson("group must be a string"),
            ),
            (
                br#"{"group":1,"data":1}"#,
                ApiError::BadJson("group must be a string"),
            ),
            (
                br#"{"group":["g"],"data":1}"#,
                ApiError::BadJson("group must be a string"),
            ),
            (
                br#"{"group":{"g":1},"data":1}"#,
                ApiError::BadJson("group must be a string"),
            ),
            (br#"{"group":"g"}"#, ApiError::BadJson("missing data")),
            (
                br#"{"group":"g","data":1,"extra":true}"#,
                ApiError::BadJson("unknown field: only group and data are allowed"),
            ),
            (
                br#"{"grop":"g","data":1}"#,
                ApiError::BadJson("unknown field: only group and data are allowed"),
            ),
            (
                br#"{"Group":"g","data":1}"#,
                ApiError::BadJson("unknown field: only group and data are allowed"),
            ),
            (br#"{"group":"","data":1}"#, ApiError::BadGroup),
            (br#"{"group":"room 1","data":1}"#, ApiError::BadGroup),
            (br#"{"group":"room*","data":1}"#, ApiError::BadGroup),
            (br#"{"group":"caf\u00e9","data":1}"#, ApiError::BadGroup),
            (br#"{"group":"room\n","data":1}"#, ApiError::BadGroup),
            (too_long.as_bytes(), ApiError::BadGroup),
        ];
        for (body, want) in cases {
            let got = parse_publish(body).unwrap_err();
            assert_eq!(got, want, "{}", String::from_utf8_lossy(body));
            assert_eq!(got.status(), 400);
        }
    }

    #[test]
    fn response_layout() {
        let mut out = Vec::new();
        write_json_response(&mut out, 202, &[("X-A", "1\r\nInjected: yes")], b"{}", true);
        assert_eq!(
            out,
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nX-A: 1Injected: yes\r\n\
              Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}"
        );
        out.clear();
        write_accepted(&mut out, false);
        assert_eq!(
            out,
            b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\
              Content-Length: 11\r\nConnection: close\r\n\r\n{\"ok\":true}"
        );
        out.clear();
        write_healthz(&mut out, &[], true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 2\r\nConnection: keep-alive\r\n\r\nok"
        );
        out.clear();
        write_healthz(&mut out, &[1, 3], false);
        let (status, _, body) = split_response(std::str::from_utf8(&out).unwrap());
        assert_eq!(
            (status, body.as_str()),
            (503, "workers not responding: 1 3")
        );
        out.clear();
        write_metrics(&mut out, "# x\n", false);
        let (status, headers, body) = split_response(std::str::from_utf8(&out).unwrap());
        assert_eq!(status, 200);
        assert_eq!(
            header_of(&headers, "Content-Type"),
            Some(metrics::CONTENT_TYPE)
        );
        assert_eq!(body, "# x\n");
        // Appends, and every response parses back with httparse.
        let mut out = b"prefix".to_vec();
        write_error(&mut out, &ApiError::MethodNotAllowed("POST"), true);
        assert!(out.starts_with(b"prefixHTTP/1.1 405 Method Not Allowed\r\n"));
        let mut storage = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut storage);
        assert!(resp.parse(&out[6..]).unwrap().is_complete());
        assert_eq!(resp.code, Some(405));
    }
}
