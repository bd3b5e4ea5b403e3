//! Fuzzes `handshake::validate` on arbitrary request heads against an independent reading of
//! docs/protocol.md §1, with the accept key and the 101 or refusal it leads to.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::upgrade(data));
