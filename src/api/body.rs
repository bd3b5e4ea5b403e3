//! The JSON bodies of `POST /api/publish` and `POST /api/revoke`, parsed borrowed from the
//! request body; every refusal is a 400 saying what is wrong (docs/protocol.md §5).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::ApiError;
use crate::auth::groups::is_valid_group_name;
use crate::envelope::{self, RawJson};

/// A parsed `POST /api/publish` body, borrowed from the request body.
#[derive(Debug)]
pub struct Publish<'a> {
    /// The target group: a valid group name (borrowed unless it was written with escapes).
    pub group: Cow<'a, str>,
    /// The payload exactly as the publisher wrote it (`null` included), forwarded byte for byte.
    pub data: &'a RawValue,
}

/// Parses `{"group": "...", "data": <any JSON>}`, members in any order.
///
/// Refused with 400, in this order: a body that is not UTF-8 or not JSON (a repeated member
/// counts as bad JSON), JSON that is not an object, any member other than `group` and `data`
/// (so a typo such as `"grop"` cannot silently change the meaning), a missing `group` or one
/// that is not a string, a missing `data`; then `BadGroup` for a string that is not a valid
/// group name (docs/protocol.md §4). Nothing is allocated unless `group` contains escapes.
pub fn parse_publish(body: &[u8]) -> Result<Publish<'_>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadJson("body is not UTF-8"))?;
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(b'{') {
        return Err(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => ApiError::BadJson("body must be a JSON object"),
            Err(_) => ApiError::BadJson("invalid JSON"),
        });
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let members = de
        .deserialize_map(PublishVisitor)
        .and_then(|members| de.end().map(|()| members))
        .map_err(|_| ApiError::BadJson("invalid JSON"))?;
    if let Some(problem) = members.problem {
        return Err(ApiError::BadJson(problem));
    }
    let group = match members.group {
        None => return Err(ApiError::BadJson("missing group")),
        Some(raw) if !raw.get().starts_with('"') => {
            return Err(ApiError::BadJson("group must be a string"));
        }
        Some(raw) => {
            serde_json::from_str::<JsonStr<'_>>(raw.get())
                .map_err(|_| ApiError::BadJson("group must be a string"))?
                .0
        }
    };
    let data = members.data.ok_or(ApiError::BadJson("missing data"))?;
    if !is_valid_group_name(&group) {
        return Err(ApiError::BadGroup);
    }
    if RawJson::from(data).nests_deeper_than(envelope::MAX_DATA_DEPTH) {
        return Err(ApiError::BadJson("data nested too deeply"));
    }
    Ok(Publish { group, data })
}

/// A parsed `POST /api/revoke` body: exactly one of `user` and `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget<'a> {
    /// Every token of this user issued up to now (a JSON string, or an integer written as its
    /// decimal text, as the tokens carry it).
    User(Cow<'a, str>),
    /// The token with this `jti`.
    Jti(Cow<'a, str>),
}

/// Parses `{"user": "42"}` (or `{"user": 42}`) or `{"jti": "..."}`; anything else is a 400
/// saying what is wrong (no other member, not both, non-empty strings).
pub fn parse_revoke<'a>(body: &'a [u8]) -> Result<RevokeTarget<'a>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow, default)]
        user: Option<&'a RawValue>,
        #[serde(borrow, default)]
        jti: Option<&'a RawValue>,
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadJson("body is not UTF-8"))?;
    let parsed: Body<'_> = serde_json::from_str(text).map_err(|e| {
        if e.to_string().starts_with("unknown field") {
            ApiError::BadJson("unknown field: only user or jti is allowed")
        } else {
            ApiError::BadJson("body must be a JSON object with user or jti")
        }
    })?;
    let string = |raw: &'a RawValue, what: &'static str| -> Result<Cow<'a, str>, ApiError> {
        let value = raw.get();
        let text = if value.starts_with('"') {
            serde_json::from_str::<JsonStr<'a>>(value)
                .map_err(|_| ApiError::BadJson(what))?
                .0
        } else if what == "user must be a string or an integer"
            && value.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            && value.parse::<i64>().is_ok()
        {
            Cow::Borrowed(value)
        } else {
            return Err(ApiError::BadJson(what));
        };
        if text.is_empty() {
            return Err(ApiError::BadJson(what));
        }
        Ok(text)
    };
    match (parsed.user, parsed.jti) {
        (Some(user), None) => Ok(RevokeTarget::User(string(
            user,
            "user must be a string or an integer",
        )?)),
        (None, Some(jti)) => Ok(RevokeTarget::Jti(string(jti, "jti must be a string")?)),
        (Some(_), Some(_)) => Err(ApiError::BadJson("give user or jti, not both")),
        (None, None) => Err(ApiError::BadJson("missing user or jti")),
    }
}

/// The members of a publish body as raw JSON, and the first structural problem seen.
#[derive(Default)]
struct PublishMembers<'a> {
    group: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    problem: Option<&'static str>,
}

/// A JSON string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Walks the whole object (so syntax errors win over member errors) and records the members.
struct PublishVisitor;

impl<'de> Visitor<'de> for PublishVisitor {
    type Value = PublishMembers<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with group and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = PublishMembers::default();
        while let Some(JsonStr(key)) = map.next_key::<JsonStr<'de>>()? {
            let value = map.next_value::<&'de RawValue>()?;
            let slot = match key.as_ref() {
                "group" => &mut members.group,
                "data" => &mut members.data,
                _ => {
                    members
                        .problem
                        .get_or_insert("unknown field: only group and data are allowed");
                    continue;
                }
            };
            if slot.replace(value).is_some() {
                return Err(serde::de::Error::custom("repeated member"));
            }
        }
        Ok(members)
    }
}
