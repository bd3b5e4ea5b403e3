//! The JSON message envelope (docs/protocol.md §3, §4, §6): client commands parsed borrowed from a
//! text frame (the `data` of a `send` kept as raw JSON, forwarded byte for byte), and the server
//! messages written as compact JSON with the key order the protocol shows, straight into an
//! output buffer. Pure code: no IO, no allocation beyond the caller's buffer (and a string with
//! escapes that a command uses).
//!
//! Commands are parsed by a hand-written single pass over the bytes that accepts and refuses
//! exactly what the serde_json derive it replaced did (`tests/envelope_differential.rs` keeps that
//! implementation as its oracle): strict JSON everywhere, unknown members validated and skipped,
//! a repeated known member refused, no nesting limit (serde_json skips ignored and raw values
//! without recursion, so it has none here either).

use std::borrow::Cow;

use serde_json::value::RawValue;

/// One command from a client.
#[derive(Debug)]
pub enum ClientCommand<'a> {
    /// `{"action":"authenticate","token":"<JWT>"}`; `token` is empty when absent or `null`.
    Authenticate {
        /// The JWT (empty when the command carried none, so verification reports it missing).
        token: Cow<'a, str>,
    },
    /// `{"action":"refresh","token":"<JWT>"}`; `token` is empty when absent or `null`.
    Refresh {
        /// The new JWT (empty when the command carried none).
        token: Cow<'a, str>,
    },
    /// `{"action":"join","group":"room.1"}` (the name is not validated here).
    Join {
        /// The group to join.
        group: Cow<'a, str>,
    },
    /// `{"action":"leave","group":"room.1"}`.
    Leave {
        /// The group to leave.
        group: Cow<'a, str>,
    },
    /// `{"action":"send","group":"room.1","data":<any JSON>}`; `data` is `None` when absent.
    Send {
        /// The group to publish to.
        group: Cow<'a, str>,
        /// The payload exactly as the client wrote it (`null` included).
        data: Option<RawJson<'a>>,
    },
    /// A well-formed command whose `action` wsgate does not know.
    Unknown,
}

/// One JSON value exactly as it was written, borrowed: the `data` of a parsed `send`, or a
/// serde_json [`RawValue`]. Only those make one, so the text is always valid JSON, without
/// whitespace around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawJson<'a>(&'a str);

/// Deepest nesting a message's `data` may have (arrays and objects; `data` itself, when one,
/// counts as level 1). Deeper `data` is refused with the 400 error (HTTP API: 400): relayed,
/// it would reach every member's JSON parser, and many stop (or crash) far sooner.
pub const MAX_DATA_DEPTH: usize = 64;

impl<'a> RawJson<'a> {
    /// The JSON text.
    pub fn get(&self) -> &'a str {
        self.0
    }

    /// Whether the value nests arrays and objects deeper than `max` levels. One pass over
    /// the bytes that stops at the first level too deep.
    pub fn nests_deeper_than(&self, max: usize) -> bool {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        for &b in self.0.as_bytes() {
            if in_string {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }
}

impl<'a> From<&'a RawValue> for RawJson<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Self(raw.get())
    }
}

impl<'a> From<&'a Box<RawValue>> for RawJson<'a> {
    fn from(raw: &'a Box<RawValue>) -> Self {
        Self(raw.get())
    }
}

/// Why a text frame is not a command. On the wire every one of them is the same 400 `invalid
/// JSON command` (docs/protocol.md §6); the variants tell the tests and the fuzzer apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON at all (or an object with a repeated key).
    #[error("invalid JSON")]
    NotJson,
    /// Valid JSON, but not an object.
    #[error("message is not a JSON object")]
    NotAnObject,
    /// No `action` member, or `"action":null`.
    #[error("missing action")]
    MissingAction,
    /// A member the action needs is absent or has the wrong type.
    #[error("`{0}` must be a string")]
    BadField(&'static str),
}

/// Parses one client command, borrowing from `text`.
///
/// One pass over the bytes. No allocation unless a string the command uses has escapes (it is
/// then decoded into a `Cow::Owned`), or a value nests more than [`INLINE_DEPTH`] levels deep.
pub fn parse_command(text: &str) -> Result<ClientCommand<'_>, EnvelopeError> {
    let bytes = text.as_bytes();
    let start = skip_ws(bytes, 0);
    if at(bytes, start) != b'{' {
        // Valid JSON that is not an object is told apart from no JSON at all.
        return Err(match value(bytes, start) {
            Ok(end) if only_ws(bytes, end) => EnvelopeError::NotAnObject,
            _ => EnvelopeError::NotJson,
        });
    }
    let raw = command(text, start).map_err(|Invalid| EnvelopeError::NotJson)?;
    let action = raw
        .action
        .string("action")?
        .ok_or(EnvelopeError::MissingAction)?;
    Ok(match action.as_ref() {
        "authenticate" => ClientCommand::Authenticate {
            token: raw.token.string("token")?.unwrap_or_default(),
        },
        "refresh" => ClientCommand::Refresh {
            token: raw.token.string("token")?.unwrap_or_default(),
        },
        "join" => ClientCommand::Join {
            group: raw.group.required("group")?,
        },
        "leave" => ClientCommand::Leave {
            group: raw.group.required("group")?,
        },
        "send" => ClientCommand::Send {
            group: raw.group.required("group")?,
            data: raw.data,
        },
        _ => ClientCommand::Unknown,
    })
}

