//! Fuzzes `envelope::parse_command` against its serde_json oracle, and the `data` depth bound.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::envelope(data));
