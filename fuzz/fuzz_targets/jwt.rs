//! Fuzzes `wsgate::auth::Verifier` (HS256) on arbitrary tokens at an arbitrary clock, against
//! jsonwebtoken.
//! The check is shared with the stable corpus replay (`tests/fuzz_corpus.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::jwt(data));
