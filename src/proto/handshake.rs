//! The WebSocket opening handshake, server side (docs/protocol.md §1, RFC 6455 §4.2): validating a
//! parsed upgrade request, picking out what authentication and origin checks need (borrowed from
//! the request head), the accept key, and the 101 response. Extensions are never negotiated and
//! the only subprotocol ever selected is `wsgate.v1`. Pure: no IO, no allocation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

use super::http::split_target;

/// The subprotocol a client offers to speak wsgate's envelope (docs/protocol.md §1).
pub const PROTOCOL_V1: &str = "wsgate.v1";
/// The prefix of the subprotocol token that carries a JWT (docs/protocol.md §3, method 4).
pub const BEARER_PREFIX: &str = "wsgate.bearer.";
/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request, borrowing its fields from the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// Sec-WebSocket-Key, trimmed and validated as the base64 of exactly 16 bytes.
    pub key: &'b [u8],
    /// The single Origin header value, `None` when absent.
    pub origin: Option<&'b [u8]>,
    /// Whether `wsgate.v1` is among the offered Sec-WebSocket-Protocol tokens.
    pub offers_v1: bool,
    /// The JWT of the first `wsgate.bearer.<JWT>` protocol token.
    pub bearer_protocol: Option<&'b [u8]>,
    /// The raw (trimmed) Authorization header value.
    pub authorization: Option<&'b [u8]>,
    /// The query string of the request target (for `?ticket=` / `?token=`).
    pub query: Option<&'b str>,
}

/// Why an upgrade request was refused; `status()` is the HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The path is not the WebSocket path (404).
    #[error("not the websocket path")]
    NotFound,
    /// The request line lacks a method, target or version (400).
    #[error("incomplete request line")]
    Malformed,
    /// The method is not GET (400).
    #[error("upgrade method is not GET")]
    BadMethod,
    /// The request is not HTTP/1.1 (400).
    #[error("upgrade request is not HTTP/1.1")]
    BadVersionHttp,
    /// No Host header (400, RFC 6455 §4.2.1 item 2).
    #[error("missing Host header")]
    MissingHost,
    /// No Upgrade header with the token `websocket` (400).
    #[error("missing Upgrade: websocket")]
    MissingUpgrade,
    /// No Connection header with the token `upgrade` (400).
    #[error("missing Connection: upgrade")]
    MissingConnection,
    /// No Sec-WebSocket-Version header (400).
    #[error("missing Sec-WebSocket-Version")]
    MissingVersion,
    /// A Sec-WebSocket-Version other than 13 (426, answered with `Sec-WebSocket-Version: 13`).
    #[error("unsupported websocket version")]
    UnsupportedVersion,
    /// No Sec-WebSocket-Key header (400).
    #[error("missing Sec-WebSocket-Key")]
    MissingKey,
    /// A Sec-WebSocket-Key that is not the padded base64 of 16 bytes (400).
    #[error("invalid Sec-WebSocket-Key")]
    BadKey,
    /// A header that must appear once appears more than once (400).
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    /// More than one Origin header (400, docs/protocol.md §2).
    #[error("more than one Origin header")]
    MultipleOrigins,
}

impl HandshakeError {
    /// The HTTP status to answer with: 404, 426 for a version other than 13, else 400.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::UnsupportedVersion => 426,
            _ => 400,
        }
    }

    /// Headers the error response must carry (the supported version with a 426).
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

/// A header that must appear at most once: its first value and whether it came again.
#[derive(Default)]
struct Single<'b> {
    value: Option<&'b [u8]>,
    repeated: bool,
}

impl<'b> Single<'b> {
    fn record(&mut self, value: &'b [u8]) {
        if self.value.is_some() {
            self.repeated = true;
        } else {
            self.value = Some(value.trim_ascii());
        }
    }

