//! WebSocket frames (RFC 6455 §5): the client-frame header parser with every protocol check in
//! one place (masking, RSV bits, opcodes, control-frame rules, length forms, the frame size cap
//! judged from the header alone), in-place decode, and the writers for server frames.
//! Pure: no IO; decoding never allocates, writing only grows the caller's buffer.

use std::ops::Range;

use bytes::Bytes;

use super::close::CloseCode;
use super::mask::apply_mask;

/// The longest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest reason a Close frame can carry: 125 bytes minus the 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;
/// The longest header a client frame can have: 2 bytes, an 8-byte length, a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode that RFC 6455 defines (§5.2); the reserved ones are a `FrameError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: a later fragment of a fragmented message.
    Continuation,
    /// 0x1: a text (UTF-8) message or its first fragment.
    Text,
    /// 0x2: a binary message or its first fragment.
    Binary,
    /// 0x8: the closing handshake.
    Close,
    /// 0x9: a ping, to be answered with a pong.
    Ping,
    /// 0xA: a pong, solicited or not.
    Pong,
}

impl OpCode {
    /// The opcode for the low four bits of a frame's first byte; `None` if reserved.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// The four-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong: never fragmented, at most 125 bytes, allowed between fragments.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A validated client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Payload length in bytes, already checked against `max_frame`.
    pub payload_len: usize,
    /// Header length in bytes: where the payload starts.
    pub header_len: usize,
}

impl FrameHeader {
    /// Where the payload lies in the buffer the header was parsed from.
    pub fn payload_range(&self) -> Range<usize> {
        self.header_len..self.frame_len()
    }

    /// Header plus payload: how many bytes the frame consumes.
    pub fn frame_len(&self) -> usize {
        self.header_len.saturating_add(self.payload_len)
    }
}

/// A frame or message the peer must not send; `close_code()` is the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A client frame without the mask bit (RFC 6455 §5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// RSV1-3 set while no extension is negotiated.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    #[error("reserved opcode")]
    ReservedOpcode,
    /// A control frame with more than 125 bytes of payload.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    ControlFragmented,
    /// A 64-bit length with the most significant bit set (RFC 6455 §5.2).
    #[error("64-bit payload length with the high bit set")]
    LengthOverflow,
    /// A frame payload over the configured frame limit.
    #[error("frame too big")]
    FrameTooBig,
    /// A message over the configured message limit.
    #[error("message too big")]
    MessageTooBig,
    /// A continuation frame with no fragmented message in progress.
    #[error("continuation without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// Text, or a close reason, that is not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A close payload of exactly one byte.
    #[error("close payload of one byte")]
    BadClosePayload,
    /// A close code a peer may not send (RFC 6455 §7.4).
    #[error("invalid close code")]
    BadCloseCode,
}

impl FrameError {
    /// The close code to answer with: 1009 for size limits, 1007 for bad UTF-8, else 1002.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooBig | Self::MessageTooBig => CloseCode::TOO_BIG,
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::Unmasked
            | Self::ReservedBits
            | Self::ReservedOpcode
            | Self::ControlTooLong
            | Self::ControlFragmented
            | Self::LengthOverflow
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::BadClosePayload
            | Self::BadCloseCode => CloseCode::PROTOCOL,
        }
    }
}

fn array_at<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
}

/// Parses and checks a client frame header; `Ok(None)` means more bytes are needed.
///
/// Every check runs as soon as the bytes it needs are present, so an oversized frame is refused
/// from its length field alone, before any payload is buffered. Non-minimal length encodings are
/// accepted (RFC 6455 §5.2 forbids sending them, not receiving them).
pub fn parse_header(buf: &[u8], max_frame: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::ReservedOpcode)?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::ControlFragmented);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::ControlTooLong);
    }
    let (payload_len, mask_at) = match len7 {
        126 => match array_at::<2>(buf, 2) {
            Some(bytes) => (usize::from(u16::from_be_bytes(bytes)), 4),
            None => return Ok(None),
        },
        127 => match array_at::<8>(buf, 2) {
            Some(bytes) => {
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(FrameError::LengthOverflow);
                }
                (
                    usize::try_from(len).map_err(|_| FrameError::FrameTooBig)?,
                    10,
                )
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    // The second bound keeps header_len + payload_len from overflowing whatever `max_frame` is.
    if payload_len > max_frame || payload_len > usize::MAX - MAX_HEADER_LEN {
        return Err(FrameError::FrameTooBig);
    }
    let Some(mask) = array_at::<4>(buf, mask_at) else {
        return Ok(None);
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: mask_at + 4,
    }))
}

