//! Single-use WebSocket tickets (docs/protocol.md §3, method 2): `POST /ws-auth` trades a verified
//! token for 128 random bits from the OS, and the upgrade's `?ticket=` redeems them exactly once.
//! One `TicketStore` is shared by every worker through an `Arc`: 16 mutex-guarded shards picked by
//! the ticket's own random bytes, bounded by one global live count and by quotas of outstanding
//! tickets per user and per client address, so that one user (or one address) can exhaust only
//! its own share. No IO but the OS random
//! source; time comes in as `now` (Unix seconds). Ticket text is never logged nor shown by `Debug`.

use std::collections::HashMap;
use std::collections::hash_map::{Entry as Slot, RandomState};
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use rand::rngs::OsRng;

use super::Identity;

/// Random bytes in a ticket (128 bits).
pub const TICKET_BYTES: usize = 16;
/// Length of a ticket's text: `TICKET_BYTES` in unpadded base64url.
pub const TICKET_LEN: usize = 22;
/// Shards per store; a power of two, so the ticket's first (random) byte picks one.
const SHARDS: usize = 16;
/// A shard is swept of expired tickets after this many inserts, or sooner when over its share.
const SWEEP_EVERY: u32 = 64;
/// What `decode_slice` asks for to decode `TICKET_LEN` characters (its conservative estimate).
const DECODE_BUF: usize = TICKET_LEN.div_ceil(4) * 3;

type Key = [u8; TICKET_BYTES];

/// A freshly issued ticket, for the `201 {"ticket": …, "expires_in": …}` answer.
pub struct Ticket {
    text: String,
    expires_in: u64,
}

