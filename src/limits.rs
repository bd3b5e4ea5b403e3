//! Connection limits: the per-connection message rate ([`TokenBucket`], close 4429 in
//! docs/protocol.md §3), per-client-address caps on open connections and on new upgrades
//! ([`IpLimits`], the per-IP `503` with `Retry-After` of §1), and the proxies allowed to name
//! the client in `X-Forwarded-For` ([`TrustedProxies`]).
//! Pure code: clocks are arguments in milliseconds, no IO; uses only std and `thiserror`.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::hash::RandomState;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Milli-tokens per token: whole milliseconds times a per-second rate are exact milli-tokens,
/// so refilling never loses a fraction.
const MILLI: u32 = 1000;

/// The largest burst a bucket holds (its milli-tokens fit a `u32`); larger bursts are clamped.
pub const MAX_BURST: u32 = u32::MAX / MILLI;

/// How far [`TokenBucket`]'s clock may step back and still be read as a step back rather than
/// as the 32-bit clock having wrapped (see [`TokenBucket`]).
const BACKWARD_SLACK_MS: u32 = 60_000;

/// A bucket's size in milli-tokens; a burst of 0 is treated as 1 so that anything passes.
fn bucket_size(burst: u32) -> u32 {
    burst.clamp(1, MAX_BURST) * MILLI
}

/// `milli_tokens` plus `elapsed_ms` of refill at `rate_per_sec`, capped at `capacity`.
fn refill(milli_tokens: u32, elapsed_ms: u64, rate_per_sec: u32, capacity: u32) -> u32 {
    let added = elapsed_ms.saturating_mul(u64::from(rate_per_sec));
    let total = u64::from(milli_tokens).saturating_add(added);
    u32::try_from(total.min(u64::from(capacity))).unwrap_or(capacity)
}

/// A connection's message budget: up to `burst` messages at once, refilled at
/// `rate_per_sec`; a message over it closes the connection with 4429 (docs/protocol.md §3).
///
/// Eight bytes, because one lives in every connection: the budget in milli-tokens and the low
/// 32 bits of the millisecond clock at the last refill. The clock is the caller's (any
/// monotonic millisecond count, e.g. since a per-worker epoch; only differences are used) and
/// may wrap at 2^32 ms (49.7 days): a difference is read modulo 2^32, so
/// - a step back of up to a minute counts as no time passing (no refill, and the later time
///   is kept, so nothing is counted twice);
/// - any other difference counts as time passing forward. A larger step back therefore refills
///   as if the clock had wrapped, and a connection that sends nothing for a multiple of
///   49.7 days minus a minute (plus up to `burst / rate` seconds) is credited too little. With a
///   monotonic clock the first cannot happen and the second costs at most one early 4429;
///   that is the price of four bytes instead of twelve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    milli_tokens: u32,
    last_ms: u32,
}

impl TokenBucket {
    /// A full bucket: `burst` messages may be sent at once (at most [`MAX_BURST`]).
    pub fn new(burst: u32, now_ms: u64) -> Self {
        Self {
            milli_tokens: bucket_size(burst),
            // Truncation intended: only differences modulo 2^32 are used.
            last_ms: now_ms as u32,
        }
    }

    /// Refills for the time since the last call, then takes one message's token; `false` means
    /// the message is over the limit (the bucket is unchanged but for the refill). A rate of 0
    /// means unlimited. `rate_per_sec` and `burst` are the configured values, passed on every
    /// call so the bucket need not store them; a burst of 0 counts as 1.
    pub fn take(&mut self, rate_per_sec: u32, burst: u32, now_ms: u64) -> bool {
        if rate_per_sec == 0 {
            return true;
        }
        let cap = bucket_size(burst);
        let now = now_ms as u32;
        let elapsed = now.wrapping_sub(self.last_ms);
        if elapsed <= u32::MAX - BACKWARD_SLACK_MS {
            self.milli_tokens = refill(self.milli_tokens, u64::from(elapsed), rate_per_sec, cap);
            self.last_ms = now;
        } else {
            // The clock stepped back: no time has passed. The burst may have shrunk, though.
            self.milli_tokens = self.milli_tokens.min(cap);
        }
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

/// Why [`IpLimits::admit`] refused a connection; the answer is always `503 Service Unavailable`
/// with `Retry-After` (docs/protocol.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The address already has `max_concurrent` open connections.
    #[error("too many open connections from this client address")]
    Concurrent,
    /// The address used up its burst of new connections.
    #[error("too many new connections per second from this client address")]
    Rate {
        /// Whole seconds until one more connection is allowed (at least 1).
        retry_after_secs: u32,
    },
    /// The table already tracks `capacity` addresses (an address flood).
    #[error("too many client addresses at once")]
    TooManyClients,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        503
    }

    /// The `Retry-After` seconds to send: the computed wait for [`Refusal::Rate`]; for the
    /// others, whose end cannot be known, `otherwise` (the configured value), at least 1.
    pub fn retry_after_secs(self, otherwise: u32) -> u32 {
        match self {
            Self::Rate { retry_after_secs } => retry_after_secs,
            Self::Concurrent | Self::TooManyClients => otherwise.max(1),
        }
    }
}

