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

#[test]
fn connection_corpus() {
    replay("connection", fuzz_checks::connection);
}

/// The `connection` seeds reach what their names say (so that a change in the script's ops or
/// in seeds.py cannot leave them testing nothing).
#[test]
fn connection_seeds_end_as_named() {
    use wsgate::connection::CloseReason::{self, *};
    use wsgate::proto::close::CloseCode;
    use wsgate::proto::frame::FrameError::*;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection");
    let end = |name: &str| -> (Option<CloseReason>, bool) {
        let input = std::fs::read(dir.join(name)).unwrap();
        let mut script = fuzz_checks::run_script(&input).unwrap();
        (script.closed_with(), script.is_authenticated())
    };
    let open = (None, true);
    let mut wrong = Vec::new();
    for (name, want) in [
        (
            "authenticate-join-send-leave-then-ping-and-4408",
            (Some(KeepaliveTimeout), true),
        ),
        ("authenticate-raw-token-byte-by-byte", open),
        ("huge-exp-2pow63-accepted-timer-waits", open),
        ("huge-exp-u64max-accepted-timer-waits", open),
        (
            "huge-exp-u64max-short-timers",
            (Some(KeepaliveTimeout), true),
        ),
        (
            "huge-exp-2pow63-refused-by-lifetime",
            (
                Some(Refused(CloseCode::TOKEN_INVALID, "token lifetime too long")),
                false,
            ),
        ),
        ("huge-exp-u64max-refresh", open),
        (
            "huge-iat-refused",
            (
                Some(Refused(
                    CloseCode::TOKEN_INVALID,
                    "token issued in the future",
                )),
                false,
            ),
        ),
        ("expiry-then-401", (Some(TokenExpired), true)),
        ("refresh-moves-expiry", (Some(TokenExpired), true)),
        (
            "refresh-other-user-4403",
            (
                Some(Refused(CloseCode::FORBIDDEN, "token is for another user")),
                true,
            ),
        ),
        ("auth-timeout-4408", (Some(AuthTimeout), false)),
        (
            "first-message-binary-1008",
            (
                Some(Refused(CloseCode::POLICY, "authentication required")),
                false,
            ),
        ),
        (
            "pre-auth-frame-16k-plus-1",
            (Some(Protocol(FrameTooBig)), false),
        ),
        ("pre-auth-frame-16k-partial-then-more", (None, false)),
        (
            "pre-auth-header-announcing-1mib",
            (Some(Protocol(FrameTooBig)), false),
        ),
        (
            "pre-auth-fragments-past-16k",
            (Some(Protocol(MessageTooBig)), false),
        ),
        ("post-auth-frame-past-16k", open),
        (
            "small-limits-message-too-big",
            (Some(Protocol(MessageTooBig)), true),
        ),
        (
            "close-4000-echoed",
            (Some(PeerClosed(Some(CloseCode(4000)))), false),
        ),
        (
            "close-invalid-code-1005",
            (Some(Protocol(BadCloseCode)), false),
        ),
        (
            "close-reason-invalid-utf8",
            (Some(Protocol(InvalidUtf8)), false),
        ),
        ("ping-flood-before-auth", open),
        ("ping-flood-rate-limited-after-auth", open),
        ("rate-limit-4429", (Some(RateLimited), true)),
        ("rate-limit-refills", open),
        ("fragmented-authenticate-with-ping", open),
        ("fragmented-commands-interleaved-pings", open),
        (
            "text-invalid-utf8-pre-auth",
            (Some(Protocol(InvalidUtf8)), false),
        ),
        ("text-utf8-split-across-fragments", open),
        (
            "text-invalid-utf8-last-fragment",
            (Some(Protocol(InvalidUtf8)), true),
        ),
        ("unmasked-1002", (Some(Protocol(Unmasked)), false)),
        ("clock-far-ahead", (Some(TokenExpired), true)),
    ] {
        let got = end(name);
        if got != want {
            wrong.push(format!("{name}: {got:?}, not {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
