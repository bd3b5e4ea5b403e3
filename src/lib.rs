//! wsgate: a thread-per-core WebSocket gateway.
#![forbid(unsafe_code)]

pub mod auth;
pub mod envelope;
pub mod origin;
pub mod proto;
