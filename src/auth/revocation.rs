//! The revocation list (docs/protocol.md §3 "Long-lived connections", §5 `POST /api/revoke`): a
//! revoked user's tokens issued up to the revocation, and a revoked `jti`, are refused until no
//! such token can still be valid, `max_token_lifetime` after the revocation. Consulted on every
//! authentication, so `is_revoked` never allocates and skips the lock while nothing is live.
//! Pure: time comes in as `now` (Unix seconds).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use super::Identity;
use super::jwt::MAX_ID;

/// The list holds `capacity` live entries; the API answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("revocation list full")]
pub struct ListFull;

/// Revoked users and `jti`s (Send + Sync; share it in an `Arc`).
pub struct Revocations {
    lifetime: u64,
    capacity: usize,
    /// The latest second until which any entry ever inserted is live (0: none ever was). While
    /// `now` is at or past it nothing is revoked, and `is_revoked` answers without the lock.
    live_until: AtomicU64,
    lists: RwLock<Lists>,
}

struct Lists {
    /// User id → second of its latest revocation.
    users: HashMap<Box<str>, u64>,
    /// `jti` → second of its latest revocation.
    jtis: HashMap<Box<str>, u64>,
    /// Earliest second at which some entry expires (`u64::MAX` when there is none).
    next_expiry: u64,
}

impl Revocations {
    /// An empty list; entries live `max_token_lifetime_secs`, at most `capacity` at once.
    pub fn new(max_token_lifetime_secs: u64, capacity: usize) -> Self {
        Self {
            lifetime: max_token_lifetime_secs,
            capacity,
            live_until: AtomicU64::new(0),
            lists: RwLock::new(Lists {
                users: HashMap::new(),
                jtis: HashMap::new(),
                next_expiry: u64::MAX,
            }),
        }
    }

    /// Refuses `user`'s tokens with `iat <= now` or without `iat`. A token issued in the same
    /// second as the revocation is refused too (seconds cannot order it); one issued later is
    /// fine, so the user can log in anew. An id no token can carry (empty, over `MAX_ID`
    /// bytes) is not stored.
    pub fn revoke_user(&self, user: &str, now: u64) -> Result<(), ListFull> {
        self.revoke(|lists| &mut lists.users, user, now)
    }

    /// Refuses the token with this `jti`, whatever its `iat`, for `max_token_lifetime` (its own
    /// `exp` is unknown here). An id no token can carry is not stored.
    pub fn revoke_jti(&self, jti: &str, now: u64) -> Result<(), ListFull> {
        self.revoke(|lists| &mut lists.jtis, jti, now)
    }

    /// Whether a live entry refuses this identity at `now`. The token's own `exp` is checked
    /// elsewhere. Allocation-free: an atomic load, and with live entries a read lock and two
    /// lookups by `&str`.
    pub fn is_revoked(&self, identity: &Identity, now: u64) -> bool {
        if now >= self.live_until.load(Ordering::Acquire) {
            return false;
        }
        let lists = self.lists.read().unwrap_or_else(PoisonError::into_inner);
        let live = |at: u64| now < at.saturating_add(self.lifetime);
        let jti = identity
            .jti
            .as_ref()
            .and_then(|jti| lists.jtis.get(jti.as_str()));
        let user = lists.users.get(identity.user.as_str());
        jti.is_some_and(|&at| live(at))
            || user.is_some_and(|&at| live(at) && (identity.iat == 0 || identity.iat <= at))
    }

