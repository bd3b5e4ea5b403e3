//! JWT verification (docs/protocol.md §3; RFC 7515/7519), shaped for djangorestframework-simplejwt
//! access tokens. HS256 is checked here with `hmac` + `sha2` over stack buffers, without heap
//! allocation; RS256/ES256 only hand the signature to `jsonwebtoken`. The header `alg` is pinned
//! to the configured algorithm; the claim rules are the same for every algorithm.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AuthError;
use super::groups::GroupPatterns;

/// Largest decoded JOSE header accepted (bytes).
pub const MAX_HEADER: usize = 512;
/// Largest decoded claims set accepted (bytes).
pub const MAX_PAYLOAD: usize = 4096;
/// Largest decoded signature accepted (bytes; an RSA-4096 signature is 512).
pub const MAX_SIGNATURE: usize = 512;
/// Longest user id and `jti` kept (bytes).
pub const MAX_ID: usize = 64;

/// HMAC-SHA256 block size: keys up to this length are zero-padded, longer ones hashed first.
const HMAC_BLOCK: usize = 64;
/// Bytes in an HS256 tag.
const HS256_TAG: usize = 32;

/// The signature algorithm a deployment accepts; every token must name exactly this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC-SHA256 with a shared secret (simplejwt's default).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and an RSA public key.
    Rs256,
    /// ECDSA on P-256 with SHA-256 and an EC public key.
    Es256,
}

