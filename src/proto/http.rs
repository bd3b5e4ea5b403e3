//! HTTP/1.1 request heads and plain responses (docs/protocol.md §1, §5): the incremental end-of-head
//! scan with its size bound (431), httparse into caller-owned header storage (400), request-target
//! and query helpers, a log-safe target display, and the response writer.
//! Pure: no IO, and no allocation except into the caller's output buffer.

use std::borrow::Cow;
use std::fmt;

/// How many header lines `parse_request` storage is sized for; more are refused as malformed.
pub const MAX_HEADERS: usize = 64;

/// Why a request head was refused, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// No end of head within the configured limit (431).
    #[error("request head larger than the limit")]
    TooLarge,
    /// The request line or a header line does not parse (400).
    #[error("malformed request head")]
    Malformed,
}

impl HeadError {
    /// The HTTP status to answer with before closing.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge => 431,
            Self::Malformed => 400,
        }
    }
}

const HEAD_END: &[u8; 4] = b"\r\n\r\n";

/// Incremental end-of-head scan: `Ok(Some(head_len))` once `\r\n\r\n` ends within `max` bytes.
///
/// `scanned` is how many bytes of `buf` earlier calls already looked at; only their last 3 are
/// looked at again, so feeding a head in pieces costs O(total length). `Ok(None)` means "read
/// more" and implies `buf.len() < max`; once `max` bytes are buffered without an end of head the
/// answer is `Err(TooLarge)`. A head whose terminator ends at exactly `max` bytes is accepted.
pub fn find_head_end(buf: &[u8], scanned: usize, max: usize) -> Result<Option<usize>, HeadError> {
    let limit = buf.len().min(max);
    let start = scanned.saturating_sub(HEAD_END.len() - 1).min(limit);
    let window = buf.get(start..limit).unwrap_or_default();
    // Look for the final '\n' and check the three bytes before it: cheap, and '\n' is rare.
    let mut from = 0;
    while let Some(pos) = window
        .get(from..)
        .and_then(|w| w.iter().position(|&b| b == b'\n'))
    {
        let nl = from + pos;
        if nl >= 3 && window.get(nl - 3..=nl) == Some(HEAD_END.as_slice()) {
            return Ok(Some(start + nl + 1));
        }
        from = nl + 1;
    }
    if buf.len() >= max {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

/// Parses a complete head (as delimited by `find_head_end`) into caller storage; no allocation.
///
/// Any httparse error is `Malformed`, and so is `Partial`, which a complete head cannot produce.
/// So is a bare `\n` line end: httparse would end the head at a bare-LF blank line, before the
/// `\r\n\r\n` that delimits it here, and the bytes between (a pipelined request) would vanish.
/// More header lines than `headers` has room for (normally `MAX_HEADERS`) are also `Malformed`
/// (400) rather than 431: the head is within the byte limit, it just has too many lines.
pub fn parse_request<'h, 'b>(
    head: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
) -> Result<httparse::Request<'h, 'b>, HeadError> {
    if has_bare_lf(head) {
        return Err(HeadError::Malformed);
    }
    let mut req = httparse::Request::new(headers);
    match req.parse(head) {
        // Both ends agree (the check above makes them); a disagreement still drops nothing.
        Ok(httparse::Status::Complete(len)) if len == head.len() => Ok(req),
        Ok(_) | Err(_) => Err(HeadError::Malformed),
    }
}

/// Whether a `\n` in `head` is not preceded by `\r`.
fn has_bare_lf(head: &[u8]) -> bool {
    let mut from = 0;
    while let Some(pos) = head
        .get(from..)
        .and_then(|h| h.iter().position(|&b| b == b'\n'))
    {
        let nl = from + pos;
        if nl == 0 || head[nl - 1] != b'\r' {
            return true;
        }
        from = nl + 1;
    }
    false
}

/// Splits a request target into its path and, after the first `?`, its query string.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The raw (still percent-encoded) first value of `name` in `query`; `Some("")` for a bare `name`.
///
/// Keys are compared after percent-decoding (`%74oken` is `token`), case-sensitively.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        key_matches(key, name, false).then_some(value)
    })
}