    /// Stored entries, users and `jti`s together (expired ones count until swept), for metrics.
    pub fn len(&self) -> usize {
        let lists = self.lists.read().unwrap_or_else(PoisonError::into_inner);
        lists.users.len() + lists.jtis.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn revoke(
        &self,
        map: fn(&mut Lists) -> &mut HashMap<Box<str>, u64>,
        id: &str,
        now: u64,
    ) -> Result<(), ListFull> {
        if id.is_empty() || id.len() > MAX_ID {
            return Ok(());
        }
        let mut guard = self.lists.write().unwrap_or_else(PoisonError::into_inner);
        let lists = &mut *guard;
        if now >= lists.next_expiry {
            lists.sweep(now, self.lifetime);
        }
        let full = lists.users.len() + lists.jtis.len() >= self.capacity;
        match map(lists).get_mut(id) {
            // A later revocation of the same id widens it: later `iat`s, later expiry.
            Some(at) => *at = (*at).max(now),
            None if full => return Err(ListFull),
            None => drop(map(lists).insert(id.into(), now)),
        }
        let expiry = now.saturating_add(self.lifetime);
        lists.next_expiry = lists.next_expiry.min(expiry);
        self.live_until.fetch_max(expiry, Ordering::Release);
        Ok(())
    }
}

impl fmt::Debug for Revocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocations")
            .field("max_token_lifetime_secs", &self.lifetime)
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Lists {
    /// Forgets the entries expired at `now` and recomputes `next_expiry`.
    fn sweep(&mut self, now: u64, lifetime: u64) {
        let mut next = u64::MAX;
        let mut keep = |at: &mut u64| {
            let expiry = at.saturating_add(lifetime);
            let live = now < expiry;
            if live {
                next = next.min(expiry);
            }
            live
        };
        self.users.retain(|_, at| keep(at));
        self.jtis.retain(|_, at| keep(at));
        self.next_expiry = next;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::groups::GroupPatterns;
    use super::super::jwt::InlineStr;
    use super::*;

    const R: u64 = 1_700_000_000;
    const LIFETIME: u64 = 300;

    fn token(user: &str, jti: Option<&str>, iat: Option<u64>) -> Identity {
        Identity {
            user: InlineStr::new(user).unwrap(),
            exp: R + 3600,
            jti: jti.map(|j| InlineStr::new(j).unwrap()),
            iat: iat.unwrap_or(0),
            groups: GroupPatterns::empty(),
        }
    }

    #[test]
    fn list_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Revocations>();
    }

    #[test]
    fn empty_list_revokes_nothing() {
        let list = Revocations::new(LIFETIME, 10);
        assert!(!list.is_revoked(&token("42", Some("j"), None), R));
        assert!(list.is_empty());
    }

    #[test]
    fn user_revocation_covers_tokens_issued_up_to_the_same_second() {
        let list = Revocations::new(LIFETIME, 10);
        list.revoke_user("42", R).unwrap();
        assert!(list.is_revoked(&token("42", None, Some(R - 1)), R));
        assert!(
            list.is_revoked(&token("42", None, Some(R)), R),
            "same second"
        );
        assert!(
            list.is_revoked(&token("42", Some("j"), None), R + 1),
            "no iat"
        );
        assert!(
            !list.is_revoked(&token("42", None, Some(R + 1)), R + 1),
            "logged in anew"
        );
        assert!(
            !list.is_revoked(&token("43", None, Some(R - 1)), R),
            "another user"
        );
        assert!(
            !list.is_revoked(&token("4", None, None), R),
            "a prefix of the user"
        );
    }

    #[test]
    fn jti_revocation_ignores_iat_and_user() {
        let list = Revocations::new(LIFETIME, 10);
        list.revoke_jti("abc", R).unwrap();
        assert!(list.is_revoked(&token("42", Some("abc"), Some(R + 100)), R + 100));
        assert!(list.is_revoked(&token("7", Some("abc"), None), R));
        assert!(!list.is_revoked(&token("42", Some("abd"), Some(R - 1)), R));
        assert!(!list.is_revoked(&token("42", None, Some(R - 1)), R));
        assert!(
            !list.is_revoked(&token("abc", None, Some(R - 1)), R),
            "a user, not a jti"
        );
    }

    #[test]
    fn entries_expire_after_the_max_token_lifetime() {
        let list = Revocations::new(LIFETIME, 10);
        list.revoke_user("42", R).unwrap();
        list.revoke_jti("abc", R).unwrap();
        let user = token("42", None, None);
        let jti = token("7", Some("abc"), None);
        assert!(list.is_revoked(&user, R + LIFETIME - 1));
        assert!(list.is_revoked(&jti, R + LIFETIME - 1));
        assert!(!list.is_revoked(&user, R + LIFETIME));
        assert!(!list.is_revoked(&jti, R + LIFETIME));
    }

    #[test]
    fn a_later_revocation_widens_the_entry() {
        let list = Revocations::new(LIFETIME, 1);
        list.revoke_user("42", R).unwrap();
        list.revoke_user("42", R + 100).unwrap();
        list.revoke_user("42", R + 50).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list.is_revoked(&token("42", None, Some(R + 100)), R + 100));
        assert!(!list.is_revoked(&token("42", None, Some(R + 101)), R + 101));
        assert!(list.is_revoked(&token("42", None, None), R + 100 + LIFETIME - 1));
        assert!(!list.is_revoked(&token("42", None, None), R + 100 + LIFETIME));
    }

