//! HS256 tokens shaped like djangorestframework-simplejwt's, minted by the load client.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Mints an access token for `user` that expires `ttl` seconds after `now`.
pub fn mint(secret: &[u8], user: &str, now: u64, ttl: u64, groups: &[&str]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let mut claims = serde_json::json!({
        "token_type": "access",
        "exp": now + ttl,
        "iat": now,
        "jti": format!("{user:0>32}"),
        "user_id": user,
    });
    if !groups.is_empty() {
        claims["groups"] = serde_json::json!(groups);
    }
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{signature}")
}
