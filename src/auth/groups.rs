//! Group names and the token's `groups` claim (docs/protocol.md §3 and §4): which names are valid,
//! the three pattern forms (`room.1` exact, `room.*` prefix, `*` any), and the per-token pattern
//! list, kept in a single heap block (none at all for a token without groups).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::AuthError;

/// Longest valid group name in bytes (Channels: "shorter than 100 characters").
pub const MAX_GROUP_NAME: usize = 99;

/// Whether `name` is a valid group name: ASCII letters, digits, `-`, `_`, `.`, 1..=99 bytes.
///
/// This is Channels' rule made strictly ASCII: Python's `\d`-style regex there also admits
/// Unicode digits and a trailing newline; wsgate refuses both.
pub fn is_valid_group_name(name: &str) -> bool {
    (1..=MAX_GROUP_NAME).contains(&name.len()) && name.bytes().all(is_group_byte)
}

fn is_group_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// One entry of a `groups` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPattern<'a> {
    /// `room.1`: exactly this group.
    Exact(&'a str),
    /// `room.*` (held as `room.`): every group that starts with it and has at least one more byte.
    Prefix(&'a str),
    /// `*`: every group.
    Any,
}

impl<'a> GroupPattern<'a> {
    /// Parses one pattern; `None` unless it is `*`, a valid group name, or one followed by `*`.
    ///
    /// A prefix may be at most 98 bytes, so that something valid can still follow it.
    pub fn parse(text: &'a str) -> Option<Self> {
        if text == "*" {
            return Some(Self::Any);
        }
        match text.strip_suffix('*') {
            Some(prefix) if prefix.len() < MAX_GROUP_NAME && is_valid_group_name(prefix) => {
                Some(Self::Prefix(prefix))
            }
            Some(_) => None,
            None if is_valid_group_name(text) => Some(Self::Exact(text)),
            None => None,
        }
    }

    /// Whether this pattern admits `group`.
    pub fn matches(&self, group: &str) -> bool {
        match *self {
            Self::Exact(name) => group == name,
            Self::Prefix(prefix) => group.len() > prefix.len() && group.starts_with(prefix),
            Self::Any => true,
        }
    }
}

impl fmt::Display for GroupPattern<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// The group patterns a token grants; empty means the user may join no group.
///
/// Invariant: `joined` is the valid patterns in claim order separated by single spaces (a byte
/// no pattern contains), so the whole list costs one allocation and an empty one none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatterns {
    joined: Box<str>,
}

impl GroupPatterns {
    /// The empty list (allocates nothing).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds the list from pattern strings; `BadGroups` when any of them is not a valid pattern.
    pub fn parse<'s, I>(patterns: I) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = &'s str>,
        I::IntoIter: Clone,
    {
        let iter = patterns.into_iter();
        let mut total = 0usize;
        for text in iter.clone() {
            GroupPattern::parse(text).ok_or(AuthError::BadGroups)?;
            total += text.len() + 1;
        }
        let mut joined = String::with_capacity(total.saturating_sub(1));
        for text in iter {
            push_pattern(&mut joined, text);
        }
        Ok(Self {
            joined: joined.into_boxed_str(),
        })
    }

    /// Builds the list from the raw JSON of a `groups` claim: an array of pattern strings.
    ///
    /// Two passes over the JSON (validate and measure, then copy) keep it to one allocation.
    pub fn from_json(raw: &RawValue) -> Result<Self, AuthError> {
        let total = walk_claim(raw, None)?;
        if total == 0 {
            return Ok(Self::empty());
        }
        let mut joined = String::with_capacity(total);
        walk_claim(raw, Some(&mut joined))?;
        Ok(Self {
            joined: joined.into_boxed_str(),
        })
    }

    /// Whether some pattern admits `group`.
    pub fn allows(&self, group: &str) -> bool {
        self.iter().any(|pattern| pattern.matches(group))
    }

    /// Whether the token granted no pattern at all.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty()
    }

    /// The patterns in claim order.
    pub fn iter(&self) -> impl Iterator<Item = GroupPattern<'_>> + '_ {
        self.joined
            .split(' ')
            .filter(|text| !text.is_empty())
            .filter_map(GroupPattern::parse)
    }
}

fn push_pattern(joined: &mut String, text: &str) {
    if !joined.is_empty() {
        joined.push(' ');
    }
    joined.push_str(text);
}

/// One pass over a `groups` claim: validates every entry and returns the joined length; when
/// `out` is given, also appends the entries to it.
fn walk_claim(raw: &RawValue, out: Option<&mut String>) -> Result<usize, AuthError> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let total = de
        .deserialize_seq(ClaimVisitor { out })
        .map_err(|_| AuthError::BadGroups)?;
    de.end().map_err(|_| AuthError::BadGroups)?;
    Ok(total)
}

/// A JSON string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

