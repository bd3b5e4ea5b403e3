//! Differential test of `auth::jwt::Verifier` (HS256) against the `jsonwebtoken` crate: tokens
//! signed by jsonwebtoken, tampered ones, and deterministic random mutations must be accepted or
//! refused alike. jsonwebtoken knows nothing of simplejwt's claims, so the oracle adds those rules
//! on top of its decode. Also pins the allocation budget of the verify and envelope paths.

#![allow(clippy::unwrap_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm as JAlg, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use wsgate::auth::groups::GroupPattern;
use wsgate::auth::{AuthError, Verifier};

const SECRET: &[u8] = b"differential-test secret";

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// Allocations (including reallocations) made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    counting_alloc::allocations(f).0 as u64
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token as jsonwebtoken encodes it.
fn encode_with(alg: JAlg, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn encode(claims: &Value) -> String {
    encode_with(JAlg::HS256, SECRET, claims)
}

/// A token over raw header and payload texts, signed by jsonwebtoken's own HMAC.
fn encode_raw(alg: JAlg, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(SECRET), alg)
        .unwrap();
    format!("{input}.{sig}")
}

#[derive(Clone, Copy, Default)]
struct Config {
    audience: Option<&'static str>,
    issuer: Option<&'static str>,
}

impl Config {
    fn ours(self, secret: &[u8]) -> Verifier {
        let mut v = Verifier::hs256(secret);
        if let Some(aud) = self.audience {
            v = v.with_audience(aud.to_owned());
        }
        if let Some(iss) = self.issuer {
            v = v.with_issuer(iss.to_owned());
        }
        v
    }

    /// jsonwebtoken configured to the same rules: HS256 only, exp required, leeway 0, nbf
    /// checked, aud/iss required and checked only when configured.
    fn validation(self) -> Validation {
        let mut v = Validation::new(JAlg::HS256);
        v.leeway = 0;
        v.validate_nbf = true;
        v.validate_aud = self.audience.is_some();
        if let Some(aud) = self.audience {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".to_owned());
        }
        if let Some(iss) = self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".to_owned());
        }
        v
    }
}

fn is_json_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn valid_id(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty() && s.len() <= 64,
        other => is_json_int(other),
    }
}

/// jsonwebtoken's verdict plus the wsgate-specific claim rules it does not implement.
fn oracle(token: &str, secret: &[u8], config: Config, now: u64) -> bool {
    let key = DecodingKey::from_secret(secret);
    let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &config.validation())
    else {
        return false;
    };
    let claims = data.claims;
    let int_or_absent = |name: &str| claims.get(name).is_none_or(is_json_int);
    if !(int_or_absent("exp") && int_or_absent("nbf") && int_or_absent("iat")) {
        return false;
    }
    if claims
        .get("iat")
        .and_then(Value::as_u64)
        .is_some_and(|iat| iat > now)
    {
        return false;
    }
    if claims.get("iss").is_some_and(|iss| !iss.is_string()) && config.issuer.is_some() {
        return false;
    }
    if claims
        .get("token_type")
        .is_some_and(|t| t.as_str() != Some("access"))
    {
        return false;
    }
    match claims.get("user_id").or_else(|| claims.get("sub")) {
        Some(user) if valid_id(user) => {}
        _ => return false,
    }
    if claims
        .get("jti")
        .is_some_and(|j| j.as_str().is_none_or(|s| s.len() > 64))
    {
        return false;
    }
    if let Some(groups) = claims.get("groups") {
        let Some(list) = groups.as_array() else {
            return false;
        };
        let all_valid = list
            .iter()
            .all(|g| g.as_str().and_then(GroupPattern::parse).is_some());
        if !all_valid {
            return false;
        }
    }
    true
}

/// Asserts that both sides agree on `token`; returns the shared verdict.
fn agree(name: &str, token: &[u8], secret: &[u8], config: Config, now: u64) -> bool {
    let ours = config.ours(secret).verify(token, now);
    let Ok(text) = std::str::from_utf8(token) else {
        assert!(ours.is_err(), "{name}: non-UTF-8 token accepted");
        return false;
    };
    let theirs = oracle(text, secret, config, now);
    assert_eq!(
        ours.is_ok(),
        theirs,
        "{name}: wsgate says {ours:?}, jsonwebtoken+rules says {theirs}; token {text}"
    );
    theirs
}