/// Nesting levels a value may reach before the parser's stack of open containers moves to the
/// heap (serde_json accepts any depth in a skipped or raw value, so the parser must too): 64 in a
/// register, then 1,024 in 16 words on the call stack.
pub const INLINE_DEPTH: usize = 64 + 64 * NESTING_WORDS;

const NESTING_WORDS: usize = 16;

/// The text is not what serde_json accepts.
#[derive(Debug)]
struct Invalid;

/// A string member (`action`, `token`, `group`) as written.
#[derive(Debug, Clone, Copy)]
enum Member<'a> {
    /// Absent, or `null`.
    Missing,
    /// A string: its contents between the quotes, and whether they hold a backslash.
    Str { text: &'a str, escaped: bool },
    /// Any other JSON value.
    Other,
}

impl<'a> Member<'a> {
    /// The string, or `BadField` when it is not one (absent and `null` included).
    fn required(self, name: &'static str) -> Result<Cow<'a, str>, EnvelopeError> {
        self.string(name)?.ok_or(EnvelopeError::BadField(name))
    }

    /// `Some(text)` for a string, `None` for `null`/absent, `BadField` for anything else and for
    /// a string whose `\u` escapes hold a lone surrogate (serde_json refuses it as a `str`).
    fn string(self, name: &'static str) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
        match self {
            Member::Missing => Ok(None),
            Member::Other => Err(EnvelopeError::BadField(name)),
            Member::Str {
                text,
                escaped: false,
            } => Ok(Some(Cow::Borrowed(text))),
            Member::Str {
                text,
                escaped: true,
            } => unescape(text)
                .map(|s| Some(Cow::Owned(s)))
                .ok_or(EnvelopeError::BadField(name)),
        }
    }
}

/// The members of a command that wsgate reads.
struct RawCommand<'a> {
    action: Member<'a>,
    token: Member<'a>,
    group: Member<'a>,
    data: Option<RawJson<'a>>,
}

/// Which known member a key names.
#[derive(Clone, Copy)]
enum Key {
    Action = 1,
    Token = 2,
    Group = 4,
    Data = 8,
}

impl Key {
    fn of(name: &[u8]) -> Option<Key> {
        match name {
            b"action" => Some(Key::Action),
            b"token" => Some(Key::Token),
            b"group" => Some(Key::Group),
            b"data" => Some(Key::Data),
            _ => None,
        }
    }
}

// The scanner: free functions over the bytes and a position, each returning the position after
// what it read, so that the hot loops keep the position in a register. Reading past the end
// yields `0`, which is never valid where a byte is expected (whether the text really ended is
// checked against its length).

#[inline(always)]
fn at(bytes: &[u8], i: usize) -> u8 {
    bytes.get(i).copied().unwrap_or(0)
}

/// Skips JSON whitespace (exactly serde_json's four bytes).
#[inline(always)]
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(at(bytes, i), b' ' | b'\n' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

/// Only whitespace is left from `i`.
#[inline(always)]
fn only_ws(bytes: &[u8], i: usize) -> bool {
    skip_ws(bytes, i) == bytes.len()
}

/// The top-level object, at its `{`, through the end of the text: the members wsgate reads,
/// every other one validated and skipped.
fn command(text: &str, mut i: usize) -> Result<RawCommand<'_>, Invalid> {
    let bytes = text.as_bytes();
    let mut raw = RawCommand {
        action: Member::Missing,
        token: Member::Missing,
        group: Member::Missing,
        data: None,
    };
    i = skip_ws(bytes, i + 1);
    if at(bytes, i) != b'}' {
        let mut seen = 0u8;
        loop {
            if at(bytes, i) != b'"' {
                return Err(Invalid);
            }
            let (key, end) = match plain_key(bytes, i) {
                Some((key, end)) => (Some(key), end),
                None => {
                    let (end, escaped) = string(bytes, i + 1)?;
                    let key = if escaped {
                        escaped_key(text.get(i + 1..end - 1).ok_or(Invalid)?)?
                    } else {
                        Key::of(bytes.get(i + 1..end - 1).ok_or(Invalid)?)
                    };
                    (key, end)
                }
            };
            i = skip_ws(bytes, end);
            if at(bytes, i) != b':' {
                return Err(Invalid);
            }
            i = skip_ws(bytes, i + 1);
            match key {
                None => i = value(bytes, i)?,
                Some(key) => {
                    // The derived struct refused a known member given twice.
                    if seen & key as u8 != 0 {
                        return Err(Invalid);
                    }
                    seen |= key as u8;
                    match key {
                        Key::Action => (raw.action, i) = member(text, i)?,
                        Key::Token => (raw.token, i) = member(text, i)?,
                        Key::Group => (raw.group, i) = member(text, i)?,
                        Key::Data => {
                            let end = value(bytes, i)?;
                            raw.data = Some(RawJson(text.get(i..end).ok_or(Invalid)?));
                            i = end;
                        }
                    }
                }
            }
            i = skip_ws(bytes, i);
            match at(bytes, i) {
                b',' => i = skip_ws(bytes, i + 1),
                b'}' => break,
                _ => return Err(Invalid),
            }
        }
    }
    if only_ws(bytes, i + 1) {
        Ok(raw)
    } else {
        Err(Invalid)
    }
}