    /// What the gateway keeps a revocation for (`--max-token-lifetime-secs` and
    /// `--jwt-leeway-secs`) outlasts every token the revocation covers that was valid when it
    /// was made: the longest-lived one with `iat`, one without `iat` (its lifetime is bounded
    /// from the moment it is checked, leeway included), and one whose `iat` is ahead of the
    /// clock by the leeway. For each second a token still verifies, it is still revoked.
    #[test]
    fn no_token_valid_at_its_revocation_outlives_the_revocation() {
        use crate::config::{Config, DevSecret, Env};
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use clap::Parser as _;
        use hmac::{Hmac, Mac as _};
        const MAX: u64 = 300;
        const LEEWAY: u64 = 30;
        let env = Env {
            jwt_secret: Some("s3cret".into()),
            ..Env::default()
        };
        let argv = [
            "wsgate",
            "--allowed-origins",
            "*",
            "--max-token-lifetime-secs",
            "300",
            "--jwt-leeway-secs",
            "30",
        ];
        let settings = Config::try_parse_from(argv)
            .unwrap()
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap();
        let sign = |claims: &str| {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
            mac.update(input.as_bytes());
            format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        let verifier = &settings.auth.verifier;
        let tables = crate::tables::Tables::new(&settings.tables);
        let list = &tables.revocations;
        list.revoke_user("u", R).unwrap();
        list.revoke_jti("j", R).unwrap();
        let tokens = [
            (
                "user, iat at the revocation",
                format!(r#"{{"user_id":"u","iat":{R},"exp":{}}}"#, R + MAX),
            ),
            (
                "user, no iat",
                format!(r#"{{"user_id":"u","exp":{}}}"#, R + MAX + LEEWAY),
            ),
            (
                "jti, iat ahead by the leeway",
                format!(
                    r#"{{"user_id":"v","jti":"j","iat":{},"exp":{}}}"#,
                    R + LEEWAY,
                    R + LEEWAY + MAX
                ),
            ),
            (
                "jti, no iat",
                format!(r#"{{"user_id":"v","jti":"j","exp":{}}}"#, R + MAX + LEEWAY),
            ),
        ];
        for (what, claims) in tokens {
            let token = sign(&claims);
            let identity = verifier.verify(token.as_bytes(), R);
            assert!(
                identity.is_ok(),
                "{what}: valid at the revocation: {identity:?}"
            );
            let mut t = R;
            while let Ok(identity) = verifier.verify(token.as_bytes(), t) {
                assert!(
                    list.is_revoked(&identity, t),
                    "{what}: valid and no longer revoked at R + {}",
                    t - R
                );
                t += 1;
            }
        }
    }

    #[test]
    fn capacity_is_enforced_and_expired_entries_swept() {
        let list = Revocations::new(LIFETIME, 2);
        list.revoke_user("1", R).unwrap();
        list.revoke_jti("a", R + 10).unwrap();
        assert_eq!(list.revoke_user("2", R + 10), Err(ListFull));
        assert_eq!(list.revoke_jti("b", R + LIFETIME - 1), Err(ListFull));
        list.revoke_jti("a", R + 20).unwrap();
        assert_eq!(list.len(), 2);
        list.revoke_user("2", R + LIFETIME).unwrap();
        assert_eq!(list.len(), 2, "user 1 was swept");
        assert!(!list.is_revoked(&token("1", None, None), R + LIFETIME));
        assert!(list.is_revoked(&token("9", Some("a"), None), R + LIFETIME));
        list.revoke_user("3", R + 20 + LIFETIME).unwrap();
        assert_eq!(list.len(), 2, "jti a was swept");
        assert_eq!(ListFull.to_string(), "revocation list full");
    }

    #[test]
    fn ids_no_token_can_carry_are_not_stored() {
        let list = Revocations::new(LIFETIME, 10);
        list.revoke_user("", R).unwrap();
        list.revoke_jti(&"x".repeat(MAX_ID + 1), R).unwrap();
        assert!(list.is_empty());
        list.revoke_jti(&"x".repeat(MAX_ID), R).unwrap();
        assert_eq!(list.len(), 1);
    }
}