/// `parse_header`, then, once the whole frame is in `buf`, unmasks its payload in place.
///
/// `Ok(None)` means more bytes are needed and `buf` is unchanged. On `Ok(Some(h))` the frame is
/// `buf[..h.frame_len()]` and its payload `buf[h.payload_range()]`.
pub fn decode(buf: &mut [u8], max_frame: usize) -> Result<Option<FrameHeader>, FrameError> {
    let Some(header) = parse_header(buf, max_frame)? else {
        return Ok(None);
    };
    match buf.get_mut(header.payload_range()) {
        Some(payload) => {
            apply_mask(payload, header.mask);
            Ok(Some(header))
        }
        None => Ok(None),
    }
}

/// Appends an unmasked server frame header with FIN set and the minimal length encoding.
fn write_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let written = encode_header(&mut header, opcode, len);
    out.extend_from_slice(header.get(..written).unwrap_or_default());
}

/// Encodes a server frame header into `dst`, returning its length (`header_len_for(len)`).
fn encode_header(dst: &mut [u8; MAX_HEADER_LEN], opcode: OpCode, len: usize) -> usize {
    let [b0, b1, rest @ ..] = dst;
    *b0 = 0x80 | opcode.bits();
    if len <= MAX_CONTROL_PAYLOAD {
        *b1 = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        *b1 = 126;
        rest.iter_mut()
            .zip(len.to_be_bytes())
            .for_each(|(d, s)| *d = s);
        4
    } else {
        *b1 = 127;
        rest.iter_mut()
            .zip((len as u64).to_be_bytes())
            .for_each(|(d, s)| *d = s);
        10
    }
}

/// Header length of a server frame with `len` payload bytes.
fn header_len_for(len: usize) -> usize {
    match len {
        0..=MAX_CONTROL_PAYLOAD => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Appends a server frame: unmasked, FIN set, minimal length encoding.
///
/// Control payloads must be at most 125 bytes; callers pass their own, bounded data.
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    debug_assert!(!opcode.is_control() || payload.len() <= MAX_CONTROL_PAYLOAD);
    out.reserve(header_len_for(payload.len()) + payload.len());
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a text frame whose payload `f` appends to `out`; the header is fixed up afterwards.
///
/// Two header bytes are reserved up front, which is all a payload under 126 bytes needs; a
/// longer one is shifted right by 2 or 8 bytes with `copy_within`. `f` must only append.
pub fn write_text_with(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0x80 | OpCode::Text.bits(), 0]);
    f(out);
    let Some(len) = out.len().checked_sub(start + 2) else {
        // `f` removed bytes it did not own: leave no half-written frame behind.
        out.truncate(start);
        return;
    };
    let header_len = header_len_for(len);
    if header_len > 2 {
        let extra = header_len - 2;
        out.resize(out.len() + extra, 0);
        out.copy_within(start + 2..start + 2 + len, start + header_len);
    }
    let mut header = [0u8; MAX_HEADER_LEN];
    let written = encode_header(&mut header, OpCode::Text, len);
    if let (Some(dst), Some(src)) = (out.get_mut(start..start + written), header.get(..written)) {
        dst.copy_from_slice(src);
    }
}

/// Appends a Close frame with `code` and `reason`, the reason cut to 123 bytes on a char boundary.
pub fn write_close(out: &mut Vec<u8>, code: CloseCode, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    out.reserve(2 + 2 + reason.len());
    write_header(out, OpCode::Close, 2 + reason.len());
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
}