/// Like `query_param`, with `%XX` escapes decoded; borrows when there are none.
///
/// `+` is kept as is (tokens and tickets never contain spaces). A value whose decoded bytes are
/// not UTF-8 yields `None`, like an absent one.
pub fn query_param_decoded<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let raw = query_param(query, name)?;
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let bytes: Vec<u8> = PercentDecoded::new(raw.as_bytes()).collect();
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// Iterator over the bytes of a percent-encoded string; a malformed `%` escape stays literal.
struct PercentDecoded<'a> {
    rest: &'a [u8],
}

impl<'a> PercentDecoded<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Self { rest: raw }
    }
}

impl Iterator for PercentDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.rest.split_first()?;
        if first == b'%'
            && let [hi, lo, after @ ..] = rest
            && let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo))
        {
            self.rest = after;
            return Some((hi << 4) | lo);
        }
        self.rest = rest;
        Some(first)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Whether the percent-decoded `raw` key equals `name` (optionally ignoring ASCII case).
fn key_matches(raw: &str, name: &str, ignore_case: bool) -> bool {
    let mut decoded = PercentDecoded::new(raw.as_bytes());
    let mut expected = name.bytes();
    loop {
        match (decoded.next(), expected.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b || (ignore_case && a.eq_ignore_ascii_case(&b)) => {}
            _ => return false,
        }
    }
}

/// Displays a request target with every query value redacted: `/ws?room=[redacted]`.
///
/// A client may put a credential under any name (`?access_token=`, `?jwt=`, `?x=1;token=`) or
/// in a parameter with no `=` at all (`?token%3D…`), so no value and no bare parameter is ever
/// printed. A name is printed only when it is short and plain (ASCII letters, digits, `_`,
/// `-`, `.`; at most 32 bytes), so that it cannot carry a token either.
pub struct Redacted<'a>(pub &'a str);

/// Longest query parameter name a log line shows.
const SHOWN_NAME: usize = 32;

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, query) = split_target(self.0);
        f.write_str(path)?;
        let Some(query) = query else {
            return Ok(());
        };
        f.write_str("?")?;
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            match pair.split_once('=') {
                _ if pair.is_empty() => {}
                Some((key, value)) => {
                    let plain = key.len() <= SHOWN_NAME
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
                    f.write_str(if plain { key } else { "[redacted]" })?;
                    f.write_str(if value.is_empty() { "=" } else { "=[redacted]" })?;
                }
                None => f.write_str("[redacted]")?,
            }
        }
        Ok(())
    }
}

/// Appends a complete `Connection: close` response: status line, `headers`, length, `body`.
///
/// CR and LF are dropped from header names and values, so a value can never split the response.
pub fn write_response(out: &mut Vec<u8>, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    write_status_line(out, status);
    for (name, value) in headers {
        write_header(out, name, value);
    }
    end_head(out, body.len(), false);
    out.extend_from_slice(body);
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one header line; CR and LF are dropped so a value can never split the response.
pub fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    push_header_text(out, name);
    out.extend_from_slice(b": ");
    push_header_text(out, value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `Content-Length`, `Connection` (keep-alive or close) and the blank line.
pub fn end_head(out: &mut Vec<u8>, body_len: usize, keep_alive: bool) {
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body_len as u64);
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"\r\nConnection: close\r\n\r\n".as_slice()
    });
}

fn push_header_text(out: &mut Vec<u8>, text: &str) {
    out.extend(text.bytes().filter(|&b| b != b'\r' && b != b'\n'));
}

