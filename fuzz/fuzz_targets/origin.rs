//! Fuzzes `OriginPolicy`: patterns built as the config builds them, and any `Origin` bytes,
//! against an independent implementation of docs/protocol.md §2.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::origin(data));