    /// `Ok(None)` when absent, `Err(name)` when repeated.
    fn once(&self, name: &'static str) -> Result<Option<&'b [u8]>, HandshakeError> {
        if self.repeated {
            Err(HandshakeError::DuplicateHeader(name))
        } else {
            Ok(self.value)
        }
    }
}

/// The non-empty, whitespace-trimmed elements of a comma-separated header value.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether `key` is the padded standard base64 of exactly 16 bytes (RFC 6455 §4.2.1 item 5).
fn is_valid_key(key: &[u8]) -> bool {
    let mut nonce = [0u8; 16];
    // 16 bytes are always 24 characters; checking first keeps long garbage out of the decoder.
    key.len() == 24 && STANDARD.decode_slice(key, &mut nonce) == Ok(16)
}

/// Validates a parsed request as an upgrade on `ws_path` (exact path match, query ignored).
///
/// Checks in order: path (404), method GET, HTTP/1.1, exactly one Host, `Upgrade` with the token
/// `websocket` and `Connection` with the token `upgrade` (both token lists, case-insensitive),
/// `Sec-WebSocket-Version` present and single (400) and equal to 13 (426), exactly one valid key,
/// at most one Origin, at most one Authorization (400). Header names are case-insensitive;
/// `Sec-WebSocket-Protocol` may be repeated; `Sec-WebSocket-Extensions` is ignored (never
/// negotiated). Never allocates.
pub fn validate<'b>(
    req: &httparse::Request<'_, 'b>,
    ws_path: &str,
) -> Result<Upgrade<'b>, HandshakeError> {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HandshakeError::Malformed);
    };
    let (path, query) = split_target(target);
    if path != ws_path {
        return Err(HandshakeError::NotFound);
    }
    if method != "GET" {
        return Err(HandshakeError::BadMethod);
    }
    if version != 1 {
        return Err(HandshakeError::BadVersionHttp);
    }

    let mut host = Single::default();
    let mut ws_version = Single::default();
    let mut key = Single::default();
    let mut origin = Single::default();
    let mut authorization = Single::default();
    let mut upgrade_websocket = false;
    let mut connection_upgrade = false;
    let mut offers_v1 = false;
    let mut bearer_protocol = None;
    for header in req.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("host") {
            host.record(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_websocket |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            ws_version.record(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key.record(value);
        } else if name.eq_ignore_ascii_case("origin") {
            origin.record(value);
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization.record(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            for token in tokens(value) {
                if token == PROTOCOL_V1.as_bytes() {
                    offers_v1 = true;
                } else if let Some(jwt) = token.strip_prefix(BEARER_PREFIX.as_bytes()) {
                    bearer_protocol = bearer_protocol.or(Some(jwt));
                }
            }
        }
    }

    if host.once("Host")?.is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !upgrade_websocket {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection_upgrade {
        return Err(HandshakeError::MissingConnection);
    }
    match ws_version.once("Sec-WebSocket-Version")? {
        None => return Err(HandshakeError::MissingVersion),
        Some(v) if v != b"13" => return Err(HandshakeError::UnsupportedVersion),
        Some(_) => {}
    }
    let key = key
        .once("Sec-WebSocket-Key")?
        .ok_or(HandshakeError::MissingKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    if origin.repeated {
        return Err(HandshakeError::MultipleOrigins);
    }
    let authorization = authorization.once("Authorization")?;
    Ok(Upgrade {
        key,
        origin: origin.value,
        offers_v1,
        bearer_protocol,
        authorization,
        query,
    })
}

/// Sec-WebSocket-Accept for `key`: base64(sha1(key + GUID)), built on the stack.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    let digest = sha1.finalize();
    let mut accept = [0u8; 28];
    // A 20-byte digest is exactly 28 base64 characters, so this cannot fall short.
    let written = STANDARD.encode_slice(digest, &mut accept).unwrap_or(0);
    debug_assert_eq!(written, accept.len());
    accept
}

/// Appends the 101 response; selects `wsgate.v1` when `select_v1`, and never any other protocol.
pub fn write_101(out: &mut Vec<u8>, accept: &[u8; 28], select_v1: bool) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    if select_v1 {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(PROTOCOL_V1.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::http::{MAX_HEADERS, parse_request};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// Builds a request head from a request line and header lines.
    fn head(line: &str, headers: &[&str]) -> Vec<u8> {
        let mut h = format!("{line}\r\n");
        for header in headers {
            h.push_str(header);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    fn base() -> Vec<&'static str> {
        vec![
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ]
    }

    fn check_line<R>(
        line: &str,
        headers: &[&str],
        f: impl FnOnce(Result<Upgrade<'_>, HandshakeError>) -> R,
    ) -> R {
        let bytes = head(line, headers);
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let req = parse_request(&bytes, &mut storage).unwrap();
        f(validate(&req, "/ws"))
    }

    fn check<R>(headers: &[&str], f: impl FnOnce(Result<Upgrade<'_>, HandshakeError>) -> R) -> R {
        check_line("GET /ws HTTP/1.1", headers, f)
    }

    fn status(headers: &[&str]) -> u16 {
        check(headers, |r| r.map_or_else(|e| e.status(), |_| 101))
    }

    fn error(headers: &[&str]) -> Option<HandshakeError> {
        check(headers, |r| r.err())
    }

    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        let mut h = base();
        h.extend_from_slice(extra);
        h
    }

    fn without(name: &str) -> Vec<&'static str> {
        base()
            .into_iter()
            .filter(|h| {
                !h.to_ascii_lowercase()
                    .starts_with(&name.to_ascii_lowercase())
            })
            .collect()
    }

    fn replace(name: &str, line: &'static str) -> Vec<&'static str> {
        let mut h = without(name);
        h.push(line);
        h
    }

    #[test]
    fn accept_key_rfc_vector() {
        assert_eq!(&accept_key(KEY.as_bytes()), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn minimal_upgrade_is_accepted() {
        check(&base(), |r| {
            let up = r.unwrap();
            assert_eq!(up.key, KEY.as_bytes());
            assert_eq!(up.origin, None);
            assert!(!up.offers_v1);
            assert_eq!(up.bearer_protocol, None);
            assert_eq!(up.authorization, None);
            assert_eq!(up.query, None);
        });
    }

    #[test]
    fn token_lists_and_case_are_handled() {
        for (name, line) in [
            ("Connection", "Connection: keep-alive, Upgrade"),
            ("Connection", "connection: upgrade"),
            ("Connection", "CONNECTION:keep-alive,UPGRADE ,"),
            ("Upgrade", "UPGRADE: WebSocket"),
            ("Upgrade", "Upgrade: h2c, websocket"),
        ] {
            assert_eq!(status(&replace(name, line)), 101, "{line}");
        }
        let mut split_connection = without("Connection");
        split_connection.extend(["Connection: keep-alive", "Connection: Upgrade"]);
        assert_eq!(status(&split_connection), 101);
        let lower: Vec<String> = base()
            .iter()
            .map(|h| {
                let (name, value) = h.split_once(':').unwrap();
                format!("{}:{value}", name.to_ascii_lowercase())
            })
            .collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        assert_eq!(status(&lower), 101);
    }

    #[test]
    fn refusals_follow_protocol_section_1() {
        use HandshakeError::*;
        let cases: Vec<(Vec<&'static str>, HandshakeError)> = vec![
            (without("Host"), MissingHost),
            (with(&["Host: other"]), DuplicateHeader("Host")),
            (without("Upgrade"), MissingUpgrade),
            (replace("Upgrade", "Upgrade: websocket2"), MissingUpgrade),
            (without("Connection"), MissingConnection),
            (
                replace("Connection", "Connection: keep-alive"),
                MissingConnection,
            ),
            (
                replace("Connection", "Connection: upgraded"),
                MissingConnection,
            ),
            (without("Sec-WebSocket-Version"), MissingVersion),
            (
                replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8"),
                UnsupportedVersion,
            ),
            (
                replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 13, 8"),
                UnsupportedVersion,
            ),
            (
                with(&["Sec-WebSocket-Version: 13"]),
                DuplicateHeader("Sec-WebSocket-Version"),
            ),
            (without("Sec-WebSocket-Key"), MissingKey),
            (
                with(&["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]),
                DuplicateHeader("Sec-WebSocket-Key"),
            ),
            (
                with(&["Origin: https://a", "Origin: https://b"]),
                MultipleOrigins,
            ),
            (
                with(&["Authorization: Bearer a", "Authorization: Bearer b"]),
                DuplicateHeader("Authorization"),
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(error(&headers), Some(expected), "{headers:?}");
        }
        assert_eq!(UnsupportedVersion.status(), 426);
        assert_eq!(
            UnsupportedVersion.response_headers(),
            &[("Sec-WebSocket-Version", "13")]
        );
        assert_eq!(MissingKey.status(), 400);
        assert!(MissingKey.response_headers().is_empty());
    }

    #[test]
    fn request_line_checks_come_first() {
        let ok = base();
        let line = |l: &str| check_line(l, &ok, |r| r.err());
        assert_eq!(line("GET /other HTTP/1.1"), Some(HandshakeError::NotFound));
        assert_eq!(line("GET /ws/ HTTP/1.1"), Some(HandshakeError::NotFound));
        assert_eq!(line("POST /other HTTP/1.1"), Some(HandshakeError::NotFound));
        assert_eq!(line("POST /ws HTTP/1.1"), Some(HandshakeError::BadMethod));
        assert_eq!(line("get /ws HTTP/1.1"), Some(HandshakeError::BadMethod));
        assert_eq!(
            line("GET /ws HTTP/1.0"),
            Some(HandshakeError::BadVersionHttp)
        );
        assert_eq!(line("GET /ws?ticket=t HTTP/1.1"), None);
        check_line("GET /ws?ticket=t&x=1 HTTP/1.1", &ok, |r| {
            assert_eq!(r.unwrap().query, Some("ticket=t&x=1"));
        });
        // The 404 wins over everything else being wrong.
        assert_eq!(
            check_line("POST /nope HTTP/1.0", &[], |r| r.err()),
            Some(HandshakeError::NotFound)
        );
        assert_eq!(HandshakeError::NotFound.status(), 404);
        // The version (426) is judged before the key (400).
        let mut bad_both = replace("Sec-WebSocket-Version", "Sec-WebSocket-Version: 7");
        bad_both.retain(|h| !h.starts_with("Sec-WebSocket-Key"));
        assert_eq!(error(&bad_both), Some(HandshakeError::UnsupportedVersion));
    }

    #[test]
    fn keys_must_be_padded_base64_of_sixteen_bytes() {
        for good in [
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Key:   AAAAAAAAAAAAAAAAAAAAAA==  ",
            "Sec-WebSocket-Key: /+/+/+/+/+/+/+/+/+/+/w==",
        ] {
            assert_eq!(status(&replace("Sec-WebSocket-Key", good)), 101, "{good}");
        }
        for bad in [
            "Sec-WebSocket-Key: ",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA",
            "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "Sec-WebSocket-Key: _-_-_-_-_-_-_-_-_-_-_w==",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZS Bub25jZQ==",
            "Sec-WebSocket-Key: ========================",
        ] {
            assert_eq!(
                error(&replace("Sec-WebSocket-Key", bad)),
                Some(HandshakeError::BadKey),
                "{bad}"
            );
        }
    }

    #[test]
    fn subprotocols_and_credentials_are_picked_out() {
        let headers = with(&[
            "Sec-WebSocket-Protocol: chat , wsgate.bearer.eyJ.a.b",
            "sec-websocket-protocol:wsgate.v1,wsgate.bearer.second",
            "Origin: https://app.example.com",
            "Authorization: Bearer xyz",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        ]);
        check(&headers, |r| {
            let up = r.unwrap();
            assert!(up.offers_v1);
            assert_eq!(up.bearer_protocol, Some(&b"eyJ.a.b"[..]));
            assert_eq!(up.origin, Some(&b"https://app.example.com"[..]));
            assert_eq!(up.authorization, Some(&b"Bearer xyz"[..]));
        });
        for (line, v1) in [
            ("Sec-WebSocket-Protocol: wsgate.v1", true),
            ("Sec-WebSocket-Protocol: chat,  wsgate.v1 ", true),
            ("Sec-WebSocket-Protocol: wsgate.v2, WSGATE.V1", false),
            ("Sec-WebSocket-Protocol: wsgate.v1x", false),
            ("Sec-WebSocket-Protocol: ", false),
        ] {
            check(&with(&[line]), |r| {
                assert_eq!(r.unwrap().offers_v1, v1, "{line}")
            });
        }
        check(&with(&["Origin:"]), |r| {
            assert_eq!(r.unwrap().origin, Some(&b""[..]));
        });
    }

    #[test]
    fn response_selects_only_v1() {
        let accept = accept_key(KEY.as_bytes());
        let mut out = Vec::new();
        write_101(&mut out, &accept, false);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        out.clear();
        write_101(&mut out, &accept, true);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: wsgate.v1\r\n\r\n"
        );
        // Parse the answer back with httparse to be sure it is well formed.
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(&out).unwrap().is_complete());
        assert_eq!(resp.code, Some(101));
        assert!(!out.windows(7).any(|w| w == b"bearer."));
    }
}