/// One complete text frame, built once and shared by every recipient of a broadcast.
pub fn encode_text(payload: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(header_len_for(payload.len()) + payload.len());
    write_frame(&mut frame, OpCode::Text, payload);
    Bytes::from(frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::test_rng::Rng;

    const MAX: usize = 1 << 20;
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// How a test frame spells its payload length.
    #[derive(Clone, Copy, Debug)]
    enum Len {
        Minimal,
        Forced16,
        Forced64,
    }

    /// A client frame built by hand, independently of the codec under test.
    fn client_frame(b0: u8, payload: &[u8], mask: [u8; 4], form: Len) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![b0];
        match form {
            Len::Minimal if len < 126 => f.push(0x80 | len as u8),
            Len::Minimal | Len::Forced16 if len < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn decoded(
        mut bytes: Vec<u8>,
        max: usize,
    ) -> Result<Option<(FrameHeader, Vec<u8>)>, FrameError> {
        Ok(decode(&mut bytes, max)?.map(|h| (h, bytes[h.payload_range()].to_vec())))
    }

    fn err(bytes: &[u8]) -> FrameError {
        decode(&mut bytes.to_vec(), MAX).unwrap_err()
    }

    #[test]
    fn rfc_masked_hello() {
        let bytes = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, payload) = decoded(bytes, MAX).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                fin: true,
                opcode: OpCode::Text,
                mask: KEY,
                payload_len: 5,
                header_len: 6
            }
        );
        assert_eq!(h.frame_len(), 11);
        assert_eq!(payload, b"Hello");
        // The masked pong of §5.7.
        let pong = vec![
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, payload) = decoded(pong, MAX).unwrap().unwrap();
        assert_eq!(
            (h.opcode, payload.as_slice()),
            (OpCode::Pong, &b"Hello"[..])
        );
    }

    #[test]
    fn rfc_unmasked_frames_are_refused_from_clients() {
        for bytes in [
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f][..],
            &[0x01, 0x03, 0x48, 0x65, 0x6c],
            &[0x80, 0x02, 0x6c, 0x6f],
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f],
            &[0x82, 0x7e, 0x01, 0x00],
        ] {
            assert_eq!(err(bytes), FrameError::Unmasked, "{bytes:x?}");
        }
        assert_eq!(FrameError::Unmasked.close_code(), CloseCode::PROTOCOL);
    }

    #[test]
    fn rfc_fragments_masked() {
        let first = client_frame(0x01, b"Hel", KEY, Len::Minimal);
        let second = client_frame(0x80, b"lo", KEY, Len::Minimal);
        let (h1, p1) = decoded(first, MAX).unwrap().unwrap();
        let (h2, p2) = decoded(second, MAX).unwrap().unwrap();
        assert_eq!(
            (h1.fin, h1.opcode, p1.as_slice()),
            (false, OpCode::Text, &b"Hel"[..])
        );
        assert_eq!(
            (h2.fin, h2.opcode, p2.as_slice()),
            (true, OpCode::Continuation, &b"lo"[..])
        );
    }

    #[test]
    fn length_forms() {
        let payload: Vec<u8> = (0..70_000).map(|i| (i % 251) as u8).collect();
        for (len, header_len) in [
            (0, 6),
            (125, 6),
            (126, 8),
            (256, 8),
            (65535, 8),
            (65536, 14),
        ] {
            let frame = client_frame(0x82, &payload[..len], KEY, Len::Minimal);
            let (h, p) = decoded(frame, MAX).unwrap().unwrap();
            assert_eq!((h.payload_len, h.header_len), (len, header_len));
            assert_eq!(p, &payload[..len]);
        }
        // Non-minimal encodings are accepted on receive.
        for (form, header_len) in [(Len::Forced16, 8), (Len::Forced64, 14)] {
            let frame = client_frame(0x81, b"Hello", KEY, form);
            let (h, p) = decoded(frame, MAX).unwrap().unwrap();
            assert_eq!(
                (h.payload_len, h.header_len, p.as_slice()),
                (5, header_len, &b"Hello"[..])
            );
        }
        // RFC 6455 §5.7's 256-byte and 64 KiB binary headers, masked.
        let h = parse_header(&[0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4], MAX)
            .unwrap()
            .unwrap();
        assert_eq!(h.payload_len, 256);
        let bytes = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        let h = parse_header(&bytes, MAX).unwrap().unwrap();
        assert_eq!((h.payload_len, h.header_len), (65536, 14));
    }

    #[test]
    fn high_bit_of_64_bit_length_is_a_protocol_error() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(
            parse_header(&bytes, usize::MAX),
            Err(FrameError::LengthOverflow)
        );
        assert_eq!(FrameError::LengthOverflow.close_code(), CloseCode::PROTOCOL);
        // Just below: a (huge) legal length, refused as too big.
        let bytes = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(parse_header(&bytes, MAX), Err(FrameError::FrameTooBig));
        // With no cap at all it is a legal header still waiting for its mask.
        assert_eq!(parse_header(&bytes, usize::MAX), Ok(None));
    }

    #[test]
    fn reserved_bits_and_opcodes() {
        for rsv in [0x40, 0x20, 0x10, 0x70] {
            assert_eq!(err(&[0x81 | rsv]), FrameError::ReservedBits);
        }
        for op in (0x3..=0x7).chain(0xb..=0xf) {
            assert_eq!(
                err(&[0x80 | op]),
                FrameError::ReservedOpcode,
                "opcode {op:x}"
            );
            assert_eq!(
                err(&[op, 0x80]),
                FrameError::ReservedOpcode,
                "opcode {op:x}"
            );
        }
        assert_eq!(FrameError::ReservedBits.close_code(), CloseCode::PROTOCOL);
        assert_eq!(FrameError::ReservedOpcode.close_code(), CloseCode::PROTOCOL);
        for op in [0x0, 0x1, 0x2, 0x8, 0x9, 0xa] {
            assert_eq!(OpCode::from_bits(op).map(OpCode::bits), Some(op));
        }
    }

    #[test]
    fn control_frame_rules() {
        let ping_126 = client_frame(0x89, &[0; 126], KEY, Len::Minimal);
        assert_eq!(err(&ping_126), FrameError::ControlTooLong);
        // Refused from the second byte, before the extended length arrives.
        assert_eq!(err(&ping_126[..2]), FrameError::ControlTooLong);
        for b0 in [0x88, 0x8a] {
            assert_eq!(
                err(&client_frame(b0, &[0; 126], KEY, Len::Minimal)),
                FrameError::ControlTooLong
            );
        }
        // A short control payload in the 16-bit form is still a "length over 125" form.
        assert_eq!(
            err(&client_frame(0x89, b"hi", KEY, Len::Forced16)),
            FrameError::ControlTooLong
        );
        let (h, _) = decoded(client_frame(0x89, &[7; 125], KEY, Len::Minimal), MAX)
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len), (OpCode::Ping, 125));
        for b0 in [0x08, 0x09, 0x0a] {
            assert_eq!(err(&[b0]), FrameError::ControlFragmented);
        }
        assert_eq!(FrameError::ControlTooLong.close_code(), CloseCode::PROTOCOL);
        assert_eq!(
            FrameError::ControlFragmented.close_code(),
            CloseCode::PROTOCOL
        );
        assert!(
            OpCode::Close.is_control() && OpCode::Ping.is_control() && OpCode::Pong.is_control()
        );
        assert!(!OpCode::Text.is_control() && !OpCode::Binary.is_control());
        assert!(!OpCode::Continuation.is_control());
    }

    #[test]
    fn frame_size_cap_is_judged_from_the_header_alone() {
        assert_eq!(
            parse_header(&[0x82, 0xfe, 0x01, 0x00], 255),
            Err(FrameError::FrameTooBig)
        );
        assert_eq!(parse_header(&[0x82, 0xfe, 0x01, 0x00], 256), Ok(None));
        assert_eq!(
            parse_header(&[0x82, 0x80 | 11], 10),
            Err(FrameError::FrameTooBig)
        );
        let huge = [0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0];
        assert_eq!(parse_header(&huge, MAX), Err(FrameError::FrameTooBig));
        assert_eq!(FrameError::FrameTooBig.close_code(), CloseCode::TOO_BIG);
        assert_eq!(FrameError::MessageTooBig.close_code(), CloseCode::TOO_BIG);
        assert_eq!(
            FrameError::InvalidUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn close_code_table() {
        use FrameError::*;
        let table = [
            (Unmasked, 1002),
            (ReservedBits, 1002),
            (ReservedOpcode, 1002),
            (ControlTooLong, 1002),
            (ControlFragmented, 1002),
            (LengthOverflow, 1002),
            (FrameTooBig, 1009),
            (MessageTooBig, 1009),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (InvalidUtf8, 1007),
            (BadClosePayload, 1002),
            (BadCloseCode, 1002),
        ];
        for (error, code) in table {
            assert_eq!(error.close_code(), CloseCode(code), "{error:?}");
        }
    }

    #[test]
    fn need_more_changes_nothing() {
        let frame = client_frame(0x81, b"Hello", KEY, Len::Minimal);
        for cut in 0..frame.len() {
            let mut prefix = frame[..cut].to_vec();
            assert_eq!(decode(&mut prefix, MAX), Ok(None), "cut {cut}");
            assert_eq!(prefix, &frame[..cut]);
        }
    }

    /// A random valid client frame and what decoding it must give.
    fn random_frame(rng: &mut Rng) -> (Vec<u8>, bool, OpCode, Vec<u8>) {
        let opcodes = [
            OpCode::Continuation,
            OpCode::Text,
            OpCode::Binary,
            OpCode::Close,
            OpCode::Ping,
            OpCode::Pong,
        ];
        let opcode = opcodes[rng.below(opcodes.len())];
        let fin = opcode.is_control() || rng.below(2) == 0;
        let len = if opcode.is_control() {
            rng.below(126)
        } else {
            [0, 1, 5, 124, 125, 126, 127, 300, 65535, 65536, 70_000][rng.below(11)]
        };
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let form = match (opcode.is_control(), rng.below(3)) {
            (true, _) | (false, 0) => Len::Minimal,
            (false, 1) => Len::Forced16,
            _ => Len::Forced64,
        };
        let form = if matches!(form, Len::Forced16) && len > 65535 {
            Len::Forced64
        } else {
            form
        };
        let mask = (rng.next() as u32).to_ne_bytes();
        let b0 = if fin { 0x80 } else { 0 } | opcode.bits();
        (client_frame(b0, &payload, mask, form), fin, opcode, payload)
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..60 {
            let (frame, fin, opcode, payload) = random_frame(&mut rng);
            let whole = decoded(frame.clone(), MAX).unwrap().unwrap();
            assert_eq!((whole.0.fin, whole.0.opcode), (fin, opcode));
            assert_eq!(whole.1, payload);
            assert_eq!(whole.0.frame_len(), frame.len());
            // One byte at a time: need-more for every proper prefix, then the same frame.
            let mut buf = Vec::with_capacity(frame.len());
            for (i, &byte) in frame.iter().enumerate() {
                buf.push(byte);
                let got = decoded(buf.clone(), MAX).unwrap();
                if i + 1 < frame.len() {
                    assert_eq!(got, None, "prefix {}", i + 1);
                } else {
                    assert_eq!(got, Some(whole.clone()));
                }
            }
        }
    }

    #[test]
    fn streams_split_anywhere_decode_the_same() {
        let mut rng = Rng(42);
        for _ in 0..20 {
            let frames: Vec<_> = (0..8).map(|_| random_frame(&mut rng)).collect();
            let stream: Vec<u8> = frames.iter().flat_map(|f| f.0.clone()).collect();
            let expected: Vec<(bool, OpCode, Vec<u8>)> = frames
                .into_iter()
                .map(|(_, fin, op, p)| (fin, op, p))
                .collect();
            for chunk in [1, 2, 3, 7, 13, 1000, stream.len()] {
                // The runtime loop: read a chunk, decode until need-more, consume, repeat.
                let mut got = Vec::new();
                let mut buf: Vec<u8> = Vec::new();
                for piece in stream.chunks(chunk) {
                    buf.extend_from_slice(piece);
                    while let Some(h) = decode(&mut buf, MAX).unwrap() {
                        got.push((h.fin, h.opcode, buf[h.payload_range()].to_vec()));
                        buf.drain(..h.frame_len());
                    }
                }
                assert!(buf.is_empty());
                assert_eq!(got, expected, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn server_frames_use_minimal_lengths() {
        for (len, header) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xff, 0xff]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![b'x'; len];
            let mut out = b"prefix".to_vec();
            write_frame(&mut out, OpCode::Binary, &payload);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..6 + header.len()], header.as_slice(), "len {len}");
            assert_eq!(&out[6 + header.len()..], payload.as_slice());
        }
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Pong, b"Hello");
        assert_eq!(out, [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        out.clear();
        write_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(encode_text(b"Hello").as_ref(), out.as_slice());
    }

    #[test]
    fn text_with_matches_write_frame_at_every_length_form() {
        for len in [0, 1, 124, 125, 126, 127, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut expected = b"earlier frame".to_vec();
            write_frame(&mut expected, OpCode::Text, &payload);
            let mut out = b"earlier frame".to_vec();
            write_text_with(&mut out, |out| out.extend_from_slice(&payload));
            assert_eq!(out, expected, "len {len}");
        }
        let mut out = b"keep".to_vec();
        write_text_with(&mut out, |out| out.clear());
        assert_eq!(out, b"");
        let mut out = b"keep".to_vec();
        write_text_with(&mut out, |out| {
            out.pop();
        });
        assert_eq!(out, b"keep");
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        write_close(&mut out, CloseCode::NORMAL, "");
        assert_eq!(out, [0x88, 0x02, 0x03, 0xe8]);
        out.clear();
        write_close(&mut out, CloseCode::TOKEN_INVALID, "expired");
        assert_eq!(out, b"\x88\x09\x11\x31expired");
        // 'é' is two bytes: 62 of them are 124 bytes, cut to 61 (122 bytes) on a boundary.
        let long = "é".repeat(62);
        out.clear();
        write_close(&mut out, CloseCode::GOING_AWAY, &long);
        assert_eq!(out[1] as usize, 2 + 122);
        assert_eq!(std::str::from_utf8(&out[4..]).unwrap(), "é".repeat(61));
        out.clear();
        write_close(&mut out, CloseCode::POLICY, &"a".repeat(500));
        assert_eq!(out.len(), 2 + 125);
        assert_eq!(out[1], 125);
    }
}