/// Shards of the address table: workers admitting different addresses rarely share a lock.
const SHARDS: usize = 32;

/// What a client is limited as: an IPv4 address, or the /64 prefix of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u64),
}

impl Key {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            // The /64 prefix: the high half of the address.
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// One address's open connections and upgrade budget (16 bytes).
#[derive(Debug)]
struct Entry {
    open: u32,
    milli_tokens: u32,
    last_ms: u64,
}

impl Entry {
    fn refill(&mut self, rate_per_sec: u32, capacity: u32, now_ms: u64) {
        if rate_per_sec != 0 && now_ms > self.last_ms {
            let elapsed = now_ms - self.last_ms;
            self.milli_tokens = refill(self.milli_tokens, elapsed, rate_per_sec, capacity);
            self.last_ms = now_ms;
        }
    }
}

/// One lock and its part of the table, on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<HashMap<Key, Entry>>);

impl Shard {
    /// The table stays consistent if a holder panicked (no update spans a panic point), so a
    /// poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Per-client limits on open connections and on new connections per second, shared by every
/// worker in an `Arc` and sharded by address so workers rarely contend.
///
/// - **Who is a client.** An IPv4 address; for IPv6 its /64 prefix (one subscriber or host
///   usually holds a whole /64, so limiting single addresses would limit nothing). An
///   IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4 peers)
///   counts as the IPv4 address.
/// - **The clock.** `now_ms` must come from one monotonic millisecond clock shared by all
///   callers (e.g. milliseconds since a process-wide `Instant`), not a per-worker epoch.
/// - **Bounded memory.** An address is tracked while it has an open connection or its upgrade
///   bucket is not full again; it is dropped when its last connection closes (if the bucket is
///   full by then) or by [`IpLimits::sweep`], which the runtime should call now and then
///   (say once a second). At most `capacity` addresses are tracked: a new address beyond that
///   is refused with [`Refusal::TooManyClients`] (after dropping the idle addresses of its
///   shard). Failing closed only happens under a flood of distinct addresses, and failing open
///   would lift every per-address limit exactly when they matter.
pub struct IpLimits {
    max_concurrent: u32,
    upgrades_per_sec: u32,
    /// The upgrade bucket's size in milli-tokens.
    capacity_milli: u32,
    capacity: usize,
    shards: [Shard; SHARDS],
    /// Picks the shard; keyed per process so an attacker cannot aim at one shard.
    picker: RandomState,
    /// Addresses in all shards; changed only under a shard's lock.
    tracked: AtomicUsize,
    /// The latest `now_ms` seen, the clock of [`IpSlot`]'s release (which is given none).
    clock_ms: AtomicU64,
    refused_concurrent: AtomicU64,
    refused_rate: AtomicU64,
    refused_full: AtomicU64,
}

impl IpLimits {
    /// `max_concurrent` open connections and `upgrades_per_sec` new ones (with bursts of up to
    /// `burst`, 0 counting as 1, at most [`MAX_BURST`]) per client; 0 means unlimited for
    /// either. `capacity` bounds the addresses tracked at once (0: unbounded).
    pub fn new(max_concurrent: u32, upgrades_per_sec: u32, burst: u32, capacity: usize) -> Self {
        Self {
            max_concurrent,
            upgrades_per_sec,
            capacity_milli: bucket_size(burst),
            capacity: if capacity == 0 { usize::MAX } else { capacity },
            shards: std::array::from_fn(|_| Shard::default()),
            picker: RandomState::new(),
            tracked: AtomicUsize::new(0),
            clock_ms: AtomicU64::new(0),
            refused_concurrent: AtomicU64::new(0),
            refused_rate: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
        }
    }

    /// Whether any limit is configured; without one, nothing is tracked.
    pub fn is_limited(&self) -> bool {
        self.max_concurrent != 0 || self.upgrades_per_sec != 0
    }

    /// Counts one more open connection from `ip` and takes one of its upgrade tokens, or says
    /// which limit refuses it (a refused connection costs nothing). The connection counts until
    /// the returned slot is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<IpSlot, Refusal> {
        self.take(ip, now_ms, true, true)?;
        Ok(self.slot(ip))
    }

    /// Counts one more open connection from `ip` (an accepted socket, before any byte of its
    /// request), or refuses it when the address has `--max-connections-per-ip` open already.
    /// Takes no upgrade token: [`Self::upgrade`] does, when the connection asks to upgrade.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, now_ms: u64) -> Result<IpSlot, Refusal> {
        self.take(ip, now_ms, true, false)?;
        Ok(self.slot(ip))
    }

    /// Takes one of `ip`'s upgrade tokens for a connection already counted by
    /// [`Self::connect`], or refuses it when the address upgrades faster than its rate.
    pub fn upgrade(&self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        self.take(ip, now_ms, false, true)
    }

    fn slot(self: &Arc<Self>, ip: IpAddr) -> IpSlot {
        IpSlot {
            limits: Arc::clone(self),
            key: Key::of(ip),
        }
    }

