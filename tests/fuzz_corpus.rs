//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/<target>/`) through the same checks the
//! fuzz targets run (`tests/fuzz_checks/mod.rs`), on stable and without libFuzzer, so every
//! seed (the security findings among them) is a regression test in `cargo test`. A missing or
//! empty corpus directory fails; every failing input is named.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

mod fuzz_checks;

/// Corpus inputs (`<target>/<file>`) reproducing findings that src/ does not fix yet: each
/// must still fail its check, and the replay fails once one passes, so that it leaves this list
/// and becomes an ordinary regression input.
const OPEN_FINDINGS: &[&str] = &[];

/// Runs `check` on every file of `fuzz/corpus/<target>/` and says how many there were.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus directory {} is empty",
        dir.display()
    );

    let (mut failed, mut fixed, mut open) = (Vec::new(), Vec::new(), 0);
    for path in &files {
        let input = std::fs::read(path).unwrap();
        let name = format!("{target}/{}", path.file_name().unwrap().to_string_lossy());
        let passed = catch_unwind(AssertUnwindSafe(|| check(&input))).is_ok();
        match (OPEN_FINDINGS.contains(&name.as_str()), passed) {
            (false, false) => failed.push(path.display().to_string()),
            (true, true) => fixed.push(name),
            (true, false) => open += 1,
            (false, true) => {}
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs failed (the panic messages are above):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    assert!(
        fixed.is_empty(),
        "fixed: take {fixed:?} off OPEN_FINDINGS in tests/fuzz_corpus.rs"
    );
    println!(
        "{target}: replayed {} inputs ({open} open findings still failing)",
        files.len()
    );
}

#[test]
fn jwt_corpus() {
    replay("jwt", fuzz_checks::jwt);
}

#[test]
fn http_head_corpus() {
    replay("http_head", fuzz_checks::http_head);
}

#[test]
fn frame_corpus() {
    replay("frame", fuzz_checks::frame);
}

#[test]
fn envelope_corpus() {
    replay("envelope", fuzz_checks::envelope);
}

#[test]
fn upgrade_corpus() {
    replay("upgrade", fuzz_checks::upgrade);
}

#[test]
fn origin_corpus() {
    replay("origin", fuzz_checks::origin);
}
