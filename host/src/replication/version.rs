//! Versions of one key (an object or an edge) and how a collection's conflict policy decides
//! between them. Pure: the committer (local writes, remote operations, replay) and the
//! simulation tests call the same functions, so what is tested is what runs.
//!
//! Every write gets a *dot* `(origin node, origin seq)` and an HLC timestamp. A version also
//! carries its *causal context*: per origin, the highest seq of the writes to this key it has
//! seen (its own dot included). A version `v` has seen `u` when `v.context` contains `u`'s dot.
//! A key stores the versions nobody has seen past (its *siblings*: the maximal versions of its
//! history), which is a function of the set of writes received, not of their order. The
//! policy then picks the visible one: the highest `(hlc, node)` (last-write-wins,
//! vector-clock, manual) or the lowest (first-write-wins). Last-write-wins keeps only its
//! winner: the highest timestamp of the whole history is never seen past (HLC respects
//! causality), so the other siblings can never win.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::model::ConflictPolicy;

/// Per origin, the highest seq seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Clock(pub BTreeMap<u64, u64>);

impl Clock {
    pub fn contains(&self, origin: u64, seq: u64) -> bool {
        self.0.get(&origin).is_some_and(|s| *s >= seq)
    }

    /// Raises this clock to cover `other` too.
    pub fn merge(&mut self, other: &Clock) {
        for (o, s) in &other.0 {
            self.add(*o, *s);
        }
    }

    pub fn add(&mut self, origin: u64, seq: u64) {
        let e = self.0.entry(origin).or_insert(0);
        *e = (*e).max(seq);
    }

    /// `origin:seq` pairs, origin in hex, comma-separated: the causal context a versions read
    /// hands out and a resolving write brings back.
    pub fn to_token(&self) -> String {
        self.0
            .iter()
            .map(|(o, s)| format!("{o:x}:{s}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn from_token(token: &str) -> Result<Clock, String> {
        let mut c = Clock::default();
        for pair in token.split(',').filter(|p| !p.trim().is_empty()) {
            let parsed = pair.trim().split_once(':').and_then(|(o, s)| {
                Some((u64::from_str_radix(o, 16).ok()?, s.parse::<u64>().ok()?))
            });
            match parsed {
                Some((o, s)) => c.add(o, s),
                None => {
                    return Err(format!(
                        "`{pair}` in context `{token}` is not origin:seq (a context comes from a versions read)"
                    ))
                }
            }
        }
        Ok(c)
    }

    /// Whether this clock covers everything `other` does.
    pub fn covers(&self, other: &Clock) -> bool {
        other.0.iter().all(|(o, s)| self.contains(*o, *s))
    }
}

/// Who wrote a version, when, and what it had seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    /// Includes this version's own dot.
    pub context: Clock,
}

impl Version {
    /// A version of a write `(origin, seq)` at `hlc` made after seeing `seen`.
    pub fn new(hlc: u64, origin: u64, seq: u64, seen: &Clock) -> Self {
        let mut context = seen.clone();
        context.add(origin, seq);
        Self {
            hlc,
            origin,
            seq,
            context,
        }
    }

    /// The total order the policies pick by.
    pub fn order(&self) -> (u64, u64) {
        (self.hlc, self.origin)
    }

    /// Whether this version has seen `other` (or is it).
    pub fn has_seen(&self, other: &Version) -> bool {
        self.context.contains(other.origin, other.seq)
    }
}

/// One version of a key with its value (`None`: deleted; a tombstone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sibling<T> {
    pub version: Version,
    pub value: Option<T>,
}

/// What adding a version did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// The version was already known or seen past: nothing changed.
    pub stale: bool,
    /// The key now holds (or, under last-write-wins, held before keeping its winner) versions
    /// written without seeing each other.
    pub conflict: bool,
}

/// The causal context of a local write to a key holding `siblings`: it has seen all of them.
pub fn seen<T>(siblings: &[Sibling<T>]) -> Clock {
    let mut c = Clock::default();
    for s in siblings {
        c.merge(&s.version.context);
    }
    c
}

/// Adds `incoming` to a key's siblings (kept sorted by `order`). Deterministic and idempotent:
/// the siblings after any sequence of merges depend only on the set of versions merged.
pub fn merge<T>(
    policy: ConflictPolicy,
    siblings: &mut Vec<Sibling<T>>,
    incoming: Sibling<T>,
) -> Merge {
    if siblings
        .iter()
        .any(|s| s.version.has_seen(&incoming.version))
    {
        return Merge {
            stale: true,
            conflict: false,
        };
    }
    if policy == ConflictPolicy::LastWriteWins {
        // Only the winner is kept: the newcomer wins if it is later than what is there.
        let conflict = siblings
            .iter()
            .any(|s| !incoming.version.has_seen(&s.version));
        let later = siblings
            .iter()
            .all(|s| incoming.version.order() > s.version.order());
        if !later {
            return Merge {
                stale: true,
                conflict,
            };
        }
        siblings.clear();
        siblings.push(incoming);
        return Merge {
            stale: false,
            conflict,
        };
    }
    siblings.retain(|s| !incoming.version.has_seen(&s.version));
    let at = siblings.partition_point(|s| s.version.order() < incoming.version.order());
    siblings.insert(at, incoming);
    Merge {
        stale: false,
        conflict: siblings.len() > 1,
    }
}

