//! The per-connection protocol state of the gateway (PROTOCOL.md §3 and §6): upgrade-time and
//! first-frame authentication, then the commands of an authenticated connection. Pure: input is a
//! message and the Unix time, output is frames appended to `out` and a `Verdict`. Never allocates
//! on the authentication path (the identity is stored inline).

use crate::auth::{AuthError, Identity};
use crate::config::AuthSettings;
use crate::envelope::{self, ClientCommand};
use crate::proto::close::CloseCode;
use crate::proto::frame;
use crate::proto::handshake::Upgrade;
use crate::proto::http;

/// What the connection does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving.
    Continue,
    /// Send a Close frame with this code and reason, then end the connection.
    Close(CloseCode, &'static str),
}

/// Close reason sent when the first frame is not an `authenticate` command.
pub const REASON_AUTH_REQUIRED: &str = "authentication required";
/// Close reason for the auth timeout.
pub const REASON_AUTH_TIMEOUT: &str = "authentication timeout";
/// Close reason for the keepalive timeout.
pub const REASON_KEEPALIVE_TIMEOUT: &str = "keepalive timeout";

/// Authentication state of one connection.
#[derive(Debug)]
pub struct Session {
    state: State,
}

#[derive(Debug)]
enum State {
    AwaitingAuth,
    Open(Identity),
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A connection that has not authenticated yet.
    pub fn new() -> Self {
        Self {
            state: State::AwaitingAuth,
        }
    }

    /// Whether the connection has authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, State::Open(_))
    }

    /// The authenticated identity, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.state {
            State::Open(identity) => Some(identity),
            State::AwaitingAuth => None,
        }
    }

    /// Runs upgrade-time authentication right after the 101 was written: a token in the
    /// subprotocol, the `Authorization` header or (when allowed) the query string. Without any of
    /// them the connection waits for a first-frame `authenticate` if that method is enabled.
    pub fn on_upgrade(
        &mut self,
        upgrade: &Upgrade<'_>,
        auth: &AuthSettings,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        match upgrade_credential(upgrade, auth) {
            Credential::Token(token) => self.authenticate(token, auth, now, out),
            Credential::Refused(err) => fail(err, out),
            Credential::None if auth.first_frame => Verdict::Continue,
            Credential::None => fail(AuthError::Missing, out),
        }
    }

    /// Handles a complete text message.
    pub fn on_text(
        &mut self,
        text: &str,
        auth: &AuthSettings,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        let command = envelope::parse_command(text);
        match (&self.state, command) {
            (State::AwaitingAuth, Ok(ClientCommand::Authenticate { token }))
                if auth.first_frame =>
            {
                self.authenticate(token.as_bytes(), auth, now, out)
            }
            // PROTOCOL §6: anything else first is a policy violation, closed without a message.
            (State::AwaitingAuth, _) => Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED),
            (State::Open(_), Ok(ClientCommand::Authenticate { .. })) => {
                error(out, 400, "already authenticated")
            }
            (State::Open(_), Ok(_)) => error(out, 400, "unknown action"),
            (State::Open(_), Err(_)) => error(out, 400, "invalid JSON command"),
        }
    }

    /// Handles a complete binary message.
    pub fn on_binary(&mut self, out: &mut Vec<u8>) -> Verdict {
        match self.state {
            State::AwaitingAuth => Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED),
            State::Open(_) => error(out, 400, "binary frames are not supported"),
        }
    }

    fn authenticate(
        &mut self,
        token: &[u8],
        auth: &AuthSettings,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        match auth.verifier.verify(token, now) {
            Ok(identity) => {
                frame::write_text_with(out, |o| envelope::write_auth_ok(o, identity.user.as_str()));
                self.state = State::Open(identity);
                Verdict::Continue
            }
            Err(err) => fail(err, out),
        }
    }
}

/// The credential an upgrade request carries.
enum Credential<'b> {
    Token(&'b [u8]),
    Refused(AuthError),
    None,
}

fn upgrade_credential<'b>(upgrade: &Upgrade<'b>, auth: &AuthSettings) -> Credential<'b> {
    if auth.subprotocol
        && let Some(token) = upgrade.bearer_protocol
    {
        return Credential::Token(token);
    }
    if auth.header
        && let Some(token) = upgrade.authorization.and_then(bearer_token)
    {
        return Credential::Token(token);
    }
    if let Some(token) = upgrade.query.and_then(|q| http::query_param(q, "token")) {
        return if auth.query_token {
            Credential::Token(token.as_bytes())
        } else {
            Credential::Refused(AuthError::QueryTokenRefused)
        };
    }
    Credential::None
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive per RFC 9110).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn fail(err: AuthError, out: &mut Vec<u8>) -> Verdict {
    frame::write_text_with(out, |o| {
        envelope::write_auth_failure(o, err.status(), err.detail())
    });
    Verdict::Close(err.close_code(), err.detail())
}

fn error(out: &mut Vec<u8>, status: u16, detail: &str) -> Verdict {
    frame::write_text_with(out, |o| envelope::write_error(o, status, detail));
    Verdict::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            verifier: Verifier::hs256(b"secret"),
            first_frame: true,
            header: true,
            subprotocol: true,
            query_token: false,
        }
    }

    #[test]
    fn anything_but_authenticate_first_is_a_policy_close_without_message() {
        for text in ["{\"action\":\"join\",\"group\":\"a\"}", "not json", "[]"] {
            let mut s = Session::new();
            let mut out = Vec::new();
            let v = s.on_text(text, &settings(), 0, &mut out);
            assert_eq!(
                v,
                Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED),
                "{text}"
            );
            assert!(out.is_empty(), "{text}");
        }
        let mut out = Vec::new();
        let v = Session::new().on_binary(&mut out);
        assert_eq!(v, Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED));
        assert!(out.is_empty());
    }

    #[test]
    fn a_bad_token_gets_the_401_message_then_4401() {
        let mut s = Session::new();
        let mut out = Vec::new();
        let v = s.on_text(
            r#"{"action":"authenticate","token":"x.y.z"}"#,
            &settings(),
            0,
            &mut out,
        );
        assert!(
            matches!(v, Verdict::Close(CloseCode::TOKEN_INVALID, _)),
            "{v:?}"
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(r#""status_code":401,"status_text":"Unauthorized""#),
            "{text}"
        );
        assert!(!s.is_authenticated());
    }

    #[test]
    fn first_frame_disabled_means_authenticate_is_refused() {
        let mut auth = settings();
        auth.first_frame = false;
        let mut out = Vec::new();
        let v = Session::new().on_text(
            r#"{"action":"authenticate","token":"a"}"#,
            &auth,
            0,
            &mut out,
        );
        assert_eq!(v, Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED));
    }
}
