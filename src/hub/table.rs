//! The group membership of one core (docs/protocol.md §4): group → members for fan-out, and
//! member → groups for leave and disconnect. One table per worker thread, owned by its runtime;
//! nothing here is shared between cores, and there is no IO. Uses only std. Group names arrive
//! already validated; each is stored once and shared by every membership that names it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

/// Outcome of [`GroupTable::join`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Join {
    /// The member joined; `first_on_core` is true when the group had no member on this core.
    Joined {
        /// This core's interest in the group starts here.
        first_on_core: bool,
    },
    /// The member was already in the group; nothing changed.
    AlreadyMember,
    /// The member is in `max_groups_per_member` groups already; nothing changed.
    TooManyGroups,
}

/// Outcome of [`GroupTable::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Leave {
    /// The member left; `last_on_core` is true when the group has no member left on this core.
    Left {
        /// This core's interest in the group ends here.
        last_on_core: bool,
    },
    /// The member was not in the group; nothing changed.
    NotMember,
}

/// One group: its name (the same allocation as its key) and its members, in no particular order.
#[derive(Debug)]
struct Group<M> {
    name: Arc<str>,
    members: Vec<M>,
}

/// One of a member's groups, and where the member sits in that group's `members`.
///
/// Keeping the position makes leaving O(groups of the member) instead of O(members of the
/// group), so a mass disconnect from a large group is linear, not quadratic.
#[derive(Debug)]
struct Membership {
    group: Arc<str>,
    slot: usize,
}

/// Per-core group membership: who is in which group, with each group's members contiguous.
///
/// Invariants: every group has at least one member; every member has at least one membership;
/// `groups[g].members[s] == m` exactly when `memberships[m]` holds `(g, s)`.
#[derive(Debug)]
pub struct GroupTable<M> {
    groups: HashMap<Arc<str>, Group<M>>,
    memberships: HashMap<M, Vec<Membership>>,
}

impl<M> Default for GroupTable<M> {
    fn default() -> Self {
        Self {
            groups: HashMap::new(),
            memberships: HashMap::new(),
        }
    }
}

