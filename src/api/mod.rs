//! The HTTP control API on the WebSocket port (docs/protocol.md §5) as a pure handler. The
//! runtime reads a request head and asks [`check`] what the head alone decides (route, body
//! framing, API key, media type: a refusal is answered before any body is read); it reads the
//! body the head declares, then calls [`handle`] with head, body, [`Context`] and `now`.
//! `handle` writes the whole response and returns the [`Command`] the runtime carries out: a
//! publish to fan out, or a revocation's connections to close (its answer waits for their
//! count). No IO and no clock; the shared tables (tickets, revocations) come in the context.
//! By concern: `error` (every refusal), `request` (what a head says), `body` (the JSON bodies),
//! `response` (the answers).

mod body;
mod error;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;

use body::{RevokeTarget, parse_publish, parse_revoke};
pub use error::ApiError;
use request::{authorize, check_content_type, expected_body, single_header, wants_keep_alive};
use response::{write_accepted, write_healthz, write_metrics, write_ticket};
pub use response::{write_error, write_revoked};

use crate::auth::tickets::{IssueError, Ticket};
use crate::auth::{AuthError, bearer_token};
use crate::config::Settings;
use crate::metrics::CoreStats;
use crate::proto::http;
use crate::tables::Tables;

/// Path of the publish endpoint.
pub const PUBLISH_PATH: &str = "/api/publish";
/// Path of the liveness endpoint.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Ticket endpoint (docs/protocol.md §3, method 2).
pub const WS_AUTH_PATH: &str = "/ws-auth";
/// Revocation endpoint (docs/protocol.md §5).
pub const REVOKE_PATH: &str = "/api/revoke";
/// Path of the Prometheus scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// `Content-Type` of every JSON response.
pub const JSON: &str = "application/json";
/// `Content-Type` of the `/healthz` response.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// An API route the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/publish`: broadcast `data` to a group (needs the API key).
    Publish,
    /// `GET /healthz`: liveness, `200 ok`.
    Healthz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `POST /ws-auth`: a ticket for the bearer JWT (no body needed).
    WsAuth,
    /// `POST /api/revoke`: close and refuse a user's or a jti's tokens (needs the API key).
    Revoke,
}

impl Endpoint {
    /// The one method this endpoint accepts (also the `Allow` value of its 405).
    pub fn method(self) -> &'static str {
        match self {
            Self::Publish | Self::WsAuth | Self::Revoke => "POST",
            Self::Healthz | Self::Metrics => "GET",
        }
    }

    /// Whether requests to this endpoint carry a body (and so need a `Content-Length`).
    pub fn takes_body(self) -> bool {
        matches!(self, Self::Publish | Self::Revoke)
    }
}

/// Maps a method and a path (the target without its query, see `proto::http::split_target`) to
/// an endpoint.
///
/// Paths match exactly (`/healthz/` is 404) and methods case-sensitively (RFC 9110 §9.1), so
/// `get` on a known path is 405. An unknown path is 404 whatever the method. `HEAD` is not
/// served (405 with `Allow: GET`). The WebSocket path is the runtime's business, not this one's.
pub fn route(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    let endpoint = match path {
        PUBLISH_PATH => Endpoint::Publish,
        REVOKE_PATH => Endpoint::Revoke,
        WS_AUTH_PATH => Endpoint::WsAuth,
        HEALTHZ_PATH => Endpoint::Healthz,
        METRICS_PATH => Endpoint::Metrics,
        _ => return Err(ApiError::NotFound),
    };
    if method == endpoint.method() {
        Ok(endpoint)
    } else {
        Err(ApiError::MethodNotAllowed(endpoint.method()))
    }
}

/// What the head alone decides about an API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The route.
    pub endpoint: Endpoint,
    /// Body bytes to read after the head.
    pub body_len: usize,
    /// The client asked to keep the connection (an error that breaks framing overrides it).
    pub keep_alive: bool,
}

/// What a request is handled with besides its bytes and `now`.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The settings in force on the serving core.
    pub settings: &'a Settings,
    /// The shared tables (tickets issued here, revocations recorded here).
    pub tables: &'a Tables,
    /// The serving core's counters.
    pub stats: &'a CoreStats,
    /// Every core's counters, for `GET /metrics`.
    pub all_stats: &'a [Arc<CoreStats>],
    /// The workers that do not answer their liveness probes, for `GET /healthz`.
    pub unresponsive: &'a [usize],
    /// The client's address (a trusted proxy's client), for the per-address ticket quota.
    pub client: Option<IpAddr>,
}

/// What the runtime must carry out after [`handle`] answered.
#[derive(Debug)]
pub enum Command<'b> {
    /// Fan `data` out to `group` on every core (the 202 is written).
    Publish {
        /// The group (a valid name).
        group: Cow<'b, str>,
        /// The payload, byte for byte as the publisher wrote it.
        data: &'b RawValue,
    },
    /// Close every connection that matches (4401) on every core; then answer with
    /// [`write_revoked`] and their count. The revocation is already recorded in the tables.
    Revoke {
        /// Match by user (`true`) or by token jti.
        by_user: bool,
        /// The fingerprint connections are found by (`Tables::fingerprint`).
        key: u64,
        /// For the answer.
        keep_alive: bool,
    },
}

