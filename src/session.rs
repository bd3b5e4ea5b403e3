//! The per-connection protocol state of the gateway (docs/protocol.md §3, §4 and §6): upgrade-time and
//! first-frame authentication, a ticket's redemption, then the commands of an authenticated
//! connection (join, leave, send). Pure: input is a message (or the answer to a redemption) and
//! the Unix time, output is frames appended to `out`, calls on the core's `Groups`, and a
//! `Verdict`; the shared tables are an argument. Never allocates on the authentication path
//! (the identity and a ticket waiting for redemption are stored inline).

use crate::auth::groups::is_valid_group_name;
use crate::auth::tickets::{TicketError, TicketId};
use crate::auth::{AuthError, Identity, bearer_token};
use crate::config::AuthSettings;
use crate::envelope::{self, ClientCommand, RawJson};
use crate::hub::table::Join;
use crate::proto::close::CloseCode;
use crate::proto::frame;
use crate::proto::handshake::Upgrade;
use crate::proto::http;
use crate::tables::Tables;

/// What the connection does after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving.
    Continue,
    /// Send a Close frame with this code and reason, then end the connection.
    Close(CloseCode, &'static str),
}

/// What a session may ask of its core's group machinery (implemented by the runtime; a test
/// double in unit tests).
pub trait Groups {
    /// Adds this connection to `group` (a valid name the token allows).
    fn join(&mut self, group: &str) -> Join;
    /// Removes this connection from `group`, if it was a member.
    fn leave(&mut self, group: &str);
    /// Whether this connection is a member of `group`.
    fn is_member(&self, group: &str) -> bool;
    /// The groups this connection is a member of.
    fn joined(&self) -> Vec<std::sync::Arc<str>>;
    /// Delivers `{"action":"message","group":..,"data":..}` to every member of `group`, this
    /// connection included. `out` holds this connection's replies not yet sent: they go first.
    fn publish(&mut self, group: &str, data: RawJson<'_>, out: &mut Vec<u8>);
}

/// Largest frame and message a connection may send before it has authenticated (bytes): the
/// only valid message then is an `authenticate` command, and the largest token the verifier
/// reads is under 7 KiB of base64url. Beyond it: close 1009, decided from the frame header.
pub const MAX_PRE_AUTH_MESSAGE: usize = 16 * 1024;

/// Close reason sent when the first frame is not an `authenticate` command.
pub const REASON_AUTH_REQUIRED: &str = "authentication required";
/// Close reason for the auth timeout.
pub const REASON_AUTH_TIMEOUT: &str = "authentication timeout";
/// Close reason for the keepalive timeout.
pub const REASON_KEEPALIVE_TIMEOUT: &str = "keepalive timeout";
/// The `reason` of a `left` the gateway sends when a refreshed token no longer allows a group.
pub const REASON_NOT_ALLOWED: &str = "not allowed";

/// Authentication state of one connection.
#[derive(Debug)]
pub struct Session {
    state: State,
    /// The identity changed (authentication, refresh) since the runtime last looked.
    changed: bool,
}

#[derive(Debug)]
enum State {
    AwaitingAuth,
    /// An upgrade with `?ticket=`: waiting for the ticket's redemption (`asked`: handed out).
    Redeeming {
        ticket: TicketId,
        asked: bool,
    },
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
            changed: false,
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
            State::AwaitingAuth | State::Redeeming { .. } => None,
        }
    }

    /// When the token in force expires (Unix seconds): the connection closes with 4401 then,
    /// unless a `refresh` replaced it.
    pub fn expires_at(&self) -> Option<u64> {
        self.identity().map(|identity| identity.exp)
    }

    /// The identity, once after each authentication or refresh (for the runtime's index of
    /// whom a revocation closes).
    pub fn take_changed_identity(&mut self) -> Option<&Identity> {
        if std::mem::take(&mut self.changed) {
            self.identity()
        } else {
            None
        }
    }

    /// Runs upgrade-time authentication right after the 101 was written: a token in the
    /// subprotocol, the `Authorization` header or (when allowed) the query string. Without any of
    /// them the connection waits for a first-frame `authenticate` if that method is enabled.
    ///
    /// A ticket is not redeemed here: the session waits for it ([`Session::take_redeem`]) and
    /// takes the answer in [`Session::on_redeemed`].
    pub fn on_upgrade(
        &mut self,
        upgrade: &Upgrade<'_>,
        auth: &AuthSettings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        match upgrade_credential(upgrade, auth) {
            Credential::Token(token) => self.authenticate(token, auth, tables, now, out),
            Credential::Ticket(ticket) => match TicketId::parse(ticket) {
                Some(ticket) => {
                    self.state = State::Redeeming {
                        ticket,
                        asked: false,
                    };
                    Verdict::Continue
                }
                None => fail(AuthError::BadTicket, out),
            },
            Credential::Refused(err) => fail(err, out),
            Credential::None if auth.first_frame => Verdict::Continue,
            Credential::None => fail(AuthError::Missing, out),
        }
    }

    /// The ticket to redeem, once: the caller redeems it (exactly once, in the shared table)
    /// and answers with [`Session::on_redeemed`].
    pub fn take_redeem(&mut self) -> Option<TicketId> {
        match &mut self.state {
            State::Redeeming { ticket, asked } if !*asked => {
                *asked = true;
                Some(*ticket)
            }
            _ => None,
        }
    }

    /// Whether the session waits for a ticket's redemption (its input waits too).
    pub fn is_redeeming(&self) -> bool {
        matches!(self.state, State::Redeeming { .. })
    }

    /// The answer to the redemption [`Session::take_redeem`] handed out: the ticket's identity
    /// opens the connection (unless revoked since), anything else is 4401.
    pub fn on_redeemed(
        &mut self,
        redeemed: Result<Identity, TicketError>,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        if !self.is_redeeming() {
            return Verdict::Continue;
        }
        self.state = State::AwaitingAuth;
        match redeemed {
            Ok(identity) => self.open(identity, tables, now, out),
            Err(TicketError) => fail(AuthError::BadTicket, out),
        }
    }

    /// Handles a complete text message.
    pub fn on_text(
        &mut self,
        text: &str,
        auth: &AuthSettings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
        groups: &mut dyn Groups,
    ) -> Verdict {
        let command = envelope::parse_command(text);
        let identity = match &self.state {
            State::Open(identity) => identity,
            State::AwaitingAuth | State::Redeeming { .. } => {
                return match command {
                    // A redemption's answer comes first: input waits until it has.
                    Ok(ClientCommand::Authenticate { token })
                        if auth.first_frame && !self.is_redeeming() =>
                    {
                        self.authenticate(token.as_bytes(), auth, tables, now, out)
                    }
                    // PROTOCOL §6: anything else first is a policy violation, closed without a
                    // message.
                    _ => Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED),
                };
            }
        };
        match command {
            Ok(ClientCommand::Join { group }) => {
                if !is_valid_group_name(&group) {
                    return error(out, 400, "invalid group name");
                }
                if !identity.groups.allows(&group) {
                    return error(out, 403, "the token does not allow this group");
                }
                match groups.join(&group) {
                    Join::Joined { .. } | Join::AlreadyMember => {
                        frame::write_text_with(out, |o| envelope::write_joined(o, &group));
                        Verdict::Continue
                    }
                    Join::TooManyGroups => error(out, 400, "too many groups for one connection"),
                }
            }
            Ok(ClientCommand::Leave { group }) => {
                if !is_valid_group_name(&group) {
                    return error(out, 400, "invalid group name");
                }
                // PROTOCOL §6: leaving a group not joined still answers `left`.
                groups.leave(&group);
                frame::write_text_with(out, |o| envelope::write_left(o, &group));
                Verdict::Continue
            }
            Ok(ClientCommand::Send { group, data }) => {
                if !is_valid_group_name(&group) {
                    return error(out, 400, "invalid group name");
                }
                let Some(data) = data else {
                    return error(out, 400, "send needs data");
                };
                if data.nests_deeper_than(envelope::MAX_DATA_DEPTH) {
                    return error(out, 400, "data nested too deeply");
                }
                if !groups.is_member(&group) {
                    return error(out, 403, "join the group before sending to it");
                }
                groups.publish(&group, data, out);
                Verdict::Continue
            }
            Ok(ClientCommand::Authenticate { .. }) => error(out, 400, "already authenticated"),
            Ok(ClientCommand::Refresh { token }) => {
                match auth.verifier.verify(token.as_bytes(), now) {
                    Ok(new) if new.user.as_str() != identity.user.as_str() => {
                        fail(AuthError::OtherUser, out)
                    }
                    Ok(new) => {
                        let verdict = self.open(new, tables, now, out);
                        if verdict == Verdict::Continue {
                            self.leave_disallowed(groups, out);
                        }
                        verdict
                    }
                    Err(err) => fail(err, out),
                }
            }
            Ok(ClientCommand::Unknown) => error(out, 400, "unknown action"),
            Err(_) => error(out, 400, "invalid JSON command"),
        }
    }

    /// Handles a complete binary message.
    pub fn on_binary(&mut self, out: &mut Vec<u8>) -> Verdict {
        match self.state {
            State::AwaitingAuth | State::Redeeming { .. } => {
                Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED)
            }
            State::Open(_) => error(out, 400, "binary frames are not supported"),
        }
    }

    fn authenticate(
        &mut self,
        token: &[u8],
        auth: &AuthSettings,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        match auth.verifier.verify(token, now) {
            Ok(identity) => self.open(identity, tables, now, out),
            Err(err) => fail(err, out),
        }
    }

    /// After a refresh: leaves every joined group the identity in force no longer allows, and
    /// tells the client of each (a permission cut reaches open connections).
    fn leave_disallowed(&self, groups: &mut dyn Groups, out: &mut Vec<u8>) {
        let Some(identity) = self.identity() else {
            return;
        };
        for group in groups.joined() {
            if !identity.groups.allows(&group) {
                groups.leave(&group);
                frame::write_text_with(out, |o| {
                    envelope::write_left_because(o, &group, REASON_NOT_ALLOWED);
                });
            }
        }
    }

    /// Puts a verified identity in force (after the revocation list had its say) and answers
    /// with the 200 `authentication` message; a refresh answers the same way (README).
    fn open(
        &mut self,
        identity: Identity,
        tables: &Tables,
        now: u64,
        out: &mut Vec<u8>,
    ) -> Verdict {
        if tables.revocations.is_revoked(&identity, now) {
            return fail(AuthError::Revoked, out);
        }
        frame::write_text_with(out, |o| envelope::write_auth_ok(o, identity.user.as_str()));
        self.state = State::Open(identity);
        self.changed = true;
        Verdict::Continue
    }
}

