//! The load client's own WebSocket framing (client side: masked frames out, unmasked in) and
//! upgrade request. Deliberately independent of wsgate's codec, so a codec bug cannot hide itself.

/// Builds the upgrade request for `path` on `host`.
pub fn upgrade_request(host: &str, path: &str, origin: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: d3NnYXRlLWxvYWR0ZXN0IQ==\r\n"
    );
    if let Some(origin) = origin {
        req.push_str("Origin: ");
        req.push_str(origin);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Appends one masked client frame (FIN set) with `opcode` and `payload` to `out`.
pub fn encode_client(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
}

/// One server frame found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The opcode (low 4 bits of the first byte).
    pub opcode: u8,
    /// Whether FIN is set.
    pub fin: bool,
    /// Where the payload starts.
    pub payload_start: usize,
    /// Total frame length.
    pub len: usize,
}

/// Parses a server frame at the start of `buf`; `None` until it is complete. Server frames must
/// be unmasked; a masked one is reported as an error.
pub fn decode_server(buf: &[u8]) -> Result<Option<Frame>, &'static str> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b1 & 0x80 != 0 {
        return Err("server frame is masked");
    }
    let (payload_len, header) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u16::from_be_bytes([*a, *b]) as usize, 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(b) => {
                let mut len = [0u8; 8];
                len.copy_from_slice(b);
                (
                    usize::try_from(u64::from_be_bytes(len)).map_err(|_| "frame too long")?,
                    10,
                )
            }
            None => return Ok(None),
        },
        n => (n as usize, 2),
    };
    let len = header + payload_len;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame {
        opcode: b0 & 0x0f,
        fin: b0 & 0x80 != 0,
        payload_start: header,
        len,
    }))
}

/// The end of an HTTP response head in `buf`, if complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_hello_matches_rfc_6455() {
        let mut out = Vec::new();
        encode_client(&mut out, 0x1, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn server_frames_decode_in_all_length_forms() {
        assert_eq!(decode_server(&[0x81]), Ok(None));
        let f = decode_server(&[0x81, 0x05, b'H', b'e', b'l', b'l', b'o'])
            .unwrap()
            .unwrap();
        assert_eq!((f.opcode, f.fin, f.payload_start, f.len), (1, true, 2, 7));
        let mut medium = vec![0x82, 126, 0x01, 0x00];
        medium.resize(4 + 256, 0);
        assert_eq!(decode_server(&medium).unwrap().unwrap().len, 260);
        assert_eq!(decode_server(&medium[..100]), Ok(None));
        let mut long = vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        long.resize(10 + 65536, 0);
        assert_eq!(decode_server(&long).unwrap().unwrap().len, 65546);
        assert!(decode_server(&[0x81, 0x85, 0, 0, 0, 0, 0]).is_err());
    }
}