impl Algorithm {
    /// The JOSE `alg` name (`HS256`, `RS256`, `ES256`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Hs256 => jsonwebtoken::Algorithm::HS256,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    /// Parses a JOSE name exactly as written in a token header (case-sensitive).
    fn from_str(name: &str) -> Result<Self, KeyError> {
        match name {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "ES256" => Ok(Self::Es256),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// A start-up error while building a `Verifier`.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `from_public_pem` was asked for an algorithm that uses a shared secret.
    #[error("{0} uses a shared secret, not a public key")]
    NotPublicKey(Algorithm),
    /// The PEM could not be read as a public key of the algorithm's family.
    #[error("invalid {alg} public key PEM")]
    BadPem {
        /// The algorithm the key was meant for.
        alg: Algorithm,
        /// What `jsonwebtoken` reported.
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// An algorithm name other than HS256, RS256 or ES256.
    #[error("unsupported JWT algorithm {0:?} (expected HS256, RS256 or ES256)")]
    UnknownAlgorithm(String),
}

/// A string of at most `N` bytes (`N` ≤ 255) stored inline (no heap). The length is one byte:
/// identities live in every connection's state, whose size is watched.
#[derive(Clone, Copy)]
pub struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    /// Copies `s`; `None` when it is longer than `N` bytes.
    pub fn new(s: &str) -> Option<Self> {
        let mut out = Self::default();
        fmt::Write::write_str(&mut out, s).ok()?;
        Some(out)
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        // Invariant: bytes[..len] is a copy of whole `&str`s, so it is UTF-8.
        let filled = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        std::str::from_utf8(filled).unwrap_or_default()
    }
}

impl<const N: usize> Default for InlineStr<N> {
    fn default() -> Self {
        Self {
            len: 0,
            bytes: [0; N],
        }
    }
}

impl<const N: usize> fmt::Write for InlineStr<N> {
    /// Appends all of `s` or, when it does not fit, nothing (and fails).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let start = usize::from(self.len);
        let end = start.checked_add(s.len()).ok_or(fmt::Error)?;
        let slot = self.bytes.get_mut(start..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = u8::try_from(end).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

impl<const N: usize> std::ops::Deref for InlineStr<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> AsRef<str> for InlineStr<N> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> std::borrow::Borrow<str> for InlineStr<N> {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> PartialEq for InlineStr<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<const N: usize> Eq for InlineStr<N> {}

impl<const N: usize> PartialEq<str> for InlineStr<N> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl<const N: usize> PartialEq<&str> for InlineStr<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl<const N: usize> std::hash::Hash for InlineStr<N> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl<const N: usize> fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for InlineStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a verified token speaks for, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id from `user_id` (simplejwt) or else `sub`; integers rendered in decimal.
    pub user: InlineStr<MAX_ID>,
    /// When the token stops being accepted (Unix seconds): its `exp` claim plus the leeway.
    pub exp: u64,
    /// The `jti` claim, for the revocation list.
    pub jti: Option<InlineStr<MAX_ID>>,
    /// The `iat` claim (Unix seconds; 0 when absent): a user's revocation refuses the tokens
    /// issued before it.
    pub iat: u64,
    /// The `groups` claim; empty when the token has none.
    pub groups: GroupPatterns,
}

/// Verifies tokens for one algorithm and key, with the configured leeway, audience and issuer.
#[derive(Clone)]
pub struct Verifier {
    alg: Algorithm,
    key: VerifyKey,
    leeway: u64,
    audience: Option<String>,
    issuer: Option<String>,
    /// Longest lifetime a token may claim (`exp - iat`, or `exp - now` without `iat`), seconds.
    max_lifetime: Option<u64>,
    /// During an HS256 key rotation: the previous secret, accepted before this Unix time.
    previous: Option<(Hmac<Sha256>, u64)>,
}

#[derive(Clone)]
enum VerifyKey {
    /// The keyed HMAC state, cloned (a stack copy) for each token.
    Hmac(Hmac<Sha256>),
    Public(jsonwebtoken::DecodingKey),
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("alg", &self.alg)
            .field("key", &"<redacted>")
            .field("leeway", &self.leeway)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl Verifier {
    /// An HS256 verifier for a shared secret (simplejwt: `SIGNING_KEY` as UTF-8 bytes).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(Algorithm::Hs256, VerifyKey::Hmac(hmac_key(secret)))
    }

    /// Also accepts HS256 tokens signed with `secret` (the key being rotated out) until the
    /// Unix time `until`; after it they fail as a bad signature.
    pub fn with_previous_hs256(mut self, secret: &[u8], until: u64) -> Self {
        self.previous = Some((hmac_key(secret), until));
        self
    }

    /// An RS256 or ES256 verifier from a PEM public key (`PUBLIC KEY`, or `RSA PUBLIC KEY`).
    pub fn from_public_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let key = match alg {
            Algorithm::Hs256 => return Err(KeyError::NotPublicKey(alg)),
            Algorithm::Rs256 => jsonwebtoken::DecodingKey::from_rsa_pem(pem),
            Algorithm::Es256 => jsonwebtoken::DecodingKey::from_ec_pem(pem),
        }
        .map_err(|source| KeyError::BadPem { alg, source })?;
        Ok(Self::with_key(alg, VerifyKey::Public(key)))
    }

    fn with_key(alg: Algorithm, key: VerifyKey) -> Self {
        Self {
            alg,
            key,
            leeway: 0,
            audience: None,
            issuer: None,
            max_lifetime: None,
            previous: None,
        }
    }

    /// Refuses tokens that claim to live longer than `secs`: `exp - iat` beyond it, or,
    /// without `iat`, `exp` more than `secs` (plus the leeway) ahead of now. A revocation is
    /// kept that long (plus twice the leeway), so no revoked token can outlive it, and no `exp`
    /// far in the future ever reaches a deadline.
    pub fn with_max_lifetime(mut self, secs: u64) -> Self {
        self.max_lifetime = Some(secs);
        self
    }

    /// Allows `secs` of clock skew on `exp`, `nbf` and `iat`.
    pub fn with_leeway(mut self, secs: u64) -> Self {
        self.leeway = secs;
        self
    }

    /// Requires the token's `aud` (a string, or an array of strings) to contain this audience.
    pub fn with_audience(mut self, aud: String) -> Self {
        self.audience = Some(aud);
        self
    }

    /// Requires the token's `iss` to be exactly this issuer.
    pub fn with_issuer(mut self, iss: String) -> Self {
        self.issuer = Some(iss);
        self
    }

    /// The one algorithm this verifier accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Checks a compact JWS and its claims at time `now` (Unix seconds).
    ///
    /// Zero heap allocations for an HS256 token (<= 4 KiB) without a `groups` claim, without
    /// JSON escapes and without claims nested two levels deep (serde_json's skip stack; a
    /// simplejwt token has none). Order: structure and sizes, header (`alg` pinning),
    /// signature, then claims, so no claim is looked at before the signature holds.
    pub fn verify(&self, token: &[u8], now: u64) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let parts = Parts::split(token)?;
        // Bound the work before any of it: the HMAC below runs over the whole payload segment.
        if parts.payload.len() > encoded_len(MAX_PAYLOAD) {
            return Err(AuthError::TooLong);
        }

        let mut header_buf = [0u8; MAX_HEADER];
        let header = decode_part(parts.header, &mut header_buf)?;
        self.check_header(header)?;

        self.check_signature(parts.signing_input, parts.signature, now)?;

        let mut payload_buf = [0u8; MAX_PAYLOAD];
        let payload = decode_part(parts.payload, &mut payload_buf)?;
        self.check_claims(payload, now)
    }

    fn check_header(&self, json: &[u8]) -> Result<(), AuthError> {
        // RFC 7519 §7.2: UTF-8 JSON. serde_json would skip a member it does not read without
        // looking at its bytes, so the whole text is checked (no allocation).
        if !is_object(json) || std::str::from_utf8(json).is_err() {
            return Err(AuthError::Malformed);
        }
        let header: Header<'_> = serde_json::from_slice(json).map_err(|_| AuthError::Malformed)?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we know none.
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        if header.typ.is_some_and(|typ| json_str(typ).is_none()) {
            return Err(AuthError::Malformed);
        }
        match header.alg.and_then(json_str) {
            Some(alg) if alg == self.alg.as_str() => Ok(()),
            _ => Err(AuthError::WrongAlgorithm),
        }
    }

    fn check_signature(
        &self,
        signing_input: &[u8],
        signature: &[u8],
        now: u64,
    ) -> Result<(), AuthError> {
        match &self.key {
            VerifyKey::Hmac(keyed) => {
                let mut tag = [0u8; HS256_TAG];
                if signature.len() != encoded_len(HS256_TAG) {
                    return Err(AuthError::BadSignature);
                }
                let n = URL_SAFE_NO_PAD
                    .decode_slice(signature, &mut tag)
                    .map_err(|_| AuthError::Malformed)?;
                if n != HS256_TAG {
                    return Err(AuthError::BadSignature);
                }
                let previous = match &self.previous {
                    Some((key, until)) if now < *until => Some(key),
                    _ => None,
                };
                if hmac_matches(keyed, signing_input, &tag)
                    || previous.is_some_and(|key| hmac_matches(key, signing_input, &tag))
                {
                    Ok(())
                } else {
                    Err(AuthError::BadSignature)
                }
            }
            VerifyKey::Public(key) => {
                if signature.len() > encoded_len(MAX_SIGNATURE) {
                    return Err(AuthError::TooLong);
                }
                let signature = std::str::from_utf8(signature).map_err(|_| AuthError::Malformed)?;
                match jsonwebtoken::crypto::verify(
                    signature,
                    signing_input,
                    key,
                    self.alg.to_jsonwebtoken(),
                ) {
                    Ok(true) => Ok(()),
                    Ok(false) | Err(_) => Err(AuthError::BadSignature),
                }
            }
        }
    }

    fn check_claims(&self, json: &[u8], now: u64) -> Result<Identity, AuthError> {
        if !is_object(json) || std::str::from_utf8(json).is_err() {
            return Err(AuthError::Malformed);
        }
        let claims: Claims<'_> = serde_json::from_slice(json).map_err(|_| AuthError::Malformed)?;
        let now = i128::from(now);
        let leeway = i128::from(self.leeway);

        let exp = int_claim(claims.exp.ok_or(AuthError::MissingExp)?, "exp")?;
        if exp <= now - leeway {
            return Err(AuthError::Expired);
        }
        let nbf = claims.nbf.map(|raw| int_claim(raw, "nbf")).transpose()?;
        if nbf.is_some_and(|nbf| nbf > now + leeway) {
            return Err(AuthError::NotYetValid);
        }
        let iat = claims.iat.map(|raw| int_claim(raw, "iat")).transpose()?;
        if iat.is_some_and(|iat| iat > now + leeway) {
            return Err(AuthError::IssuedInFuture);
        }
        if let Some(max) = self.max_lifetime.map(i128::from) {
            let too_long = match iat {
                Some(iat) => exp - iat > max,
                None => exp - now > max + leeway,
            };
            if too_long {
                return Err(AuthError::LifetimeTooLong);
            }
        }

        if let Some(expected) = &self.audience {
            let aud = claims.aud.ok_or(AuthError::WrongAudience)?;
            if !audience_contains(aud, expected) {
                return Err(AuthError::WrongAudience);
            }
        }
        if let Some(expected) = &self.issuer {
            match claims.iss.and_then(json_str) {
                Some(iss) if iss == expected.as_str() => {}
                _ => return Err(AuthError::WrongIssuer),
            }
        }
        if let Some(raw) = claims.token_type {
            match json_str(raw) {
                Some(kind) if kind == "access" => {}
                _ => return Err(AuthError::WrongTokenType),
            }
        }

        let user = match (claims.user_id, claims.sub) {
            (Some(raw), _) => user_claim(raw, "user_id")?,
            (None, Some(raw)) => user_claim(raw, "sub")?,
            (None, None) => return Err(AuthError::NoUser),
        };
        let jti = match claims.jti {
            Some(raw) => {
                let text = json_str(raw).ok_or(AuthError::BadClaim("jti"))?;
                Some(InlineStr::new(&text).ok_or(AuthError::TooLong)?)
            }
            None => None,
        };
        let groups = match claims.groups {
            Some(raw) => GroupPatterns::from_json(raw)?,
            None => GroupPatterns::empty(),
        };

        Ok(Identity {
            user,
            // When the token stops being accepted: exp plus the leeway, the same rule as the
            // check above (a connection closes then, a ticket lives at most until then). Past
            // 2^64 - 1 it is 2^64 - 1, never: `exp` is above `now - leeway`, so it is positive.
            exp: u64::try_from(exp.saturating_add(leeway)).unwrap_or(u64::MAX),
            jti,
            iat: iat.and_then(|iat| u64::try_from(iat).ok()).unwrap_or(0),
            groups,
        })
    }
}

/// The three segments of a compact JWS, still base64url.
struct Parts<'t> {
    header: &'t [u8],
    payload: &'t [u8],
    signature: &'t [u8],
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'t [u8],
}

impl<'t> Parts<'t> {
    fn split(token: &'t [u8]) -> Result<Self, AuthError> {
        let first = token
            .iter()
            .position(|&b| b == b'.')
            .ok_or(AuthError::Malformed)?;
        let (header, rest) = token.split_at(first);
        let rest = rest.get(1..).unwrap_or_default();
        let second = rest
            .iter()
            .position(|&b| b == b'.')
            .ok_or(AuthError::Malformed)?;
        let (payload, rest) = rest.split_at(second);
        let signature = rest.get(1..).unwrap_or_default();
        if signature.contains(&b'.') {
            return Err(AuthError::Malformed);
        }
        let signing_input = token
            .get(..header.len() + 1 + payload.len())
            .ok_or(AuthError::Malformed)?;
        Ok(Self {
            header,
            payload,
            signature,
            signing_input,
        })
    }
}

/// Length of the unpadded base64 text of `n` bytes.
const fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Decodes unpadded base64url into `buf`; padding or the standard alphabet is malformed.
fn decode_part<'b>(text: &[u8], buf: &'b mut [u8]) -> Result<&'b [u8], AuthError> {
    if text.len() > encoded_len(buf.len()) {
        return Err(AuthError::TooLong);
    }
    let n = URL_SAFE_NO_PAD
        .decode_slice(text, &mut *buf)
        .map_err(|_| AuthError::Malformed)?;
    buf.get(..n).ok_or(AuthError::Malformed)
}