/// A known key written without escapes, at its opening quote: the key and the position after
/// its closing quote (a shortcut: `None` sends any key through `string`).
#[inline(always)]
fn plain_key(bytes: &[u8], i: usize) -> Option<(Key, usize)> {
    const fn word(key: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        let mut k = 0;
        while k < key.len() {
            w[k] = key[k];
            k += 1;
        }
        u64::from_le_bytes(w)
    }
    const ACTION: u64 = word(b"\"action\"");
    const GROUP: u64 = word(b"\"group\"");
    const TOKEN: u64 = word(b"\"token\"");
    const DATA: u64 = word(b"\"data\"");
    const SEVEN: u64 = u64::MAX >> 8;
    const SIX: u64 = u64::MAX >> 16;
    let w = u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?);
    if w == ACTION {
        Some((Key::Action, i + 8))
    } else if w & SEVEN == GROUP {
        Some((Key::Group, i + 7))
    } else if w & SIX == DATA {
        Some((Key::Data, i + 6))
    } else if w & SEVEN == TOKEN {
        Some((Key::Token, i + 7))
    } else {
        None
    }
}

/// A string member's value, at its first byte.
#[inline(always)]
fn member(text: &str, i: usize) -> Result<(Member<'_>, usize), Invalid> {
    let bytes = text.as_bytes();
    match at(bytes, i) {
        b'"' => {
            let (end, escaped) = string(bytes, i + 1)?;
            let text = text.get(i + 1..end - 1).ok_or(Invalid)?;
            Ok((Member::Str { text, escaped }, end))
        }
        b'n' => Ok((Member::Missing, literal(bytes, i, b"null")?)),
        _ => Ok((Member::Other, value(bytes, i)?)),
    }
}

/// Any JSON value, at its first byte.
#[inline]
fn value(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    match at(bytes, i) {
        b'{' | b'[' => container(bytes, i),
        _ => scalar(bytes, i),
    }
}

/// A string, number or literal, at its first byte.
#[inline(always)]
fn scalar(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    match at(bytes, i) {
        b'"' => string(bytes, i + 1).map(|(end, _)| end),
        b'-' | b'0'..=b'9' => number(bytes, i),
        b't' => literal(bytes, i, b"true"),
        b'f' => literal(bytes, i, b"false"),
        b'n' => literal(bytes, i, b"null"),
        _ => Err(Invalid),
    }
}

#[inline(always)]
fn literal(bytes: &[u8], i: usize, word: &[u8]) -> Result<usize, Invalid> {
    if bytes.get(i..i + word.len()) == Some(word) {
        Ok(i + word.len())
    } else {
        Err(Invalid)
    }
}

/// An array or object, at its `[` or `{`: its first 64 levels of nesting on a stack that lives
/// in a register, any deeper ones on [`deep_container`]'s.
#[inline(never)]
fn container(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    walk(bytes, i, Shallow { bits: 0, depth: 0 })
}

/// An array or object nested more than 64 levels deep, at its `[` or `{`: on a stack of
/// [`NESTING_WORDS`] words in place, then on the heap (serde_json has no depth limit here).
#[cold]
#[inline(never)]
fn deep_container(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    walk(
        bytes,
        i,
        Nesting {
            depth: 0,
            top: false,
            inline: [0; NESTING_WORDS],
            deep: Vec::new(),
        },
    )
}

/// An array or object, at its `[` or `{`, however deep: one loop over a stack of bits.
#[inline(always)]
fn walk(bytes: &[u8], mut i: usize, mut open: impl Stack) -> Result<usize, Invalid> {
    'value: loop {
        // At the first byte of a value.
        let b = at(bytes, i);
        if b == b'{' || b == b'[' {
            let object = b == b'{';
            let inside = skip_ws(bytes, i + 1);
            if at(bytes, inside) == if object { b'}' } else { b']' } {
                i = inside + 1;
            } else if open.push(object) {
                i = if object {
                    object_key(bytes, inside)?
                } else {
                    inside
                };
                continue 'value;
            } else {
                // Deeper than this stack goes: the whole container at once, on a larger one.
                i = deep_container(bytes, i)?;
            }
        } else {
            i = scalar(bytes, i)?;
        }
        // After a value: close what ends here, then on to the next element.
        while let Some(object) = open.top() {
            i = skip_ws(bytes, i);
            match at(bytes, i) {
                b',' => {
                    i = skip_ws(bytes, i + 1);
                    if object {
                        i = object_key(bytes, i)?;
                    }
                    continue 'value;
                }
                b'}' if object => open.pop(),
                b']' if !object => open.pop(),
                _ => return Err(Invalid),
            }
            i += 1;
        }
        return Ok(i);
    }
}

/// A nested object's key and colon, at the key's quote; returns where its value starts.
#[inline(always)]
fn object_key(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    if at(bytes, i) != b'"' {
        return Err(Invalid);
    }
    let (end, _) = string(bytes, i + 1)?;
    let i = skip_ws(bytes, end);
    if at(bytes, i) != b':' {
        return Err(Invalid);
    }
    Ok(skip_ws(bytes, i + 1))
}

/// A string, after its opening quote: returns the position after the closing one and whether
/// the contents hold escapes. Escapes are checked as serde_json checks a string it skips (any
/// four hex digits after `\u`); surrogates are checked when a string is decoded.
#[inline(always)]
fn string(bytes: &[u8], mut i: usize) -> Result<(usize, bool), Invalid> {
    let mut escaped = false;
    loop {
        i = skip_plain(bytes, i);
        match at(bytes, i) {
            b'"' => return Ok((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = escape(bytes, i)?;
            }
            // A control character, or the end of the text.
            _ => return Err(Invalid),
        }
    }
}

/// The position of the next `"`, `\` or control character (or the end), eight bytes at a time.
#[inline(always)]
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        // A byte below 0x20, or equal to `"` or `\`, gets its high bit set; borrows may also
        // mark bytes after the first such byte, never before it.
        let found =
            (w.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES))
                & !w
                & HIGH;
        if found != 0 {
            return i + found.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b < 0x20 || b == b'"' || b == b'\\' {
            break;
        }
        i += 1;
    }
    i
}

