//! What a request head says about the request (docs/protocol.md §5; RFC 9110, RFC 9112): its
//! body's framing, its media type, keep-alive, single-valued headers and the API key.

use super::{ApiError, Endpoint, JSON};
use crate::auth::api_keys::ApiKeys;

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
