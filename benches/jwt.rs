//! JWT verification benchmarks (docs/protocol.md §3): the per-connection cost of checking a token.
//! Tokens are minted by the `jsonwebtoken` crate in the shape simplejwt issues; every iteration
//! asserts the verdict so a broken verifier cannot look fast.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use wsgate::auth::{AuthError, Verifier};

const SECRET: &[u8] = b"django-insecure-bench-secret-0123456789";
const NOW: u64 = 1_700_000_000;

fn mint(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn simplejwt_claims() -> Value {
    json!({
        "token_type": "access",
        "exp": NOW + 300,
        "iat": NOW,
        "jti": "3f5e8c1d9a7b4e2f8c6d4b2a0e9f7c5a",
        "user_id": "42",
    })
}

fn bench_verify(c: &mut Criterion) {
    let verifier = Verifier::hs256(SECRET);
    let plain = mint(&simplejwt_claims());
    let mut grouped = simplejwt_claims();
    grouped["groups"] = json!(["room.1", "room.2", "chat.*"]);
    let grouped = mint(&grouped);
    let mut forged = plain.clone().into_bytes();
    let at = forged.len() - 3;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };

    c.bench_function("HS256 verify (simplejwt-shaped token)", |b| {
        b.iter(|| {
            let id = verifier.verify(black_box(plain.as_bytes()), NOW).unwrap();
            assert_eq!(id.user.as_str(), "42");
            id
        })
    });
    c.bench_function("HS256 verify (token with groups claim)", |b| {
        b.iter(|| {
            let id = verifier.verify(black_box(grouped.as_bytes()), NOW).unwrap();
            assert!(id.groups.allows("chat.lobby"));
            id
        })
    });
    c.bench_function("HS256 refuse (bad signature)", |b| {
        b.iter(|| {
            let err = verifier.verify(black_box(&forged), NOW).unwrap_err();
            assert_eq!(err, AuthError::BadSignature);
        })
    });
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
