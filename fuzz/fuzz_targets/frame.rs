//! Fuzzes `frame::decode` and `message::Assembler` as the connection loop drives them, on arbitrary
//! bytes.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::frame(data));