/// An escape, at its backslash; returns the position after it.
#[cold]
#[inline(never)]
fn escape(bytes: &[u8], i: usize) -> Result<usize, Invalid> {
    match at(bytes, i + 1) {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(i + 2),
        b'u' => {
            hex4(bytes.get(i + 2..i + 6).ok_or(Invalid)?).ok_or(Invalid)?;
            Ok(i + 6)
        }
        _ => Err(Invalid),
    }
}

/// A number, at its first byte: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
#[inline(always)]
fn number(bytes: &[u8], mut i: usize) -> Result<usize, Invalid> {
    if at(bytes, i) == b'-' {
        i += 1;
    }
    match at(bytes, i) {
        b'0' => {
            i += 1;
            if at(bytes, i).is_ascii_digit() {
                return Err(Invalid);
            }
        }
        b'1'..=b'9' => i = digits(bytes, i + 1),
        _ => return Err(Invalid),
    }
    match at(bytes, i) {
        b'.' | b'e' | b'E' => fraction_exponent(bytes, i),
        _ => Ok(i),
    }
}

/// The rest of a number after its integer part, at the `.`, `e` or `E`.
#[inline(never)]
fn fraction_exponent(bytes: &[u8], mut i: usize) -> Result<usize, Invalid> {
    if at(bytes, i) == b'.' {
        if !at(bytes, i + 1).is_ascii_digit() {
            return Err(Invalid);
        }
        i = digits(bytes, i + 2);
    }
    if matches!(at(bytes, i), b'e' | b'E') {
        i += 1;
        if matches!(at(bytes, i), b'+' | b'-') {
            i += 1;
        }
        if !at(bytes, i).is_ascii_digit() {
            return Err(Invalid);
        }
        i = digits(bytes, i + 1);
    }
    Ok(i)
}

/// The position of the next byte that is not a decimal digit, eight bytes at a time.
#[inline(always)]
fn digits(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::MAX / 255;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(chunk);
        // A digit is 0x3_ with a low nibble that stays below 0x_A when 6 is added. Carries may
        // mark bytes after the first non-digit, never before it.
        let other = (w & (ONES * 0xF0)) ^ (ONES * 0x30)
            | (w.wrapping_add(ONES * 0x06) & (ONES * 0xF0)) ^ (ONES * 0x30);
        if other != 0 {
            return i + other.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while at(bytes, i).is_ascii_digit() {
        i += 1;
    }
    i
}

/// The containers open around the scanner, one bit each (set for an object).
trait Stack {
    /// Opens a container; `false` (changing nothing) when this stack is full.
    fn push(&mut self, object: bool) -> bool;
    /// Closes the innermost container.
    fn pop(&mut self);
    /// Whether the innermost open container is an object; `None` when none is open.
    fn top(&self) -> Option<bool>;
}

/// Up to 64 levels, innermost in the low bit.
struct Shallow {
    bits: u64,
    depth: u32,
}

impl Stack for Shallow {
    #[inline(always)]
    fn push(&mut self, object: bool) -> bool {
        if self.depth == u64::BITS {
            return false;
        }
        self.bits = self.bits << 1 | u64::from(object);
        self.depth += 1;
        true
    }

    #[inline(always)]
    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
    }

    #[inline(always)]
    fn top(&self) -> Option<bool> {
        (self.depth > 0).then_some(self.bits & 1 == 1)
    }
}

/// Any depth: [`NESTING_WORDS`] words in place, then on the heap.
struct Nesting {
    depth: usize,
    /// Whether the innermost open container is an object (meaningful when `depth > 0`).
    top: bool,
    inline: [u64; NESTING_WORDS],
    deep: Vec<u64>,
}

impl Stack for Nesting {
    fn push(&mut self, object: bool) -> bool {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        let w = match self.inline.get_mut(word) {
            Some(w) => w,
            None => {
                let word = word - NESTING_WORDS;
                if word == self.deep.len() {
                    self.deep.push(0);
                }
                match self.deep.get_mut(word) {
                    Some(w) => w,
                    None => return false,
                }
            }
        };
        *w = (*w & !(1 << bit)) | (u64::from(object) << bit);
        self.depth += 1;
        self.top = object;
        true
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if let Some(level) = self.depth.checked_sub(1) {
            let (word, bit) = (level / 64, level % 64);
            let w = match self.inline.get(word) {
                Some(&w) => w,
                None => self.deep.get(word - NESTING_WORDS).copied().unwrap_or(0),
            };
            self.top = (w >> bit) & 1 == 1;
        }
    }

    fn top(&self) -> Option<bool> {
        (self.depth > 0).then_some(self.top)
    }
}

/// The value of four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return None,
        };
        Some(n << 4 | u32::from(v))
    })
}

/// Which known member an escaped key names; `Invalid` if serde_json refuses it as a `str`.
#[cold]
fn escaped_key(text: &str) -> Result<Option<Key>, Invalid> {
    let mut name = [0u8; 6];
    let mut len = 0;
    let mut fits = true;
    decode(text, |piece| {
        for &b in piece.as_bytes() {
            match name.get_mut(len) {
                Some(slot) => {
                    *slot = b;
                    len += 1;
                }
                None => fits = false,
            }
        }
    })
    .ok_or(Invalid)?;
    Ok(if fits {
        name.get(..len).and_then(Key::of)
    } else {
        None
    })
}

