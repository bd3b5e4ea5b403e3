//! Authentication (docs/protocol.md §3): JWT verification in `jwt`, the `groups` claim in `groups`,
//! and `AuthError`, the one error type of the area with its wire consequence (HTTP status for
//! the upgrade and ticket endpoint, close code and `detail` text for the socket).
//! Pure code: time comes in as `now` (Unix seconds), nothing here reads a clock or logs a token.

pub mod api_keys;
pub mod groups;
pub mod jwt;
pub mod revocation;
pub mod tickets;

pub use jwt::{Algorithm, Identity, Verifier};

use crate::proto::close::CloseCode;

/// Why a token (or an authenticated user) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented at all.
    #[error("no token")]
    Missing,
    /// Not three base64url segments, or a header or payload that is not a JSON object.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the header and payload.
    #[error("bad signature")]
    BadSignature,
    /// The header's `alg` is not exactly the configured algorithm (`none` included).
    #[error("algorithm not allowed")]
    WrongAlgorithm,
    /// `exp <= now - leeway`.
    #[error("token expired")]
    Expired,
    /// `nbf > now + leeway`.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat > now + leeway`.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// The token has no `exp` claim.
    #[error("token has no exp claim")]
    MissingExp,
    /// `exp - iat` (or `exp - now` without `iat`) exceeds `--max-token-lifetime-secs`.
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// A registered claim has the wrong JSON type (for example a fractional `exp`).
    #[error("claim `{0}` has the wrong type")]
    BadClaim(&'static str),
    /// An audience is configured and the token's `aud` does not contain it.
    #[error("wrong audience")]
    WrongAudience,
    /// An issuer is configured and the token's `iss` is not it.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `token_type` is present and not `access` (a simplejwt refresh token, for instance).
    #[error("not an access token")]
    WrongTokenType,
    /// Neither `user_id` nor `sub` holds a non-empty user id.
    #[error("token names no user")]
    NoUser,
    /// The `groups` claim is not an array of valid group patterns.
    #[error("invalid groups claim")]
    BadGroups,
    /// The token, one of its parts, the user id or the `jti` exceeds its size limit.
    #[error("token too long")]
    TooLong,
    /// The token's `jti` or user was revoked through the API.
    #[error("token revoked")]
    Revoked,
    /// A `?ticket=` that is unknown, already used or expired.
    #[error("invalid or expired ticket")]
    BadTicket,
    /// A `refresh` with a valid token for another user.
    #[error("token is for another user")]
    OtherUser,
    /// A `?token=` in the URL while query-string tokens are disabled (docs/protocol.md §3).
    #[error("token in URL refused")]
    QueryTokenRefused,
    /// A valid token whose user may not do this; the text is sent to the client.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
}

impl AuthError {
    /// HTTP status for this refusal: 403 for `Forbidden`, 401 for everything about the token.
    pub fn status(&self) -> u16 {
        match self {
            Self::Forbidden(_) | Self::OtherUser => 403,
            _ => 401,
        }
    }

    /// WebSocket close code for this refusal: 4403 for `Forbidden`, 4401 otherwise.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::Forbidden(_) | Self::OtherUser => CloseCode::FORBIDDEN,
            _ => CloseCode::TOKEN_INVALID,
        }
    }

    /// Short reason for the client's `data.detail`; never contains any part of the token.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::Missing => "no token",
            Self::Malformed => "malformed token",
            Self::BadSignature => "bad signature",
            Self::WrongAlgorithm => "algorithm not allowed",
            Self::Expired => "token expired",
            Self::NotYetValid => "token not yet valid",
            Self::IssuedInFuture => "token issued in the future",
            Self::MissingExp => "token has no exp claim",
            Self::LifetimeTooLong => "token lifetime too long",
            Self::BadClaim(_) => "malformed claim",
            Self::WrongAudience => "wrong audience",
            Self::WrongIssuer => "wrong issuer",
            Self::WrongTokenType => "not an access token",
            Self::NoUser => "token names no user",
            Self::BadGroups => "invalid groups claim",
            Self::TooLong => "token too long",
            Self::Revoked => "token revoked",
            Self::QueryTokenRefused => "token in URL refused",
            Self::BadTicket => "invalid or expired ticket",
            Self::OtherUser => "token is for another user",
            Self::Forbidden(reason) => reason,
        }
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` value, if non-empty: the one
/// bearer parser for the upgrade's token, `POST /ws-auth` and the API key. The scheme is ASCII
/// case-insensitive (RFC 9110 §11.1) and followed by one or more spaces; surrounding spaces
/// and tabs are not part of the credentials.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every variant that means 401 / 4401.
    const UNAUTHORIZED: [AuthError; 19] = [
        AuthError::Missing,
        AuthError::Malformed,
        AuthError::BadSignature,
        AuthError::WrongAlgorithm,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::IssuedInFuture,
        AuthError::MissingExp,
        AuthError::LifetimeTooLong,
        AuthError::BadClaim("exp"),
        AuthError::WrongAudience,
        AuthError::WrongIssuer,
        AuthError::WrongTokenType,
        AuthError::NoUser,
        AuthError::BadGroups,
        AuthError::TooLong,
        AuthError::Revoked,
        AuthError::QueryTokenRefused,
        AuthError::BadTicket,
    ];

    #[test]
    fn every_error_maps_to_its_wire_consequence() {
        for err in UNAUTHORIZED {
            assert_eq!(err.status(), 401, "{err:?}");
            assert_eq!(err.close_code(), CloseCode::TOKEN_INVALID, "{err:?}");
            assert!(!err.detail().is_empty(), "{err:?}");
        }
        let forbidden = AuthError::Forbidden("account disabled");
        assert_eq!(forbidden.status(), 403);
        assert_eq!(forbidden.close_code(), CloseCode::FORBIDDEN);
        assert_eq!(forbidden.detail(), "account disabled");
    }

    #[test]
    fn details_are_distinct_and_short() {
        let all = UNAUTHORIZED;
        for (i, a) in all.iter().enumerate() {
            assert!(a.detail().len() < 60, "{a:?}");
            for b in &all[i + 1..] {
                assert_ne!(a.detail(), b.detail(), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_credentials() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc \t"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }
}
