//! Choosing an endpoint for a request: pure and independent of QUIC, so each strategy's
//! distribution is unit-tested.
//!
//! The caller describes every endpoint as a [`Candidate`] (available or not, excluded for this
//! request or not, requests in flight, measured round-trip time) and [`Balancer::pick`] returns
//! an index. Endpoints that are available and not excluded are preferred; when there are none,
//! the strategy is applied to the endpoints that are merely not excluded, and then to all of
//! them, so a request always goes somewhere (which is how a recovering cluster gets probed).

use std::time::Duration;

use crate::config::{Endpoint, Strategy};

/// Virtual nodes per endpoint on the consistent-hash ring.
pub const VIRTUAL_NODES: usize = 160;

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Candidate {
    /// Health checks pass and its breaker lets a request through.
    pub available: bool,
    /// Already failed this request (a retry goes elsewhere while it can).
    pub excluded: bool,
    /// Requests from this client in flight to it.
    pub in_flight: usize,
    /// Smoothed round-trip time of its health pings; `None` until one is measured.
    pub rtt: Option<Duration>,
}

impl Candidate {
    pub fn available() -> Self {
        Self {
            available: true,
            ..Self::default()
        }
    }
}

/// A strategy and the state it keeps between picks.
#[derive(Debug, Clone)]
pub struct Balancer {
    strategy: Strategy,
    weights: Vec<i64>,
    /// Smooth weighted round-robin's current weights.
    current: Vec<i64>,
    /// Round-robin position (also breaks ties of the other strategies).
    next: usize,
    ring: HashRing,
}

