//! wsgate: a thread-per-core WebSocket gateway for Django Channels-style stacks.
//!
//! Layers, lowest first; a module uses only its own layer or those below it:
//!
//! ```text
//! pure (no IO, no clock reads; `now` is an argument):
//!   proto/        RFC 6455 and HTTP/1.1 wire code (head parse, upgrade validation, frames)
//!   origin        the Origin and Host rules
//!   auth/         JWT verification, groups claim, tickets, revocations, API keys, bearer parser
//!   envelope      the JSON commands and messages
//!   limits        token buckets, per-address counts, trusted proxies
//!   tables        the shared tables, built once at start
//!   hub/table, hub/outbox, hub/fanout
//!                 a core's group membership, its members' queues, its fan-out loop
//!   config        flags and environment → `Settings`
//!   session       the protocol's commands on one connection
//!   connection/   an upgraded connection's state machine (time rules, frame dispatch, close
//!                 reasons, effects) and `connection::upgrade`, the decision order of a head
//!   api/          the HTTP API as a pure handler: (head, body, context, now) → response, command
//!   metrics       per-core counters and their rendering
//! cross-core:     hub (interest masks, one bounded lock-free queue per core)
//! IO shell:       runtime/ (threads, monoio runtimes, sockets, timers, queues)
//! ```
//!
//! What crosses cores, by plane:
//! - the **data plane**: group messages, through the hub's bounded per-core queues;
//! - the **control plane**: settings reloads, liveness probes and revocation fan-out, through
//!   one control slot per worker (`runtime::Handle`);
//! - the **shared tables**: tickets, revocations and per-address counts (`tables::Tables`),
//!   behind their own locks, built once at start and passed to every worker beside its
//!   `Settings`, never inside them, so a reload replaces the settings and keeps the tables.
//!
//! `runtime::start(settings, runtime::Gateway)` runs the gateway; `src/main.rs` adds flags,
//! logging and signals around it.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub(crate) mod api;
pub mod auth;
pub mod config;
pub mod connection;
pub mod envelope;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod origin;
pub mod proto;
pub mod runtime;
pub mod session;
pub mod tables;
