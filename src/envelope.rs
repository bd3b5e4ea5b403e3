//! The JSON message envelope (PROTOCOL.md §3, §4, §6): client commands parsed borrowed from a
//! text frame (the `data` of a `send` kept as raw JSON, forwarded byte for byte), and the server
//! messages written as compact JSON with the key order the protocol shows, straight into an
//! output buffer. Pure code: no IO, no allocation beyond the caller's buffer.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};
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
        data: Option<&'a RawValue>,
    },
    /// A well-formed command whose `action` wsgate does not know.
    Unknown,
}

/// Why a text frame is not a command.
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

impl EnvelopeError {
    /// HTTP-style status for the `error` message sent after authentication.
    pub fn status(&self) -> u16 {
        400
    }

    /// Short reason for the client's `detail`.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::NotJson => "invalid JSON",
            Self::NotAnObject => "message must be a JSON object",
            Self::MissingAction => "missing action",
            Self::BadField("token") => "token must be a string",
            Self::BadField("group") => "group must be a string",
            Self::BadField("action") => "action must be a string",
            Self::BadField(_) => "a field has the wrong type",
        }
    }
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

/// Parses one client command, borrowing from `text`.
///
/// No allocation unless a string has escapes; a `data` value nested two or more levels deep
/// costs one (serde_json's stack for skipping nested containers).
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
    let required = |member, name| string_member(member, name)?.ok_or(EnvelopeError::BadField(name));
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

fn write_group_reply(out: &mut Vec<u8>, head: &[u8], group: &str) {
    out.reserve(head.len() + group.len() + 3);
    out.extend_from_slice(head);
    write_json_str(out, group);
    out.push(b'}');
}

/// Appends `{"action":"message","group":"<group>","data":<data>}` with `data` copied verbatim (§4).
pub fn write_message(out: &mut Vec<u8>, group: &str, data: &RawValue) {
    const HEAD: &[u8] = br#"{"action":"message","group":"#;
    let data = data.get().as_bytes();
    out.reserve(HEAD.len() + group.len() + data.len() + 12);
    out.extend_from_slice(HEAD);
    write_json_str(out, group);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(data);
    out.push(b'}');
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
    fn error_details() {
        for err in [
            EnvelopeError::NotJson,
            EnvelopeError::NotAnObject,
            EnvelopeError::MissingAction,
            EnvelopeError::BadField("token"),
            EnvelopeError::BadField("group"),
            EnvelopeError::BadField("action"),
            EnvelopeError::BadField("other"),
        ] {
            assert_eq!(err.status(), 400);
            assert!(!err.detail().is_empty());
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
        let data = RawValue::from_string(r#"{"text": "hi \u00e9", "n":[1,2]}"#.to_owned()).unwrap();
        assert_eq!(
            written(|o| write_message(o, "room.1", &data)),
            r#"{"action":"message","group":"room.1","data":{"text": "hi \u00e9", "n":[1,2]}}"#
        );
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

    #[test]
    fn writers_append() {
        let mut out = b"prefix".to_vec();
        write_joined(&mut out, "g");
        assert_eq!(out, br#"prefix{"action":"joined","group":"g"}"#);
    }
}
