//! `ApiError`: every way an API request is refused, with its status, its JSON `error` text and
//! the header its status requires (docs/protocol.md §5).

/// Why an API request was refused; each variant knows its status and its JSON `error` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No API route at this path (404).
    #[error("not found")]
    NotFound,
    /// A known path with another method (405); carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// Missing, repeated, non-Bearer or wrong API key (401, with `WWW-Authenticate: Bearer`).
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The server has no API key configured, so publishing is off (403).
    #[error("publishing is disabled: no API key configured")]
    ApiDisabled,
    /// A body-carrying request without `Content-Length` (411).
    #[error("Content-Length required")]
    LengthRequired,
    /// Any `Transfer-Encoding` (411): wsgate reads only `Content-Length`-delimited bodies.
    #[error("Transfer-Encoding is not supported; send Content-Length")]
    TransferEncoding,
    /// `Content-Length` that is not a plain decimal number, or more than one of them (400).
    #[error("invalid Content-Length")]
    BadContentLength,
    /// `Content-Length` over the configured body limit, or any body on a GET endpoint (413).
    #[error("request body too large")]
    BodyTooLarge,
    /// A `Content-Type` other than `application/json` on a JSON endpoint (415).
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body is not the JSON the endpoint expects (400); the text says what is wrong.
    #[error("{0}")]
    BadJson(&'static str),
    /// `group` is a string but not a valid group name (400).
    #[error("invalid group name")]
    BadGroup,
    /// `POST /ws-auth` without a usable bearer JWT (401, or 403 for a valid token that is not
    /// allowed); the text is the token's problem, never the token.
    #[error("{1}")]
    Token(u16, &'static str),
    /// A bounded table is full (tickets, revocations): 503 with `Retry-After`.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The caller's own share is used up (its outstanding tickets): 429 with `Retry-After`.
    #[error("{0}")]
    TooManyRequests(&'static str),
}

impl ApiError {
    /// The HTTP status of the error response.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed(_) => 405,
            Self::Unauthorized => 401,
            Self::ApiDisabled => 403,
            Self::LengthRequired | Self::TransferEncoding => 411,
            Self::BadContentLength | Self::BadJson(_) | Self::BadGroup => 400,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Token(status, _) => *status,
            Self::Unavailable(_) => 503,
            Self::TooManyRequests(_) => 429,
        }
    }

    /// The text of the JSON body's `error` member; never contains request data or a key.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::MethodNotAllowed(_) => "method not allowed",
            Self::Unauthorized => "missing or invalid API key",
            Self::ApiDisabled => "publishing is disabled: no API key configured",
            Self::LengthRequired => "Content-Length required",
            Self::TransferEncoding => "Transfer-Encoding is not supported; send Content-Length",
            Self::BadContentLength => "invalid Content-Length",
            Self::BodyTooLarge => "request body too large",
            Self::UnsupportedMediaType => "Content-Type must be application/json",
            Self::BadJson(detail) => detail,
            Self::BadGroup => "invalid group name",
            Self::Token(_, detail) | Self::Unavailable(detail) | Self::TooManyRequests(detail) => {
                detail
            }
        }
    }

    /// The header this status requires: `Allow` on 405 (RFC 9110 §15.5.6), `WWW-Authenticate`
    /// on 401 (RFC 9110 §15.5.2, scheme from RFC 6750).
    pub fn header(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::MethodNotAllowed(allow) => Some(("Allow", *allow)),
            Self::Unauthorized | Self::Token(401, _) => Some(("WWW-Authenticate", "Bearer")),
            Self::Unavailable(_) | Self::TooManyRequests(_) => Some(("Retry-After", "1")),
            _ => None,
        }
    }

    /// Whether the connection must close after this response whatever the client asked.
    ///
    /// True for the body-framing errors: the body's end is unknown or the body is too large to
    /// skip, so the next request could not be found reliably (RFC 9112 §6.3 asks a server to
    /// close after refusing such framing; it is also the request-smuggling defence).
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::LengthRequired
                | Self::TransferEncoding
                | Self::BadContentLength
                | Self::BodyTooLarge
        )
    }
}