    /// Checks and takes what is asked: an open-connection place, an upgrade token, or both.
    fn take(&self, ip: IpAddr, now_ms: u64, open: bool, token: bool) -> Result<(), Refusal> {
        if !self.is_limited() {
            return Ok(());
        }
        let key = Key::of(ip);
        self.clock_ms.fetch_max(now_ms, Ordering::Relaxed);
        let mut table = self.shard(key).lock();
        if !table.contains_key(&key) && !self.reserve() {
            self.drop_idle(&mut table, now_ms);
            if !self.reserve() {
                self.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::TooManyClients);
            }
        }
        let entry = table.entry(key).or_insert(Entry {
            open: 0,
            milli_tokens: self.capacity_milli,
            last_ms: now_ms,
        });
        entry.refill(self.upgrades_per_sec, self.capacity_milli, now_ms);
        let refusal = if open && self.max_concurrent != 0 && entry.open >= self.max_concurrent {
            self.refused_concurrent.fetch_add(1, Ordering::Relaxed);
            Some(Refusal::Concurrent)
        } else if token && self.upgrades_per_sec != 0 && entry.milli_tokens < MILLI {
            self.refused_rate.fetch_add(1, Ordering::Relaxed);
            let wait_ms = (MILLI - entry.milli_tokens).div_ceil(self.upgrades_per_sec);
            Some(Refusal::Rate {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            // A new entry that took nothing would wait for a sweep: drop it now.
            if self.idle(entry, now_ms) {
                table.remove(&key);
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(refusal);
        }
        if token && self.upgrades_per_sec != 0 {
            entry.milli_tokens -= MILLI;
        }
        if open {
            entry.open = entry.open.saturating_add(1);
        }
        if self.idle(entry, now_ms) {
            table.remove(&key);
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Drops every address with no open connection and a full bucket, and gives back the
    /// memory of emptied shards; call it now and then (e.g. once a second from one worker).
    pub fn sweep(&self, now_ms: u64) {
        if !self.is_limited() {
            return;
        }
        let now_ms = self
            .clock_ms
            .fetch_max(now_ms, Ordering::Relaxed)
            .max(now_ms);
        for shard in &self.shards {
            let mut table = shard.lock();
            self.drop_idle(&mut table, now_ms);
            // Shrink only well below capacity, so steady churn does not reallocate.
            if table.capacity() > 64 && table.len() * 4 < table.capacity() {
                let keep = table.len() * 2;
                table.shrink_to(keep);
            }
        }
    }

    /// Addresses (IPv4 addresses and IPv6 /64s) tracked now, for a gauge and for tests.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Connections refused so far because of (the concurrent cap, the upgrade rate).
    pub fn refused(&self) -> (u64, u64) {
        (
            self.refused_concurrent.load(Ordering::Relaxed),
            self.refused_rate.load(Ordering::Relaxed),
        )
    }

    /// Connections refused so far because the table was full ([`Refusal::TooManyClients`]).
    pub fn refused_too_many_clients(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    fn shard(&self, key: Key) -> &Shard {
        &self.shards[self.picker.hash_one(key) as usize % SHARDS]
    }

    /// Takes one of the `capacity` places for a new address.
    fn reserve(&self) -> bool {
        if self.tracked.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.tracked.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Drops the entries of one shard that have no open connection and a full bucket.
    fn drop_idle(&self, table: &mut HashMap<Key, Entry>, now_ms: u64) {
        let before = table.len();
        table.retain(|_, entry| !self.idle(entry, now_ms));
        self.tracked
            .fetch_sub(before - table.len(), Ordering::Relaxed);
    }

    /// Whether an entry holds no information: no open connection and a full bucket.
    fn idle(&self, entry: &mut Entry, now_ms: u64) -> bool {
        entry.refill(self.upgrades_per_sec, self.capacity_milli, now_ms);
        entry.open == 0 && (self.upgrades_per_sec == 0 || entry.milli_tokens >= self.capacity_milli)
    }

    /// Ends one connection counted by [`IpLimits::admit`].
    fn release(&self, key: Key) {
        if !self.is_limited() {
            return;
        }
        let now_ms = self.clock_ms.load(Ordering::Relaxed);
        let mut table = self.shard(key).lock();
        let Some(entry) = table.get_mut(&key) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if self.idle(entry, now_ms) {
            table.remove(&key);
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl fmt::Debug for IpLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpLimits")
            .field("max_concurrent", &self.max_concurrent)
            .field("upgrades_per_sec", &self.upgrades_per_sec)
            .field("burst", &(self.capacity_milli / MILLI))
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

/// One open connection counted against its client address; dropping it ends the count.
#[derive(Debug)]
pub struct IpSlot {
    limits: Arc<IpLimits>,
    key: Key,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

/// The peers allowed to name the client in `X-Forwarded-For` (`--trusted-proxies`): addresses
/// and CIDR ranges, parsed once at start-up.
///
/// - Items are `10.0.0.0/8`, `127.0.0.1`, `::1`, `fd00::/8` (surrounding whitespace is
///   ignored). Host bits under the prefix are accepted and masked (`10.1.2.3/8` is
///   `10.0.0.0/8`), as most proxies' and firewalls' configurations do. No brackets, ports or
///   zone ids.
/// - IPv4 and IPv4-mapped IPv6 addresses are the same addresses: `127.0.0.1` also trusts a
///   peer reported as `::ffff:127.0.0.1`, and an IPv6 range covering `::ffff:0:0/96` (such as
///   `::/0`) covers all of IPv4 too.
/// - Empty means `X-Forwarded-For` is never used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<Net>,
}

/// A range in the IPv6 space, IPv4 addresses taken as IPv4-mapped; `addr` has no bit outside
/// `mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: u128,
    mask: u128,
}

/// The address as 128 bits, IPv4 as IPv4-mapped IPv6.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl TrustedProxies {
    /// Parses the configured items; the error names the first bad one and what is wrong.
    pub fn parse(items: &[impl AsRef<str>]) -> Result<Self, String> {
        let nets = items
            .iter()
            .map(|item| {
                let item = item.as_ref();
                parse_net(item).map_err(|reason| format!("trusted proxy {item:?}: {reason}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = bits(ip);
        self.nets.iter().any(|net| ip & net.mask == net.addr)
    }

    /// The client's address, given the TCP peer and every `X-Forwarded-For` header value in
    /// the order received. Without allocating:
    ///
    /// - a peer that is not trusted is the client, whatever the headers say;
    /// - otherwise the comma-separated entries of all values, read as one list, are walked
    ///   from the right (the entry the nearest proxy appended) and trusted entries are
    ///   skipped: the first untrusted entry is the client. Entries to its left were written
    ///   by the client itself and are never used;
    /// - if every entry is trusted, the leftmost is the client (and the peer if there are no
    ///   entries);
    /// - an entry that is not a bare IPv4 or IPv6 address (`unknown`, a port such as
    ///   `192.0.2.1:4711` or `[2001:db8::1]:4711`, an obfuscated identifier, non-UTF-8) stops
    ///   the walk: the last address read before it (trusted, necessarily), or the peer, is the
    ///   client. Spaces and tabs around entries and empty entries are ignored (RFC 9110
    ///   §5.6.1). The de-facto format written by nginx, HAProxy, Envoy and the cloud load
    ///   balancers is bare addresses; proxies that append ports are not supported.
    ///
    /// The address is returned as written (an IPv4-mapped address stays IPv6).
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        for value in forwarded_for.iter().rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                let Some(ip) = std::str::from_utf8(entry)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                else {
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

/// One `--trusted-proxies` item: an address, or an address and a prefix length.
fn parse_net(item: &str) -> Result<Net, &'static str> {
    let item = item.trim();
    if item.is_empty() {
        return Err("empty item");
    }
    let (addr, prefix) = match item.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (item, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        "not an IP address or CIDR range (write e.g. `10.0.0.0/8`, `127.0.0.1`, `::1`, \
         `fd00::/8`)"
    })?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => width,
        Some(prefix) => {
            if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("the prefix length after `/` must be a decimal number");
            }
            let len: u32 = prefix
                .parse()
                .map_err(|_| "the prefix length after `/` must be a decimal number")?;
            if len > width {
                return Err(if width == 32 {
                    "prefix length over 32 for an IPv4 address"
                } else {
                    "prefix length over 128 for an IPv6 address"
                });
            }
            len
        }
    };
    // In the IPv6 space an IPv4 /n is a /(96 + n) of ::ffff:0:0/96.
    let len = len + (128 - width);
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    Ok(Net {
        addr: bits(addr) & mask,
        mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("test address {s}"))
    }

    // ---- TokenBucket ----

    #[test]
    fn bucket_is_small() {
        assert_eq!(size_of::<TokenBucket>(), 8);
    }

    #[test]
    fn bucket_starts_full_and_allows_the_burst() {
        let mut b = TokenBucket::new(3, 1_000);
        assert!(b.take(10, 3, 1_000));
        assert!(b.take(10, 3, 1_000));
        assert!(b.take(10, 3, 1_000));
        assert!(!b.take(10, 3, 1_000));
        // Refused takes cost nothing: one token back after 100 ms at 10/s.
        assert!(!b.take(10, 3, 1_099));
        assert!(b.take(10, 3, 1_100));
        assert!(!b.take(10, 3, 1_100));
    }

    #[test]
    fn bucket_refills_at_the_rate_with_fractions_kept() {
        // 3 per second: one token every 333.3 ms; fractions carry over (below the cap).
        let mut b = TokenBucket::new(2, 0);
        assert!(b.take(3, 2, 0));
        assert!(b.take(3, 2, 0));
        assert!(!b.take(3, 2, 333));
        assert!(b.take(3, 2, 334));
        let mut passed = 0;
        for ms in 335..=10_334 {
            passed += u32::from(b.take(3, 2, ms));
        }
        assert_eq!(passed, 30);
    }

    #[test]
    fn bucket_refill_is_capped_at_the_burst() {
        let mut b = TokenBucket::new(2, 0);
        assert!(b.take(1, 2, 0));
        assert!(b.take(1, 2, 0));
        // An hour idle gives back the burst, not 3600 tokens.
        let t = 3_600_000;
        assert!(b.take(1, 2, t));
        assert!(b.take(1, 2, t));
        assert!(!b.take(1, 2, t));
    }

    #[test]
    fn bucket_burst_zero_counts_as_one_and_huge_is_clamped() {
        let mut b = TokenBucket::new(0, 0);
        assert!(b.take(1, 0, 0));
        assert!(!b.take(1, 0, 0));
        let mut b = TokenBucket::new(u32::MAX, 0);
        assert!(b.take(1, u32::MAX, 0));
        assert!(b.take(u32::MAX, u32::MAX, u64::MAX));
    }

    #[test]
    fn bucket_rate_zero_is_unlimited() {
        let mut b = TokenBucket::new(1, 0);
        for _ in 0..10_000 {
            assert!(b.take(0, 1, 0));
        }
    }

    #[test]
    fn bucket_clock_stepping_back_refills_nothing() {
        let mut b = TokenBucket::new(2, 10_000);
        assert!(b.take(1, 2, 10_000));
        assert!(b.take(1, 2, 10_000));
        assert!(!b.take(1, 2, 9_000));
        assert!(!b.take(1, 2, 5_000));
        // The later time was kept: the token comes back a second after 10 000, not after 5 000.
        assert!(!b.take(1, 2, 10_999));
        assert!(b.take(1, 2, 11_000));
    }

    #[test]
    fn bucket_survives_the_32_bit_clock_wrap() {
        let start = u64::from(u32::MAX) - 500;
        let mut b = TokenBucket::new(1, start);
        assert!(b.take(1, 1, start));
        assert!(!b.take(1, 1, start + 999));
        assert!(b.take(1, 1, start + 1_000));
        assert!(!b.take(1, 1, start + 1_001));
        // Far past the wrap of a 64-bit clock's low half, still exact.
        let later = (7 << 32) + 123;
        let mut b = TokenBucket::new(1, later - 1);
        assert!(b.take(1, 1, later));
        assert!(!b.take(1, 1, later + 999));
        assert!(b.take(1, 1, later + 1_000));
    }

    #[test]
    fn bucket_shrinking_burst_applies_on_the_next_take() {
        let mut b = TokenBucket::new(5, 0);
        assert!(b.take(1, 1, 0));
        assert!(!b.take(1, 1, 0));
    }

    // ---- IpLimits ----

    fn limits(max: u32, rate: u32, burst: u32, cap: usize) -> Arc<IpLimits> {
        Arc::new(IpLimits::new(max, rate, burst, cap))
    }

    #[test]
    fn ip_limits_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<IpLimits>();
        check::<IpSlot>();
    }

    #[test]
    fn concurrent_cap_and_release_on_drop() {
        let l = limits(2, 0, 1, 100);
        let a = ip("192.0.2.1");
        let s1 = l.admit(a, 0);
        let s2 = l.admit(a, 0);
        assert!(s1.is_ok() && s2.is_ok());
        let refused = l.admit(a, 0);
        assert_eq!(refused.as_ref().err(), Some(&Refusal::Concurrent));
        assert_eq!(refused.err().map(|r| r.retry_after_secs(5)), Some(5));
        // Another address is not affected.
        let other = l.admit(ip("192.0.2.2"), 0);
        assert!(other.is_ok());
        drop(s1);
        let s3 = l.admit(a, 0);
        assert!(s3.is_ok());
        assert_eq!(l.refused(), (1, 0));
        drop((s2, s3, other));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn upgrade_rate_with_retry_after() {
        let l = limits(0, 1, 2, 100);
        let a = ip("198.51.100.7");
        let _s1 = l.admit(a, 0);
        let _s2 = l.admit(a, 0);
        assert_eq!(
            l.admit(a, 0).err(),
            Some(Refusal::Rate {
                retry_after_secs: 1
            })
        );
        // Half a second later, half a token: still 1 second (rounded up).
        assert_eq!(
            l.admit(a, 500).err().map(|r| r.retry_after_secs(9)),
            Some(1)
        );
        let s3 = l.admit(a, 1_000);
        assert!(s3.is_ok());
        assert_eq!(l.refused(), (0, 2));

        // Rates below one per second are not expressible; waits are whole seconds, at least 1.
        let l = limits(0, 3, 1, 100);
        let _s = l.admit(a, 0);
        assert_eq!(
            l.admit(a, 1).err(),
            Some(Refusal::Rate {
                retry_after_secs: 1
            })
        );
        assert!(l.admit(a, 334).is_ok());
    }

    #[test]
    fn retry_after_counts_whole_seconds_up() {
        // Burst 1, rate 1: after 100 ms, 900 ms remain -> 1 s. No partial tokens over 1 s exist
        // at rate >= 1, so the wait is always 1 s; check the refusal really carries it.
        let l = limits(0, 1, 1, 10);
        let a = ip("203.0.113.5");
        let _s = l.admit(a, 0);
        match l.admit(a, 100) {
            Err(Refusal::Rate { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected a rate refusal, got {other:?}"),
        }
    }

    #[test]
    fn concurrent_refusal_takes_no_token() {
        let l = limits(1, 1, 2, 10);
        let a = ip("192.0.2.9");
        let s = l.admit(a, 0);
        assert!(s.is_ok());
        assert_eq!(l.admit(a, 0).err(), Some(Refusal::Concurrent));
        drop(s);
        assert_eq!(l.tracked(), 1);
        // The second token was not spent by the refused attempt.
        assert!(l.admit(a, 0).is_ok());
    }

    #[test]
    fn ipv6_is_limited_by_its_64_prefix() {
        let l = limits(1, 0, 1, 100);
        let s = l.admit(ip("2001:db8:1:2::1"), 0);
        assert!(s.is_ok());
        assert_eq!(
            l.admit(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 0).err(),
            Some(Refusal::Concurrent)
        );
        assert!(l.admit(ip("2001:db8:1:3::1"), 0).is_ok());
    }

    #[test]
    fn ipv4_mapped_counts_as_ipv4() {
        let l = limits(1, 0, 1, 100);
        let _s = l.admit(ip("192.0.2.1"), 0);
        assert_eq!(
            l.admit(ip("::ffff:192.0.2.1"), 0).err(),
            Some(Refusal::Concurrent)
        );
        // ...and not as the IPv6 /64 ::/64, which an IPv4-compatible address is in.
        let _t = l.admit(ip("::1"), 0);
        assert_eq!(l.admit(ip("::2"), 0).err(), Some(Refusal::Concurrent));
        assert!(l.admit(ip("192.0.2.2"), 0).is_ok());
        assert_eq!(Key::of(ip("::ffff:10.0.0.1")), Key::V4(0x0a00_0001));
    }

    #[test]
    fn capacity_bounds_the_table() {
        let l = limits(10, 0, 1, 3);
        let slots: Vec<_> = (1..=3)
            .map(|i| l.admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)), 0))
            .collect();
        assert!(slots.iter().all(Result::is_ok));
        assert_eq!(l.tracked(), 3);
        assert_eq!(
            l.admit(ip("10.0.0.4"), 0).err(),
            Some(Refusal::TooManyClients)
        );
        assert_eq!(l.refused_too_many_clients(), 1);
        // A known address still gets in.
        assert!(l.admit(ip("10.0.0.1"), 0).is_ok());
        drop(slots);
        assert_eq!(l.tracked(), 0);
        assert!(l.admit(ip("10.0.0.4"), 0).is_ok());
    }

    #[test]
    fn a_full_table_drops_idle_addresses_of_the_shard_to_make_room() {
        // Capacity 1 and a rate: an address stays while its bucket refills.
        let l = limits(0, 1, 1, 1);
        drop(l.admit(ip("10.0.0.1"), 0));
        assert_eq!(l.tracked(), 1);
        assert_eq!(
            l.admit(ip("10.0.0.2"), 10).err(),
            Some(Refusal::TooManyClients)
        );
        // Once its bucket is full, 10.0.0.1 is dropped if it shares the shard; the periodic
        // sweep drops it in any case.
        l.sweep(1_000);
        assert_eq!(l.tracked(), 0);
        assert!(l.admit(ip("10.0.0.2"), 1_000).is_ok());
    }

    #[test]
    fn memory_goes_back_to_zero() {
        let l = limits(4, 10, 5, 100_000);
        let mut slots = Vec::new();
        for i in 0..5_000u32 {
            let v6 = Ipv6Addr::from((u128::from(i) << 64) | 1);
            slots.push(l.admit(IpAddr::V6(v6), 0));
            slots.push(l.admit(IpAddr::V4(Ipv4Addr::from(i)), 0));
        }
        assert!(slots.iter().all(Result::is_ok));
        assert_eq!(l.tracked(), 10_000);
        drop(slots);
        // Buckets are not full yet (each spent one token): still tracked.
        assert_eq!(l.tracked(), 10_000);
        l.sweep(50);
        assert_eq!(l.tracked(), 10_000);
        l.sweep(100);
        assert_eq!(l.tracked(), 0);
        let held: usize = l.shards.iter().map(|s| s.lock().capacity()).sum();
        assert!(held <= SHARDS * 64, "{held} slots still allocated");
    }

    #[test]
    fn release_drops_an_entry_whose_bucket_is_full() {
        let l = limits(2, 1, 5, 10);
        let s = l.admit(ip("192.0.2.1"), 0);
        assert!(s.is_ok());
        // Another admission moves the shared clock past the refill.
        let other = l.admit(ip("192.0.2.2"), 5_000);
        drop(s);
        assert_eq!(l.tracked(), 1);
        // Its own bucket is not full when it closes: kept until a sweep finds it full.
        drop(other);
        assert_eq!(l.tracked(), 1);
        l.sweep(6_000);
        assert_eq!(l.tracked(), 0);
    }

    /// A connection counts from accept (`connect`, no token), and its upgrade takes a token
    /// (`upgrade`, no second place): together they are what `admit` is.
    #[test]
    fn connect_counts_places_and_upgrade_takes_tokens() {
        let l = limits(2, 1, 2, 10);
        let a = ip("192.0.2.1");
        let first = l.connect(a, 0).unwrap();
        let _second = l.connect(a, 0).unwrap();
        assert_eq!(l.connect(a, 0).err(), Some(Refusal::Concurrent));
        // Places are not upgrades: both tokens are still there.
        assert!(l.upgrade(a, 0).is_ok());
        assert!(l.upgrade(a, 0).is_ok());
        assert!(matches!(l.upgrade(a, 0), Err(Refusal::Rate { .. })));
        drop(first);
        assert!(l.connect(a, 0).is_ok());
        assert_eq!(l.refused(), (1, 1));
        // Without a rate, an upgrade alone leaves nothing tracked behind.
        let l = limits(1, 0, 1, 10);
        assert!(l.upgrade(a, 0).is_ok());
        assert_eq!(l.tracked(), 0);
    }

    /// The upgrade rate refills with time: an address that spent its burst and then upgrades
    /// exactly at the rate (one every 500 ms at 2 a second) for ten simulated seconds is never
    /// refused, one a millisecond sooner is, and a pause gives back the burst and no more.
    #[test]
    fn an_address_upgrading_at_its_rate_is_never_refused_and_a_pause_refills_only_the_burst() {
        let l = limits(0, 2, 2, 10);
        let a = ip("192.0.2.1");
        assert!(l.upgrade(a, 0).is_ok());
        assert!(l.upgrade(a, 0).is_ok());
        for ms in (500..=10_000).step_by(500) {
            assert!(l.upgrade(a, ms).is_ok(), "at {ms} ms");
        }
        assert!(matches!(l.upgrade(a, 10_499), Err(Refusal::Rate { .. })));
        // A minute later: the burst of two, not 120.
        assert!(l.upgrade(a, 70_000).is_ok());
        assert!(l.upgrade(a, 70_000).is_ok());
        assert!(matches!(l.upgrade(a, 70_000), Err(Refusal::Rate { .. })));
        assert_eq!(l.refused(), (0, 2));
    }

    /// Time does not free a place: an open connection counts against its address for as long
    /// as it lives, and its place is free the moment it closes.
    #[test]
    fn an_open_connection_holds_its_place_however_long_it_lives() {
        let l = limits(1, 0, 1, 10);
        let a = ip("192.0.2.1");
        let held = l.connect(a, 0).unwrap();
        assert_eq!(l.connect(a, 3_600_000).err(), Some(Refusal::Concurrent));
        drop(held);
        assert!(l.connect(a, 3_600_000).is_ok());
    }

    #[test]
    fn unlimited_tracks_nothing() {
        let l = limits(0, 0, 1, 1);
        let slots: Vec<_> = (0..100u32)
            .map(|i| l.admit(IpAddr::V4(Ipv4Addr::from(i)), 0))
            .collect();
        assert!(slots.iter().all(Result::is_ok));
        assert_eq!(l.tracked(), 0);
        assert_eq!(l.refused(), (0, 0));
    }

    #[test]
    fn a_clock_behind_the_shared_one_refills_nothing() {
        let l = limits(0, 1, 1, 10);
        let a = ip("192.0.2.1");
        drop(l.admit(a, 10_000));
        assert!(l.admit(a, 9_000).is_err());
        assert!(l.admit(a, 10_999).is_err());
        assert!(l.admit(a, 11_000).is_ok());
    }

    #[test]
    fn workers_share_the_limits() {
        let l = limits(50, 0, 1, 1_000);
        let a = ip("192.0.2.77");
        let admitted: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let l = Arc::clone(&l);
                    scope.spawn(move || {
                        let slots: Vec<_> = (0..20).filter_map(|_| l.admit(a, 0).ok()).collect();
                        slots
                    })
                })
                .collect();
            let slots: Vec<_> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect();
            slots.len()
        });
        assert_eq!(admitted, 50);
        assert_eq!(l.refused(), (110, 0));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn refusal_status_and_retry_after() {
        assert_eq!(Refusal::Concurrent.status(), 503);
        assert_eq!(Refusal::TooManyClients.retry_after_secs(0), 1);
        assert_eq!(
            Refusal::Rate {
                retry_after_secs: 4
            }
            .retry_after_secs(1),
            4
        );
    }

    // ---- TrustedProxies ----

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(items).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_addresses_and_ranges() {
        let p = proxies(&[
            "10.0.0.0/8",
            " 127.0.0.1 ",
            "::1",
            "fd00::/8",
            "192.168.1.77/24",
        ]);
        assert!(!p.is_empty());
        for yes in [
            "10.1.2.3",
            "127.0.0.1",
            "::1",
            "fd12:3456::1",
            "192.168.1.1",
            "::ffff:10.9.9.9",
            "::ffff:127.0.0.1",
        ] {
            assert!(p.contains(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.1",
            "127.0.0.2",
            "::2",
            "fe00::1",
            "192.168.2.1",
            "2001:db8::1",
        ] {
            assert!(!p.contains(ip(no)), "{no}");
        }
        assert!(proxies(&[] as &[&str]).is_empty());
        let all4 = proxies(&["0.0.0.0/0"]);
        assert!(all4.contains(ip("8.8.8.8")) && !all4.contains(ip("2001:db8::1")));
        let all = proxies(&["::/0"]);
        assert!(all.contains(ip("8.8.8.8")) && all.contains(ip("2001:db8::1")));
        assert_eq!(proxies(&["10.1.2.3/8"]), proxies(&["10.0.0.0/8"]));
        assert_eq!(proxies(&["1.2.3.4/32"]), proxies(&["1.2.3.4"]));
    }

    #[test]
    fn rejects_bad_items_naming_them() {
        for bad in [
            "",
            "  ",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8/8",
            "10.0.0.0/0008",
            "10.0.0",
            "[::1]",
            "localhost",
            "10.0.0.1:80",
            "fe80::1%eth0",
        ] {
            match TrustedProxies::parse(&["127.0.0.1", bad]) {
                Err(e) => assert!(e.contains(&format!("{bad:?}")), "{e}"),
                Ok(p) => panic!("{bad:?} accepted as {p:?}"),
            }
        }
        let owned = vec![String::from("10.0.0.0/8")];
        assert!(TrustedProxies::parse(&owned).is_ok());
    }

    fn client(p: &TrustedProxies, peer: &str, xff: &[&str]) -> IpAddr {
        let values: Vec<&[u8]> = xff.iter().map(|v| v.as_bytes()).collect();
        p.client_ip(ip(peer), &values)
    }

    #[test]
    fn untrusted_peer_ignores_forwarded_for() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "203.0.113.9", &["1.2.3.4"]), ip("203.0.113.9"));
        let none = proxies(&[] as &[&str]);
        assert_eq!(client(&none, "10.0.0.1", &["1.2.3.4"]), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_without_header_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(client(&p, "10.0.0.1", &["", " , "]), ip("10.0.0.1"));
    }

    #[test]
    fn chains_of_proxies_and_spoofed_entries() {
        let p = proxies(&["10.0.0.0/8", "192.168.0.0/16"]);
        // client -> CDN edge (192.168.1.1) -> LB (10.0.0.2) -> us
        assert_eq!(
            client(&p, "10.0.0.2", &["198.51.100.4, 192.168.1.1"]),
            ip("198.51.100.4")
        );
        // The client sent its own spoofed header; the proxies appended to it.
        assert_eq!(
            client(
                &p,
                "10.0.0.2",
                &["6.6.6.6, 10.0.0.9, 198.51.100.4, 192.168.1.1"]
            ),
            ip("198.51.100.4")
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(&p, "10.0.0.2", &["6.6.6.6", "198.51.100.4", "192.168.1.1"]),
            ip("198.51.100.4")
        );
        // All trusted: the leftmost.
        assert_eq!(
            client(&p, "10.0.0.2", &["10.1.1.1,192.168.1.1", "10.0.0.3"]),
            ip("10.1.1.1")
        );
        // Whitespace, tabs and empty entries.
        assert_eq!(
            client(&p, "10.0.0.2", &[" 198.51.100.4 ,\t,192.168.1.1\t,"]),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn ipv6_chains() {
        let p = proxies(&["fd00::/8", "::1"]);
        assert_eq!(
            client(&p, "::1", &["2001:db8::7, fd00::2"]),
            ip("2001:db8::7")
        );
        assert_eq!(
            client(&p, "::ffff:10.0.0.1", &["2001:db8::7"]),
            ip("::ffff:10.0.0.1")
        );
        let p4 = proxies(&["127.0.0.1"]);
        // A dual-stack socket reports an IPv4 peer as IPv4-mapped: still trusted.
        assert_eq!(
            client(&p4, "::ffff:127.0.0.1", &["2001:db8::7"]),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn garbage_stops_the_walk() {
        let p = proxies(&["10.0.0.0/8"]);
        // Unparsable rightmost entry: the peer.
        for junk in [
            "unknown",
            "198.51.100.4:4711",
            "[2001:db8::1]:4711",
            "[2001:db8::1]",
            "_hidden",
            "1.2.3.4 5.6.7.8",
        ] {
            assert_eq!(client(&p, "10.0.0.2", &[junk]), ip("10.0.0.2"), "{junk}");
        }
        // Behind a trusted entry: that entry.
        assert_eq!(
            client(&p, "10.0.0.2", &["198.51.100.4, garbage, 10.0.0.5"]),
            ip("10.0.0.5")
        );
        // Garbage to the left of the client is never read.
        assert_eq!(
            client(&p, "10.0.0.2", &["garbage, 198.51.100.4, 10.0.0.5"]),
            ip("198.51.100.4")
        );
        // Not UTF-8.
        let bytes: &[&[u8]] = &[b"\xff\xfe, 10.0.0.5"];
        assert_eq!(p.client_ip(ip("10.0.0.2"), bytes), ip("10.0.0.5"));
        let long = "9".repeat(10_000);
        assert_eq!(client(&p, "10.0.0.2", &[&long]), ip("10.0.0.2"));
    }
}
