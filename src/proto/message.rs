//! Messages from decoded frames (RFC 6455 §5.4-5.6, §7.1.6, §8.1): fragment assembly with
//! control frames allowed in between, incremental UTF-8 validation of text, the message size cap
//! (1009) and Close payload checks. Unfragmented messages are borrowed from the read buffer; only
//! fragmented ones are copied, into a buffer allocated on first use. Pure: no IO.

use std::mem;
use std::str;

use super::close::CloseCode;
use super::frame::{FrameError, FrameHeader, OpCode};

/// A complete message or control frame from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message, valid UTF-8.
    Text(&'a str),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// A ping; the caller answers with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame: its code and UTF-8 reason, or `None` for an empty payload.
    Close(Option<(CloseCode, &'a str)>),
}

/// Which kind of fragmented message is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// Turns decoded frames into messages: fragments, size cap, UTF-8, control frames.
#[derive(Debug)]
pub struct Assembler {
    max_message: usize,
    /// `Some` while a fragmented message is in progress.
    kind: Option<Kind>,
    /// Bytes of the message in progress so far, including `carry`.
    len: usize,
    /// The complete characters of a fragmented text message.
    text: String,
    /// The bytes of a fragmented binary message.
    binary: Vec<u8>,
    /// The start of a character split across fragments (at most 3 bytes are ever kept).
    carry: [u8; 4],
    carry_len: usize,
}

impl Assembler {
    /// An assembler for messages of at most `max_message` bytes; allocates nothing.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            kind: None,
            len: 0,
            text: String::new(),
            binary: Vec::new(),
            carry: [0; 4],
            carry_len: 0,
        }
    }

    /// Feeds one decoded frame with its unmasked payload; `Ok(None)` while a message is incomplete.
    ///
    /// `header` comes from `frame::decode`, which has already enforced the control-frame rules.
    /// Unfragmented messages borrow `payload`; fragments are collected, the size being checked
    /// before each append (`MessageTooBig`). Text is validated fragment by fragment, so invalid
    /// UTF-8 is reported as soon as the fragment holding it arrives, and a character left
    /// incomplete by the final fragment is invalid too. A continuation with no message in
    /// progress, or a new data frame inside one, is a protocol error. After any error the
    /// connection is to be closed; the assembler is not meant to be used again.
    pub fn push<'a>(
        &'a mut self,
        header: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Option<Message<'a>>, FrameError> {
        match header.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload))),
            OpCode::Pong => Ok(Some(Message::Pong(payload))),
            OpCode::Close => parse_close(payload).map(|close| Some(Message::Close(close))),
            OpCode::Text | OpCode::Binary if self.kind.is_some() => {
                Err(FrameError::ExpectedContinuation)
            }
            OpCode::Text | OpCode::Binary if header.fin => {
                if payload.len() > self.max_message {
                    return Err(FrameError::MessageTooBig);
                }
                Ok(Some(if header.opcode == OpCode::Text {
                    Message::Text(str::from_utf8(payload).map_err(|_| FrameError::InvalidUtf8)?)
                } else {
                    Message::Binary(payload)
                }))
            }
            OpCode::Text | OpCode::Binary => {
                let kind = if header.opcode == OpCode::Text {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                self.start(kind);
                self.append(payload)?;
                Ok(None)
            }
            OpCode::Continuation => {
                if self.kind.is_none() {
                    return Err(FrameError::UnexpectedContinuation);
                }
                self.append(payload)?;
                if header.fin {
                    self.finish().map(Some)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Changes the largest message accepted from now on (a message in progress is checked
    /// against it at its next fragment).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.max_message = max_message;
    }

    /// Whether a fragmented message has started and not yet finished.
    pub fn in_progress(&self) -> bool {
        self.kind.is_some()
    }

    /// Releases the fragment buffers, unless a fragmented message is in progress.
    pub fn shrink(&mut self) {
        if self.kind.is_none() {
            self.text = String::new();
            self.binary = Vec::new();
        }
    }

    /// Begins a fragmented message, reusing whichever buffer already has capacity.
    fn start(&mut self, kind: Kind) {
        self.kind = Some(kind);
        self.len = 0;
        self.carry_len = 0;
        match kind {
            Kind::Text => {
                if self.text.capacity() == 0 && self.binary.capacity() > 0 {
                    let mut bytes = mem::take(&mut self.binary);
                    bytes.clear();
                    // An empty vector is valid UTF-8, so this keeps its capacity.
                    self.text = String::from_utf8(bytes).unwrap_or_default();
                }
                self.text.clear();
            }
            Kind::Binary => {
                if self.binary.capacity() == 0 && self.text.capacity() > 0 {
                    self.binary = mem::take(&mut self.text).into_bytes();
                }
                self.binary.clear();
            }
        }
    }

    /// Appends one fragment after checking the size cap; validates text as it goes.
    fn append(&mut self, fragment: &[u8]) -> Result<(), FrameError> {
        let len = self
            .len
            .checked_add(fragment.len())
            .filter(|&len| len <= self.max_message)
            .ok_or(FrameError::MessageTooBig)?;
        self.len = len;
        match self.kind {
            Some(Kind::Text) => self.append_text(fragment),
            Some(Kind::Binary) => {
                self.binary.extend_from_slice(fragment);
                Ok(())
            }
            None => Err(FrameError::UnexpectedContinuation),
        }
    }

    /// Validates `fragment` as the continuation of the text so far and appends it.
    fn append_text(&mut self, fragment: &[u8]) -> Result<(), FrameError> {
        let mut rest = fragment;
        if self.carry_len > 0 {
            // Complete the character split by the previous fragment, if this one holds the rest.
            let width = utf8_width(self.carry[0]);
            let wanted = width.saturating_sub(self.carry_len).min(rest.len());
            let (head, tail) = rest.split_at(wanted);
            for (slot, &byte) in self.carry.iter_mut().skip(self.carry_len).zip(head) {
                *slot = byte;
            }
            self.carry_len += wanted;
            rest = tail;
            let pending = self.carry.get(..self.carry_len).unwrap_or_default();
            match str::from_utf8(pending) {
                Ok(complete) => {
                    self.text.push_str(complete);
                    self.carry_len = 0;
                }
                // Still a valid prefix: this fragment was too short to finish the character.
                Err(e) if e.error_len().is_none() && self.carry_len < width => {}
                Err(_) => return Err(FrameError::InvalidUtf8),
            }
        }
        match str::from_utf8(rest) {
            Ok(valid) => self.text.push_str(valid),
            Err(e) if e.error_len().is_none() => {
                let (valid, tail) = rest.split_at(e.valid_up_to());
                // `valid` was just checked; re-checking a prefix is the price of no `unsafe`.
                self.text
                    .push_str(str::from_utf8(valid).map_err(|_| FrameError::InvalidUtf8)?);
                // An incomplete sequence is at most 3 bytes, so it fits in `carry`.
                for (slot, &byte) in self.carry.iter_mut().zip(tail) {
                    *slot = byte;
                }
                self.carry_len = tail.len();
            }
            Err(_) => return Err(FrameError::InvalidUtf8),
        }
        Ok(())
    }

    /// Ends the fragmented message and hands it out.
    fn finish(&mut self) -> Result<Message<'_>, FrameError> {
        let kind = self.kind.take();
        match kind {
            Some(Kind::Text) if self.carry_len > 0 => Err(FrameError::InvalidUtf8),
            Some(Kind::Text) => Ok(Message::Text(&self.text)),
            Some(Kind::Binary) => Ok(Message::Binary(&self.binary)),
            None => Err(FrameError::UnexpectedContinuation),
        }
    }
}

/// The length of the UTF-8 sequence that `lead` starts (1 for bytes that start none).
fn utf8_width(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

/// Checks a Close payload (RFC 6455 §5.5.1, §7.4): empty, or a valid code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(FrameError::BadCloseCode);
            }
            let reason = str::from_utf8(reason).map_err(|_| FrameError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::test_rng::Rng;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> FrameHeader {
        FrameHeader {
            fin,
            opcode,
            mask: [0; 4],
            payload_len: payload.len(),
            header_len: 0,
        }
    }

    /// Pushes a frame and turns the answer into an owned, comparable value.
    fn push(
        asm: &mut Assembler,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
    ) -> Result<Option<String>, FrameError> {
        let header = frame(fin, opcode, payload);
        Ok(asm.push(&header, payload)?.map(|m| format!("{m:?}")))
    }

    fn text(s: &str) -> Option<String> {
        Some(format!("{:?}", Message::Text(s)))
    }

    /// Feeds a text message as fragments (first Text, then Continuation, FIN on the last).
    fn fragmented_text(asm: &mut Assembler, parts: &[&[u8]]) -> Result<Option<String>, FrameError> {
        let mut last = None;
        for (i, part) in parts.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            last = push(asm, i + 1 == parts.len(), opcode, part)?;
        }
        Ok(last)
    }

    #[test]
    fn unfragmented_messages_borrow_the_payload() {
        let mut asm = Assembler::new(100);
        let payload = b"Hello".to_vec();
        match asm.push(&frame(true, OpCode::Text, &payload), &payload) {
            Ok(Some(Message::Text(s))) => assert!(std::ptr::eq(s.as_ptr(), payload.as_ptr())),
            other => panic!("{other:?}"),
        }
        match asm.push(&frame(true, OpCode::Binary, &payload), &payload) {
            Ok(Some(Message::Binary(b))) => assert!(std::ptr::eq(b.as_ptr(), payload.as_ptr())),
            other => panic!("{other:?}"),
        }
        assert_eq!(asm.text.capacity() + asm.binary.capacity(), 0);
        assert!(!asm.in_progress());
    }

    #[test]
    fn rfc_fragments_with_controls_in_between() {
        let mut asm = Assembler::new(100);
        assert_eq!(push(&mut asm, false, OpCode::Text, b"Hel"), Ok(None));
        assert!(asm.in_progress());
        let ping = push(&mut asm, true, OpCode::Ping, b"p");
        assert_eq!(ping, Ok(Some(format!("{:?}", Message::Ping(b"p")))));
        let pong = push(&mut asm, true, OpCode::Pong, b"");
        assert_eq!(pong, Ok(Some(format!("{:?}", Message::Pong(b"")))));
        assert_eq!(push(&mut asm, false, OpCode::Continuation, b""), Ok(None));
        assert_eq!(
            push(&mut asm, true, OpCode::Continuation, b"lo"),
            Ok(text("Hello"))
        );
        assert!(!asm.in_progress());
        // Binary the same way, with a close in the middle (handed out; the session decides).
        assert_eq!(push(&mut asm, false, OpCode::Binary, &[1, 2]), Ok(None));
        let close = push(&mut asm, true, OpCode::Close, &[0x03, 0xe8]);
        assert_eq!(
            close,
            Ok(Some(format!(
                "{:?}",
                Message::Close(Some((CloseCode::NORMAL, "")))
            )))
        );
        let done = push(&mut asm, true, OpCode::Continuation, &[3]);
        assert_eq!(done, Ok(Some(format!("{:?}", Message::Binary(&[1, 2, 3])))));
    }

    #[test]
    fn fragment_order_errors() {
        let mut asm = Assembler::new(100);
        assert_eq!(
            push(&mut asm, true, OpCode::Continuation, b"x"),
            Err(FrameError::UnexpectedContinuation)
        );
        assert_eq!(
            push(&mut asm, false, OpCode::Continuation, b"x"),
            Err(FrameError::UnexpectedContinuation)
        );
        for (opcode, fin) in [
            (OpCode::Text, true),
            (OpCode::Text, false),
            (OpCode::Binary, true),
            (OpCode::Binary, false),
        ] {
            let mut asm = Assembler::new(100);
            assert_eq!(push(&mut asm, false, OpCode::Binary, b"a"), Ok(None));
            assert_eq!(
                push(&mut asm, fin, opcode, b"b"),
                Err(FrameError::ExpectedContinuation)
            );
        }
        assert_eq!(
            FrameError::ExpectedContinuation.close_code(),
            CloseCode::PROTOCOL
        );
        assert_eq!(
            FrameError::UnexpectedContinuation.close_code(),
            CloseCode::PROTOCOL
        );
    }

    const SAMPLE: &str = "aé€𝄞 z, ünïcödé ✓ 𝄞€éa";

    #[test]
    fn text_split_at_every_byte_position() {
        let bytes = SAMPLE.as_bytes();
        for i in 0..=bytes.len() {
            let mut asm = Assembler::new(1000);
            let got = fragmented_text(&mut asm, &[&bytes[..i], &bytes[i..]]);
            assert_eq!(got, Ok(text(SAMPLE)), "split at {i}");
        }
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut asm = Assembler::new(1000);
                let got = fragmented_text(&mut asm, &[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                assert_eq!(got, Ok(text(SAMPLE)), "split at {i} and {j}");
            }
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let mut asm = Assembler::new(1000);
        assert_eq!(fragmented_text(&mut asm, &singles), Ok(text(SAMPLE)));
        // With pings between every single-byte fragment.
        let mut asm = Assembler::new(1000);
        for (i, part) in singles.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            let got = push(&mut asm, i + 1 == singles.len(), opcode, part).unwrap();
            assert_eq!(got.is_some(), i + 1 == singles.len());
            assert!(push(&mut asm, true, OpCode::Ping, b"hi").unwrap().is_some());
        }
    }

    #[test]
    fn invalid_utf8_fails_at_the_fragment_that_proves_it() {
        // (fragments, index of the push that must fail; None: only the final one)
        let cases: [(&[&[u8]], usize); 9] = [
            (&[b"ok", &[0xff], b"never"], 1),
            (&[&[0xe2, 0x82], &[0x41], b"x"], 1),
            (&[&[0xe2], &[0x82], &[0x41], b"x"], 2),
            (&[&[0xc0], &[0x80], b"x"], 0),
            (&[&[0xed], &[0xa0, 0x80], b"x"], 1),
            (&[&[0xf4, 0x90], b"x"], 0),
            (&[&[0xf0, 0x9d], &[0x84], &[0x9e, 0x80], b"x"], 2),
            (&[b"a", &[0xe2, 0x82]], 1),
            (&[&[0xf0], &[], &[0x9d], &[]], 3),
        ];
        for (parts, failing) in cases {
            let mut asm = Assembler::new(1000);
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                let got = push(&mut asm, i + 1 == parts.len(), opcode, part);
                if i < failing {
                    assert_eq!(got, Ok(None), "{parts:x?} push {i}");
                } else {
                    assert_eq!(got, Err(FrameError::InvalidUtf8), "{parts:x?} push {i}");
                    break;
                }
            }
        }
        let mut asm = Assembler::new(1000);
        assert_eq!(
            push(&mut asm, true, OpCode::Text, &[b'a', 0xe2, 0x82]),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(
            FrameError::InvalidUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn incremental_utf8_agrees_with_whole_message_validation() {
        let mut rng = Rng(7);
        let alphabet: &[&[u8]] = &[
            b"a",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            &[0xff],
            &[0xc0, 0x80],
            &[0xed, 0xa0, 0x80],
            &[0xe2, 0x82],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0x80],
        ];
        for _ in 0..3000 {
            let mut bytes = Vec::new();
            for _ in 0..(rng.next() % 8) {
                let piece = alphabet[(rng.next() % 10) as usize];
                // Mostly valid pieces, so that many messages are valid.
                let piece = if rng.next().is_multiple_of(4) {
                    piece
                } else {
                    alphabet[(rng.next() % 4) as usize]
                };
                bytes.extend_from_slice(piece);
            }
            let mut cuts: Vec<usize> = (0..(rng.next() % 5))
                .map(|_| (rng.next() as usize) % (bytes.len() + 1))
                .collect();
            cuts.sort_unstable();
            let mut parts: Vec<&[u8]> = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                parts.push(&bytes[from..cut]);
                from = cut;
            }
            let mut asm = Assembler::new(1000);
            let mut result = Ok(None);
            let mut failed_at = None;
            for (i, part) in parts.iter().enumerate() {
                let opcode = if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                result = push(&mut asm, i + 1 == parts.len(), opcode, part);
                if result.is_err() {
                    failed_at = Some(i);
                    break;
                }
            }
            match std::str::from_utf8(&bytes) {
                Ok(s) => assert_eq!(result, Ok(text(s)), "{parts:x?}"),
                Err(_) => {
                    assert_eq!(result, Err(FrameError::InvalidUtf8), "{parts:x?}");
                    // Fail fast: the error comes with the first fragment after which the bytes
                    // so far can no longer be the start of valid UTF-8 (or with the final one).
                    let seen: usize = parts[..=failed_at.unwrap()].iter().map(|p| p.len()).sum();
                    let doomed =
                        std::str::from_utf8(&bytes[..seen]).is_err_and(|e| e.error_len().is_some());
                    assert!(doomed || failed_at == Some(parts.len() - 1), "{parts:x?}");
                    if let Some(at) = failed_at.filter(|&at| at > 0) {
                        let before: usize = parts[..at].iter().map(|p| p.len()).sum();
                        let doomed_before = std::str::from_utf8(&bytes[..before])
                            .is_err_and(|e| e.error_len().is_some());
                        assert!(!doomed_before, "late error {parts:x?}");
                    }
                }
            }
        }
    }

    #[test]
    fn message_cap_counts_all_fragments_before_appending() {
        let mut asm = Assembler::new(10);
        assert_eq!(
            push(&mut asm, true, OpCode::Binary, &[0; 11]),
            Err(FrameError::MessageTooBig)
        );
        assert_eq!(
            push(&mut asm, true, OpCode::Text, &[b'a'; 11]),
            Err(FrameError::MessageTooBig)
        );
        assert!(
            push(&mut asm, true, OpCode::Binary, &[0; 10])
                .unwrap()
                .is_some()
        );
        let mut asm = Assembler::new(10);
        assert_eq!(push(&mut asm, false, OpCode::Binary, &[0; 6]), Ok(None));
        assert_eq!(
            push(&mut asm, false, OpCode::Continuation, &[0; 5]),
            Err(FrameError::MessageTooBig)
        );
        assert_eq!(asm.binary.len(), 6, "nothing appended past the cap");
        let mut asm = Assembler::new(10);
        assert_eq!(
            fragmented_text(&mut asm, &[b"01234", b"", b"56789"]),
            Ok(text("0123456789"))
        );
        assert_eq!(
            fragmented_text(&mut asm, &[b"01234", b"56789", b"x"]),
            Err(FrameError::MessageTooBig)
        );
        assert_eq!(asm.text, "0123456789");
        // Controls do not count towards the message.
        let mut asm = Assembler::new(4);
        assert_eq!(push(&mut asm, false, OpCode::Text, b"ab"), Ok(None));
        assert!(
            push(&mut asm, true, OpCode::Ping, &[0; 100])
                .unwrap()
                .is_some()
        );
        assert_eq!(
            push(&mut asm, true, OpCode::Continuation, b"cd"),
            Ok(text("abcd"))
        );
    }

    #[test]
    fn close_payloads() {
        let close = |payload: &[u8]| {
            let mut asm = Assembler::new(100);
            push(&mut asm, true, OpCode::Close, payload)
        };
        let shown = |m: Message<'_>| Ok(Some(format!("{m:?}")));
        assert_eq!(close(&[]), shown(Message::Close(None)));
        assert_eq!(close(&[0x03]), Err(FrameError::BadClosePayload));
        assert_eq!(
            close(b"\x03\xe8bye"),
            shown(Message::Close(Some((CloseCode::NORMAL, "bye"))))
        );
        for ok in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4401, 4999] {
            let mut payload = ok.to_be_bytes().to_vec();
            payload.extend_from_slice("é".as_bytes());
            assert_eq!(
                close(&payload),
                shown(Message::Close(Some((CloseCode(ok), "é"))))
            );
        }
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                close(&bad.to_be_bytes()),
                Err(FrameError::BadCloseCode),
                "{bad}"
            );
        }
        assert_eq!(close(b"\x03\xe8\xff"), Err(FrameError::InvalidUtf8));
        assert_eq!(close(b"\x03\xe8\xe2\x82"), Err(FrameError::InvalidUtf8));
        assert_eq!(
            FrameError::BadClosePayload.close_code(),
            CloseCode::PROTOCOL
        );
        assert_eq!(FrameError::BadCloseCode.close_code(), CloseCode::PROTOCOL);
    }

    #[test]
    fn buffers_are_lazy_reused_and_shrinkable() {
        let mut asm = Assembler::new(1 << 20);
        assert_eq!(asm.text.capacity() + asm.binary.capacity(), 0);
        assert_eq!(push(&mut asm, false, OpCode::Binary, &[1; 1000]), Ok(None));
        asm.shrink();
        assert!(asm.binary.capacity() >= 1000, "no shrink while in progress");
        assert!(
            push(&mut asm, true, OpCode::Continuation, &[2])
                .unwrap()
                .is_some()
        );
        // A text message next takes over the binary buffer's capacity.
        assert_eq!(push(&mut asm, false, OpCode::Text, b"a"), Ok(None));
        assert!(asm.text.capacity() >= 1000);
        assert_eq!(asm.binary.capacity(), 0);
        assert_eq!(
            push(&mut asm, true, OpCode::Continuation, b"b"),
            Ok(text("ab"))
        );
        asm.shrink();
        assert_eq!(asm.text.capacity() + asm.binary.capacity(), 0);
    }
}