/// Whether the JSON text starts (after whitespace) with `{`; serde would also map an array
/// onto a struct by position, which a JOSE header or claims set must not be.
fn is_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    alg: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    typ: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    crit: Option<&'a RawValue>,
}

/// The claims wsgate reads, as raw JSON so each rule can name its own error; unknown claims
/// are skipped without allocating.
#[derive(Deserialize)]
struct Claims<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    exp: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    nbf: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    iat: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    aud: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    iss: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    sub: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    token_type: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    jti: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    groups: Option<&'a RawValue>,
}

/// A member that is present is `Some`, even when its value is `null` (an absent one defaults).
fn present<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&'de RawValue>::deserialize(d).map(Some)
}

/// A JSON string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// The value of `raw` when it is a JSON string. Other types are turned away before serde is
/// asked, because a serde_json error allocates.
fn json_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    serde_json::from_str::<JsonStr<'_>>(raw.get())
        .ok()
        .map(|s| s.0)
}

/// A JSON integer (no fraction, no exponent), as PyJWT requires for NumericDate claims.
struct Int(i128);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(i128::from(v)))
            }
        }
        d.deserialize_any(IntVisitor)
    }
}

fn int_claim(raw: &RawValue, name: &'static str) -> Result<i128, AuthError> {
    // Fractions, exponents and non-numbers are refused here, without a (heap) serde error.
    let text = raw.get();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(AuthError::BadClaim(name));
    }
    serde_json::from_str::<Int>(text)
        .map(|n| n.0)
        .map_err(|_| AuthError::BadClaim(name))
}