/// The sibling the policy shows (and the vector index holds). `None` only for no siblings.
pub fn winner<T>(policy: ConflictPolicy, siblings: &[Sibling<T>]) -> Option<&Sibling<T>> {
    match policy {
        ConflictPolicy::FirstWriteWins => siblings.first(),
        _ => siblings.last(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICIES: [ConflictPolicy; 4] = [
        ConflictPolicy::LastWriteWins,
        ConflictPolicy::FirstWriteWins,
        ConflictPolicy::VectorClock,
        ConflictPolicy::Manual,
    ];

    fn v(hlc: u64, origin: u64, seq: u64, seen: &[(u64, u64)]) -> Sibling<u64> {
        Sibling {
            version: Version::new(hlc, origin, seq, &Clock(seen.iter().copied().collect())),
            value: Some(hlc),
        }
    }

    #[test]
    fn a_version_that_has_seen_the_others_replaces_them() {
        for p in POLICIES {
            let mut s = vec![];
            assert!(!merge(p, &mut s, v(10, 1, 1, &[])).stale);
            let m = merge(p, &mut s, v(20, 2, 1, &[(1, 1)]));
            assert!(!m.stale && !m.conflict, "{p}");
            assert_eq!(s.len(), 1);
            assert_eq!(winner(p, &s).and_then(|w| w.value), Some(20));
            // The replaced version arriving again changes nothing.
            assert!(merge(p, &mut s, v(10, 1, 1, &[])).stale);
        }
    }

    #[test]
    fn concurrent_versions_are_decided_by_the_policy() {
        for p in POLICIES {
            let mut s = vec![];
            merge(p, &mut s, v(20, 2, 1, &[]));
            let m = merge(p, &mut s, v(10, 1, 1, &[]));
            assert!(m.conflict, "{p}");
            let expected = if p == ConflictPolicy::FirstWriteWins {
                10
            } else {
                20
            };
            assert_eq!(winner(p, &s).and_then(|w| w.value), Some(expected), "{p}");
            let kept = if p == ConflictPolicy::LastWriteWins {
                1
            } else {
                2
            };
            assert_eq!(s.len(), kept, "{p}");
        }
    }

    /// A history: each write has seen a random subset of the earlier ones (and whatever
    /// they had seen). Every order of merging its writes gives the same siblings.
    fn history() -> impl Strategy<Value = Vec<(u64, u64, Vec<usize>)>> {
        proptest::collection::vec(
            (
                0u64..50,
                0u64..3,
                proptest::collection::vec(0usize..64, 0..3),
            ),
            1..12,
        )
    }

    proptest! {
        #[test]
        fn merging_is_order_independent_and_idempotent(h in history(), perm in any::<u64>()) {
            let mut seqs = [0u64; 3];
            let mut writes: Vec<Sibling<u64>> = Vec::new();
            for (i, (hlc, origin, seen)) in h.iter().enumerate() {
                let mut ctx = Clock::default();
                // A node has seen its own earlier writes, and what they had seen.
                if let Some(own) = writes.iter().rev().find(|w| w.version.origin == *origin) {
                    ctx.merge(&own.version.context);
                }
                for j in seen.iter().filter(|j| **j < i) {
                    ctx.merge(&writes[*j].version.context);
                }
                seqs[*origin as usize] += 1;
                // Timestamps respect causality, as the HLC guarantees.
                let floor = writes.iter().filter(|w| ctx.contains(w.version.origin, w.version.seq)).map(|w| w.version.hlc + 1).max().unwrap_or(0);
                let hlc = (*hlc).max(floor);
                writes.push(Sibling { version: Version::new(hlc, *origin, seqs[*origin as usize], &ctx), value: Some(i as u64) });
            }
            for p in POLICIES {
                let mut forward = vec![];
                for w in &writes { merge(p, &mut forward, w.clone()); }
                let mut shuffled = writes.clone();
                let mut x = perm | 1;
                for i in (1..shuffled.len()).rev() {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    shuffled.swap(i, (x % (i as u64 + 1)) as usize);
                }
                let mut other = vec![];
                for w in shuffled.iter().chain(writes.iter()) { merge(p, &mut other, w.clone()); }
                prop_assert_eq!(&forward, &other, "{}", p);
                // The reference: the maximal writes of the history, picked by the policy.
                let maximal: Vec<&Sibling<u64>> = writes.iter().filter(|w| !writes.iter().any(|o| o.version != w.version && o.version.has_seen(&w.version))).collect();
                let best = if p == ConflictPolicy::FirstWriteWins {
                    maximal.iter().min_by_key(|w| w.version.order())
                } else {
                    maximal.iter().max_by_key(|w| w.version.order())
                };
                prop_assert_eq!(winner(p, &forward).map(|w| w.value), best.map(|w| w.value));
            }
        }
    }
}