fn simplejwt(now: u64, user: Value) -> Value {
    json!({
        "token_type": "access",
        "exp": now + 3600,
        "iat": now - 10,
        "jti": "0f8fad5bd9cb469fa16570867728950e",
        "user_id": user,
    })
}

/// Valid and invalid claim sets, all correctly signed.
fn claim_cases(now: u64) -> Vec<(&'static str, Value, Config, bool)> {
    let aud = Config {
        audience: Some("wsgate"),
        issuer: None,
    };
    let iss = Config {
        audience: None,
        issuer: Some("https://auth.example"),
    };
    let base = Config::default();
    let with = |name: &str, value: Value| {
        let mut claims = simplejwt(now, json!("42"));
        claims[name] = value;
        claims
    };
    vec![
        (
            "simplejwt string user",
            simplejwt(now, json!("42")),
            base,
            true,
        ),
        ("simplejwt int user", simplejwt(now, json!(7)), base, true),
        (
            "sub only",
            json!({"exp": now + 60, "sub": "alice"}),
            base,
            true,
        ),
        (
            "groups",
            with("groups", json!(["room.1", "chat.*", "*"])),
            base,
            true,
        ),
        ("nbf in the past", with("nbf", json!(now - 60)), base, true),
        (
            "unknown nested claims",
            with("extra", json!({"a": [1, {"b": null}], "c": "d\"e"})),
            base,
            true,
        ),
        ("aud string", with("aud", json!("wsgate")), aud, true),
        ("aud array", with("aud", json!(["x", "wsgate"])), aud, true),
        ("aud other", with("aud", json!("api")), aud, false),
        ("aud missing", simplejwt(now, json!("42")), aud, false),
        ("aud not a string", with("aud", json!(5)), aud, false),
        (
            "iss match",
            with("iss", json!("https://auth.example")),
            iss,
            true,
        ),
        ("iss other", with("iss", json!("https://evil")), iss, false),
        ("iss missing", simplejwt(now, json!("42")), iss, false),
        (
            "refresh token",
            with("token_type", json!("refresh")),
            base,
            false,
        ),
        ("expired", with("exp", json!(now - 3600)), base, false),
        ("exp missing", json!({"user_id": "42"}), base, false),
        ("exp a string", with("exp", json!("soon")), base, false),
        (
            "nbf in the future",
            with("nbf", json!(now + 3600)),
            base,
            false,
        ),
        ("no user", json!({"exp": now + 60}), base, false),
        ("empty user", with("user_id", json!("")), base, false),
        (
            "user too long",
            with("user_id", json!("u".repeat(65))),
            base,
            false,
        ),
        ("user a float", with("user_id", json!(1.5)), base, false),
        ("jti a number", with("jti", json!(5)), base, false),
        (
            "groups a string",
            with("groups", json!("room.1")),
            base,
            false,
        ),
        (
            "groups bad name",
            with("groups", json!(["a b"])),
            base,
            false,
        ),
    ]
}

#[test]
fn signed_claim_sets_agree() {
    let now = now();
    for (name, claims, config, expected) in claim_cases(now) {
        let token = encode(&claims);
        let verdict = agree(name, token.as_bytes(), SECRET, config, now);
        assert_eq!(verdict, expected, "{name}");
    }
}

#[test]
fn every_secret_length_agrees() {
    let now = now();
    for len in [0usize, 1, 16, 32, 63, 64, 65, 128, 1000] {
        let secret: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
            .collect();
        let token = encode_with(JAlg::HS256, &secret, &simplejwt(now, json!("42")));
        assert!(agree(
            &format!("secret length {len}"),
            token.as_bytes(),
            &secret,
            Config::default(),
            now
        ));
        assert!(!agree(
            &format!("wrong secret, length {len}"),
            token.as_bytes(),
            b"not it",
            Config::default(),
            now
        ));
    }
}