/// The user id: a non-empty JSON string of at most 64 bytes, or an integer in decimal.
fn user_claim(raw: &RawValue, name: &'static str) -> Result<InlineStr<MAX_ID>, AuthError> {
    if let Some(text) = json_str(raw) {
        if text.is_empty() {
            return Err(AuthError::NoUser);
        }
        return InlineStr::new(&text).ok_or(AuthError::TooLong);
    }
    let n = int_claim(raw, name)?;
    let mut user = InlineStr::default();
    // An i128 from a u64 or i64 has at most 20 digits and a sign, well under 64 bytes.
    fmt::Write::write_fmt(&mut user, format_args!("{n}")).map_err(|_| AuthError::TooLong)?;
    Ok(user)
}

/// Whether `aud` (a string, or an array of strings only) contains `expected`.
fn audience_contains(raw: &RawValue, expected: &str) -> bool {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let found = AudienceSeed(expected).deserialize(&mut de);
    matches!(found, Ok(true)) && de.end().is_ok()
}

struct AudienceSeed<'e>(&'e str);

impl<'de> DeserializeSeed<'de> for AudienceSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AudienceSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(JsonStr(item)) = seq.next_element::<JsonStr<'de>>()? {
            found |= item == self.0;
        }
        Ok(found)
    }
}