/// The contents of a string with escapes, decoded; `None` where serde_json refuses them as a
/// `str` (a `\u` surrogate that is not a high one followed by a `\u` low one).
#[cold]
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    decode(text, |piece| out.push_str(piece))?;
    Some(out)
}

/// Calls `out` with the decoded pieces of a string's contents (already checked by
/// `string`), in order; `None` at a lone surrogate.
fn decode(text: &str, mut out: impl FnMut(&str)) -> Option<()> {
    let bytes = text.as_bytes();
    let (mut start, mut i) = (0, 0);
    while let Some(&b) = bytes.get(i) {
        if b != b'\\' {
            i += 1;
            continue;
        }
        out(text.get(start..i)?);
        let kind = *bytes.get(i + 1)?;
        i += 2;
        let c = match kind {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let n = hex4(bytes.get(i..i + 4)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&n) {
                    if bytes.get(i..i + 2)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(bytes.get(i + 2..i + 6)?)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((n - 0xD800) << 10) + (low - 0xDC00))?
                } else {
                    // `None` for a low surrogate.
                    char::from_u32(n)?
                }
            }
            _ => return None,
        };
        out(c.encode_utf8(&mut [0; 4]));
        start = i;
    }
    out(text.get(start..)?);
    Some(())
}

/// The reason phrase used as `status_text` in `authentication` messages.
pub fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Appends `{"action":"authentication",...,"data":{"detail":"OK","user":"<user>"}}` (§3).
pub fn write_auth_ok(out: &mut Vec<u8>, user: &str) {
    const HEAD: &[u8] = br#"{"action":"authentication","payload":{"status_code":200,"status_text":"OK","data":{"detail":"OK","user":"#;
    out.reserve(HEAD.len() + user.len() + 5);
    out.extend_from_slice(HEAD);
    write_json_str(out, user);
    out.extend_from_slice(b"}}}");
}

