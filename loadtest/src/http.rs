//! The few bytes of HTTP/1.1 the `publish` scenario needs: `POST /api/publish` requests
//! (keep-alive, pipelined) and their responses, delimited by `Content-Length`.

use std::io::Write;

/// Appends a `POST /api/publish` request with `body` to `out`.
pub fn write_request(out: &mut Vec<u8>, host: &str, api_key: &str, body: &[u8]) {
    let _ = write!(
        out,
        "POST /api/publish HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

/// One complete response at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Where the body starts.
    pub body_start: usize,
    /// Head plus body length.
    pub len: usize,
    /// The server will close the connection after it.
    pub close: bool,
}

/// Parses the response at the start of `buf`; `None` until it is complete.
pub fn parse_response(buf: &[u8]) -> Result<Option<Response>, String> {
    let Some(head_len) = crate::wire::head_end(buf) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection") {
            close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let length = length.ok_or("response without Content-Length")?;
    let len = head_len + length;
    Ok((buf.len() >= len).then_some(Response {
        status,
        body_start: head_len,
        len,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_key_type_and_length() {
        let mut out = Vec::new();
        write_request(
            &mut out,
            "127.0.0.1:8080",
            "k",
            br#"{"group":"g","data":1}"#,
        );
        write_request(&mut out, "127.0.0.1:8080", "k", b"{}");
        let text = String::from_utf8(out).unwrap();
        let first = text.split("POST ").nth(1).unwrap();
        assert!(first.starts_with("/api/publish HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(first.contains("\r\nAuthorization: Bearer k\r\n"));
        assert!(first.contains("\r\nContent-Type: application/json\r\n"));
        assert!(first.ends_with("\r\nContent-Length: 22\r\n\r\n{\"group\":\"g\",\"data\":1}"));
        assert!(text.ends_with("Content-Length: 2\r\n\r\n{}"));
    }

    #[test]
    fn pipelined_responses_split_at_their_lengths() {
        let one = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\ncontent-length: 11\r\nConnection: keep-alive\r\n\r\n{\"ok\":true}";
        let mut two = one.to_vec();
        two.extend_from_slice(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        let r = parse_response(&two).unwrap().unwrap();
        assert_eq!((r.status, r.len, r.close), (202, one.len(), false));
        assert_eq!(&two[r.body_start..r.len], b"{\"ok\":true}");
        let r2 = parse_response(&two[r.len..]).unwrap().unwrap();
        assert_eq!((r2.status, r2.close), (401, true));
        assert_eq!(parse_response(&one[..one.len() - 1]), Ok(None));
        assert_eq!(parse_response(&one[..20]), Ok(None));
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_response(b"HTTP/1.1 2x2 OK\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 202 Accepted\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 202 Accepted\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }
}