/// The keyed HMAC-SHA256 state for `secret`. RFC 2104 key preparation is done by hand so that
/// it cannot fail: a key longer than the block is hashed, then zero-padded to one block.
fn hmac_key(secret: &[u8]) -> Hmac<Sha256> {
    let mut block = [0u8; HMAC_BLOCK];
    if secret.len() > HMAC_BLOCK {
        block[..HS256_TAG].copy_from_slice(&Sha256::digest(secret));
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

/// Whether `tag` is the HMAC of `input` under `key`, compared in constant time.
fn hmac_matches(key: &Hmac<Sha256>, input: &[u8], tag: &[u8; HS256_TAG]) -> bool {
    let mut mac = key.clone();
    mac.update(input);
    bool::from(mac.finalize().into_bytes().as_slice().ct_eq(tag))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"wsgate unit-test secret";
    const NOW: u64 = 1_700_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs `header.payload` (raw JSON texts) with HS256 and `secret`.
    fn sign_with(secret: &[u8], header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn sign(payload: &str) -> String {
        sign_with(SECRET, r#"{"alg":"HS256","typ":"JWT"}"#, payload)
    }

    fn verifier() -> Verifier {
        Verifier::hs256(SECRET)
    }

    fn check(payload: &str) -> Result<Identity, AuthError> {
        verifier().verify(sign(payload).as_bytes(), NOW)
    }

    /// A simplejwt access token's claims with one member replaced, added or (`None`) removed.
    fn simplejwt_with(name: &str, value: Option<&str>) -> String {
        let mut members = vec![
            ("token_type", r#""access""#.to_owned()),
            ("exp", (NOW + 300).to_string()),
            ("iat", NOW.to_string()),
            ("jti", r#""9f3c2b7e5d1a4c6e8b0f2a4c6e8b0f2a""#.to_owned()),
            ("user_id", r#""42""#.to_owned()),
        ];
        members.retain(|(n, _)| *n != name);
        if let Some(v) = value {
            members.push((name, v.to_owned()));
        }
        let body: Vec<String> = members
            .iter()
            .map(|(n, v)| format!("\"{n}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    fn check_with(name: &str, value: Option<&str>) -> Result<Identity, AuthError> {
        check(&simplejwt_with(name, value))
    }

    #[test]
    fn accepts_a_simplejwt_access_token() {
        let id = check_with("none", None).unwrap();
        assert_eq!(id.user, "42");
        assert_eq!(id.exp, NOW + 300);
        assert_eq!(id.jti.unwrap(), "9f3c2b7e5d1a4c6e8b0f2a4c6e8b0f2a");
        assert!(id.groups.is_empty());
    }

    #[test]
    fn rfc7515_appendix_a1_signature_verifies() {
        let key = URL_SAFE_NO_PAD
            .decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
            )
            .unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let v = Verifier::hs256(&key);
        // The signature holds (so the claims are reached); the example token names no user.
        assert_eq!(
            v.verify(token.as_bytes(), 1_300_819_379),
            Err(AuthError::NoUser)
        );
        assert_eq!(
            v.verify(token.as_bytes(), 1_300_819_380),
            Err(AuthError::Expired)
        );
        let other = Verifier::hs256(b"not the key");
        assert_eq!(
            other.verify(token.as_bytes(), 1_300_819_379),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn hmac_keys_of_every_length_match_the_reference() {
        for len in [0, 1, 31, 32, 63, 64, 65, 100, 300] {
            let secret: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let token = sign_with(
                &secret,
                r#"{"alg":"HS256"}"#,
                &format!(r#"{{"exp":{},"user_id":"1"}}"#, NOW + 1),
            );
            assert!(
                Verifier::hs256(&secret)
                    .verify(token.as_bytes(), NOW)
                    .is_ok(),
                "key length {len}"
            );
        }
    }

    #[test]
    fn user_id_string_or_integer() {
        assert_eq!(check_with("user_id", Some("7")).unwrap().user, "7");
        assert_eq!(check_with("user_id", Some("-3")).unwrap().user, "-3");
        assert_eq!(
            check_with("user_id", Some("18446744073709551615"))
                .unwrap()
                .user,
            "18446744073709551615"
        );
        assert_eq!(
            check_with("user_id", Some(r#""caf\u00e9""#)).unwrap().user,
            "caf\u{e9}"
        );
        let max = format!("\"{}\"", "u".repeat(64));
        assert_eq!(check_with("user_id", Some(&max)).unwrap().user.len(), 64);
        let over = format!("\"{}\"", "u".repeat(65));
        assert_eq!(check_with("user_id", Some(&over)), Err(AuthError::TooLong));
        assert_eq!(check_with("user_id", Some(r#""""#)), Err(AuthError::NoUser));
        assert_eq!(check_with("user_id", None), Err(AuthError::NoUser));
        for bad in ["7.0", "7e2", "null", "true", "[7]", r#"{"id":7}"#] {
            assert_eq!(
                check_with("user_id", Some(bad)),
                Err(AuthError::BadClaim("user_id")),
                "{bad}"
            );
        }
    }

    #[test]
    fn sub_is_the_fallback_user() {
        let sub_only = format!(r#"{{"exp":{},"sub":"alice"}}"#, NOW + 60);
        assert_eq!(check(&sub_only).unwrap().user, "alice");
        let sub_int = format!(r#"{{"exp":{},"sub":12}}"#, NOW + 60);
        assert_eq!(check(&sub_int).unwrap().user, "12");
        let both = format!(r#"{{"exp":{},"sub":"alice","user_id":"42"}}"#, NOW + 60);
        assert_eq!(check(&both).unwrap().user, "42");
        let bad_sub = format!(r#"{{"exp":{},"sub":1.5}}"#, NOW + 60);
        assert_eq!(check(&bad_sub), Err(AuthError::BadClaim("sub")));
    }

    #[test]
    fn exp_is_required_integral_and_enforced() {
        assert_eq!(check_with("exp", None), Err(AuthError::MissingExp));
        for bad in [
            "1700000300.0",
            "1.7000003e9",
            r#""1700000300""#,
            "null",
            "[]",
        ] {
            assert_eq!(
                check_with("exp", Some(bad)),
                Err(AuthError::BadClaim("exp")),
                "{bad}"
            );
        }
        let at = |exp: u64| check_with("exp", Some(&exp.to_string()));
        assert_eq!(at(NOW), Err(AuthError::Expired));
        assert_eq!(at(NOW - 1), Err(AuthError::Expired));
        assert_eq!(at(NOW + 1).unwrap().exp, NOW + 1);
        assert_eq!(check_with("exp", Some("-5")), Err(AuthError::Expired));
        assert_eq!(
            check_with("exp", Some("18446744073709551615")).unwrap().exp,
            u64::MAX
        );
    }

    /// Found by the `connection` fuzz target: with a leeway, an `exp` within the leeway of
    /// 2^64 - 1 was accepted with a deadline of 0, so the connection it opened closed at once
    /// as expired (and a ticket for it could never be redeemed). The deadline saturates.
    #[test]
    fn a_deadline_past_u64_max_saturates() {
        let lenient = verifier().with_leeway(5).with_max_lifetime(u64::MAX);
        for exp in [u64::MAX, u64::MAX - 4, u64::MAX - 5] {
            let token = sign(&format!(r#"{{"exp":{exp},"user_id":"1"}}"#));
            let identity = lenient.verify(token.as_bytes(), NOW).unwrap();
            assert_eq!(identity.exp, u64::MAX, "exp {exp}");
        }
        let token = sign(&format!(r#"{{"exp":{},"user_id":"1"}}"#, u64::MAX - 6));
        assert_eq!(
            lenient.verify(token.as_bytes(), NOW).unwrap().exp,
            u64::MAX - 1
        );
    }

    /// Found by fuzzing against jsonwebtoken: claims (or a header) that are not UTF-8, in a
    /// member nobody reads, were accepted. RFC 7519 §7.2 wants UTF-8 JSON.
    #[test]
    fn claims_and_headers_must_be_utf8_even_where_unread() {
        let exp = NOW + 60;
        let fine = format!(r#"{{"exp":{exp},"user_id":42,"x":"é"}}"#);
        assert!(check(&fine).is_ok(), "valid UTF-8 passes");
        let mut raw = format!(r#"{{"exp":{exp},"user_id":42,"x":""#).into_bytes();
        raw.extend_from_slice(&[0xff, b'"', b'}']);
        assert_eq!(
            verifier().verify(
                sign_bytes(br#"{"alg":"HS256","typ":"JWT"}"#, &raw).as_bytes(),
                NOW
            ),
            Err(AuthError::Malformed)
        );
        let mut header = br#"{"alg":"HS256","x":""#.to_vec();
        header.extend_from_slice(&[0xc3, b'"', b'}']);
        let claims = format!(r#"{{"exp":{exp},"user_id":42}}"#);
        assert_eq!(
            verifier().verify(sign_bytes(&header, claims.as_bytes()).as_bytes(), NOW),
            Err(AuthError::Malformed)
        );
    }

    /// A token over raw header and claims bytes, signed with the test secret.
    fn sign_bytes(header: &[u8], claims: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// An `exp` up to 2^64 - 1 once panicked the worker's deadline arithmetic; with a lifetime
    /// bound such a token is refused outright, by `exp - iat`, or by `exp - now` without `iat`.
    #[test]
    fn a_lifetime_beyond_the_bound_is_refused() {
        let bounded = verifier().with_max_lifetime(3600).with_leeway(5);
        let run = |payload: String| bounded.verify(sign(&payload).as_bytes(), NOW);
        let claims = |exp: u64, iat: Option<u64>| match iat {
            Some(iat) => format!(r#"{{"exp":{exp},"iat":{iat},"user_id":"1"}}"#),
            None => format!(r#"{{"exp":{exp},"user_id":"1"}}"#),
        };
        assert!(run(claims(NOW + 3600, Some(NOW))).is_ok());
        assert_eq!(
            run(claims(NOW + 3601, Some(NOW))),
            Err(AuthError::LifetimeTooLong)
        );
        // Issued long ago, still inside its exp: the lifetime is what counts, not what is left.
        assert_eq!(
            run(claims(NOW + 60, Some(NOW - 3600))),
            Err(AuthError::LifetimeTooLong)
        );
        assert!(run(claims(NOW + 3605, None)).is_ok());
        assert_eq!(
            run(claims(NOW + 3606, None)),
            Err(AuthError::LifetimeTooLong)
        );
        for huge in [1u64 << 63, (1 << 63) - 5, u64::MAX] {
            assert_eq!(
                run(claims(huge, Some(NOW))),
                Err(AuthError::LifetimeTooLong)
            );
            assert_eq!(run(claims(huge, None)), Err(AuthError::LifetimeTooLong));
        }
    }

    #[test]
    fn leeway_widens_every_time_check() {
        let lenient = verifier().with_leeway(10);
        let run = |name: &str, v: u64| {
            let token = sign(&simplejwt_with(name, Some(&v.to_string())));
            lenient.verify(token.as_bytes(), NOW)
        };
        assert!(run("exp", NOW - 9).is_ok());
        assert_eq!(run("exp", NOW - 10), Err(AuthError::Expired));
        assert!(run("nbf", NOW + 10).is_ok());
        assert_eq!(run("nbf", NOW + 11), Err(AuthError::NotYetValid));
        assert!(run("iat", NOW + 10).is_ok());
        assert_eq!(run("iat", NOW + 11), Err(AuthError::IssuedInFuture));
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused() {
        assert!(check_with("nbf", Some(&NOW.to_string())).is_ok());
        assert_eq!(
            check_with("nbf", Some(&(NOW + 1).to_string())),
            Err(AuthError::NotYetValid)
        );
        assert!(check_with("iat", Some(&NOW.to_string())).is_ok());
        assert_eq!(
            check_with("iat", Some(&(NOW + 1).to_string())),
            Err(AuthError::IssuedInFuture)
        );
        assert_eq!(
            check_with("nbf", Some("1.5")),
            Err(AuthError::BadClaim("nbf"))
        );
        assert_eq!(
            check_with("iat", Some(r#""now""#)),
            Err(AuthError::BadClaim("iat"))
        );
    }

    #[test]
    fn audience_only_when_configured() {
        assert!(check_with("aud", Some(r#""someone-else""#)).is_ok());
        let v = verifier().with_audience("wsgate".to_owned());
        let run = |aud: Option<&str>| v.verify(sign(&simplejwt_with("aud", aud)).as_bytes(), NOW);
        assert!(run(Some(r#""wsgate""#)).is_ok());
        assert!(run(Some(r#"["api","wsgate"]"#)).is_ok());
        assert!(run(Some(r#""wsg\u0061te""#)).is_ok());
        for bad in [
            None,
            Some(r#""api""#),
            Some(r#"["api"]"#),
            Some("[]"),
            Some(r#"[1,"wsgate"]"#),
            Some(r#"["wsgate",null]"#),
            Some(r#"[["wsgate"]]"#),
            Some("null"),
            Some("7"),
            Some(r#"{"wsgate":true}"#),
            Some(r#""WSGATE""#),
        ] {
            assert_eq!(run(bad), Err(AuthError::WrongAudience), "{bad:?}");
        }
    }

    #[test]
    fn issuer_only_when_configured() {
        assert!(check_with("iss", Some("5")).is_ok());
        let v = verifier().with_issuer("https://auth.example".to_owned());
        let run = |iss: Option<&str>| v.verify(sign(&simplejwt_with("iss", iss)).as_bytes(), NOW);
        assert!(run(Some(r#""https://auth.example""#)).is_ok());
        for bad in [
            None,
            Some(r#""https://evil.example""#),
            Some(r#"["https://auth.example"]"#),
            Some("null"),
        ] {
            assert_eq!(run(bad), Err(AuthError::WrongIssuer), "{bad:?}");
        }
    }

    #[test]
    fn token_type_must_be_access_when_present() {
        assert!(check_with("token_type", None).is_ok());
        for bad in [r#""refresh""#, r#""sliding""#, r#""Access""#, "1", "null"] {
            assert_eq!(
                check_with("token_type", Some(bad)),
                Err(AuthError::WrongTokenType),
                "{bad}"
            );
        }
    }

    #[test]
    fn jti_is_optional_and_bounded() {
        assert_eq!(check_with("jti", None).unwrap().jti, None);
        let max = format!("\"{}\"", "j".repeat(64));
        assert_eq!(
            check_with("jti", Some(&max)).unwrap().jti.unwrap().len(),
            64
        );
        let over = format!("\"{}\"", "j".repeat(65));
        assert_eq!(check_with("jti", Some(&over)), Err(AuthError::TooLong));
        assert_eq!(
            check_with("jti", Some("12")),
            Err(AuthError::BadClaim("jti"))
        );
    }

    #[test]
    fn groups_claim() {
        let id = check_with("groups", Some(r#"["room.1","chat.*"]"#)).unwrap();
        assert!(id.groups.allows("room.1"));
        assert!(id.groups.allows("chat.lobby"));
        assert!(!id.groups.allows("room.2"));
        assert!(check_with("groups", Some("[]")).unwrap().groups.is_empty());
        assert!(
            check_with("groups", Some(r#"["*"]"#))
                .unwrap()
                .groups
                .allows("x")
        );
        for bad in [
            r#""room.1""#,
            "null",
            "[1]",
            r#"["a b"]"#,
            r#"["ro*m"]"#,
            "{}",
        ] {
            assert_eq!(
                check_with("groups", Some(bad)),
                Err(AuthError::BadGroups),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_claims_are_ignored() {
        let extra = r#"{"a":[1,{"b":null}],"c":"d\"e","f":-1.5e3}"#;
        assert!(check_with("x-extra", Some(extra)).is_ok());
    }

    #[test]
    fn claims_must_be_one_json_object() {
        let exp = NOW + 60;
        for bad in [
            format!(r#"[{exp},"42"]"#),
            format!(r#"{{"exp":{exp},"user_id":"42"}} x"#),
            format!(r#"{{"exp":{exp},"exp":{exp},"user_id":"42"}}"#),
            "".to_owned(),
            "null".to_owned(),
            "\u{ff}".to_owned(),
        ] {
            assert_eq!(check(&bad), Err(AuthError::Malformed), "{bad}");
        }
        let spaced = format!("\r\n {{ \"exp\" : {exp} , \"user_id\" : \"42\" }} \n");
        assert!(check(&spaced).is_ok());
    }

    #[test]
    fn alg_is_pinned() {
        let payload = simplejwt_with("none", None);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"HS384"}"#,
            r#"{"alg":"RS256"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":256}"#,
            r#"{"alg":null}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"typ":"JWT"}"#,
        ] {
            let token = sign_with(SECRET, header, &payload);
            assert_eq!(
                verifier().verify(token.as_bytes(), NOW),
                Err(AuthError::WrongAlgorithm),
                "{header}"
            );
        }
        let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(payload.as_bytes()));
        assert_eq!(
            verifier().verify(unsigned.as_bytes(), NOW),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn header_shape() {
        let payload = simplejwt_with("none", None);
        for ok in [
            r#"{"alg":"HS256"}"#,
            r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#,
            r#"{"alg":"H\u0053256"}"#,
        ] {
            let token = sign_with(SECRET, ok, &payload);
            assert!(verifier().verify(token.as_bytes(), NOW).is_ok(), "{ok}");
        }
        for bad in [
            r#"["HS256"]"#,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            r#"{"alg":"HS256","typ":1}"#,
            r#"{"alg":"HS256","alg":"HS256"}"#,
            r#"{"alg":"HS256""#,
            "HS256",
        ] {
            let token = sign_with(SECRET, bad, &payload);
            assert_eq!(
                verifier().verify(token.as_bytes(), NOW),
                Err(AuthError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn signature_must_match() {
        let token = sign(&simplejwt_with("none", None));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 5;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verifier().verify(&flipped, NOW),
            Err(AuthError::BadSignature)
        );
        let other = Verifier::hs256(b"another secret");
        assert_eq!(
            other.verify(token.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
        let truncated = &token[..token.len() - 1];
        assert_eq!(
            verifier().verify(truncated.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
        let padded = format!("{token}=");
        assert_eq!(
            verifier().verify(padded.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
        let (input, _) = token.rsplit_once('.').unwrap();
        let empty = format!("{input}.");
        assert_eq!(
            verifier().verify(empty.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
        // Last character with non-zero unused bits: the same tag bytes, but not canonical.
        let mut loose = token.clone().into_bytes();
        let end = loose.len() - 1;
        let canonical = loose[end];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == canonical).unwrap();
        assert_eq!(
            index & 3,
            0,
            "32 bytes leave two unused bits in the last character"
        );
        loose[end] = alphabet[index ^ 1];
        assert_eq!(verifier().verify(&loose, NOW), Err(AuthError::Malformed));
        // Changing the payload invalidates the signature.
        let (header, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = format!(
            "{header}.{}.{sig}",
            b64(simplejwt_with("user_id", Some(r#""1""#)).as_bytes())
        );
        assert_eq!(
            verifier().verify(forged.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn structure_and_encoding() {
        assert_eq!(verifier().verify(b"", NOW), Err(AuthError::Missing));
        let token = sign(&simplejwt_with("none", None));
        let (header, rest) = token.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        for bad in [
            "abc".to_owned(),
            format!("{header}.{payload}"),
            format!("{header}.{payload}.{sig}.{sig}"),
            format!("{header}.{payload}.{sig}."),
            format!("{header}=.{payload}.{sig}"),
            format!("{}.{payload}.{sig}", header.replace('J', "+")),
            format!("{header}.{payload}!.{sig}"),
            format!(".{payload}.{sig}"),
            format!("{header}..{sig}"),
            format!(" {token}"),
        ] {
            assert!(
                matches!(
                    verifier().verify(bad.as_bytes(), NOW),
                    Err(AuthError::Malformed | AuthError::BadSignature)
                ),
                "{bad}"
            );
        }
        let mut non_ascii = token.into_bytes();
        non_ascii[3] = 0xc3;
        assert_eq!(
            verifier().verify(&non_ascii, NOW),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn size_limits() {
        let base = simplejwt_with("none", None);
        // Pad the claims to exactly MAX_PAYLOAD bytes with an unknown claim.
        let filler = MAX_PAYLOAD - base.len() - r#","pad":"""#.len();
        let exact = format!(
            r#"{},"pad":"{}"}}"#,
            &base[..base.len() - 1],
            "p".repeat(filler)
        );
        assert_eq!(exact.len(), MAX_PAYLOAD);
        assert!(check(&exact).is_ok());
        let over = format!(
            r#"{},"pad":"{}"}}"#,
            &base[..base.len() - 1],
            "p".repeat(filler + 1)
        );
        assert_eq!(check(&over), Err(AuthError::TooLong));
        // An oversized payload is refused before the signature is computed over it.
        let huge = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"HS256"}"#),
            "A".repeat(1 << 20),
            "A".repeat(43)
        );
        assert_eq!(
            verifier().verify(huge.as_bytes(), NOW),
            Err(AuthError::TooLong)
        );
        let big_header = format!(r#"{{"alg":"HS256","kid":"{}"}}"#, "k".repeat(MAX_HEADER));
        let token = sign_with(SECRET, &big_header, &base);
        assert_eq!(
            verifier().verify(token.as_bytes(), NOW),
            Err(AuthError::TooLong)
        );
    }

    #[test]
    fn public_key_verifiers() {
        const EC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEetiGIf1posfs6P6EYWzj/2SNbpDh
tOnEGKuLJesYUov8lTqxr25SJdjnhE1RqktHwfWzuiYIC8AXnTLrWlhSmw==
-----END PUBLIC KEY-----
";
        let es = Verifier::from_public_pem(Algorithm::Es256, EC_PEM.as_bytes()).unwrap();
        assert_eq!(es.algorithm(), Algorithm::Es256);
        // Algorithm confusion: an HS256 token keyed with the public key bytes is refused.
        let confused = sign_with(
            EC_PEM.as_bytes(),
            r#"{"alg":"HS256"}"#,
            &simplejwt_with("none", None),
        );
        assert_eq!(
            es.verify(confused.as_bytes(), NOW),
            Err(AuthError::WrongAlgorithm)
        );
        // Right alg, garbage signature.
        let forged = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"ES256"}"#),
            b64(simplejwt_with("none", None).as_bytes()),
            b64(&[7u8; 64])
        );
        assert_eq!(
            es.verify(forged.as_bytes(), NOW),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            Verifier::from_public_pem(Algorithm::Rs256, b"not a pem"),
            Err(KeyError::BadPem {
                alg: Algorithm::Rs256,
                ..
            })
        ));
        assert!(matches!(
            Verifier::from_public_pem(Algorithm::Hs256, EC_PEM.as_bytes()),
            Err(KeyError::NotPublicKey(Algorithm::Hs256))
        ));
    }

    #[test]
    fn algorithm_names() {
        for alg in [Algorithm::Hs256, Algorithm::Rs256, Algorithm::Es256] {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert!(matches!(
            "none".parse::<Algorithm>(),
            Err(KeyError::UnknownAlgorithm(_))
        ));
        assert!("hs256".parse::<Algorithm>().is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let shown = format!("{:?}", Verifier::hs256(b"super-secret-value"));
        assert!(!shown.contains("super"), "{shown}");
        assert!(shown.contains("Hs256"));
    }

    #[test]
    fn inline_str() {
        let s = InlineStr::<4>::new("abcd").unwrap();
        assert_eq!(s.as_str(), "abcd");
        assert_eq!(format!("{s} {s:?}"), "abcd \"abcd\"");
        assert!(InlineStr::<4>::new("abcde").is_none());
        assert_eq!(InlineStr::<4>::new("\u{e9}\u{e9}").unwrap(), "\u{e9}\u{e9}");
        assert!(InlineStr::<4>::new("\u{e9}\u{e9}x").is_none());
        assert_eq!(InlineStr::<4>::default().as_str(), "");
        assert_eq!(InlineStr::<8>::new("ab"), InlineStr::<8>::new("ab"));
    }
}