/// Appends the failed `authentication` message with `status` (401/403) and `detail` (§6).
pub fn write_auth_failure(out: &mut Vec<u8>, status: u16, detail: &str) {
    const HEAD: &[u8] = br#"{"action":"authentication","payload":{"status_code":"#;
    out.reserve(HEAD.len() + detail.len() + 64);
    out.extend_from_slice(HEAD);
    write_u16(out, status);
    out.extend_from_slice(br#","status_text":"#);
    write_json_str(out, status_text(status));
    out.extend_from_slice(br#","data":{"detail":"#);
    write_json_str(out, detail);
    out.extend_from_slice(b"}}}");
}

/// Appends `{"action":"error","payload":{"status_code":N,"detail":"..."}}` (§4, §6).
pub fn write_error(out: &mut Vec<u8>, status: u16, detail: &str) {
    const HEAD: &[u8] = br#"{"action":"error","payload":{"status_code":"#;
    out.reserve(HEAD.len() + detail.len() + 20);
    out.extend_from_slice(HEAD);
    write_u16(out, status);
    out.extend_from_slice(br#","detail":"#);
    write_json_str(out, detail);
    out.extend_from_slice(b"}}");
}

/// Appends `{"action":"joined","group":"<group>"}` (§4).
pub fn write_joined(out: &mut Vec<u8>, group: &str) {
    write_group_reply(out, br#"{"action":"joined","group":"#, group);
}

/// Appends `{"action":"left","group":"<group>"}` (§4).
pub fn write_left(out: &mut Vec<u8>, group: &str) {
    write_group_reply(out, br#"{"action":"left","group":"#, group);
}

/// Appends `{"action":"left","group":"<group>","reason":"<reason>"}`: the gateway took the
/// connection out of the group (a `refresh` whose token no longer allows it).
pub fn write_left_because(out: &mut Vec<u8>, group: &str, reason: &str) {
    write_group_reply(out, br#"{"action":"left","group":"#, group);
    out.pop();
    out.extend_from_slice(br#","reason":"#);
    write_json_str(out, reason);
    out.push(b'}');
}

fn write_group_reply(out: &mut Vec<u8>, head: &[u8], group: &str) {
    out.reserve(head.len() + group.len() + 3);
    out.extend_from_slice(head);
    write_json_str(out, group);
    out.push(b'}');
}

/// Appends `{"action":"message","group":"<group>","data":<data>}` (§4), `data` compacted: the
/// same JSON with the whitespace between its tokens left out (§6: server messages are compact
/// JSON), strings and numbers byte for byte as sent. `data` is a [`RawJson`], or a serde_json
/// `&RawValue` (or `&Box<RawValue>`).
pub fn write_message<'d>(out: &mut Vec<u8>, group: &str, data: impl Into<RawJson<'d>>) {
    const HEAD: &[u8] = br#"{"action":"message","group":"#;
    let data = data.into().get().as_bytes();
    out.reserve(HEAD.len() + group.len() + data.len() + 12);
    out.extend_from_slice(HEAD);
    write_json_str(out, group);
    out.extend_from_slice(br#","data":"#);
    write_compact(out, data);
    out.push(b'}');
}

/// Appends valid JSON `json` without the whitespace between its tokens. Copied whole when it
/// has no whitespace byte at all (the usual `JSON.stringify` output without spaces in
/// strings), else one pass that tracks strings.
fn write_compact(out: &mut Vec<u8>, json: &[u8]) {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\n' | b'\t' | b'\r');
    if !json.iter().any(is_ws) {
        out.extend_from_slice(json);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    let mut run = 0;
    for (i, b) in json.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if *b == b'"' {
            in_string = true;
        } else if is_ws(b) {
            // Copy the run of token bytes before this whitespace.
            out.extend_from_slice(&json[run..i]);
            run = i + 1;
        }
    }
    out.extend_from_slice(&json[run..]);
}

/// Appends `s` as a quoted JSON string: `"` and `\` backslash-escaped, control characters as
/// `\u00xx`, everything else (non-ASCII included) copied as UTF-8.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `n` in decimal.
fn write_u16(out: &mut Vec<u8>, n: u16) {
    let mut digits = [0u8; 5];
    let mut pos = digits.len();
    let mut rest = n;
    loop {
        pos -= 1;
        digits[pos] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(pos..).unwrap_or_default());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_authenticate_and_refresh() {
        match parse_command(r#"{"action":"authenticate","token":"a.b.c"}"#).unwrap() {
            ClientCommand::Authenticate { token } => {
                assert_eq!(token, "a.b.c");
                assert!(matches!(token, Cow::Borrowed(_)));
            }
            other => panic!("{other:?}"),
        }
        match parse_command(r#" { "token" : "x.y.z" , "action" : "refresh" } "#).unwrap() {
            ClientCommand::Refresh { token } => assert_eq!(token, "x.y.z"),
            other => panic!("{other:?}"),
        }
        for missing in [
            r#"{"action":"authenticate"}"#,
            r#"{"action":"authenticate","token":null}"#,
        ] {
            match parse_command(missing).unwrap() {
                ClientCommand::Authenticate { token } => assert_eq!(token, ""),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            parse_command(r#"{"action":"authenticate","token":5}"#).unwrap_err(),
            EnvelopeError::BadField("token")
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        match parse_command(r#"{"action":"join","group":"room\u002e1"}"#).unwrap() {
            ClientCommand::Join { group } => {
                assert_eq!(group, "room.1");
                assert!(matches!(group, Cow::Owned(_)));
            }
            other => panic!("{other:?}"),
        }
        match parse_command(r#"{"action":"l\u0065ave","group":"g"}"#).unwrap() {
            ClientCommand::Leave { group } => assert_eq!(group, "g"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_send_with_raw_data() {
        let text =
            r#"{"action":"send","group":"room.1","data":{"b": [1, 2.50, "\u00e9"], "a":null}}"#;
        match parse_command(text).unwrap() {
            ClientCommand::Send { group, data } => {
                assert_eq!(group, "room.1");
                assert_eq!(
                    data.unwrap().get(),
                    r#"{"b": [1, 2.50, "\u00e9"], "a":null}"#
                );
            }
            other => panic!("{other:?}"),
        }
        match parse_command(r#"{"action":"send","group":"g","data":null}"#).unwrap() {
            ClientCommand::Send { data, .. } => assert_eq!(data.unwrap().get(), "null"),
            other => panic!("{other:?}"),
        }
        match parse_command(r#"{"action":"send","group":"g"}"#).unwrap() {
            ClientCommand::Send { data, .. } => assert!(data.is_none()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_actions_and_members() {
        assert!(matches!(
            parse_command(r#"{"action":"dance","group":7}"#).unwrap(),
            ClientCommand::Unknown
        ));
        assert!(matches!(
            parse_command(r#"{"action":"join","group":"g","extra":{"x":[1]}}"#).unwrap(),
            ClientCommand::Join { .. }
        ));
        // Members the action does not use are not type-checked.
        assert!(matches!(
            parse_command(r#"{"action":"join","group":"g","token":false}"#).unwrap(),
            ClientCommand::Join { .. }
        ));
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, EnvelopeError)] = &[
            ("", EnvelopeError::NotJson),
            ("hello", EnvelopeError::NotJson),
            ("{", EnvelopeError::NotJson),
            (r#"{"action":"join"}x"#, EnvelopeError::NotJson),
            (
                r#"{"action":"join","action":"leave"}"#,
                EnvelopeError::NotJson,
            ),
            ("[]", EnvelopeError::NotAnObject),
            (r#"["join","g"]"#, EnvelopeError::NotAnObject),
            ("null", EnvelopeError::NotAnObject),
            (r#""join""#, EnvelopeError::NotAnObject),
            ("42", EnvelopeError::NotAnObject),
            ("{}", EnvelopeError::MissingAction),
            (r#"{"action":null}"#, EnvelopeError::MissingAction),
            (r#"{"group":"g"}"#, EnvelopeError::MissingAction),
            (r#"{"action":1}"#, EnvelopeError::BadField("action")),
            (r#"{"action":["join"]}"#, EnvelopeError::BadField("action")),
            (r#"{"action":"join"}"#, EnvelopeError::BadField("group")),
            (
                r#"{"action":"join","group":null}"#,
                EnvelopeError::BadField("group"),
            ),
            (
                r#"{"action":"leave","group":1}"#,
                EnvelopeError::BadField("group"),
            ),
            (
                r#"{"action":"send","data":1}"#,
                EnvelopeError::BadField("group"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_command(text).unwrap_err(), *want, "{text}");
        }
    }

    #[test]
    fn error_texts() {
        for err in [
            EnvelopeError::NotJson,
            EnvelopeError::NotAnObject,
            EnvelopeError::MissingAction,
            EnvelopeError::BadField("token"),
            EnvelopeError::BadField("group"),
            EnvelopeError::BadField("action"),
            EnvelopeError::BadField("other"),
        ] {
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            EnvelopeError::BadField("group").to_string(),
            "`group` must be a string"
        );
    }

    #[test]
    fn writes_auth_messages() {
        assert_eq!(
            written(|o| write_auth_ok(o, "42")),
            r#"{"action":"authentication","payload":{"status_code":200,"status_text":"OK","data":{"detail":"OK","user":"42"}}}"#
        );
        assert_eq!(
            written(|o| write_auth_failure(o, 401, "token expired")),
            r#"{"action":"authentication","payload":{"status_code":401,"status_text":"Unauthorized","data":{"detail":"token expired"}}}"#
        );
        assert_eq!(
            written(|o| write_auth_failure(o, 403, "account disabled")),
            r#"{"action":"authentication","payload":{"status_code":403,"status_text":"Forbidden","data":{"detail":"account disabled"}}}"#
        );
    }

    #[test]
    fn writes_group_and_error_messages() {
        assert_eq!(
            written(|o| write_error(o, 400, "invalid JSON")),
            r#"{"action":"error","payload":{"status_code":400,"detail":"invalid JSON"}}"#
        );
        assert_eq!(
            written(|o| write_error(o, 403, "not a member")),
            r#"{"action":"error","payload":{"status_code":403,"detail":"not a member"}}"#
        );
        assert_eq!(
            written(|o| write_joined(o, "room.1")),
            r#"{"action":"joined","group":"room.1"}"#
        );
        assert_eq!(
            written(|o| write_left(o, "room.1")),
            r#"{"action":"left","group":"room.1"}"#
        );
        // `data` is compacted: whitespace between tokens goes, strings keep every byte.
        let data = RawValue::from_string(
            "{\"text\": \"hi \\u00e9 \\\" x\" ,\r\n\t\"n\" : [ 1 , 2 ] }".to_owned(),
        )
        .unwrap();
        assert_eq!(
            written(|o| write_message(o, "room.1", &data)),
            r#"{"action":"message","group":"room.1","data":{"text":"hi \u00e9 \" x","n":[1,2]}}"#
        );
        let plain = RawValue::from_string(r#"{"a":[1,"b c"]}"#.to_owned()).unwrap();
        assert_eq!(
            written(|o| write_message(o, "g", &plain)),
            r#"{"action":"message","group":"g","data":{"a":[1,"b c"]}}"#
        );
    }

    #[test]
    fn data_depth_is_measured_outside_strings() {
        let depth = |text: &str, max| RawJson(text).nests_deeper_than(max);
        assert!(!depth("1", 0));
        assert!(depth("[]", 0));
        assert!(!depth("[]", 1));
        assert!(!depth(r#"{"a":[{"b":[]}]}"#, 4));
        assert!(depth(r#"{"a":[{"b":[]}]}"#, 3));
        assert!(!depth(r#"["[[[[", "\"[[[["]"#, 1));
        assert!(!depth(r#"[[],[],[[]]]"#, 3));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(depth(&deep, MAX_DATA_DEPTH));
        assert!(!depth(&deep[1..deep.len() - 1], MAX_DATA_DEPTH));
    }

    #[test]
    fn json_strings_are_escaped() {
        let cases = [
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("say \"hi\"", r#""say \"hi\"""#),
            ("back\\slash", r#""back\\slash""#),
            ("line\nbreak\ttab\r", r#""line\u000abreak\u0009tab\u000d""#),
            ("\u{0}\u{1f}", r#""\u0000\u001f""#),
            ("del\u{7f}", "\"del\u{7f}\""),
            ("caf\u{e9} \u{1f600}", "\"caf\u{e9} \u{1f600}\""),
            ("\u{2028}", "\"\u{2028}\""),
        ];
        for (input, want) in cases {
            let got = written(|o| write_json_str(o, input));
            assert_eq!(got, want, "{input:?}");
            let back: String = serde_json::from_str(&got).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn written_messages_are_valid_json() {
        let nasty = "\"}\\{\u{1}\u{e9}";
        for text in [
            written(|o| write_auth_ok(o, nasty)),
            written(|o| write_auth_failure(o, 401, nasty)),
            written(|o| write_error(o, 400, nasty)),
            written(|o| write_joined(o, nasty)),
        ] {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v.is_object(), "{text}");
        }
        let v: serde_json::Value =
            serde_json::from_str(&written(|o| write_auth_ok(o, nasty))).unwrap();
        assert_eq!(v["payload"]["data"]["user"], nasty);
    }

    #[test]
    fn status_numbers_and_texts() {
        for (status, text) in [(0, "Error"), (7, "Error"), (429, "Too Many Requests")] {
            assert_eq!(status_text(status), text);
        }
        assert_eq!(
            written(|o| write_error(o, 65535, "x")),
            r#"{"action":"error","payload":{"status_code":65535,"detail":"x"}}"#
        );
        assert_eq!(
            written(|o| write_error(o, 0, "x")),
            r#"{"action":"error","payload":{"status_code":0,"detail":"x"}}"#
        );
    }

    fn err(text: &str) -> EnvelopeError {
        parse_command(text).unwrap_err()
    }

    #[test]
    fn surrogate_escapes() {
        match parse_command(r#"{"action":"join","group":"\ud83d\ude00\u00e9"}"#).unwrap() {
            ClientCommand::Join { group } => assert_eq!(group, "\u{1f600}\u{e9}"),
            other => panic!("{other:?}"),
        }
        // A lone surrogate is refused where serde_json decodes a `str` (a member the action
        // reads, a key of the command), and accepted where it only skips one.
        for lone in [
            r#"\ud800"#,
            r#"\udc00"#,
            r#"\ud800\u0041"#,
            r#"\ud800\ud800"#,
            r#"\ud800\n"#,
        ] {
            let group = format!(r#"{{"action":"join","group":"{lone}"}}"#);
            assert_eq!(err(&group), EnvelopeError::BadField("group"), "{group}");
            let action = format!(r#"{{"action":"{lone}"}}"#);
            assert_eq!(err(&action), EnvelopeError::BadField("action"), "{action}");
            let key = format!(r#"{{"action":"join","group":"g","{lone}":1}}"#);
            assert_eq!(err(&key), EnvelopeError::NotJson, "{key}");
            for ok in [
                format!(r#"{{"action":"join","group":"g","token":"{lone}"}}"#),
                format!(r#"{{"action":"send","group":"g","data":["{lone}"]}}"#),
                format!(r#"{{"action":"send","group":"g","data":{{"{lone}":1}}}}"#),
                format!(r#"{{"action":"join","group":"g","x":"{lone}"}}"#),
            ] {
                assert!(parse_command(&ok).is_ok(), "{ok}");
            }
        }
        assert_eq!(
            err(r#"{"action":"join","group":"\u12"}"#),
            EnvelopeError::NotJson
        );
        assert_eq!(
            err(r#"{"action":"join","group":"\x41"}"#),
            EnvelopeError::NotJson
        );
    }

    #[test]
    fn keys_with_escapes_name_members() {
        match parse_command(r#"{"\u0061ction":"join","gr\u006fup":"g"}"#).unwrap() {
            ClientCommand::Join { group } => assert!(matches!(group, Cow::Borrowed("g"))),
            other => panic!("{other:?}"),
        }
        // A known member twice is refused however it is spelled, an unknown one is not.
        for text in [
            r#"{"action":"join","\u0061ction":"join","group":"g"}"#,
            r#"{"action":"join","group":"g","group":"g"}"#,
            r#"{"action":"send","group":"g","data":1,"data":1}"#,
            r#"{"action":"join","group":"g","token":null,"token":null}"#,
        ] {
            assert_eq!(err(text), EnvelopeError::NotJson, "{text}");
        }
        assert!(parse_command(r#"{"action":"join","group":"g","x":1,"x":2}"#).is_ok());
    }

    #[test]
    fn data_is_any_strict_json_value() {
        for data in [
            "0",
            "-0",
            "1e5",
            "-1.5E-7",
            "1e+5",
            "0.0",
            "true",
            "false",
            "null",
            r#""""#,
            "[]",
            "{}",
            "[ 1 , { } ]",
            "\"\u{7f}\u{e9}\"",
            r#"{"":[[]]}"#,
            "123456789012345678901234567890",
        ] {
            let text = format!("{{\"action\":\"send\",\"group\":\"g\",\"data\": \t{data}\n}}");
            match parse_command(&text).unwrap() {
                // Exactly the value: no whitespace around it.
                ClientCommand::Send {
                    data: Some(got), ..
                } => assert_eq!(got.get(), data),
                other => panic!("{other:?}"),
            }
        }
        for data in [
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x1",
            "NaN",
            "tru",
            "nul",
            "True",
            "[1,]",
            "[,]",
            r#"{"a":1,}"#,
            r#"{"a"}"#,
            "{1:2}",
            "[}",
            r#"'x'"#,
            "\"tab\there\"",
            "\"\u{1}\"",
            "[1]]",
            "\u{b}1",
            "\u{a0}1",
            "",
        ] {
            let text = format!(r#"{{"action":"send","group":"g","data":{data}}}"#);
            assert_eq!(err(&text), EnvelopeError::NotJson, "{text}");
        }
    }

    #[test]
    fn nesting_has_no_limit() {
        for depth in [127, 128, 129, INLINE_DEPTH, INLINE_DEPTH + 1, 5000] {
            let data = format!("{}{}", r#"[{"a":"#.repeat(depth), "}]".repeat(depth));
            let data = data.replacen(r#""a":}"#, r#""a":0}"#, 1);
            let text = format!(r#"{{"action":"send","group":"g","data":{data}}}"#);
            match parse_command(&text).unwrap() {
                ClientCommand::Send {
                    data: Some(got), ..
                } => assert_eq!(got.get(), data),
                other => panic!("{other:?}"),
            }
            let wrong = format!(
                r#"{{"action":"send","group":"g","data":{}}}"#,
                data.replacen("}]", "]}", 1)
            );
            assert_eq!(err(&wrong), EnvelopeError::NotJson);
            assert_eq!(err(&data), EnvelopeError::NotAnObject);
            assert_eq!(err(&data[1..]), EnvelopeError::NotJson);
        }
    }

    #[test]
    fn raw_json_from_serde_and_parser_write_alike() {
        let text = r#"{"action":"send","group":"g","data":[1,"\u00e9"]}"#;
        let ClientCommand::Send {
            data: Some(parsed), ..
        } = parse_command(text).unwrap()
        else {
            panic!("not a send");
        };
        let raw = RawValue::from_string(r#"[1,"\u00e9"]"#.to_owned()).unwrap();
        assert_eq!(RawJson::from(&*raw), parsed);
        assert_eq!(
            written(|o| write_message(o, "g", parsed)),
            written(|o| write_message(o, "g", &*raw))
        );
    }

    #[test]
    fn writers_append() {
        let mut out = b"prefix".to_vec();
        write_joined(&mut out, "g");
        assert_eq!(out, br#"prefix{"action":"joined","group":"g"}"#);
    }
}
