//! wsgate: a thread-per-core WebSocket gateway for Django Channels-style stacks.
//!
//! Layers, lowest first; a module uses only its own layer or those below it:
//!
//! ```text
//! pure (no IO, no clocks):  proto/ (RFC 6455, HTTP/1.1)  origin  auth/  envelope
//!                           hub/table, hub/outbox (per-core groups and queues)
//!                           config  session (the protocol's commands)  api  metrics
//!                           connection (an open WebSocket's state machine: time rules,
//!                           frame dispatch, close reasons; `now` is an argument)
//! cross-core:               hub (interest masks, one lock-free queue per core)
//! IO shell:                 runtime/ (threads, monoio runtimes, sockets, timers, fan-out)
//! ```
//!
//! `runtime::start(settings, runtime::Gateway)` runs the gateway; `src/main.rs` adds flags,
//! logging and signals around it.
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
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