struct ClaimVisitor<'o> {
    out: Option<&'o mut String>,
}

impl<'de> Visitor<'de> for ClaimVisitor<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of group patterns")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<usize, A::Error> {
        let mut total = 0usize;
        while let Some(JsonStr(text)) = seq.next_element::<JsonStr<'de>>()? {
            if GroupPattern::parse(&text).is_none() {
                return Err(de::Error::custom("invalid group pattern"));
            }
            total += text.len() + usize::from(total > 0);
            if let Some(out) = self.out.as_deref_mut() {
                push_pattern(out, &text);
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn group_names_follow_the_channels_rule_in_ascii() {
        for ok in ["a", "room.1", "chat-room_2", "A.b-C_d.9", &"x".repeat(99)] {
            assert!(is_valid_group_name(ok), "{ok:?}");
        }
        for bad in [
            "",
            &"x".repeat(100),
            "room 1",
            "room/1",
            "room*",
            "room\n",
            "caf\u{e9}",
            "\u{0661}\u{0662}",
            "room:1",
            "room!",
        ] {
            assert!(!is_valid_group_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn patterns_parse_in_three_forms() {
        assert_eq!(GroupPattern::parse("*"), Some(GroupPattern::Any));
        assert_eq!(
            GroupPattern::parse("room.1"),
            Some(GroupPattern::Exact("room.1"))
        );
        assert_eq!(
            GroupPattern::parse("room.*"),
            Some(GroupPattern::Prefix("room."))
        );
        assert_eq!(
            GroupPattern::parse("room*"),
            Some(GroupPattern::Prefix("room"))
        );
        let longest_prefix = format!("{}*", "p".repeat(98));
        assert!(matches!(
            GroupPattern::parse(&longest_prefix),
            Some(GroupPattern::Prefix(_))
        ));
        let too_long_prefix = format!("{}*", "p".repeat(99));
        for bad in [
            "",
            "**",
            ".*x",
            "ro*m",
            "*room",
            "room.**",
            "room 1",
            "room.1\n",
            too_long_prefix.as_str(),
        ] {
            assert_eq!(GroupPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn patterns_match() {
        let exact = GroupPattern::Exact("room.1");
        assert!(exact.matches("room.1"));
        assert!(!exact.matches("room.10"));
        assert!(!exact.matches("room."));
        let prefix = GroupPattern::Prefix("room.");
        assert!(prefix.matches("room.1"));
        assert!(prefix.matches("room.lobby.2"));
        assert!(!prefix.matches("room."));
        assert!(!prefix.matches("room"));
        assert!(!prefix.matches("roomx1"));
        assert!(!prefix.matches("chat.1"));
        assert!(GroupPattern::Any.matches("anything"));
        assert_eq!(prefix.to_string(), "room.*");
        assert_eq!(exact.to_string(), "room.1");
        assert_eq!(GroupPattern::Any.to_string(), "*");
    }

    #[test]
    fn pattern_lists_from_strings() {
        let list = GroupPatterns::parse(["room.1", "chat.*"]).unwrap();
        assert!(!list.is_empty());
        assert!(list.allows("room.1"));
        assert!(list.allows("chat.general"));
        assert!(!list.allows("room.2"));
        assert!(!list.allows("chat."));
        assert_eq!(
            list.iter().collect::<Vec<_>>(),
            [GroupPattern::Exact("room.1"), GroupPattern::Prefix("chat.")]
        );
        assert_eq!(
            GroupPatterns::parse(["room.1", "no spaces"]),
            Err(AuthError::BadGroups)
        );
        let empty = GroupPatterns::parse([]).unwrap();
        assert!(empty.is_empty());
        assert!(!empty.allows("room.1"));
        assert_eq!(empty, GroupPatterns::empty());
    }

    #[test]
    fn pattern_lists_from_json_claims() {
        let list = GroupPatterns::from_json(&raw(r#"["room.1", "chat.*"]"#)).unwrap();
        assert_eq!(list, GroupPatterns::parse(["room.1", "chat.*"]).unwrap());
        let any = GroupPatterns::from_json(&raw(r#"["*"]"#)).unwrap();
        assert!(any.allows("whatever.at-all"));
        let escaped = GroupPatterns::from_json(&raw(r#"["room\u002e1"]"#)).unwrap();
        assert!(escaped.allows("room.1"));
        assert!(GroupPatterns::from_json(&raw("[]")).unwrap().is_empty());
        for bad in [
            "null",
            r#""room.1""#,
            "{}",
            "[1]",
            "[null]",
            r#"["room.1", ["room.2"]]"#,
            r#"["room 1"]"#,
            r#"[""]"#,
            r#"["ro*m"]"#,
        ] {
            assert_eq!(
                GroupPatterns::from_json(&raw(bad)),
                Err(AuthError::BadGroups),
                "{bad}"
            );
        }
    }
}