impl Balancer {
    pub fn new(strategy: Strategy, endpoints: &[Endpoint]) -> Self {
        let names: Vec<&str> = endpoints.iter().map(|e| e.addr.as_str()).collect();
        Self {
            strategy,
            weights: endpoints
                .iter()
                .map(|e| i64::from(e.weight.max(1)))
                .collect(),
            current: vec![0; endpoints.len()],
            next: 0,
            ring: if strategy == Strategy::ConsistentHash {
                HashRing::new(&names, VIRTUAL_NODES)
            } else {
                HashRing::default()
            },
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The endpoint for the next request; `key` is used by the consistent-hash strategy.
    /// `None` only when there are no candidates.
    pub fn pick(&mut self, candidates: &[Candidate], key: Option<&str>) -> Option<usize> {
        let tiers: [&dyn Fn(&Candidate) -> bool; 3] =
            [&|c| c.available && !c.excluded, &|c| !c.excluded, &|_| true];
        for tier in tiers {
            let eligible: Vec<usize> = (0..candidates.len())
                .filter(|&i| tier(&candidates[i]))
                .collect();
            if !eligible.is_empty() {
                return Some(self.pick_among(candidates, &eligible, key));
            }
        }
        None
    }

    fn pick_among(
        &mut self,
        candidates: &[Candidate],
        eligible: &[usize],
        key: Option<&str>,
    ) -> usize {
        match (self.strategy, key) {
            (Strategy::RoundRobin, _) | (Strategy::ConsistentHash, None) => {
                self.round_robin(eligible)
            }
            (Strategy::ConsistentHash, Some(key)) => {
                let found = self.ring.lookup(key, |i| eligible.contains(&i));
                match found {
                    Some(i) => i,
                    None => self.round_robin(eligible),
                }
            }
            (Strategy::LeastConnections, _) => {
                let least = eligible
                    .iter()
                    .map(|&i| candidates[i].in_flight)
                    .min()
                    .unwrap_or(0);
                let ties: Vec<usize> = eligible
                    .iter()
                    .copied()
                    .filter(|&i| candidates[i].in_flight == least)
                    .collect();
                self.round_robin(&ties)
            }
            (Strategy::Nearest, _) => {
                let best = eligible.iter().filter_map(|&i| candidates[i].rtt).min();
                let ties: Vec<usize> = eligible
                    .iter()
                    .copied()
                    .filter(|&i| candidates[i].rtt == best)
                    .collect();
                self.round_robin(&ties)
            }
            (Strategy::Weighted, _) => self.smooth_weighted(eligible),
        }
    }

    fn round_robin(&mut self, eligible: &[usize]) -> usize {
        let i = eligible[self.next % eligible.len()];
        self.next = self.next.wrapping_add(1);
        i
    }

    /// nginx's smooth weighted round-robin: every eligible endpoint gains its weight, the
    /// largest is picked and loses the total. Over any `sum(weights)` picks each endpoint is
    /// picked exactly `weight` times, interleaved (5:1:1 gives a a b a c a a).
    fn smooth_weighted(&mut self, eligible: &[usize]) -> usize {
        if self.current.len() < self.weights.len() {
            self.current.resize(self.weights.len(), 0);
        }
        let mut total = 0;
        let mut best = eligible[0];
        for &i in eligible {
            let weight = self.weights.get(i).copied().unwrap_or(1);
            self.current[i] += weight;
            total += weight;
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}

/// A consistent-hash ring: each endpoint owns `vnodes` points (hashes of `name#n`); a key
/// belongs to the first point at or after its hash, clockwise. Adding or removing one of n
/// endpoints moves only about 1/n of the keys, and a removed endpoint's keys only.
#[derive(Debug, Clone, Default)]
pub struct HashRing {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl HashRing {
    pub fn new(names: &[&str], vnodes: usize) -> Self {
        let mut points: Vec<(u64, usize)> = names
            .iter()
            .enumerate()
            .flat_map(|(i, name)| {
                (0..vnodes).map(move |v| (stable_hash(format!("{name}#{v}").as_bytes()), i))
            })
            .collect();
        points.sort_unstable();
        Self { points }
    }

    /// The owner of `key`: the first endpoint clockwise from the key's hash that `accept`s.
    pub fn lookup(&self, key: &str, accept: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let h = stable_hash(key.as_bytes());
        let start = self.points.partition_point(|&(p, _)| p < h);
        (0..self.points.len())
            .map(|k| self.points[(start + k) % self.points.len()].1)
            .find(|&i| accept(i))
    }
}

/// 64-bit FNV-1a followed by a MurmurHash3 finaliser (FNV alone spreads similar strings such
/// as `node#1`, `node#2` poorly). The same on every run and platform.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint::new(format!("node-{i}:7400")))
            .collect()
    }

    fn counts(b: &mut Balancer, candidates: &[Candidate], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for _ in 0..picks {
            counts[b.pick(candidates, None).expect("a candidate")] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_is_even_and_skips_unavailable() {
        let mut b = Balancer::new(Strategy::RoundRobin, &endpoints(3));
        let all = [Candidate::available(); 3];
        let order: Vec<usize> = (0..6).map(|_| b.pick(&all, None).expect("pick")).collect();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        assert_eq!(counts(&mut b, &all, 3000), [1000, 1000, 1000]);

        let mut some = all;
        some[1].available = false;
        assert_eq!(counts(&mut b, &some, 1000), [500, 0, 500]);
    }

    #[test]
    fn falls_back_to_unavailable_then_excluded_endpoints() {
        let mut b = Balancer::new(Strategy::RoundRobin, &endpoints(3));
        // Nothing available: still picks (probing), among the non-excluded.
        let mut down = [Candidate::default(); 3];
        down[0].excluded = true;
        assert_eq!(counts(&mut b, &down, 100), [0, 50, 50]);
        // Everything excluded: any.
        let excluded = [Candidate {
            excluded: true,
            ..Candidate::available()
        }; 3];
        let c = counts(&mut b, &excluded, 99);
        assert_eq!(c, [33, 33, 33]);
        // A retry prefers an unavailable endpoint to the one that just failed it.
        let mixed = [
            Candidate {
                excluded: true,
                ..Candidate::available()
            },
            Candidate::default(),
        ];
        assert_eq!(counts(&mut b, &mixed, 10), [0, 10]);
        assert_eq!(b.pick(&[], None), None);
    }

    #[test]
    fn weighted_gives_exact_ratios_smoothly() {
        let mut eps = endpoints(2);
        eps[0].weight = 3;
        let mut b = Balancer::new(Strategy::Weighted, &eps);
        let all = [Candidate::available(); 2];
        assert_eq!(counts(&mut b, &all, 4000), [3000, 1000]);
        // Exact in every window of 4.
        for _ in 0..10 {
            assert_eq!(counts(&mut b, &all, 4), [3, 1]);
        }

        let mut eps = endpoints(3);
        eps[0].weight = 5;
        let mut b = Balancer::new(Strategy::Weighted, &eps);
        let all = [Candidate::available(); 3];
        let order: Vec<usize> = (0..7).map(|_| b.pick(&all, None).expect("pick")).collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0], "nginx's a a b a c a a");

        // Unavailable endpoints do not take part.
        let mut some = all;
        some[0].available = false;
        let c = counts(&mut b, &some, 100);
        assert_eq!(c[0], 0);
        assert!((c[1] as i64 - c[2] as i64).abs() <= 1, "{c:?}");
    }

    #[test]
    fn least_connections_prefers_idle_endpoints() {
        let mut b = Balancer::new(Strategy::LeastConnections, &endpoints(3));
        let mut c = [Candidate::available(); 3];
        c[0].in_flight = 5;
        c[1].in_flight = 0;
        c[2].in_flight = 3;
        for _ in 0..10 {
            assert_eq!(b.pick(&c, None), Some(1));
        }
        c[1].in_flight = 4;
        assert_eq!(b.pick(&c, None), Some(2));
        // An idle but unavailable endpoint is skipped.
        c[1].in_flight = 0;
        c[1].available = false;
        assert_eq!(b.pick(&c, None), Some(2));
        // Ties go round-robin.
        let idle = [Candidate::available(); 3];
        assert_eq!(counts(&mut b, &idle, 300), [100, 100, 100]);
    }

    #[test]
    fn nearest_picks_lowest_rtt_and_unmeasured_last() {
        let mut b = Balancer::new(Strategy::Nearest, &endpoints(3));
        let ms = Duration::from_millis;
        let mut c = [Candidate::available(); 3];
        c[0].rtt = Some(ms(20));
        c[1].rtt = Some(ms(5));
        c[2].rtt = None;
        for _ in 0..10 {
            assert_eq!(b.pick(&c, None), Some(1));
        }
        c[1].available = false;
        assert_eq!(b.pick(&c, None), Some(0), "measured before unmeasured");
        c[0].available = false;
        assert_eq!(b.pick(&c, None), Some(2));
        // None measured: round-robin.
        let unmeasured = [Candidate::available(); 3];
        assert_eq!(counts(&mut b, &unmeasured, 30), [10, 10, 10]);
    }

    fn owners(names: &[&str], keys: &[String]) -> Vec<String> {
        let ring = HashRing::new(names, VIRTUAL_NODES);
        keys.iter()
            .map(|k| names[ring.lookup(k, |_| true).expect("an owner")].to_string())
            .collect()
    }

    fn keys() -> Vec<String> {
        (0..10_000).map(|i| format!("object-{i}")).collect()
    }

    #[test]
    fn consistent_hash_keeps_keys_on_their_endpoint() {
        let mut b = Balancer::new(Strategy::ConsistentHash, &endpoints(4));
        let all = [Candidate::available(); 4];
        for key in keys().iter().take(200) {
            let first = b.pick(&all, Some(key));
            for _ in 0..3 {
                assert_eq!(b.pick(&all, Some(key)), first, "{key}");
            }
        }
        // Balanced enough: each of 4 endpoints owns 15% to 35% of 10,000 keys.
        let mut counts = [0usize; 4];
        for key in keys() {
            counts[b.pick(&all, Some(&key)).expect("pick")] += 1;
        }
        for c in counts {
            assert!((1500..=3500).contains(&c), "{counts:?}");
        }
        // No key: round-robin.
        assert_eq!(
            (0..4)
                .map(|_| b.pick(&all, None).expect("pick"))
                .collect::<Vec<_>>()
                .len(),
            4
        );
    }

    #[test]
    fn consistent_hash_adding_a_fifth_endpoint_moves_about_a_fifth() {
        let four = ["a:1", "b:1", "c:1", "d:1"];
        let five = ["a:1", "b:1", "c:1", "d:1", "e:1"];
        let keys = keys();
        let before = owners(&four, &keys);
        let after = owners(&five, &keys);
        let moved: Vec<usize> = (0..keys.len()).filter(|&i| before[i] != after[i]).collect();
        let share = moved.len() as f64 / keys.len() as f64;
        eprintln!(
            "adding a 5th endpoint moved {:.1}% of the keys",
            share * 100.0
        );
        assert!((0.10..=0.30).contains(&share), "moved {share}");
        // Every moved key moved to the new endpoint.
        assert!(moved.iter().all(|&i| after[i] == "e:1"));
    }

    #[test]
    fn consistent_hash_removing_an_endpoint_moves_only_its_keys() {
        let five = ["a:1", "b:1", "c:1", "d:1", "e:1"];
        let four = ["a:1", "b:1", "d:1", "e:1"];
        let keys = keys();
        let before = owners(&five, &keys);
        let after = owners(&four, &keys);
        let mut moved = 0;
        for i in 0..keys.len() {
            if before[i] != "c:1" {
                assert_eq!(
                    before[i], after[i],
                    "{} moved though its node stayed",
                    keys[i]
                );
            } else {
                moved += 1;
            }
        }
        eprintln!("removing 1 of 5 endpoints moved {moved} of 10000 keys (only its own)");
        assert!((1000..=3000).contains(&moved), "c owned {moved}");

        // Marking an endpoint unavailable has the same effect as removing it.
        let eps: Vec<Endpoint> = five.iter().map(|n| Endpoint::new(*n)).collect();
        let mut b = Balancer::new(Strategy::ConsistentHash, &eps);
        let mut c = [Candidate::available(); 5];
        c[2].available = false;
        for (i, key) in keys.iter().enumerate().take(2000) {
            let got = b.pick(&c, Some(key)).expect("pick");
            assert_eq!(five[got], after[i], "{key}");
        }
    }

    proptest::proptest! {
        /// Whatever the strategy and the endpoints' states, a pick is in range, prefers the
        /// available non-excluded endpoints, and avoids excluded ones while it can.
        #[test]
        fn picks_respect_availability_and_exclusion(
            strategy in 0usize..5,
            weights in proptest::collection::vec(1u32..10, 1..8),
            states in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY, 0usize..4, proptest::option::of(0u64..50)), 8),
            keys in proptest::collection::vec("[a-z]{0,6}", 1..20),
        ) {
            let strategies = [
                Strategy::RoundRobin,
                Strategy::LeastConnections,
                Strategy::Weighted,
                Strategy::ConsistentHash,
                Strategy::Nearest,
            ];
            let eps: Vec<Endpoint> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Endpoint::weighted(format!("n{i}:1"), w))
                .collect();
            let candidates: Vec<Candidate> = states[..eps.len()]
                .iter()
                .map(|&(available, excluded, in_flight, rtt)| Candidate {
                    available,
                    excluded,
                    in_flight,
                    rtt: rtt.map(Duration::from_millis),
                })
                .collect();
            let mut b = Balancer::new(strategies[strategy], &eps);
            let any_preferred = candidates.iter().any(|c| c.available && !c.excluded);
            let any_unexcluded = candidates.iter().any(|c| !c.excluded);
            for key in &keys {
                let i = b.pick(&candidates, Some(key)).expect("candidates exist");
                proptest::prop_assert!(i < candidates.len());
                let c = candidates[i];
                if any_preferred {
                    proptest::prop_assert!(c.available && !c.excluded);
                } else if any_unexcluded {
                    proptest::prop_assert!(!c.excluded);
                }
            }
        }
    }

    // Computed independently (FNV-1a 64, then MurmurHash3 fmix64).
    const HASH_OF_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
    const HASH_OF_NODE: u64 = 0x044e_823c_7df3_1f9f;

    #[test]
    fn stable_hash_is_stable() {
        // Fixed values: a change of the hash would move every key of every deployment.
        assert_eq!(stable_hash(b""), HASH_OF_EMPTY);
        assert_eq!(stable_hash(b"node-1:7400#0"), HASH_OF_NODE);
        assert_eq!(stable_hash(b"node-1:7400"), stable_hash(b"node-1:7400"));
        assert_ne!(stable_hash(b"node-1"), stable_hash(b"node-2"));
    }
}
