//! Fuzzes `Connection<Session>`, the state machine of an upgraded connection, with scripts of
//! reads, clock moves and timer firings, against the rules of docs/protocol.md §3 and §6.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::connection(data));