/// The credential an upgrade request carries.
enum Credential<'b> {
    Token(&'b [u8]),
    Ticket(&'b str),
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
    if auth.ticket
        && let Some(ticket) = upgrade.query.and_then(|q| http::query_param(q, "ticket"))
    {
        return Credential::Ticket(ticket);
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

fn fail(err: AuthError, out: &mut Vec<u8>) -> Verdict {
    write_auth_failure(err.status(), err.detail(), out);
    Verdict::Close(err.close_code(), err.detail())
}

/// Appends the `authentication` message that precedes a 4401 or 4403 (docs/protocol.md §3):
/// the one writer of it, for a refused credential here, and for an expiry or a revocation the
/// server decides on its own.
pub fn write_auth_failure(status: u16, detail: &str, out: &mut Vec<u8>) {
    frame::write_text_with(out, |o| envelope::write_auth_failure(o, status, detail));
}

fn error(out: &mut Vec<u8>, status: u16, detail: &str) -> Verdict {
    frame::write_text_with(out, |o| envelope::write_error(o, status, detail));
    Verdict::Continue
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    /// A test double: records joins and publishes.
    #[derive(Default)]
    struct FakeGroups {
        joined: Vec<String>,
        published: Vec<(String, String, usize)>,
        max: usize,
    }

    impl Groups for FakeGroups {
        fn join(&mut self, group: &str) -> Join {
            if self.joined.iter().any(|g| g == group) {
                return Join::AlreadyMember;
            }
            if self.joined.len() >= self.max {
                return Join::TooManyGroups;
            }
            self.joined.push(group.to_owned());
            Join::Joined {
                first_on_core: true,
            }
        }
        fn leave(&mut self, group: &str) {
            self.joined.retain(|g| g != group);
        }
        fn is_member(&self, group: &str) -> bool {
            self.joined.iter().any(|g| g == group)
        }
        fn joined(&self) -> Vec<std::sync::Arc<str>> {
            self.joined.iter().map(|g| g.as_str().into()).collect()
        }
        fn publish(&mut self, group: &str, data: RawJson<'_>, out: &mut Vec<u8>) {
            // The runtime sends pending replies first; record how many bytes were pending.
            self.published
                .push((group.to_owned(), data.get().to_owned(), out.len()));
            out.clear();
        }
    }

    fn settings() -> AuthSettings {
        AuthSettings {
            verifier: Verifier::hs256(b"secret"),
            first_frame: true,
            header: true,
            subprotocol: true,
            query_token: false,
            ticket: true,
        }
    }

    fn tables() -> Tables {
        Tables::new(&crate::tables::TableSizes {
            ticket_ttl_secs: 10,
            max_tickets: 100,
            max_tickets_per_user: 0,
            max_tickets_per_address: 0,
            revocation_ttl_secs: 3600,
            max_revocations: 100,
            max_connections_per_address: 0,
            upgrades_per_address_per_sec: 0,
            upgrade_burst: 1,
            max_addresses: 100,
        })
    }

    #[test]
    fn anything_but_authenticate_first_is_a_policy_close_without_message() {
        for text in ["{\"action\":\"join\",\"group\":\"a\"}", "not json", "[]"] {
            let mut s = Session::new();
            let mut out = Vec::new();
            let v = s.on_text(
                text,
                &settings(),
                &tables(),
                0,
                &mut out,
                &mut FakeGroups::default(),
            );
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
            &tables(),
            0,
            &mut out,
            &mut FakeGroups::default(),
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
            &tables(),
            0,
            &mut out,
            &mut FakeGroups::default(),
        );
        assert_eq!(v, Verdict::Close(CloseCode::POLICY, REASON_AUTH_REQUIRED));
    }

    /// An HS256 token for user "7" with these claims added, signed with "secret".
    fn token(extra: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::{Hmac, Mac};
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = format!(r#"{{"exp":4000000000,"user_id":"7"{extra}}}"#);
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    fn authenticated(extra: &str) -> Session {
        let mut s = Session::new();
        let cmd = format!(r#"{{"action":"authenticate","token":"{}"}}"#, token(extra));
        let mut out = Vec::new();
        let v = s.on_text(
            &cmd,
            &settings(),
            &tables(),
            0,
            &mut out,
            &mut FakeGroups::default(),
        );
        assert_eq!(v, Verdict::Continue, "{}", String::from_utf8_lossy(&out));
        s
    }

    /// Sends `text` and returns the JSON payload of the single reply frame.
    fn reply(s: &mut Session, groups: &mut FakeGroups, text: &str) -> String {
        let mut out = Vec::new();
        assert_eq!(
            s.on_text(text, &settings(), &tables(), 0, &mut out, groups),
            Verdict::Continue
        );
        if out.is_empty() {
            return String::new();
        }
        // Server frames here are small: a 2-byte header.
        String::from_utf8(out[2..].to_vec()).unwrap()
    }

    #[test]
    fn joins_follow_the_tokens_group_patterns() {
        let mut s = authenticated(r#","groups":["room.*","lobby"]"#);
        let mut g = FakeGroups {
            max: 10,
            ..FakeGroups::default()
        };
        let joined = reply(&mut s, &mut g, r#"{"action":"join","group":"room.1"}"#);
        assert_eq!(joined, r#"{"action":"joined","group":"room.1"}"#);
        assert_eq!(
            reply(&mut s, &mut g, r#"{"action":"join","group":"lobby"}"#),
            r#"{"action":"joined","group":"lobby"}"#
        );
        // Joining twice is fine and answers joined again.
        assert_eq!(
            reply(&mut s, &mut g, r#"{"action":"join","group":"lobby"}"#),
            r#"{"action":"joined","group":"lobby"}"#
        );
        let denied = reply(&mut s, &mut g, r#"{"action":"join","group":"admin"}"#);
        assert!(
            denied.starts_with(r#"{"action":"error","payload":{"status_code":403"#),
            "{denied}"
        );
        let bad = reply(&mut s, &mut g, r#"{"action":"join","group":"room 1"}"#);
        assert!(
            bad.starts_with(r#"{"action":"error","payload":{"status_code":400"#),
            "{bad}"
        );
        assert_eq!(g.joined, ["room.1", "lobby"]);
    }

    #[test]
    fn a_token_without_groups_may_join_nothing() {
        let mut s = authenticated("");
        let mut g = FakeGroups {
            max: 10,
            ..FakeGroups::default()
        };
        let denied = reply(&mut s, &mut g, r#"{"action":"join","group":"room.1"}"#);
        assert!(denied.contains(r#""status_code":403"#), "{denied}");
        assert!(g.joined.is_empty());
    }

    #[test]
    fn too_many_groups_is_an_error_that_keeps_the_connection() {
        let mut s = authenticated(r#","groups":["*"]"#);
        let mut g = FakeGroups {
            max: 1,
            ..FakeGroups::default()
        };
        reply(&mut s, &mut g, r#"{"action":"join","group":"a"}"#);
        let full = reply(&mut s, &mut g, r#"{"action":"join","group":"b"}"#);
        assert!(full.contains(r#""status_code":400"#), "{full}");
    }

    /// A refresh whose token allows fewer groups takes the connection out of the others,
    /// telling the client of each; groups still allowed stay joined.
    #[test]
    fn a_refresh_to_fewer_groups_leaves_the_others() {
        let mut s = authenticated(r#","groups":["room.*","lobby"]"#);
        let mut g = FakeGroups {
            max: 10,
            ..FakeGroups::default()
        };
        for group in ["room.1", "room.2", "lobby"] {
            reply(
                &mut s,
                &mut g,
                &format!(r#"{{"action":"join","group":"{group}"}}"#),
            );
        }
        let refresh = format!(
            r#"{{"action":"refresh","token":"{}"}}"#,
            token(r#","groups":["room.2"]"#)
        );
        let mut out = Vec::new();
        assert_eq!(
            s.on_text(&refresh, &settings(), &tables(), 0, &mut out, &mut g),
            Verdict::Continue
        );
        let frames = text_frames(&out);
        assert!(frames[0].contains(r#""status_code":200"#), "{frames:?}");
        let mut left: Vec<&str> = frames[1..].iter().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                r#"{"action":"left","group":"lobby","reason":"not allowed"}"#,
                r#"{"action":"left","group":"room.1","reason":"not allowed"}"#,
            ]
        );
        assert_eq!(g.joined, ["room.2"]);
        let denied = reply(&mut s, &mut g, r#"{"action":"join","group":"room.1"}"#);
        assert!(denied.contains(r#""status_code":403"#), "{denied}");
    }

    /// The payloads of the unmasked server text frames in `out` (each under 64 KiB).
    fn text_frames(mut out: &[u8]) -> Vec<String> {
        let mut frames = Vec::new();
        while !out.is_empty() {
            let (len, header) = match out[1] {
                126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
                n => (usize::from(n), 2),
            };
            frames.push(String::from_utf8(out[header..header + len].to_vec()).unwrap());
            out = &out[header + len..];
        }
        frames
    }

    #[test]
    fn leave_always_answers_left() {
        let mut s = authenticated(r#","groups":["*"]"#);
        let mut g = FakeGroups {
            max: 10,
            ..FakeGroups::default()
        };
        let left = reply(
            &mut s,
            &mut g,
            r#"{"action":"leave","group":"never.joined"}"#,
        );
        assert_eq!(left, r#"{"action":"left","group":"never.joined"}"#);
    }

    #[test]
    fn only_members_send_and_data_is_forwarded_verbatim() {
        let mut s = authenticated(r#","groups":["*"]"#);
        let mut g = FakeGroups {
            max: 10,
            ..FakeGroups::default()
        };
        let not_member = reply(&mut s, &mut g, r#"{"action":"send","group":"g","data":1}"#);
        assert!(not_member.contains(r#""status_code":403"#), "{not_member}");
        reply(&mut s, &mut g, r#"{"action":"join","group":"g"}"#);
        let no_data = reply(&mut s, &mut g, r#"{"action":"send","group":"g"}"#);
        assert!(no_data.contains(r#""status_code":400"#), "{no_data}");
        // A successful send has no reply of its own: the sender gets the message like everyone.
        let sent = reply(
            &mut s,
            &mut g,
            r#"{"action":"send","group":"g","data":{"x": [1, 2.5, "é"]}}"#,
        );
        assert_eq!(sent, "");
        assert_eq!(
            g.published,
            [("g".to_owned(), r#"{"x": [1, 2.5, "é"]}"#.to_owned(), 0)]
        );
    }
}
