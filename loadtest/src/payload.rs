//! What the scenarios send and check: every message's `data` is a stamp `{"c":<client>,
//! "s":<sequence>,"t":<send time in ns>}` (optionally padded with `"p"`), and every receiver
//! tracks each sender's sequence to count losses, duplicates and reorderings.

use std::collections::BTreeSet;
use std::io::Write;

/// Who sent a message, which of theirs it is, and when (ns since the shared origin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Sender (client) id.
    pub client: u64,
    /// The sender's sequence number, from 0.
    pub seq: u64,
    /// Send time, nanoseconds since the run's shared origin.
    pub t_ns: u64,
}

/// Appends the stamp as a JSON object, padded with a `"p"` string of `pad` bytes.
pub fn write_data(out: &mut Vec<u8>, s: &Stamp, pad: usize) {
    let _ = write!(out, r#"{{"c":{},"s":{},"t":{}"#, s.client, s.seq, s.t_ns);
    if pad > 0 {
        out.extend_from_slice(br#","p":""#);
        out.resize(out.len() + pad, b'x');
        out.push(b'"');
    }
    out.push(b'}');
}

/// Appends the `send` command for `group` carrying the stamp.
pub fn write_send(out: &mut Vec<u8>, group: &str, s: &Stamp, pad: usize) {
    out.extend_from_slice(br#"{"action":"send","group":""#);
    out.extend_from_slice(group.as_bytes());
    out.extend_from_slice(br#"","data":"#);
    write_data(out, s, pad);
    out.push(b'}');
}

/// Appends the `POST /api/publish` body for `group` carrying the stamp.
pub fn write_publish(out: &mut Vec<u8>, group: &str, s: &Stamp, pad: usize) {
    out.extend_from_slice(br#"{"group":""#);
    out.extend_from_slice(group.as_bytes());
    out.extend_from_slice(br#"","data":"#);
    write_data(out, s, pad);
    out.push(b'}');
}

/// A server text message, as far as the scenarios care.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A group message carrying a stamp; `group_ok` when it came from the expected group.
    Stamped { stamp: Stamp, group_ok: bool },
    /// A group message whose data is not a stamp.
    Unstamped,
    /// An `error` message (its text).
    Error(String),
    /// Anything else (its text).
    Other(String),
}

fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 19 || (digits > 1 && b[0] == b'0') {
        return None;
    }
    let mut n = 0u64;
    for &c in &b[..digits] {
        n = n * 10 + u64::from(c - b'0');
    }
    Some((n, &b[digits..]))
}

/// Parses a stamp written by [`write_data`] at the start of `b`: the stamp and what follows.
fn stamp_fast(b: &[u8]) -> Option<(Stamp, &[u8])> {
    let (client, b) = number(b.strip_prefix(br#"{"c":"#)?)?;
    let (seq, b) = number(b.strip_prefix(br#","s":"#)?)?;
    let (t_ns, b) = number(b.strip_prefix(br#","t":"#)?)?;
    let b = match b.strip_prefix(br#","p":""#) {
        Some(p) => &p[p.iter().position(|&c| c == b'"')? + 1..],
        None => b,
    };
    Some((Stamp { client, seq, t_ns }, b.strip_prefix(b"}")?))
}

/// The fast path for the compact form wsgate sends (docs/protocol.md §6); `None` means "not that
/// exact shape", and the general parser decides.
fn message_fast(payload: &[u8], group: &str) -> Option<Incoming> {
    let rest = payload.strip_prefix(br#"{"action":"message","group":""#)?;
    let end = rest.iter().position(|&c| c == b'"')?;
    let group_ok = &rest[..end] == group.as_bytes();
    let rest = rest[end..].strip_prefix(br#"","data":"#)?;
    let (stamp, rest) = stamp_fast(rest)?;
    (rest == b"}").then_some(Incoming::Stamped { stamp, group_ok })
}

/// Classifies a server text message; `group` is the group messages should come from.
pub fn parse(payload: &[u8], group: &str) -> Incoming {
    if let Some(m) = message_fast(payload, group) {
        return m;
    }
    let text = || String::from_utf8_lossy(payload).into_owned();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Incoming::Other(text());
    };
    match v.get("action").and_then(|a| a.as_str()) {
        Some("message") => {
            let group_ok = v.get("group").and_then(|g| g.as_str()) == Some(group);
            let field = |k: &str| v.get("data")?.get(k)?.as_u64();
            match (field("c"), field("s"), field("t")) {
                (Some(client), Some(seq), Some(t_ns)) => Incoming::Stamped {
                    stamp: Stamp { client, seq, t_ns },
                    group_ok,
                },
                _ => Incoming::Unstamped,
            }
        }
        Some("error") => Incoming::Error(text()),
        _ => Incoming::Other(text()),
    }
}

/// What one receipt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New, and no later message from that sender had arrived before it.
    InOrder,
    /// New, but a later message from the same sender had already arrived.
    Reordered,
    /// Received before.
    Duplicate,
    /// From no known sender, or beyond what the sender sends.
    Unexpected,
}

/// One sender's sequence as seen by one receiver.
#[derive(Debug, Default, Clone)]
struct Stream {
    /// Every sequence below this has arrived.
    next: u64,
    /// Arrived above `next` (empty unless something arrived early).
    ahead: BTreeSet<u64>,
}

/// Per-receiver bookkeeping of every sender's sequence numbers.
#[derive(Debug, Clone)]
pub struct Tracker {
    base: u64,
    limit: u64,
    streams: Vec<Stream>,
    distinct: u64,
}

impl Tracker {
    /// Tracks senders `base..base + senders`, each sending sequences `0..limit`.
    pub fn new(base: u64, senders: usize, limit: u64) -> Self {
        Self {
            base,
            limit,
            streams: vec![Stream::default(); senders],
            distinct: 0,
        }
    }

    /// Records one receipt.
    pub fn record(&mut self, client: u64, seq: u64) -> Verdict {
        let Some(stream) = client
            .checked_sub(self.base)
            .and_then(|i| self.streams.get_mut(usize::try_from(i).ok()?))
        else {
            return Verdict::Unexpected;
        };
        if seq >= self.limit {
            return Verdict::Unexpected;
        }
        if seq < stream.next || stream.ahead.contains(&seq) {
            return Verdict::Duplicate;
        }
        self.distinct += 1;
        if seq > stream.next {
            let late = stream.ahead.last().is_some_and(|&max| seq < max);
            stream.ahead.insert(seq);
            return if late {
                Verdict::Reordered
            } else {
                Verdict::InOrder
            };
        }
        let late = !stream.ahead.is_empty();
        stream.next += 1;
        while stream.ahead.remove(&stream.next) {
            stream.next += 1;
        }
        if late {
            Verdict::Reordered
        } else {
            Verdict::InOrder
        }
    }

    /// Distinct messages received from every sender together.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// How many of sender `client`'s messages arrived without a gap before them.
    pub fn contiguous(&self, client: u64) -> u64 {
        client
            .checked_sub(self.base)
            .and_then(|i| self.streams.get(usize::try_from(i).ok()?))
            .map_or(0, |s| s.next)
    }

    /// Every expected message has arrived.
    pub fn complete(&self) -> bool {
        self.distinct == self.limit * self.streams.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        client: 12,
        seq: 345,
        t_ns: 6_789_000,
    };

    fn as_server_message(group: &str, data: &[u8]) -> Vec<u8> {
        let mut m = format!(r#"{{"action":"message","group":"{group}","data":"#).into_bytes();
        m.extend_from_slice(data);
        m.push(b'}');
        m
    }

    #[test]
    fn data_and_commands_are_valid_json() {
        for pad in [0, 1, 100] {
            let mut d = Vec::new();
            write_data(&mut d, &S, pad);
            let v: serde_json::Value = serde_json::from_slice(&d).unwrap();
            assert_eq!((v["c"].as_u64(), v["s"].as_u64()), (Some(12), Some(345)));
            assert_eq!(v["t"].as_u64(), Some(6_789_000));
            assert_eq!(
                v.get("p").map(|p| p.as_str().unwrap().len()),
                (pad > 0).then_some(pad)
            );
            let mut c = Vec::new();
            write_send(&mut c, "room.1", &S, pad);
            let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
            assert_eq!(
                (v["action"].as_str(), v["group"].as_str()),
                (Some("send"), Some("room.1"))
            );
            assert_eq!(v["data"]["s"].as_u64(), Some(345));
            let mut p = Vec::new();
            write_publish(&mut p, "room.1", &S, pad);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 2);
            assert_eq!(v["data"]["c"].as_u64(), Some(12));
        }
    }

    #[test]
    fn server_messages_round_trip_on_the_fast_path() {
        for pad in [0, 7] {
            let mut d = Vec::new();
            write_data(&mut d, &S, pad);
            let m = as_server_message("room.1", &d);
            assert!(message_fast(&m, "room.1").is_some());
            assert_eq!(
                parse(&m, "room.1"),
                Incoming::Stamped {
                    stamp: S,
                    group_ok: true
                }
            );
            assert_eq!(
                parse(&m, "room.2"),
                Incoming::Stamped {
                    stamp: S,
                    group_ok: false
                }
            );
        }
    }

    #[test]
    fn other_shapes_fall_back_to_the_general_parser() {
        let spaced = br#"{ "action": "message", "group": "g", "data": {"t": 3, "s": 2, "c": 1} }"#;
        assert!(message_fast(spaced, "g").is_none());
        let stamp = Stamp {
            client: 1,
            seq: 2,
            t_ns: 3,
        };
        assert_eq!(
            parse(spaced, "g"),
            Incoming::Stamped {
                stamp,
                group_ok: true
            }
        );
        let trailing = br#"{"action":"message","group":"g","data":{"c":1,"s":2,"t":3},"x":1}"#;
        assert!(message_fast(trailing, "g").is_none());
        assert_eq!(
            parse(trailing, "g"),
            Incoming::Stamped {
                stamp,
                group_ok: true
            }
        );
        assert!(
            message_fast(
                br#"{"action":"message","group":"g","data":{"c":01,"s":2,"t":3}}"#,
                "g"
            )
            .is_none()
        );
        let text = br#"{"action":"message","group":"g","data":"hi"}"#;
        assert_eq!(parse(text, "g"), Incoming::Unstamped);
        let e = br#"{"action":"error","payload":{"status_code":403,"detail":"not a member"}}"#;
        assert!(matches!(parse(e, "g"), Incoming::Error(t) if t.contains("403")));
        assert!(matches!(
            parse(br#"{"action":"joined","group":"g"}"#, "g"),
            Incoming::Other(_)
        ));
        assert!(matches!(parse(b"not json", "g"), Incoming::Other(_)));
    }

    #[test]
    fn tracker_accepts_an_ordered_stream() {
        let mut t = Tracker::new(10, 2, 3);
        for seq in 0..3 {
            assert_eq!(t.record(10, seq), Verdict::InOrder);
            assert_eq!(t.record(11, seq), Verdict::InOrder);
        }
        assert!(t.complete());
        assert_eq!(
            (t.distinct(), t.contiguous(10), t.contiguous(11)),
            (6, 3, 3)
        );
    }

    #[test]
    fn tracker_flags_duplicates_reordering_and_strangers() {
        let mut t = Tracker::new(0, 1, 5);
        assert_eq!(t.record(0, 0), Verdict::InOrder);
        assert_eq!(t.record(0, 0), Verdict::Duplicate);
        assert_eq!(t.record(0, 2), Verdict::InOrder); // early: 1 is missing so far
        assert_eq!(t.record(0, 3), Verdict::InOrder);
        assert_eq!(t.record(0, 2), Verdict::Duplicate);
        assert_eq!(t.contiguous(0), 1);
        assert_eq!(t.record(0, 1), Verdict::Reordered); // late: 2 and 3 came first
        assert_eq!(t.contiguous(0), 4);
        assert_eq!(t.record(0, 3), Verdict::Duplicate);
        assert_eq!(t.record(0, 5), Verdict::Unexpected); // beyond the count
        assert_eq!(t.record(1, 0), Verdict::Unexpected); // unknown sender
        assert!(!t.complete());
        assert_eq!(t.distinct(), 4); // so one of the five is lost
        assert_eq!(t.record(0, 4), Verdict::InOrder);
        assert!(t.complete());
    }

    #[test]
    fn tracker_counts_a_late_message_inside_a_gap_as_reordered() {
        let mut t = Tracker::new(0, 1, 10);
        assert_eq!(t.record(0, 5), Verdict::InOrder);
        assert_eq!(t.record(0, 3), Verdict::Reordered);
        assert_eq!(t.record(0, 7), Verdict::InOrder);
        assert_eq!(t.record(0, 0), Verdict::Reordered);
        assert_eq!(t.contiguous(0), 1);
        assert_eq!(t.distinct(), 4);
    }
}
