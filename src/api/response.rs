//! The API's responses: HTTP/1.1 with explicit `Connection`, JSON bodies for everything but
//! `/healthz` and `/metrics` (docs/protocol.md §5).

use super::{ApiError, JSON, TEXT};
use crate::envelope::write_json_str;
use crate::metrics;
use crate::proto::http;

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
