//! Interoperability with the tokens Django issues: PyJWT mints them exactly as
//! djangorestframework-simplejwt does (HS256 access/refresh, string and integer `user_id`), and,
//! with the `cryptography` package, RS256/ES256 tokens and their PEM public keys. Python comes
//! from `WSGATE_PYTHON`; without it the test makes its own venv under `target/` with pinned
//! PyJWT and cryptography from PyPI (once), so `cargo test` works on a fresh machine. A Python
//! that still lacks either package fails the test loudly; it never skips.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wsgate::auth::{Algorithm, AuthError, Verifier};

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "django-insecure-wsgate-interop-secret";

/// Versions the provisioned venv installs (the ones CI pins too).
const PYJWT: &str = "PyJWT==2.10.1";
const CRYPTOGRAPHY: &str = "cryptography==44.0.3";

fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| std::env::var("WSGATE_PYTHON").unwrap_or_else(|_| provision_venv()))
        .clone()
}

/// Creates `target/pyjwt-venv` with PyJWT and cryptography unless a previous run did.
fn provision_venv() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyjwt-venv");
    let python = dir.join("bin/python");
    let stamp = dir.join("installed");
    let wanted = format!("{PYJWT} {CRYPTOGRAPHY}");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let run = |cmd: &mut Command| {
            let out = cmd
                .output()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?} failed (set WSGATE_PYTHON to a Python with PyJWT and cryptography)\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", PYJWT, CRYPTOGRAPHY]));
        std::fs::write(&stamp, &wanted).unwrap();
    }
    python.to_string_lossy().into_owned()
}

/// Fails (never skips) unless `module` imports, naming the pip package to install.
fn require(module: &str, package: &str) {
    let python = python();
    let out = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python:?} ({e}); install Python 3 or set WSGATE_PYTHON")
        });
    assert!(
        out.status.success(),
        "{python} cannot import {module}: run `pip install {package}` (or set WSGATE_PYTHON to \
         a Python that has it)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a Python script that prints one JSON object; returns it.
fn run(script: &str, args: &[&str]) -> Value {
    let python = python();
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("python output lacks {key}: {v}"))
}

/// Payloads built the way simplejwt's `Token.__init__` + `for_user` build them.
const HS256_SCRIPT: &str = r#"
import json, sys, uuid
import jwt

secret, now = sys.argv[1], int(sys.argv[2])

def token(user_id, token_type="access", key=secret, lifetime=300, **extra):
    payload = {
        "token_type": token_type,
        "exp": now + lifetime,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": user_id,
    }
    payload.update(extra)
    return jwt.encode(payload, key, algorithm="HS256")

print(json.dumps({
    "version": jwt.__version__,
    "access_str": token("42"),
    "access_int": token(7),
    "refresh": token("42", token_type="refresh", lifetime=86400),
    "expired": token("42", lifetime=-1),
    "other_secret": token("42", key="some other secret"),
    "with_groups": token("42", groups=["room.1", "chat.*"]),
    "aud_iss": token("42", aud="wsgate", iss="https://auth.example"),
    "hs512": jwt.encode({"exp": now + 300, "user_id": "42"}, secret, algorithm="HS512"),
}))
"#;