/// Appends the decimal digits of `n` without going through the formatting machinery.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// The standard reason phrase of the statuses wsgate sends; empty for any other.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /ws?ticket=abc HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\n\r\n";

    /// httparse ends a head at a bare-LF blank line; the gateway delimits heads at `\r\n\r\n`.
    /// A bare `\n` anywhere is refused, so the two never disagree and no byte between them
    /// (a pipelined request) is dropped.
    #[test]
    fn bare_lf_line_ends_are_malformed() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        for head in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\n\nGET /metrics HTTP/1.1\r\n\r\n"[..],
            b"GET /healthz HTTP/1.1\nHost: x\r\n\r\n",
            b"\nGET /healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\n\r\n\r\n",
        ] {
            let end = find_head_end(head, 0, 8192).unwrap().unwrap();
            assert_eq!(
                parse_request(&head[..end], &mut headers).err(),
                Some(HeadError::Malformed),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
        assert!(parse_request(GET, &mut headers).is_ok());
    }

    #[test]
    fn head_end_found_all_at_once() {
        assert_eq!(find_head_end(GET, 0, 8192), Ok(Some(GET.len())));
        let mut with_body = GET.to_vec();
        with_body.extend_from_slice(b"{\"a\":1}");
        assert_eq!(find_head_end(&with_body, 0, 8192), Ok(Some(GET.len())));
    }

    #[test]
    fn head_end_found_byte_by_byte_and_in_every_split() {
        let mut scanned = 0;
        for len in 0..GET.len() {
            assert_eq!(
                find_head_end(&GET[..len], scanned, 8192),
                Ok(None),
                "len {len}"
            );
            scanned = len;
        }
        assert_eq!(find_head_end(GET, scanned, 8192), Ok(Some(GET.len())));
        // `scanned` < len: a call that had scanned the whole head would have found its end.
        for split in 0..GET.len() {
            assert_eq!(find_head_end(&GET[..split], 0, 8192), Ok(None));
            assert_eq!(find_head_end(GET, split, 8192), Ok(Some(GET.len())));
        }
    }

    #[test]
    fn head_end_rescans_only_three_bytes() {
        // A terminator that started before the last 3 scanned bytes is not seen again: the
        // contract is that the caller passes the length it scanned, which includes it.
        let buf = b"GET / HTTP/1.1\r\n\r\nXXXX";
        assert_eq!(find_head_end(buf, buf.len(), 8192), Ok(None));
        // A terminator straddling the scanned boundary is found.
        let buf = b"GET / HTTP/1.1\r\n\r\n";
        for scanned in buf.len() - 3..=buf.len() - 1 {
            assert_eq!(find_head_end(buf, scanned, 8192), Ok(Some(buf.len())));
        }
    }

    #[test]
    fn head_bound_is_exact() {
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        let max = 8192;
        let exact = head(max);
        assert_eq!(exact.len(), max);
        assert_eq!(find_head_end(&exact, 0, max), Ok(Some(max)));
        let over = head(max + 1);
        assert_eq!(find_head_end(&over, 0, max), Err(HeadError::TooLarge));
        assert_eq!(
            find_head_end(&over[..max], 0, max),
            Err(HeadError::TooLarge)
        );
        assert_eq!(find_head_end(&over[..max - 1], 0, max), Ok(None));
        // Byte by byte over the limit: need-more until max bytes, then TooLarge.
        let mut scanned = 0;
        for len in 0..=max + 1 {
            let got = find_head_end(&over[..len], scanned, max);
            if len < max {
                assert_eq!(got, Ok(None));
            } else {
                assert_eq!(got, Err(HeadError::TooLarge));
            }
            scanned = len;
        }
        // Even a terminator present further on does not rescue an oversized head.
        assert_eq!(find_head_end(&over, max, max), Err(HeadError::TooLarge));
        assert_eq!(find_head_end(b"", 0, 0), Err(HeadError::TooLarge));
    }

    #[test]
    fn lone_newlines_are_not_an_end() {
        assert_eq!(find_head_end(b"\n\n\n\r\n\n", 0, 100), Ok(None));
        assert_eq!(find_head_end(b"\n\r\n\r\n", 0, 100), Ok(Some(5)));
    }

    #[test]
    fn parse_request_borrows_from_the_head() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = parse_request(GET, &mut headers).unwrap();
        assert_eq!(req.method, Some("GET"));
        assert_eq!(req.path, Some("/ws?ticket=abc"));
        assert_eq!(req.version, Some(1));
        assert_eq!(req.headers.len(), 2);
        assert_eq!(req.headers[0].name, "Host");
        assert_eq!(req.headers[0].value, b"example.com");
        assert_eq!(req.headers[1].value, b"");
    }

    #[test]
    fn parse_request_refuses_garbage_and_too_many_headers() {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        for bad in [
            &b"\x00\x01\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/9.1\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert_eq!(
                parse_request(bad, &mut headers).err(),
                Some(HeadError::Malformed),
                "{bad:?}"
            );
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request(&many, &mut headers).err(),
            Some(HeadError::Malformed)
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::Malformed.status(), 400);
    }

    #[test]
    fn targets_and_query_params() {
        assert_eq!(split_target("/ws"), ("/ws", None));
        assert_eq!(split_target("/ws?"), ("/ws", Some("")));
        assert_eq!(split_target("/ws?a=1?b"), ("/ws", Some("a=1?b")));
        let q = "a=1&ticket=t-1&token&ticket=second&%74oken=x%2Ey&e=";
        assert_eq!(query_param(q, "a"), Some("1"));
        assert_eq!(query_param(q, "ticket"), Some("t-1"));
        assert_eq!(query_param(q, "token"), Some(""));
        assert_eq!(query_param(q, "e"), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(q, "A"), None);
        assert_eq!(query_param("", "a"), None);
        assert_eq!(query_param("%74oken=x%2Ey", "token"), Some("x%2Ey"));
        assert_eq!(
            query_param_decoded("%74oken=x%2Ey", "token"),
            Some(Cow::Owned("x.y".to_owned()))
        );
        assert!(matches!(
            query_param_decoded("token=a.b+c", "token"),
            Some(Cow::Borrowed("a.b+c"))
        ));
        assert_eq!(
            query_param_decoded("t=%zz%4%", "t").as_deref(),
            Some("%zz%4%")
        );
        assert_eq!(query_param_decoded("t=%ff", "t"), None);
    }

    #[test]
    fn redaction_hides_every_value_and_every_odd_name() {
        let cases = [
            ("/ws", "/ws"),
            ("/ws?", "/ws?"),
            ("/ws?token=eyJ.a.b", "/ws?token=[redacted]"),
            (
                "/ws?room=1&ticket=abc&x=&token=t&y",
                "/ws?room=[redacted]&ticket=[redacted]&x=&token=[redacted]&[redacted]",
            ),
            (
                "/ws?TOKEN=s&%74icket=s",
                "/ws?TOKEN=[redacted]&[redacted]=[redacted]",
            ),
            // Misnamed credentials, as clients really send them.
            ("/ws?access_token=eyJ.a.b", "/ws?access_token=[redacted]"),
            ("/ws?jwt=eyJ.a.b", "/ws?jwt=[redacted]"),
            ("/ws?x=1;token=eyJ.a.b", "/ws?x=[redacted]"),
            ("/ws?token%3DeyJ.a.b", "/ws?[redacted]"),
            ("/ws?eyJhbGciOiJIUzI1NiJ9.e30.sig", "/ws?[redacted]"),
            (
                "/ws?eyJhbGciOiJIUzI1NiJ9eyJhbGciOiJIUzI1NiJ9=1",
                "/ws?[redacted]=[redacted]",
            ),
            ("/ws?token", "/ws?[redacted]"),
            ("/ws?a=token=x", "/ws?a=[redacted]"),
            ("/ws?token=a=b&&", "/ws?token=[redacted]&&"),
        ];
        for (target, shown) in cases {
            assert_eq!(Redacted(target).to_string(), shown, "{target}");
        }
    }

    #[test]
    fn response_layout() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            426,
            &[("Sec-WebSocket-Version", "13"), ("X-Bad", "a\r\nb")],
            b"no",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nX-Bad: ab\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\nno"
        );
        out.clear();
        write_response(&mut out, 599, &[], b"");
        assert_eq!(
            out,
            b"HTTP/1.1 599 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        out.clear();
        push_decimal(&mut out, u64::MAX);
        assert_eq!(out, u64::MAX.to_string().as_bytes());
        out.clear();
        push_decimal(&mut out, 0);
        assert_eq!(out, b"0");
    }
}
