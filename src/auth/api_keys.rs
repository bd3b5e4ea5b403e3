//! The HTTP API's keys (docs/protocol.md §5): kept only as SHA-256 digests, compared in
//! constant time, read from `Authorization: Bearer <key>` by the one bearer parser of the crate.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::bearer_token;

/// The API keys that may publish; `Debug` shows only how many there are.
///
/// Only SHA-256 digests of the keys are kept. `check` hashes the presented key and compares the
/// 32-byte digests in constant time, so neither a key's bytes nor its length leak through timing.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Builds the set from key strings; empty keys are dropped, so a bare `Bearer` never matches.
    pub fn new<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        let digests = keys
            .into_iter()
            .filter(|key| !key.as_ref().is_empty())
            .map(|key| Sha256::digest(key.as_ref()).into())
            .collect();
        Self { digests }
    }

    /// Builds the set from a key file or variable: one key per line, surrounding whitespace
    /// trimmed, blank lines and lines starting with `#` skipped.
    pub fn from_lines(text: &str) -> Self {
        Self::new(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#')),
        )
    }

    /// Whether no key is configured (publishing is then refused with `ApiDisabled`).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether `authorization` (the header value) is `Bearer <key>` for a configured key.
    ///
    /// The scheme is ASCII case-insensitive (RFC 9110 §11.1), followed by one or more spaces;
    /// trailing spaces and tabs are ignored. A missing header, another scheme, or an empty key is
    /// `false`. Every configured key is compared, with no early exit, so the time taken does not
    /// depend on which key matched.
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        let Some(key) = authorization.and_then(bearer_token) else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(key).into();
        let matched = self.digests.iter().fold(Choice::from(0), |acc, digest| {
            acc | digest.ct_eq(&presented)
        });
        bool::from(matched)
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("keys", &self.digests.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_check() {
        let one = ApiKeys::new(vec![b"s3cret-key".to_vec()]);
        assert_eq!(one.len(), 1);
        assert!(!one.is_empty());
        let yes: &[&[u8]] = &[
            b"Bearer s3cret-key",
            b"bearer s3cret-key",
            b"BEARER s3cret-key",
            b"Bearer   s3cret-key",
            b"Bearer s3cret-key \t",
        ];
        for value in yes {
            assert!(
                one.check(Some(value)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        let no: &[&[u8]] = &[
            b"Bearer s3cret-kez",
            b"Bearer s3cret-ke",
            b"Bearer s3cret-key2",
            b"Bearer S3CRET-KEY",
            b"Bearer ",
            b"Bearer",
            b"Bearers3cret-key",
            b"Bearer\ts3cret-key",
            b"Basic s3cret-key",
            b"Basic czNjcmV0LWtleQ==",
            b"s3cret-key",
            b"Token s3cret-key",
            b"Bearer s3cret key",
            b"",
        ];
        for value in no {
            assert!(
                !one.check(Some(value)),
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
        assert!(!one.check(None));

        let two = ApiKeys::new(["first", "second-key"]);
        assert_eq!(two.len(), 2);
        assert!(two.check(Some(b"Bearer first")));
        assert!(two.check(Some(b"Bearer second-key")));
        assert!(!two.check(Some(b"Bearer third")));
        assert!(!two.check(Some(b"Bearer firstsecond-key")));
    }

    #[test]
    fn api_keys_without_keys_accept_nothing() {
        let none = ApiKeys::new(Vec::<Vec<u8>>::new());
        assert!(none.is_empty());
        assert!(!none.check(Some(b"Bearer x")));
        let only_empty = ApiKeys::new(vec![Vec::new()]);
        assert!(only_empty.is_empty());
        assert!(!only_empty.check(Some(b"Bearer ")));
        assert!(!only_empty.check(Some(b"Bearer")));
    }

    #[test]
    fn api_keys_from_lines_and_debug() {
        let keys = ApiKeys::from_lines("# publishers\n  alpha  \n\r\n\nbeta\r\n#gamma\n");
        assert_eq!(keys.len(), 2);
        assert!(keys.check(Some(b"Bearer alpha")));
        assert!(keys.check(Some(b"Bearer beta")));
        assert!(!keys.check(Some(b"Bearer gamma")));
        assert!(!keys.check(Some(b"Bearer #gamma")));
        let shown = format!("{keys:?}");
        assert!(
            !shown.contains("alpha") && !shown.contains("beta"),
            "{shown}"
        );
        assert!(shown.contains('2'), "{shown}");
        assert!(ApiKeys::from_lines("").is_empty());
        assert!(ApiKeys::from_lines(" \n# only a comment\n").is_empty());
    }
}