#[test]
fn simplejwt_hs256_tokens() {
    require("jwt", "pyjwt");
    let now = NOW.to_string();
    let out = run(HS256_SCRIPT, &[SECRET, &now]);
    let v = Verifier::hs256(SECRET.as_bytes());
    let check = |key: &str| v.verify(text(&out, key).as_bytes(), NOW);

    let id = check("access_str").unwrap();
    assert_eq!(id.user, "42");
    assert_eq!(id.exp, NOW + 300);
    let jti = id.jti.unwrap();
    assert_eq!(jti.len(), 32, "uuid4().hex");
    assert!(jti.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(id.groups.is_empty());

    assert_eq!(check("access_int").unwrap().user, "7");
    assert_eq!(check("refresh"), Err(AuthError::WrongTokenType));
    assert_eq!(check("expired"), Err(AuthError::Expired));
    assert_eq!(check("other_secret"), Err(AuthError::BadSignature));
    assert_eq!(check("hs512"), Err(AuthError::WrongAlgorithm));

    let grouped = check("with_groups").unwrap();
    assert!(grouped.groups.allows("room.1"));
    assert!(grouped.groups.allows("chat.lobby"));
    assert!(!grouped.groups.allows("room.2"));

    let pinned = Verifier::hs256(SECRET.as_bytes())
        .with_audience("wsgate".to_owned())
        .with_issuer("https://auth.example".to_owned());
    assert!(pinned.verify(text(&out, "aud_iss").as_bytes(), NOW).is_ok());
    assert_eq!(
        pinned.verify(text(&out, "access_str").as_bytes(), NOW),
        Err(AuthError::WrongAudience)
    );

    // Expiry at the exact second: PyJWT/simplejwt consider `exp == now` expired, and so do we.
    assert_eq!(
        v.verify(text(&out, "access_str").as_bytes(), NOW + 300),
        Err(AuthError::Expired)
    );
    assert!(
        v.with_leeway(1)
            .verify(text(&out, "access_str").as_bytes(), NOW + 300)
            .is_ok()
    );
}

const KEYS_SCRIPT: &str = r#"
import json, sys
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

now = int(sys.argv[1])
payload = {"token_type": "access", "exp": now + 300, "iat": now,
           "jti": "5c1f0e9d3b7a4e2f8c6d4b2a09876543", "user_id": "42"}

def public_pem(key, fmt=serialization.PublicFormat.SubjectPublicKeyInfo):
    return key.public_key().public_bytes(serialization.Encoding.PEM, fmt).decode()

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
other_ec = ec.generate_private_key(ec.SECP256R1())

print(json.dumps({
    "rsa_pem": public_pem(rsa_key),
    "rsa_pkcs1_pem": public_pem(rsa_key, serialization.PublicFormat.PKCS1),
    "ec_pem": public_pem(ec_key),
    "rs256": jwt.encode(payload, rsa_key, algorithm="RS256"),
    "es256": jwt.encode(payload, ec_key, algorithm="ES256"),
    "es256_other_key": jwt.encode(payload, other_ec, algorithm="ES256"),
    "rs256_expired": jwt.encode(dict(payload, exp=now - 1), rsa_key, algorithm="RS256"),
    "es256_refresh": jwt.encode(dict(payload, token_type="refresh"), ec_key, algorithm="ES256"),
}))
"#;

/// An HS256 token keyed with `key` (the classic confusion attack uses the public PEM).
fn hs256_with_key(key: &[u8], payload: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

#[test]
fn rs256_and_es256_tokens_with_pem_keys() {
    require("jwt", "pyjwt");
    require("cryptography", "cryptography");
    let now = NOW.to_string();
    let out = run(KEYS_SCRIPT, &[&now]);

    let rs = Verifier::from_public_pem(Algorithm::Rs256, text(&out, "rsa_pem").as_bytes()).unwrap();
    let rs_pkcs1 =
        Verifier::from_public_pem(Algorithm::Rs256, text(&out, "rsa_pkcs1_pem").as_bytes())
            .unwrap();
    let es = Verifier::from_public_pem(Algorithm::Es256, text(&out, "ec_pem").as_bytes()).unwrap();

    for verifier in [&rs, &rs_pkcs1] {
        let id = verifier
            .verify(text(&out, "rs256").as_bytes(), NOW)
            .unwrap();
        assert_eq!(id.user, "42");
        assert_eq!(id.jti.unwrap(), "5c1f0e9d3b7a4e2f8c6d4b2a09876543");
    }
    assert_eq!(
        es.verify(text(&out, "es256").as_bytes(), NOW).unwrap().user,
        "42"
    );

    // Algorithm pinning in every direction.
    assert_eq!(
        rs.verify(text(&out, "es256").as_bytes(), NOW),
        Err(AuthError::WrongAlgorithm)
    );
    assert_eq!(
        es.verify(text(&out, "rs256").as_bytes(), NOW),
        Err(AuthError::WrongAlgorithm)
    );
    let payload = format!(r#"{{"exp":{},"user_id":"42"}}"#, NOW + 300);
    let confused = hs256_with_key(text(&out, "rsa_pem").as_bytes(), &payload);
    assert_eq!(
        rs.verify(confused.as_bytes(), NOW),
        Err(AuthError::WrongAlgorithm)
    );

    // Signatures and claims.
    assert_eq!(
        es.verify(text(&out, "es256_other_key").as_bytes(), NOW),
        Err(AuthError::BadSignature)
    );
    let mut tampered = text(&out, "rs256").to_owned().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    assert_eq!(rs.verify(&tampered, NOW), Err(AuthError::BadSignature));
    assert_eq!(
        rs.verify(text(&out, "rs256_expired").as_bytes(), NOW),
        Err(AuthError::Expired)
    );
    assert_eq!(
        es.verify(text(&out, "es256_refresh").as_bytes(), NOW),
        Err(AuthError::WrongTokenType)
    );

    // A key of the wrong family is a start-up error or never verifies.
    let es_from_rsa = Verifier::from_public_pem(Algorithm::Es256, text(&out, "rsa_pem").as_bytes());
    if let Ok(v) = es_from_rsa {
        assert!(v.verify(text(&out, "es256").as_bytes(), NOW).is_err());
    }
}

/// Mints simplejwt-shaped access tokens with `groups` at the current time, and trades one for a
/// ticket the way a Django backend or a browser would (`POST /ws-auth` with urllib).
const TICKET_SCRIPT: &str = r#"
import json, sys, time, uuid, urllib.request
import jwt

secret, base = sys.argv[1], sys.argv[2]
now = int(time.time())

def token(user_id, **extra):
    payload = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "user_id": user_id,
    }
    payload.update(extra)
    return jwt.encode(payload, secret, algorithm="HS256")

int_token = token(7, groups=["room.*"])
str_token = token("42", groups=["chat.lobby"])
request = urllib.request.Request(
    base + "/ws-auth", data=b"", method="POST",
    headers={"Authorization": "Bearer " + str_token},
)
# Straight to the gateway, whatever proxy the environment names.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(request, timeout=5) as response:
    status = response.status
    cache_control = response.headers.get("Cache-Control")
    answer = json.loads(response.read())

print(json.dumps({
    "int_token": int_token,
    "status": status,
    "cache_control": cache_control,
    "answer": answer,
}))
"#;

#[test]
fn a_simplejwt_token_from_python_buys_a_ticket_for_the_upgrade() {
    require("jwt", "pyjwt");
    let env = wsgate::config::Env {
        jwt_secret: Some(SECRET.into()),
        ..wsgate::config::Env::default()
    };
    for driver in common::drivers() {
        let srv = common::start_with_env(driver, &["--allowed-origins", "*"], env.clone());
        let base = format!("http://{}", srv.addr);
        let out = run(TICKET_SCRIPT, &[SECRET, &base]);

        // Python did the POST: 201, not cacheable, a ticket for user "42".
        assert_eq!(out["status"], 201, "{driver}: {out}");
        assert_eq!(out["cache_control"], "no-store", "{driver}");
        assert_eq!(out["answer"]["expires_in"], 10, "{driver}");
        let python_ticket = text(&out["answer"], "ticket").to_owned();

        // The Rust client trades the integer-`user_id` token itself.
        let r = common::post_ws_auth(srv.addr, Some(text(&out, "int_token")));
        assert_eq!(r.status, 201, "{driver}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        let rust_ticket = text(&r.json(), "ticket").to_owned();

        // (ticket, user, a group its token allows, one it does not)
        let cases = [
            (rust_ticket, "7", "room.1", "chat.lobby"),
            (python_ticket, "42", "chat.lobby", "room.1"),
        ];
        for (ticket, user, allowed, denied) in cases {
            let path = format!("/ws?ticket={ticket}");
            let (mut ws, response) = common::ws_connect_path(srv.addr, &path, &[]).unwrap();
            assert_eq!(response.status(), 101);
            assert_eq!(
                common::next_json(&mut ws),
                common::auth_ok(user),
                "{driver}"
            );
            assert_eq!(
                common::ws_command(&mut ws, json!({"action": "join", "group": allowed})),
                json!({"action": "joined", "group": allowed}),
                "{driver}: user {user}"
            );
            let refused = common::ws_command(&mut ws, json!({"action": "join", "group": denied}));
            assert_eq!(
                refused["payload"]["status_code"], 403,
                "{driver}: {refused}"
            );
            // Single use, for Python's tickets as for any.
            let (mut again, _) = common::ws_connect_path(srv.addr, &path, &[]).unwrap();
            let (texts, close) = common::read_until_close(&mut again);
            assert_eq!(texts.len(), 1, "{driver}: {texts:?}");
            let failure: Value = serde_json::from_str(&texts[0]).unwrap();
            assert_eq!(
                failure,
                common::auth_failure(401, "invalid or expired ticket")
            );
            assert_eq!(close.map(|c| c.0), Some(4401), "{driver}");
        }
    }
}