impl Ticket {
    /// The ticket's text (22 base64url characters); send it to the client and nowhere else.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Seconds until it expires: the store's TTL, less if the token expires sooner.
    pub fn expires_in(&self) -> u64 {
        self.expires_in
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("text", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why no ticket was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The store holds `capacity` live tickets (or, practically never, the OS random source
    /// failed). The API answers 503.
    #[error("ticket store full")]
    Full,
    /// The user holds `--max-tickets-per-user` outstanding tickets. The API answers 429.
    #[error("too many tickets outstanding for this user")]
    UserQuota,
    /// The client address holds `--max-tickets-per-ip` outstanding tickets. 429.
    #[error("too many tickets outstanding for this address")]
    AddressQuota,
}

/// A ticket that is malformed, unknown, already used or expired; deliberately one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid or expired ticket")]
pub struct TicketError;

struct Entry {
    identity: Identity,
    /// First second at which the ticket no longer redeems.
    expires: u64,
    /// The quota keys this ticket counts against (user, address; 0: none).
    owners: [u64; 2],
}

#[derive(Default)]
struct Shard {
    tickets: HashMap<Key, Entry>,
    /// Inserts since the last sweep.
    inserts: u32,
    /// `now` of the last sweep: sweeping again within the same second reclaims nothing new.
    swept_at: u64,
}

/// Issued, not yet redeemed tickets of every worker (Send + Sync; share it in an `Arc`).
///
/// Invariant: `live` is the number of stored tickets, plus issues between reserving a slot and
/// inserting; it never exceeds `capacity`.
pub struct TicketStore {
    ttl: u64,
    capacity: usize,
    live: AtomicUsize,
    shards: [Mutex<Shard>; SHARDS],
    /// Outstanding tickets per user and per client address, at most (0: no limit).
    per_user: usize,
    per_address: usize,
    /// Quota key → the expiry of each ticket it holds (a handful: the quota bounds it). Expired
    /// ones are dropped when the key issues again, so an unredeemed ticket frees its place
    /// when it expires, whether or not a sweep has reclaimed it.
    quotas: [Mutex<HashMap<u64, Vec<u64>>>; SHARDS],
    /// Keyed per process, so that nobody can aim two users at one quota key.
    keys: RandomState,
}

impl TicketStore {
    /// A store whose tickets live `ttl_secs` and which holds at most `capacity` of them.
    pub fn new(ttl_secs: u64, capacity: usize) -> Self {
        Self {
            ttl: ttl_secs,
            capacity,
            live: AtomicUsize::new(0),
            shards: std::array::from_fn(|_| Mutex::default()),
            per_user: 0,
            per_address: 0,
            quotas: std::array::from_fn(|_| Mutex::default()),
            keys: RandomState::new(),
        }
    }

    /// Bounds the tickets outstanding (issued, not redeemed, not expired) for one user and for
    /// one client address (IPv6 by /64); 0 leaves that one unbounded.
    pub fn with_quotas(mut self, per_user: usize, per_address: usize) -> Self {
        self.per_user = per_user;
        self.per_address = per_address;
        self
    }

    /// Issues a ticket for `identity`, valid from `now` for the TTL but never past `identity.exp`
    /// (a token already at its `exp` gets `expires_in` 0, a ticket that never redeems).
    pub fn issue(&self, identity: Identity, now: u64) -> Result<Ticket, IssueError> {
        self.issue_from(identity, None, now)
    }

    /// [`Self::issue`] for a request from `client`, counted against the user's and the
    /// address's quotas.
    pub fn issue_from(
        &self,
        identity: Identity,
        client: Option<IpAddr>,
        now: u64,
    ) -> Result<Ticket, IssueError> {
        let expires = now.saturating_add(self.ttl).min(identity.exp);
        let user =
            (self.per_user > 0).then(|| self.keys.hash_one(("user", identity.user.as_str())) | 1);
        let address = client
            .filter(|_| self.per_address > 0)
            .map(|ip| self.keys.hash_one(("addr", address_key(ip))) | 1);
        let owners = [user.unwrap_or(0), address.unwrap_or(0)];
        if let Some(key) = user {
            self.hold(key, self.per_user, expires, now)
                .map_err(|()| IssueError::UserQuota)?;
        }
        if let Some(key) = address
            && self.hold(key, self.per_address, expires, now).is_err()
        {
            self.release(owners[0], expires);
            return Err(IssueError::AddressQuota);
        }
        if let Err(full) = self.reserve(now) {
            self.release_all(owners, expires);
            return Err(full);
        }
        let share = self.capacity.div_ceil(SHARDS);
        let key = loop {
            let mut key = Key::default();
            if OsRng.try_fill_bytes(&mut key).is_err() {
                self.live.fetch_sub(1, Ordering::Relaxed);
                self.release_all(owners, expires);
                return Err(IssueError::Full);
            }
            let mut shard = lock(self.shard(&key));
            if shard.inserts >= SWEEP_EVERY || shard.tickets.len() >= share {
                self.sweep(&mut shard, now);
            }
            // A repeat of 128 random bits is practically impossible; it must still not hand
            // someone else's ticket to this identity.
            if let Slot::Vacant(slot) = shard.tickets.entry(key) {
                slot.insert(Entry {
                    identity,
                    expires,
                    owners,
                });
                shard.inserts = shard.inserts.saturating_add(1);
                break key;
            }
        };
        Ok(Ticket {
            text: URL_SAFE_NO_PAD.encode(key),
            expires_in: expires.saturating_sub(now),
        })
    }

    /// Takes the ticket out and returns its identity if it was live at `now` (`now < expires`).
    /// Of concurrent redeems of one ticket exactly one can succeed: removal is under its lock.
    pub fn redeem(&self, ticket: &str, now: u64) -> Result<Identity, TicketError> {
        let key = decode(ticket).ok_or(TicketError)?;
        let entry = lock(self.shard(&key))
            .tickets
            .remove(&key)
            .ok_or(TicketError)?;
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.release_all(entry.owners, entry.expires);
        if now < entry.expires {
            Ok(entry.identity)
        } else {
            Err(TicketError)
        }
    }

    /// Live tickets (issued, not redeemed, not yet swept), for metrics.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Whether no ticket is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts a ticket expiring at `expires` against quota `key`, unless it holds `limit`
    /// tickets that are still live at `now`.
    fn hold(&self, key: u64, limit: usize, expires: u64, now: u64) -> Result<(), ()> {
        let mut quotas = self.quota_shard(key);
        let held = quotas.entry(key).or_default();
        held.retain(|&at| now < at);
        if held.len() >= limit {
            return Err(());
        }
        held.push(expires);
        Ok(())
    }

    /// Gives back the place a ticket expiring at `expires` held under quota `key` (0: none).
    fn release(&self, key: u64, expires: u64) {
        if key == 0 {
            return;
        }
        let mut quotas = self.quota_shard(key);
        if let Slot::Occupied(mut held) = quotas.entry(key) {
            if let Some(i) = held.get().iter().position(|&at| at == expires) {
                held.get_mut().swap_remove(i);
            }
            if held.get().is_empty() {
                held.remove();
            }
        }
    }

    fn release_all(&self, owners: [u64; 2], expires: u64) {
        for key in owners {
            self.release(key, expires);
        }
    }

    fn quota_shard(&self, key: u64) -> MutexGuard<'_, HashMap<u64, Vec<u64>>> {
        self.quotas[(key >> 59) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more ticket against the capacity; when full, first reclaims expired ones.
    fn reserve(&self, now: u64) -> Result<(), IssueError> {
        let take = |n: usize| (n < self.capacity).then_some(n + 1);
        if self
            .live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .is_ok()
        {
            return Ok(());
        }
        // At most once per shard and second, so a full store of live tickets costs little.
        for shard in &self.shards {
            self.sweep(&mut lock(shard), now);
        }
        self.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, take)
            .map(drop)
            .map_err(|_| IssueError::Full)
    }

    fn sweep(&self, shard: &mut Shard, now: u64) {
        if now <= shard.swept_at {
            return;
        }
        let before = shard.tickets.len();
        // (Lock order: a ticket shard, then a quota shard; `issue_from` never holds a quota
        // shard while it takes a ticket shard.)
        shard.tickets.retain(|_, entry| {
            let live = now < entry.expires;
            if !live {
                self.release_all(entry.owners, entry.expires);
            }
            live
        });
        self.live
            .fetch_sub(before - shard.tickets.len(), Ordering::Relaxed);
        shard.swept_at = now;
        shard.inserts = 0;
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }
}

impl fmt::Debug for TicketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketStore")
            .field("ttl_secs", &self.ttl)
            .field("capacity", &self.capacity)
            .field("live", &self.len())
            .finish_non_exhaustive()
    }
}

/// The address a quota counts by: IPv4 (and IPv4-mapped IPv6) whole, IPv6 by its /64, the
/// block one host usually holds.
fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) >> 64 << 64 | 1,
    }
}