impl<M: Copy + Eq + Hash + Debug> GroupTable<M> {
    /// An empty table; allocates nothing until the first join.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `member` to `group` unless it is already there or in `max_groups_per_member` groups.
    pub fn join(&mut self, member: M, group: &str, max_groups_per_member: usize) -> Join {
        let current = self.memberships.get(&member).map_or(&[][..], Vec::as_slice);
        if current.iter().any(|m| &*m.group == group) {
            return Join::AlreadyMember;
        }
        if current.len() >= max_groups_per_member {
            return Join::TooManyGroups;
        }

        let (name, slot, first_on_core) = match self.groups.get_mut(group) {
            Some(existing) => {
                existing.members.push(member);
                let slot = existing.members.len() - 1;
                (Arc::clone(&existing.name), slot, false)
            }
            None => {
                let name: Arc<str> = Arc::from(group);
                let created = Group {
                    name: Arc::clone(&name),
                    members: vec![member],
                };
                self.groups.insert(Arc::clone(&name), created);
                (name, 0, true)
            }
        };
        // Most connections join one group: start with room for exactly one.
        self.memberships
            .entry(member)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Membership { group: name, slot });
        Join::Joined { first_on_core }
    }

    /// Removes `member` from `group`.
    pub fn leave(&mut self, member: M, group: &str) -> Leave {
        let Some(list) = self.memberships.get_mut(&member) else {
            return Leave::NotMember;
        };
        let Some(index) = list.iter().position(|m| &*m.group == group) else {
            return Leave::NotMember;
        };
        let membership = list.swap_remove(index);
        if list.is_empty() {
            self.memberships.remove(&member);
        }
        let last_on_core = self.detach(&membership);
        Leave::Left { last_on_core }
    }

    /// Removes the member from all its groups; `emptied` is called with each group it was the last member of on this core.
    pub fn remove_member(&mut self, member: M, mut emptied: impl FnMut(&str)) {
        let Some(list) = self.memberships.remove(&member) else {
            return;
        };
        for membership in &list {
            if self.detach(membership) {
                emptied(&membership.group);
            }
        }
    }

    /// The members of `group` on this core, in no particular order; empty when there are none.
    pub fn members(&self, group: &str) -> &[M] {
        self.groups.get(group).map_or(&[], |g| &g.members)
    }

    /// Whether `member` is in `group`.
    pub fn is_member(&self, member: M, group: &str) -> bool {
        self.memberships
            .get(&member)
            .is_some_and(|list| list.iter().any(|m| &*m.group == group))
    }

    /// The groups `member` is in, in no particular order.
    pub fn joined(&self, member: M) -> impl Iterator<Item = &Arc<str>> {
        self.memberships
            .get(&member)
            .into_iter()
            .flatten()
            .map(|m| &m.group)
    }

    /// How many groups `member` is in.
    pub fn groups_of(&self, member: M) -> usize {
        self.memberships.get(&member).map_or(0, Vec::len)
    }

    /// How many groups have at least one member on this core.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Takes the member recorded by `membership` out of its group (already removed from the
    /// member's own list), keeps the slot of the member moved into its place, and drops the group
    /// when it empties. Returns whether the group emptied.
    fn detach(&mut self, membership: &Membership) -> bool {
        let Some(group) = self.groups.get_mut(&*membership.group) else {
            debug_assert!(false, "membership names a missing group");
            return false;
        };
        let slot = membership.slot;
        if slot >= group.members.len() {
            debug_assert!(false, "membership slot out of range");
            return false;
        }
        group.members.swap_remove(slot);
        if let Some(&moved) = group.members.get(slot) {
            let moved_entry = self
                .memberships
                .get_mut(&moved)
                .and_then(|list| list.iter_mut().find(|m| Arc::ptr_eq(&m.group, &group.name)));
            match moved_entry {
                Some(entry) => entry.slot = slot,
                None => debug_assert!(false, "moved member has no membership for its group"),
            }
        }
        if group.members.is_empty() {
            self.groups.remove(&*membership.group);
            return true;
        }
        // A group that was large and is now small gives most of its storage back.
        let (len, capacity) = (group.members.len(), group.members.capacity());
        if capacity > 16 && len <= capacity / 4 {
            group.members.shrink_to(len * 2);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    impl<M: Copy + Eq + Hash + Debug> GroupTable<M> {
        /// Asserts the struct invariants: no empty group, no member without groups, and the
        /// two directions agree slot for slot.
        fn check_invariants(&self) {
            let mut slots = 0;
            for (member, list) in &self.memberships {
                assert!(!list.is_empty(), "{member:?} has an empty membership list");
                for m in list {
                    let group = &self.groups[&*m.group];
                    assert!(Arc::ptr_eq(&group.name, &m.group));
                    assert_eq!(group.members.get(m.slot), Some(member));
                    slots += 1;
                }
            }
            for (name, group) in &self.groups {
                assert!(!group.members.is_empty(), "group {name} is empty");
                assert_eq!(name, &group.name);
            }
            let total: usize = self.groups.values().map(|g| g.members.len()).sum();
            assert_eq!(total, slots);
        }
    }

    fn sorted(members: &[u64]) -> Vec<u64> {
        let mut v = members.to_vec();
        v.sort_unstable();
        v
    }

    #[test]
    fn new_table_is_empty_and_unallocated() {
        let table = GroupTable::<u64>::new();
        assert_eq!(table.group_count(), 0);
        assert!(table.members("room.1").is_empty());
        assert_eq!(table.groups_of(1), 0);
        assert!(!table.is_member(1, "room.1"));
        assert_eq!(table.groups.capacity(), 0);
        assert_eq!(table.memberships.capacity(), 0);
    }

    #[test]
    fn first_join_and_last_leave_are_flagged() {
        let mut table = GroupTable::new();
        assert_eq!(
            table.join(1_u64, "room.1", 8),
            Join::Joined {
                first_on_core: true
            }
        );
        assert_eq!(
            table.join(2, "room.1", 8),
            Join::Joined {
                first_on_core: false
            }
        );
        assert_eq!(sorted(table.members("room.1")), [1, 2]);
        assert_eq!(
            table.leave(1, "room.1"),
            Leave::Left {
                last_on_core: false
            }
        );
        assert_eq!(table.leave(2, "room.1"), Leave::Left { last_on_core: true });
        assert_eq!(table.group_count(), 0);
        assert!(table.members("room.1").is_empty());
        table.check_invariants();
    }

    #[test]
    fn joining_twice_is_already_member() {
        let mut table = GroupTable::new();
        let _ = table.join(1_u64, "a", 1);
        assert_eq!(table.join(1, "a", 1), Join::AlreadyMember);
        assert_eq!(table.members("a"), [1]);
        assert_eq!(table.groups_of(1), 1);
    }

    #[test]
    fn group_limit_is_per_member() {
        let mut table = GroupTable::new();
        assert!(matches!(table.join(1_u64, "a", 2), Join::Joined { .. }));
        assert!(matches!(table.join(1, "b", 2), Join::Joined { .. }));
        assert_eq!(table.join(1, "c", 2), Join::TooManyGroups);
        assert!(table.members("c").is_empty());
        assert_eq!(table.group_count(), 2);
        assert!(matches!(table.join(2, "c", 2), Join::Joined { .. }));
        assert_eq!(table.join(3, "a", 0), Join::TooManyGroups);
        assert_eq!(table.groups_of(3), 0);
        assert!(!table.memberships.contains_key(&3));
        table.check_invariants();
    }

    #[test]
    fn leaving_what_was_never_joined_is_not_member() {
        let mut table = GroupTable::new();
        assert_eq!(table.leave(1_u64, "a"), Leave::NotMember);
        let _ = table.join(1, "a", 4);
        assert_eq!(table.leave(1, "b"), Leave::NotMember);
        assert_eq!(table.leave(2, "a"), Leave::NotMember);
        assert_eq!(table.members("a"), [1]);
    }

    #[test]
    fn a_member_without_groups_has_no_entry() {
        let mut table = GroupTable::new();
        let _ = table.join(1_u64, "a", 4);
        let _ = table.join(1, "b", 4);
        let _ = table.leave(1, "a");
        assert!(table.memberships.contains_key(&1));
        let _ = table.leave(1, "b");
        assert!(table.memberships.is_empty());
        assert!(table.groups.is_empty());
    }

    #[test]
    fn remove_member_reports_only_emptied_groups() {
        let mut table = GroupTable::new();
        for group in ["a", "b", "c"] {
            let _ = table.join(1_u64, group, 8);
        }
        let _ = table.join(2, "b", 8);
        let mut emptied = Vec::new();
        table.remove_member(1, |g| emptied.push(g.to_owned()));
        emptied.sort();
        assert_eq!(emptied, ["a", "c"]);
        assert_eq!(table.members("b"), [2]);
        assert_eq!(table.groups_of(1), 0);
        assert_eq!(table.group_count(), 1);
        table.check_invariants();

        table.remove_member(7, |g| panic!("unknown member emptied {g}"));
    }

    #[test]
    fn members_stay_contiguous_as_others_leave() {
        let mut table = GroupTable::new();
        for member in 0..100_u64 {
            let _ = table.join(member, "big", 4);
            let _ = table.join(member, if member % 2 == 0 { "even" } else { "odd" }, 4);
        }
        for member in (0..100).filter(|m| m % 3 == 0) {
            let _ = table.leave(member, "big");
        }
        table.check_invariants();
        let expected: Vec<u64> = (0..100).filter(|m| m % 3 != 0).collect();
        assert_eq!(sorted(table.members("big")), expected);
        for member in 0..100 {
            table.remove_member(member, |_| {});
        }
        assert_eq!(table.group_count(), 0);
        table.check_invariants();
    }

    #[test]
    fn a_shrunken_group_gives_storage_back() {
        let mut table = GroupTable::new();
        for member in 0..1000_u64 {
            let _ = table.join(member, "big", 1);
        }
        for member in 10..1000 {
            let _ = table.leave(member, "big");
        }
        assert!(table.groups["big"].members.capacity() < 64);
        assert_eq!(sorted(table.members("big")), (0..10).collect::<Vec<_>>());
        table.check_invariants();
    }

    #[test]
    fn a_group_name_is_stored_once() {
        let mut table = GroupTable::new();
        for member in 0..10_u64 {
            let _ = table.join(member, "room.1", 1);
        }
        // The key, the group's own name and the ten memberships share one allocation.
        assert_eq!(Arc::strong_count(&table.groups["room.1"].name), 12);
    }

    /// xorshift64: deterministic and good enough to pick operations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    type Model = BTreeMap<String, BTreeSet<u64>>;

    const MEMBERS: u64 = 20;
    const GROUPS: [&str; 8] = [
        "a",
        "b",
        "c",
        "room.1",
        "room.2",
        "x-y",
        "z_z",
        "long.name.9",
    ];

    fn model_groups_of(model: &Model, member: u64) -> usize {
        model.values().filter(|set| set.contains(&member)).count()
    }

    fn assert_matches_model(table: &GroupTable<u64>, model: &Model) {
        table.check_invariants();
        assert_eq!(table.group_count(), model.len());
        for group in GROUPS {
            let expected: Vec<u64> = model
                .get(group)
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default();
            assert_eq!(sorted(table.members(group)), expected, "members of {group}");
            for member in 0..MEMBERS {
                assert_eq!(
                    table.is_member(member, group),
                    expected.contains(&member),
                    "{member} in {group}"
                );
            }
        }
        for member in 0..MEMBERS {
            assert_eq!(table.groups_of(member), model_groups_of(model, member));
        }
    }

    /// Runs `ops` random operations against the table and the model, comparing after each;
    /// returns the outcomes seen, so the caller can check that every case was exercised.
    fn run_random_ops(seed: u64, ops: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut rng = Rng(seed);
        let mut table = GroupTable::new();
        let mut model = Model::new();
        for step in 0..ops {
            let member = rng.below(MEMBERS);
            let group = GROUPS[rng.below(GROUPS.len() as u64) as usize];
            // Alternate phases that mostly join and mostly leave, so the table is sometimes
            // crowded and sometimes nearly empty (where one member is the last of several groups).
            let shrinking = (step / 250) % 2 == 1;
            let roll = rng.below(10);
            let op = if shrinking && roll > 0 {
                roll.max(5)
            } else {
                roll
            };
            match op {
                0..=4 => {
                    let max = rng.below(5) as usize;
                    let expected = if model.get(group).is_some_and(|s| s.contains(&member)) {
                        Join::AlreadyMember
                    } else if model_groups_of(&model, member) >= max {
                        Join::TooManyGroups
                    } else {
                        let set = model.entry(group.to_owned()).or_default();
                        set.insert(member);
                        Join::Joined {
                            first_on_core: set.len() == 1,
                        }
                    };
                    assert_eq!(table.join(member, group, max), expected);
                    seen.insert(format!("{expected:?}"));
                }
                5..=8 => {
                    let set = model.entry(group.to_owned()).or_default();
                    let expected = if set.remove(&member) {
                        Leave::Left {
                            last_on_core: set.is_empty(),
                        }
                    } else {
                        Leave::NotMember
                    };
                    if set.is_empty() {
                        model.remove(group);
                    }
                    assert_eq!(table.leave(member, group), expected);
                    seen.insert(format!("{expected:?}"));
                }
                _ => {
                    let mut expected = BTreeSet::new();
                    model.retain(|name, set| {
                        if set.remove(&member) && set.is_empty() {
                            expected.insert(name.clone());
                        }
                        !set.is_empty()
                    });
                    let mut emptied = BTreeSet::new();
                    table.remove_member(member, |g| assert!(emptied.insert(g.to_owned())));
                    assert_eq!(emptied, expected);
                    seen.insert(format!("remove_member emptied {}", expected.len().min(2)));
                }
            }
            assert_matches_model(&table, &model);
        }
        for member in 0..MEMBERS {
            table.remove_member(member, |_| {});
        }
        assert_eq!(table.group_count(), 0);
        assert!(table.memberships.is_empty());
        seen
    }

    #[test]
    fn random_operations_match_a_simple_model() {
        let mut seen = BTreeSet::new();
        for seed in [1, 0x9e37_79b9_7f4a_7c15, 0xdead_beef, 42, 7_777_777] {
            seen.append(&mut run_random_ops(seed, 4000));
        }
        let expected = [
            "AlreadyMember",
            "Joined { first_on_core: false }",
            "Joined { first_on_core: true }",
            "Left { last_on_core: false }",
            "Left { last_on_core: true }",
            "NotMember",
            "TooManyGroups",
            "remove_member emptied 0",
            "remove_member emptied 1",
            "remove_member emptied 2",
        ];
        assert_eq!(seen, expected.map(str::to_owned).into());
    }
}
