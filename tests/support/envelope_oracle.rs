//! The serde_json implementation of `wsgate::envelope::parse_command` that the single-pass
//! parser replaced, kept as the oracle of two differential checks (`tests/envelope_differential.rs`
//! and the `envelope` fuzz target, through `tests/fuzz_checks/`), and the comparable outcome of
//! either implementation. Included with `#[path]`; each includer uses part of it.
#![allow(dead_code)]

use std::borrow::Cow;

use wsgate::envelope::{ClientCommand, EnvelopeError, parse_command};

/// The serde_json implementation of `parse_command` before the single-pass parser, verbatim
/// except for its return type (the `data` stays a `&RawValue`).
pub mod oracle {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde::de::{Deserializer, IgnoredAny};
    use serde_json::value::RawValue;
    use wsgate::envelope::EnvelopeError;

    pub enum ClientCommand<'a> {
        Authenticate {
            token: Cow<'a, str>,
        },
        Refresh {
            token: Cow<'a, str>,
        },
        Join {
            group: Cow<'a, str>,
        },
        Leave {
            group: Cow<'a, str>,
        },
        Send {
            group: Cow<'a, str>,
            data: Option<&'a RawValue>,
        },
        Unknown,
    }

    /// The members of any command, as raw JSON; unknown members are skipped.
    #[derive(Deserialize)]
    struct RawCommand<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        action: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        token: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        group: Option<&'a RawValue>,
        #[serde(borrow, default, deserialize_with = "present")]
        data: Option<&'a RawValue>,
    }

    /// A member that is present is `Some`, even when its value is `null` (an absent one defaults).
    fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
        <&'de RawValue>::deserialize(d).map(Some)
    }

    /// A JSON string borrowed from the input when it has no escapes.
    #[derive(Deserialize)]
    struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

    /// `Some(text)` for a JSON string, `None` for `null`/absent, `BadField` for anything else.
    fn string_member<'a>(
        raw: Option<&'a RawValue>,
        name: &'static str,
    ) -> Result<Option<Cow<'a, str>>, EnvelopeError> {
        match raw {
            None => Ok(None),
            Some(raw) if raw.get() == "null" => Ok(None),
            // Checked before serde is asked, because a serde_json error allocates.
            Some(raw) if !raw.get().starts_with('"') => Err(EnvelopeError::BadField(name)),
            Some(raw) => serde_json::from_str::<JsonStr<'a>>(raw.get())
                .map(|s| Some(s.0))
                .map_err(|_| EnvelopeError::BadField(name)),
        }
    }

    pub fn parse_command(text: &str) -> Result<ClientCommand<'_>, EnvelopeError> {
        let first = text
            .bytes()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
        if first != Some(b'{') {
            // Structs also deserialize from arrays; tell "other JSON" from "no JSON" explicitly.
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => EnvelopeError::NotAnObject,
                Err(_) => EnvelopeError::NotJson,
            });
        }
        let raw: RawCommand<'_> = serde_json::from_str(text).map_err(|_| EnvelopeError::NotJson)?;
        let action = string_member(raw.action, "action")?.ok_or(EnvelopeError::MissingAction)?;
        let required =
            |member, name| string_member(member, name)?.ok_or(EnvelopeError::BadField(name));
        Ok(match action.as_ref() {
            "authenticate" => ClientCommand::Authenticate {
                token: string_member(raw.token, "token")?.unwrap_or_default(),
            },
            "refresh" => ClientCommand::Refresh {
                token: string_member(raw.token, "token")?.unwrap_or_default(),
            },
            "join" => ClientCommand::Join {
                group: required(raw.group, "group")?,
            },
            "leave" => ClientCommand::Leave {
                group: required(raw.group, "group")?,
            },
            "send" => ClientCommand::Send {
                group: required(raw.group, "group")?,
                data: raw.data,
            },
            _ => ClientCommand::Unknown,
        })
    }
}

/// A returned string: borrowed from the text at a byte offset, or owned.
#[derive(Debug, PartialEq, Eq)]
pub enum Text {
    Borrowed { at: usize, text: String },
    Owned(String),
}

/// A parse outcome with everything that matters, comparable across the two implementations.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Authenticate(Text),
    Refresh(Text),
    Join(Text),
    Leave(Text),
    /// The group, and the `data` slice as (offset, text).
    Send(Text, Option<(usize, String)>),
    Unknown,
    Err(EnvelopeError),
}

pub fn offset(text: &str, part: &str) -> usize {
    let at = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    assert!(
        at + part.len() <= text.len(),
        "{part:?} is not a slice of {text:?}"
    );
    at
}

pub fn text_of(text: &str, s: Cow<'_, str>) -> Text {
    match s {
        Cow::Borrowed(b) => Text::Borrowed {
            at: offset(text, b),
            text: b.to_owned(),
        },
        Cow::Owned(o) => Text::Owned(o),
    }
}

pub fn new_outcome(text: &str) -> Outcome {
    match parse_command(text) {
        Ok(ClientCommand::Authenticate { token }) => Outcome::Authenticate(text_of(text, token)),
        Ok(ClientCommand::Refresh { token }) => Outcome::Refresh(text_of(text, token)),
        Ok(ClientCommand::Join { group }) => Outcome::Join(text_of(text, group)),
        Ok(ClientCommand::Leave { group }) => Outcome::Leave(text_of(text, group)),
        Ok(ClientCommand::Send { group, data }) => Outcome::Send(
            text_of(text, group),
            data.map(|d| (offset(text, d.get()), d.get().to_owned())),
        ),
        Ok(ClientCommand::Unknown) => Outcome::Unknown,
        Err(e) => Outcome::Err(e),
    }
}

pub fn oracle_outcome(text: &str) -> Outcome {
    use oracle::ClientCommand as C;
    match oracle::parse_command(text) {
        Ok(C::Authenticate { token }) => Outcome::Authenticate(text_of(text, token)),
        Ok(C::Refresh { token }) => Outcome::Refresh(text_of(text, token)),
        Ok(C::Join { group }) => Outcome::Join(text_of(text, group)),
        Ok(C::Leave { group }) => Outcome::Leave(text_of(text, group)),
        Ok(C::Send { group, data }) => Outcome::Send(
            text_of(text, group),
            data.map(|d| (offset(text, d.get()), d.get().to_owned())),
        ),
        Ok(C::Unknown) => Outcome::Unknown,
        Err(e) => Outcome::Err(e),
    }
}