/// Tampered variants of one valid token; every one must be refused by both.
fn tampered(now: u64) -> Vec<(&'static str, String)> {
    let claims = simplejwt(now, json!("42"));
    let token = encode(&claims);
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let payload_json = serde_json::to_string(&claims).unwrap();

    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[5] ^= 0x10;
    let flipped_sig = format!("{header}.{payload}.{}", b64(&sig_bytes));

    let mut forged_claims = claims.clone();
    forged_claims["user_id"] = json!("1");
    let changed_payload = format!(
        "{header}.{}.{sig}",
        b64(serde_json::to_string(&forged_claims).unwrap().as_bytes())
    );

    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    vec![
        ("flipped signature bit", flipped_sig),
        ("changed payload", changed_payload),
        (
            "alg none, no signature",
            format!("{none_header}.{payload}."),
        ),
        (
            "alg none, old signature",
            format!("{none_header}.{payload}.{sig}"),
        ),
        ("alg HS512", encode_with(JAlg::HS512, SECRET, &claims)),
        ("alg HS384", encode_with(JAlg::HS384, SECRET, &claims)),
        (
            "alg RS256 header, HMAC signature",
            encode_raw(JAlg::HS256, r#"{"alg":"RS256"}"#, &payload_json),
        ),
        ("truncated signature", token[..token.len() - 1].to_owned()),
        ("signature dropped", format!("{header}.{payload}")),
        ("two segments only", format!("{header}.{sig}")),
        ("extra segment", format!("{token}.{sig}")),
        ("extra empty segment", format!("{token}.")),
        (
            "bad base64 in payload",
            format!("{header}.{payload}*.{sig}"),
        ),
        ("padded header", format!("{header}=.{payload}.{sig}")),
        ("padded signature", format!("{token}=")),
        (
            "standard alphabet",
            token.replace('-', "+").replace('_', "/") + "+",
        ),
        ("empty", String::new()),
        ("dots only", "..".to_owned()),
        ("expired", encode(&json!({"exp": now - 1, "user_id": "42"}))),
        (
            "nbf future",
            encode(&json!({"exp": now + 60, "nbf": now + 30, "user_id": "42"})),
        ),
        (
            "payload is an array",
            encode_raw(JAlg::HS256, r#"{"alg":"HS256"}"#, r#"[1,2]"#),
        ),
        (
            "payload not JSON",
            encode_raw(JAlg::HS256, r#"{"alg":"HS256"}"#, "exp=9999999999"),
        ),
        (
            "header not JSON",
            encode_raw(JAlg::HS256, "HS256", &payload_json),
        ),
    ]
}

#[test]
fn tampered_tokens_are_refused_by_both() {
    let now = now();
    for (name, token) in tampered(now) {
        assert!(
            !agree(name, token.as_bytes(), SECRET, Config::default(), now),
            "{name} was accepted"
        );
    }
}

/// xorshift64*: deterministic, no external crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00\xff";

fn mutate(rng: &mut Rng, token: &[u8]) -> Vec<u8> {
    let mut t = token.to_vec();
    for _ in 0..1 + rng.below(3) {
        if t.is_empty() {
            break;
        }
        let at = rng.below(t.len());
        match rng.below(7) {
            0 => t[at] = ALPHABET[rng.below(ALPHABET.len())],
            1 => t[at] ^= 1 << rng.below(8),
            2 => {
                t.remove(at);
            }
            3 => t.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            4 => {
                let other = rng.below(t.len());
                t.swap(at, other);
            }
            5 => t.truncate(at),
            _ => {
                let dot = t.iter().position(|&b| b == b'.').unwrap_or(0);
                let segment = t[..dot].to_vec();
                t.splice(at..at, segment);
            }
        }
    }
    t
}

#[test]
fn random_mutations_agree() {
    let now = now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let seeds: Vec<String> = claim_cases(now)
        .into_iter()
        .filter(|(_, _, _, ok)| *ok)
        .map(|(_, claims, _, _)| encode(&claims))
        .collect();
    let mut unchanged = 0;
    for round in 0..600 {
        let seed = &seeds[round % seeds.len()];
        let mutated = mutate(&mut rng, seed.as_bytes());
        let same = mutated == seed.as_bytes();
        unchanged += usize::from(same);
        let verdict = agree(
            &format!("mutation {round}"),
            &mutated,
            SECRET,
            Config::default(),
            now,
        );
        // Any change to a signed token must be refused; only a no-op mutation (a swap of two
        // equal bytes) may pass.
        assert_eq!(verdict, same, "mutation {round}");
    }
    assert!(unchanged < 30, "{unchanged} mutations were no-ops");
}

/// Deliberate differences from jsonwebtoken's defaults, pinned so a change is noticed.
#[test]
fn documented_differences() {
    let now = now();
    let v = Verifier::hs256(SECRET);
    // A fractional exp: jsonwebtoken rounds it, PyJWT and wsgate refuse it.
    let float_exp = encode(&json!({"exp": (now + 3600) as f64 + 0.5, "user_id": "42"}));
    assert_eq!(
        v.verify(float_exp.as_bytes(), now),
        Err(AuthError::BadClaim("exp"))
    );
    // iat in the future: jsonwebtoken ignores iat, PyJWT and wsgate refuse it.
    let future_iat = encode(&json!({"exp": now + 3600, "iat": now + 60, "user_id": "42"}));
    assert_eq!(
        v.verify(future_iat.as_bytes(), now),
        Err(AuthError::IssuedInFuture)
    );
    // exp == now: jsonwebtoken still accepts (exp < now), simplejwt/PyJWT and wsgate refuse.
    let at_now = encode(&json!({"exp": now, "user_id": "42"}));
    assert_eq!(v.verify(at_now.as_bytes(), now), Err(AuthError::Expired));
    // aud present but no audience configured: jsonwebtoken's (and PyJWT's) default refuses,
    // wsgate checks aud only when configured (docs/protocol.md §3).
    let with_aud = encode(&json!({"exp": now + 3600, "aud": "api", "user_id": "42"}));
    assert!(v.verify(with_aud.as_bytes(), now).is_ok());
    let strict = jsonwebtoken::decode::<Value>(
        &with_aud,
        &DecodingKey::from_secret(SECRET),
        &Validation::new(JAlg::HS256),
    );
    assert!(strict.is_err());
}

/// The allocation budget: none for a simplejwt access token, one for a token with groups, none
/// for parsing an unescaped command or writing a reply into a buffer with room.
#[test]
fn hot_paths_do_not_allocate() {
    let probe = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8))));
    assert_eq!(probe, 1, "the counting allocator is not installed");
    let now = now();
    let v = Verifier::hs256(SECRET);
    let plain = encode(&simplejwt(now, json!("42")));
    let numeric = encode(&simplejwt(now, json!(7)));
    let mut claims = simplejwt(now, json!("42"));
    claims["groups"] = json!(["room.1", "chat.*"]);
    let grouped = encode(&claims);

    for token in [&plain, &numeric] {
        let info = allocations(|| {
            let id = v.verify(token.as_bytes(), now).unwrap();
            assert!(!id.user.is_empty());
        });
        assert_eq!(info, 0, "verify allocated");
    }
    let info = allocations(|| {
        let id = v.verify(grouped.as_bytes(), now).unwrap();
        assert!(id.groups.allows("chat.x"));
        drop(id);
    });
    assert_eq!(info, 1, "a token with groups costs one allocation");

    let refused = allocations(|| {
        assert!(v.verify(b"x.y.z", now).is_err());
        assert!(v.verify(&plain.as_bytes()[..plain.len() - 2], now).is_err());
    });
    assert_eq!(refused, 0, "refusing allocated");

    let command = format!(r#"{{"action":"authenticate","token":"{plain}"}}"#);
    let send = r#"{"action":"send","group":"room.1","data":{"text":"hi","n":3}}"#;
    let mut out = Vec::with_capacity(4096);
    let info = allocations(|| {
        let cmd = wsgate::envelope::parse_command(&command).unwrap();
        assert!(matches!(
            cmd,
            wsgate::envelope::ClientCommand::Authenticate { .. }
        ));
        let cmd = wsgate::envelope::parse_command(send).unwrap();
        let wsgate::envelope::ClientCommand::Send {
            group,
            data: Some(data),
        } = cmd
        else {
            panic!("not a send");
        };
        wsgate::envelope::write_auth_ok(&mut out, "42");
        wsgate::envelope::write_error(&mut out, 403, "not a member");
        wsgate::envelope::write_message(&mut out, &group, data);
        assert!(wsgate::envelope::parse_command("[1]").is_err());
    });
    assert_eq!(info, 0, "envelope allocated");

    // serde_json keeps a small stack to skip nested containers: `data` nested two levels or
    // more costs one allocation (its first growth), however large it is.
    let nested = r#"{"action":"send","group":"g","data":{"a":[{"b":[1,{"c":[]}]}],"d":[[[]]]}}"#;
    let info = allocations(|| {
        assert!(wsgate::envelope::parse_command(nested).is_ok());
    });
    assert!(info <= 1, "{info} allocations");
}