/// Everything the head decides: the route, the body's length, and for the endpoints that
/// change state the API key and the media type. A refusal is answered by the caller with
/// [`write_error`] and the connection closes (the body is not read).
pub fn check(
    request: &httparse::Request<'_, '_>,
    path: &str,
    settings: &Settings,
) -> Result<Plan, ApiError> {
    let headers = &*request.headers;
    let keep_alive = wants_keep_alive(request.version.unwrap_or(0), headers);
    let endpoint = route(request.method.unwrap_or(""), path)?;
    let body_len = expected_body(endpoint, headers, settings.max_body_bytes)?;
    match endpoint {
        Endpoint::Publish | Endpoint::Revoke => {
            authorize(&settings.api_keys, headers)?;
            check_content_type(headers)?;
        }
        Endpoint::WsAuth if !settings.auth.ticket => return Err(ApiError::NotFound),
        _ => {}
    }
    Ok(Plan {
        endpoint,
        body_len,
        keep_alive,
    })
}

/// What [`handle`] leaves to the runtime besides the response.
#[derive(Debug)]
pub struct Handled<'b> {
    /// The connection stays open for another request.
    pub keep_alive: bool,
    /// What to carry out.
    pub command: Option<Command<'b>>,
}

/// Handles a whole request: `head` (up to its blank line) and the `body` it declared, at `now`
/// (Unix seconds). Writes the response to `out`, except for a revocation, whose answer waits
/// for the command's count.
pub fn handle<'b>(
    head: &[u8],
    body: &'b [u8],
    ctx: &Context<'_>,
    now: u64,
    out: &mut Vec<u8>,
) -> Handled<'b> {
    let mut headers = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
    let plan = http::parse_request(head, &mut headers)
        .map_err(|_| ApiError::BadJson("malformed request head"))
        .and_then(|request| {
            let (path, _) = http::split_target(request.path.unwrap_or(""));
            let plan = check(&request, path, ctx.settings)?;
            if body.len() != plan.body_len {
                return Err(ApiError::BadContentLength);
            }
            Ok((plan, request))
        });
    let (plan, request) = match plan {
        Ok(found) => found,
        Err(e) => {
            write_error(out, &e, false);
            return Handled {
                keep_alive: false,
                command: None,
            };
        }
    };
    let keep_alive = plan.keep_alive;
    let done = match plan.endpoint {
        Endpoint::Healthz => {
            write_healthz(out, ctx.unresponsive, keep_alive);
            Ok(None)
        }
        Endpoint::Metrics => {
            let mut text = String::with_capacity(8 * 1024);
            let cores: Vec<&CoreStats> = ctx.all_stats.iter().map(|s| &**s).collect();
            crate::metrics::render(&cores, &mut text);
            write_metrics(out, &text, keep_alive);
            Ok(None)
        }
        Endpoint::WsAuth => issue_ticket(request.headers, ctx, now).map(|ticket| {
            write_ticket(out, ticket.as_str(), ticket.expires_in(), keep_alive);
            None
        }),
        Endpoint::Revoke => record_revocation(body, ctx, now).map(|(by_user, key)| {
            Some(Command::Revoke {
                by_user,
                key,
                keep_alive,
            })
        }),
        Endpoint::Publish => parse_publish(body).map(|publish| {
            ctx.stats.api_publishes.fetch_add(1, Ordering::Relaxed);
            write_accepted(out, keep_alive);
            Some(Command::Publish {
                group: publish.group,
                data: publish.data,
            })
        }),
    };
    match done {
        Ok(command) => Handled {
            keep_alive,
            command,
        },
        Err(e) => {
            write_error(out, &e, keep_alive);
            Handled {
                keep_alive: keep_alive && !e.closes_connection(),
                command: None,
            }
        }
    }
}

/// `POST /ws-auth` (docs/protocol.md §3, method 2): a ticket for the bearer JWT, unless the
/// token is refused or revoked, or a ticket quota is used up.
fn issue_ticket(
    headers: &[httparse::Header<'_>],
    ctx: &Context<'_>,
    now: u64,
) -> Result<Ticket, ApiError> {
    let token = single_header(headers, "authorization")
        .and_then(bearer_token)
        .ok_or(ApiError::Token(401, "missing bearer token"))?;
    let identity = ctx
        .settings
        .auth
        .verifier
        .verify(token, now)
        .and_then(|identity| {
            if ctx.tables.revocations.is_revoked(&identity, now) {
                Err(AuthError::Revoked)
            } else {
                Ok(identity)
            }
        })
        .map_err(|e| ApiError::Token(e.status(), e.detail()))?;
    let stats = ctx.stats;
    let ticket = ctx
        .tables
        .tickets
        .issue_from(identity, ctx.client, now)
        .map_err(|e| {
            stats.tickets_not_issued.fetch_add(1, Ordering::Relaxed);
            match e {
                IssueError::Full => ApiError::Unavailable("too many tickets outstanding"),
                IssueError::UserQuota => {
                    ApiError::TooManyRequests("too many tickets outstanding for this user")
                }
                IssueError::AddressQuota => {
                    ApiError::TooManyRequests("too many tickets outstanding for this address")
                }
            }
        })?;
    stats.tickets_issued.fetch_add(1, Ordering::Relaxed);
    Ok(ticket)
}

/// `POST /api/revoke`: records the revocation in the shared table (so no token it covers
/// authenticates from now on, on any core) and names the connections to close.
fn record_revocation(body: &[u8], ctx: &Context<'_>, now: u64) -> Result<(bool, u64), ApiError> {
    let target = parse_revoke(body)?;
    let (by_user, id) = match &target {
        RevokeTarget::User(user) => (true, user.as_ref()),
        RevokeTarget::Jti(jti) => (false, jti.as_ref()),
    };
    let revocations = &ctx.tables.revocations;
    let recorded = if by_user {
        revocations.revoke_user(id, now)
    } else {
        revocations.revoke_jti(id, now)
    };
    recorded.map_err(|_| ApiError::Unavailable("too many revocations kept"))?;
    Ok((by_user, ctx.tables.fingerprint(id)))
}
