//! The shared tables: the process-wide state every worker reads and writes (the tickets issued,
//! the revocations made, the per-address connection counts). Built once at start from
//! `Settings::tables` and passed to the workers beside their settings, never inside them: a
//! reload replaces the settings and keeps these. Each table bounds itself and takes `now` as an
//! argument; none does IO.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use crate::auth::revocation::Revocations;
use crate::auth::tickets::TicketStore;
use crate::limits::IpLimits;

/// The sizes and lifetimes of the shared tables (`--ticket-ttl`, `--max-tickets`, ...), fixed
/// at start: a reload cannot resize a table that holds live entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Seconds a ticket may wait to be redeemed.
    pub ticket_ttl_secs: u64,
    /// Tickets outstanding at once, in all.
    pub max_tickets: usize,
    /// Tickets one user may hold outstanding (0: no limit).
    pub max_tickets_per_user: usize,
    /// Tickets one client address may hold outstanding (0: no limit).
    pub max_tickets_per_address: usize,
    /// How long a revocation must be kept: the longest a token accepted before it may live.
    pub revocation_ttl_secs: u64,
    /// Revocations kept at once.
    pub max_revocations: usize,
    /// Connections one client address may hold open (0: no limit).
    pub max_connections_per_address: u32,
    /// Upgrades per second one client address may make (0: no limit), and their burst.
    pub upgrades_per_address_per_sec: u32,
    /// Burst above that rate.
    pub upgrade_burst: u32,
    /// Client addresses tracked at once.
    pub max_addresses: usize,
}

/// The shared tables themselves.
#[derive(Debug)]
pub struct Tables {
    /// Tickets from `POST /ws-auth`, redeemed once each.
    pub tickets: TicketStore,
    /// Users and jtis revoked through `POST /api/revoke`.
    pub revocations: Revocations,
    /// Per client address: open connections and the upgrade rate.
    pub addresses: std::sync::Arc<IpLimits>,
    /// Keyed (per process) hasher for the fingerprints a revocation finds connections by.
    fingerprints: RandomState,
}

impl Tables {
    /// Empty tables of these sizes.
    pub fn new(sizes: &TableSizes) -> Self {
        Self {
            tickets: TicketStore::new(sizes.ticket_ttl_secs, sizes.max_tickets)
                .with_quotas(sizes.max_tickets_per_user, sizes.max_tickets_per_address),
            revocations: Revocations::new(sizes.revocation_ttl_secs, sizes.max_revocations),
            addresses: std::sync::Arc::new(IpLimits::new(
                sizes.max_connections_per_address,
                sizes.upgrades_per_address_per_sec,
                sizes.upgrade_burst,
                sizes.max_addresses,
            )),
            fingerprints: RandomState::new(),
        }
    }

    /// A 64-bit fingerprint of a user id or jti, never 0 (0 means "none" to a connection). Two
    /// ids collide with probability 2^-64; the key is random per process.
    pub fn fingerprint(&self, id: &str) -> u64 {
        self.fingerprints.hash_one(id) | 1
    }
}