/// The key of a ticket's text; `None` unless it is exactly 22 canonical base64url characters.
fn decode(text: &str) -> Option<Key> {
    if text.len() != TICKET_LEN {
        return None;
    }
    let mut buf = [0u8; DECODE_BUF];
    let n = URL_SAFE_NO_PAD.decode_slice(text, &mut buf).ok()?;
    buf.get(..n)?.try_into().ok()
}

/// A ticket as a client presented it, kept inline while its connection waits for the
/// redemption (no allocation, 22 bytes). `Debug` never shows it: a ticket is a credential.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TicketId([u8; TICKET_LEN]);

impl TicketId {
    /// The ticket in `text`, or `None` unless it is exactly 22 canonical base64url characters
    /// (such a text can never be redeemed).
    pub fn parse(text: &str) -> Option<Self> {
        decode(text)?;
        text.as_bytes().try_into().ok().map(Self)
    }

    /// The ticket's text.
    pub fn as_str(&self) -> &str {
        // Checked base64url (ASCII) in `parse`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for TicketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketId([redacted])")
    }
}

/// The shard's guard; a poisoned lock is still consistent (no update panics half-way).
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Barrier;

    use super::super::groups::GroupPatterns;
    use super::super::jwt::InlineStr;
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn identity(user: &str, exp: u64) -> Identity {
        Identity {
            user: InlineStr::new(user).unwrap(),
            exp,
            jti: InlineStr::new("j-1"),
            iat: NOW - 60,
            groups: GroupPatterns::parse(["room.*"]).unwrap(),
        }
    }

    /// One user (or one address) can fill only its own quota: others still get tickets, and a
    /// place frees when a ticket is redeemed or expires.
    #[test]
    fn quotas_bound_one_user_and_one_address() {
        let store = TicketStore::new(10, 1000).with_quotas(3, 5);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<Ticket> = (0..3)
            .map(|_| {
                store
                    .issue_from(identity("1", NOW + 3600), Some(a), NOW)
                    .unwrap()
            })
            .collect();
        let refused = store.issue_from(identity("1", NOW + 3600), Some(b), NOW);
        assert_eq!(refused.unwrap_err(), IssueError::UserQuota);
        // Another user from the same address: the address has room for two more.
        for _ in 0..2 {
            store
                .issue_from(identity("2", NOW + 3600), Some(a), NOW)
                .unwrap();
        }
        let refused = store.issue_from(identity("3", NOW + 3600), Some(a), NOW);
        assert_eq!(refused.unwrap_err(), IssueError::AddressQuota);
        // A refusal by the address gave back the user's place it had taken.
        store
            .issue_from(identity("3", NOW + 3600), Some(b), NOW)
            .unwrap();
        store
            .issue_from(identity("3", NOW + 3600), Some(b), NOW)
            .unwrap();
        store
            .issue_from(identity("3", NOW + 3600), Some(b), NOW)
            .unwrap();
        assert_eq!(
            store
                .issue_from(identity("3", NOW + 3600), Some(b), NOW)
                .unwrap_err(),
            IssueError::UserQuota
        );
        // IPv6 counts by /64.
        let v6 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let many = TicketStore::new(10, 1000).with_quotas(0, 1);
        many.issue_from(identity("9", NOW + 60), v6("2001:db8::1"), NOW)
            .unwrap();
        assert_eq!(
            many.issue_from(identity("9", NOW + 60), v6("2001:db8::ffff"), NOW)
                .unwrap_err(),
            IssueError::AddressQuota
        );
        many.issue_from(identity("9", NOW + 60), v6("2001:db8:0:1::1"), NOW)
            .unwrap();
        // Redeeming frees a place at once; expiry frees the others.
        store.redeem(held[0].as_str(), NOW + 1).unwrap();
        store
            .issue_from(identity("1", NOW + 3600), Some(b), NOW + 1)
            .unwrap();
        assert_eq!(
            store
                .issue_from(identity("1", NOW + 3600), Some(b), NOW + 9)
                .unwrap_err(),
            IssueError::UserQuota
        );
        store
            .issue_from(identity("1", NOW + 3600), Some(b), NOW + 10)
            .unwrap();
        assert_eq!(store.len(), 9, "quotas never count a ticket twice");
    }

    /// Expired tickets that nobody redeems leave no quota entry behind once swept.
    #[test]
    fn swept_tickets_free_their_quota_entries() {
        let store = TicketStore::new(1, 10_000).with_quotas(2, 0);
        for user in 0..200 {
            let who = identity(&user.to_string(), NOW + 3600);
            store.issue_from(who, None, NOW).unwrap();
        }
        for shard in &store.shards {
            store.sweep(&mut lock(shard), NOW + 1);
        }
        assert_eq!(store.len(), 0);
        let entries: usize = store.quotas.iter().map(|q| q.lock().unwrap().len()).sum();
        assert_eq!(entries, 0);
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TicketStore>();
    }

    #[test]
    fn round_trip_returns_the_identity_once() {
        let store = TicketStore::new(10, 100);
        let who = identity("42", NOW + 3600);
        let ticket = store.issue(who.clone(), NOW).unwrap();
        assert_eq!(ticket.expires_in(), 10);
        assert_eq!(store.len(), 1);
        assert_eq!(store.redeem(ticket.as_str(), NOW + 1), Ok(who));
        assert_eq!(store.len(), 0);
        assert_eq!(store.redeem(ticket.as_str(), NOW + 1), Err(TicketError));
    }

    #[test]
    fn expires_at_issued_plus_ttl() {
        let store = TicketStore::new(10, 100);
        let early = store.issue(identity("1", NOW + 3600), NOW).unwrap();
        let late = store.issue(identity("1", NOW + 3600), NOW).unwrap();
        assert!(store.redeem(early.as_str(), NOW + 9).is_ok());
        assert_eq!(store.redeem(late.as_str(), NOW + 10), Err(TicketError));
        assert_eq!(store.len(), 0, "an expired redeem still removes the ticket");
    }

    /// A ticket redeems only in the seconds before `issued + ttl`: at that second and any
    /// time after it, it is refused (and gone); one redeemed in time is single use.
    #[test]
    fn a_ticket_not_redeemed_within_its_ttl_is_refused_at_and_after_it() {
        let store = TicketStore::new(1, 100);
        let issue = || store.issue(identity("1", NOW + 3600), NOW).unwrap();
        let (in_time, at_ttl, long_after) = (issue(), issue(), issue());
        assert_eq!(in_time.expires_in(), 1);
        assert!(store.redeem(in_time.as_str(), NOW).is_ok());
        assert_eq!(store.redeem(in_time.as_str(), NOW), Err(TicketError));
        assert_eq!(store.redeem(at_ttl.as_str(), NOW + 1), Err(TicketError));
        assert_eq!(store.redeem(at_ttl.as_str(), NOW), Err(TicketError));
        assert_eq!(
            store.redeem(long_after.as_str(), NOW + 3600),
            Err(TicketError)
        );
        assert!(store.is_empty());
    }

    /// `--ticket-ttl` is the TTL of the store the gateway's settings hold.
    #[test]
    fn the_ticket_ttl_flag_sets_how_long_tickets_redeem() {
        use crate::config::{Config, DevSecret, Env};
        use clap::Parser as _;
        let env = Env {
            jwt_secret: Some("s3cret".into()),
            ..Env::default()
        };
        let argv = ["wsgate", "--allowed-origins", "*", "--ticket-ttl", "3"];
        let settings = Config::try_parse_from(argv)
            .unwrap()
            .into_settings(&env, 1, || DevSecret(Vec::new()))
            .unwrap();
        let tables = crate::tables::Tables::new(&settings.tables);
        let store = &tables.tickets;
        let issue = || store.issue(identity("1", NOW + 3600), NOW).unwrap();
        let (in_time, late) = (issue(), issue());
        assert_eq!(in_time.expires_in(), 3);
        assert!(store.redeem(in_time.as_str(), NOW + 2).is_ok());
        assert_eq!(store.redeem(late.as_str(), NOW + 3), Err(TicketError));
    }

    #[test]
    fn lifetime_is_capped_at_token_exp() {
        let store = TicketStore::new(10, 100);
        let ticket = store.issue(identity("1", NOW + 4), NOW).unwrap();
        assert_eq!(ticket.expires_in(), 4);
        assert_eq!(store.redeem(ticket.as_str(), NOW + 4), Err(TicketError));
        let ticket = store.issue(identity("1", NOW + 4), NOW).unwrap();
        assert!(store.redeem(ticket.as_str(), NOW + 3).is_ok());
        let dead = store.issue(identity("1", NOW), NOW).unwrap();
        assert_eq!(dead.expires_in(), 0);
        assert_eq!(store.redeem(dead.as_str(), NOW), Err(TicketError));
    }

    #[test]
    fn unknown_and_malformed_tickets_are_refused() {
        let store = TicketStore::new(10, 100);
        let ticket = store.issue(identity("1", NOW + 3600), NOW).unwrap();
        let text = ticket.as_str();
        let mut flipped = text.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        // The last character carries 4 spare bits; non-zero ones are not canonical.
        let noncanonical = format!("{}B", &text[..TICKET_LEN - 1]);
        for bad in [
            "",
            "AAAAAAAAAAAAAAAAAAAAAA",
            flipped.as_str(),
            noncanonical.as_str(),
            &text[..TICKET_LEN - 1],
            &format!("{text}A"),
            &format!("{text}=="),
            "AAAAAAAAAAAAAAAAAAAA+A",
            "AAAAAAAAAAAAAAAAAAAA A",
            "ééééééééééé",
        ] {
            assert_eq!(store.redeem(bad, NOW), Err(TicketError), "{bad:?}");
        }
        assert_eq!(store.len(), 1);
        assert!(store.redeem(text, NOW).is_ok());
        assert_eq!(TicketError.to_string(), "invalid or expired ticket");
    }

    #[test]
    fn capacity_is_enforced_and_expired_tickets_reclaimed() {
        let store = TicketStore::new(10, 40);
        let tickets: Vec<_> = (0..40)
            .map(|_| store.issue(identity("1", NOW + 3600), NOW).unwrap())
            .collect();
        assert_eq!(
            store.issue(identity("1", NOW + 3600), NOW).unwrap_err(),
            IssueError::Full
        );
        assert_eq!(
            store.issue(identity("1", NOW + 3600), NOW + 9).unwrap_err(),
            IssueError::Full
        );
        assert_eq!(store.len(), 40);
        let fresh = store.issue(identity("2", NOW + 3600), NOW + 10).unwrap();
        assert_eq!(store.len(), 1, "the full store swept every expired ticket");
        assert_eq!(
            store.redeem(tickets[0].as_str(), NOW + 10),
            Err(TicketError)
        );
        assert_eq!(store.redeem(fresh.as_str(), NOW + 10).unwrap().user, "2");
    }

    #[test]
    fn inserts_sweep_their_shard() {
        let store = TicketStore::new(1, 100_000);
        for _ in 0..2_000 {
            store.issue(identity("1", NOW + 3600), NOW).unwrap();
        }
        for _ in 0..(SHARDS as u32 * SWEEP_EVERY * 4) {
            let ticket = store.issue(identity("1", NOW + 3600), NOW + 5).unwrap();
            store.redeem(ticket.as_str(), NOW + 5).unwrap();
        }
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn tickets_are_random_and_long_enough() {
        let store = TicketStore::new(10, 10_000);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let ticket = store.issue(identity("1", NOW + 3600), NOW).unwrap();
            assert!(ticket.as_str().len() >= 22);
            assert!(seen.insert(ticket.as_str().to_owned()));
        }
        assert_eq!(store.len(), 10_000);
    }

    #[test]
    fn debug_never_shows_the_ticket() {
        let store = TicketStore::new(10, 10);
        let ticket = store.issue(identity("1", NOW + 3600), NOW).unwrap();
        let shown = format!("{ticket:?} {store:?}");
        assert!(!shown.contains(ticket.as_str()), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn concurrent_redeems_have_exactly_one_winner() {
        const THREADS: usize = 8;
        const TICKETS: usize = 4_000;
        let store = TicketStore::new(10, TICKETS);
        let tickets: Vec<_> = (0..TICKETS)
            .map(|i| {
                let who = identity(&i.to_string(), NOW + 3600);
                store.issue(who, NOW).unwrap()
            })
            .collect();
        let barrier = Barrier::new(THREADS);
        let wins: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let won = tickets.iter().enumerate().filter_map(|(i, t)| {
                            let who = store.redeem(t.as_str(), NOW + 1).ok()?;
                            assert_eq!(who.user, i.to_string().as_str());
                            Some(i)
                        });
                        won.collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut winners = vec![0usize; TICKETS];
        for i in wins.into_iter().flatten() {
            winners[i] += 1;
        }
        assert!(
            winners.iter().all(|&n| n == 1),
            "a ticket with 0 or 2+ winners"
        );
        assert_eq!(store.len(), 0);
    }
}
