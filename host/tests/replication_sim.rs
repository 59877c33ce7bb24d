//! Deterministic simulation of the replication core (`replication::core`) with the per-key
//! versions (`replication::version`) and the hybrid logical clock (`replication::hlc`).
//!
//! A world of 3 to 5 nodes, no threads and no real time: an event queue ordered by simulated
//! time (ties by a sequence number) carries messages, dial outcomes and storage completions.
//! Each node has a `Core`, a durable "disk" (its log per origin, per-key siblings, its applied
//! clock, its HLC, the contexts of the tombstones it collected) and a wall clock that is the
//! global time plus a skew (up to 6 s, beyond the core's `max_skew_ms` of 2 s).
//!
//! Faults, drawn per run from the seed: connections that deliver reliably and in order (as a
//! QUIC stream does; 70% of runs) or that duplicate, reorder and lose messages, a lost message
//! failing its connection; partitions (a node pair or a split of the node set, healed later);
//! crashes (the core and what is in flight are lost, the disk stays) and restarts; clock skew
//! and clock steps; slow storage and storage failures (`apply_failed`); dials into a cut or a
//! dead node; a dial that finds a live connection replacing it or not; tombstone collection
//! under `stable()`. The conflict policy is one of the four per run.
//!
//! After the write phase everything heals (all nodes up, no cuts, no loss; skews reset or
//! left for time to pass) and every node must, within a bound, hold every entry (equal logs
//! and applied clocks) and the same versions of every key, equal to a plain reference model
//! of the policy computed from every write made. All along, no node's `stable()` may cover an
//! entry some node has not durably applied.
//!
//! Tombstone collection: a key whose only version is a tombstone whose dot `stable()` covers is
//! deleted outright; the node keeps the tombstone's causal context, and a later local write to
//! a key with no versions includes it (else the write would count as concurrent with the
//! tombstone on nodes that still hold it: see `a_write_after_collecting_a_tombstone_has_seen_it`).
//!
//! Every run is seeded. A failure prints its seed, policy, node count, parameters and the end
//! of its trace; re-run it alone with
//! `SIM_SEED=1234 cargo test -p vektagraf --test replication_sim -- simulated --nocapture`
//! (`SIM_TRACE=1` prints the whole trace; `SIM_RUNS=n` and `SIM_FIRST=s` run other seeds).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use vektagraf::model::ConflictPolicy;
use vektagraf::replication::core::{Action, Config, Core, Entry, Message, Stats};
use vektagraf::replication::hlc::Hlc;
use vektagraf::replication::version::{self, Clock, Sibling, Version};

/// Runs of the main simulation (CI: debug build, two cores).
const RUNS: u64 = 3_000;
/// Simulated start time: far enough from 0 that a clock running behind stays positive.
const T0: u64 = 1_000_000_000;
const TICK_MS: u64 = 100;
const MAX_SKEW_MS: u64 = 2_000;
/// After healing, every node must hold everything within this much simulated time.
const CONVERGE_BOUND_MS: u64 = 120_000;
/// A run that needs more events than this is a message storm.
const MAX_EVENTS: u64 = 400_000;

const POLICIES: [ConflictPolicy; 4] = [
    ConflictPolicy::LastWriteWins,
    ConflictPolicy::FirstWriteWins,
    ConflictPolicy::VectorClock,
    ConflictPolicy::Manual,
];

// ---------------------------------------------------------------------------------------------
// A tiny seeded PRNG (splitmix64).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }

    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64) / ((1u64 << 53) as f64)
    }
}

// ---------------------------------------------------------------------------------------------
// Entry bodies, disks, nodes.

type Key = u8;

/// One key write of a logged batch: `None` deletes (a tombstone).
#[derive(Debug, Clone, PartialEq)]
struct Write {
    key: Key,
    value: Option<u32>,
    seen: Clock,
}

type Body = Vec<Write>;

/// What survives a crash.
#[derive(Debug, Clone, Default, PartialEq)]
struct Disk {
    log: BTreeMap<(u64, u64), Entry<Body>>,
    keys: BTreeMap<Key, Vec<Sibling<u32>>>,
    applied: Clock,
    hlc: u64,
    /// The causal contexts of the tombstones this node has collected: a local write's context
    /// includes it, so the write counts as having seen them and all they had seen.
    collected: Clock,
}

struct Live {
    core: Core<Body>,
    hlc: Hlc,
}

struct Node {
    origin: u64,
    disk: Disk,
    live: Option<Live>,
    skew_ms: i64,
    /// Bumped by each crash: events of an earlier incarnation are dropped.
    incarnation: u64,
    /// The storage applies batches one at a time, in order.
    busy_until: u64,
}

fn name(i: usize) -> String {
    format!("n{i}")
}

fn index(name: &str) -> usize {
    name[1..].parse().expect("node names are n<i>")
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

// ---------------------------------------------------------------------------------------------
// Run parameters.

#[derive(Debug, Clone)]
struct Params {
    nodes: usize,
    keys: u8,
    policy: ConflictPolicy,
    /// Reliable, in-order delivery within a connection (QUIC streams); else lossy.
    ordered: bool,
    /// Per message: lost, and (unless `silent_loss`) its connection closed.
    loss: f64,
    silent_loss: bool,
    dup: f64,
    reorder: f64,
    /// A dial that finds a live connection replaces it (else the new one is dropped).
    replace_on_dial: bool,
    write_ms: u64,
    /// Expected writes per tick during the write phase.
    write_rate: f64,
    delete_p: f64,
    crash_p: f64,
    partition_p: f64,
    heal_p: f64,
    step_p: f64,
    collect_p: f64,
    apply_fail_p: f64,
    apply_delay_max: u64,
    /// Local writes' contexts are only what the key's siblings have seen (forgetting what
    /// tombstone collection removed): shown wrong by `a_write_after_collecting_a_tombstone_has_seen_it`.
    naive_collection: bool,
    skews: Vec<i64>,
    reset_skews_at_heal: bool,
    window: u64,
    batch: u64,
    resend_after_ms: u64,
    backoff_min_ms: u64,
    backoff_max_ms: u64,
}

fn random_skew(rng: &mut Rng) -> i64 {
    let magnitude = match rng.below(10) {
        0..=5 => rng.below(50),
        6..=7 => rng.below(1_500),
        _ => rng.range(2_500, 6_000),
    } as i64;
    if rng.chance(0.7) {
        magnitude
    } else {
        -magnitude
    }
}

impl Params {
    fn random(rng: &mut Rng) -> Self {
        let nodes = rng.range(3, 5) as usize;
        let ordered = rng.chance(0.7);
        let (loss, dup, reorder) = if ordered {
            (0.0, 0.0, 0.0)
        } else {
            (rng.unit() * 0.05, rng.unit() * 0.2, rng.unit() * 0.3)
        };
        let skews = (0..nodes).map(|_| random_skew(rng)).collect();
        Self {
            nodes,
            keys: rng.range(2, 8) as u8,
            policy: POLICIES[rng.below(4) as usize],
            ordered,
            loss,
            silent_loss: false,
            dup,
            reorder,
            replace_on_dial: rng.chance(0.5),
            write_ms: rng.range(500, 3_500),
            write_rate: 0.2 + rng.unit() * 1.3,
            delete_p: 0.1 + rng.unit() * 0.3,
            crash_p: if rng.chance(0.7) {
                rng.unit() * 0.04
            } else {
                0.0
            },
            partition_p: if rng.chance(0.7) {
                rng.unit() * 0.06
            } else {
                0.0
            },
            heal_p: 0.03 + rng.unit() * 0.15,
            step_p: if rng.chance(0.3) { 0.02 } else { 0.0 },
            collect_p: if rng.chance(0.8) {
                rng.unit() * 0.4
            } else {
                0.0
            },
            apply_fail_p: if rng.chance(0.4) {
                rng.unit() * 0.15
            } else {
                0.0
            },
            apply_delay_max: if rng.chance(0.5) { 0 } else { rng.range(1, 60) },
            naive_collection: false,
            skews,
            reset_skews_at_heal: rng.chance(0.5),
            window: [1, 2, 4, 16, 64, 4096][rng.below(6) as usize],
            batch: [1, 2, 3, 8, 256][rng.below(5) as usize],
            resend_after_ms: rng.range(300, 1_500),
            backoff_min_ms: rng.range(50, 200),
            backoff_max_ms: rng.range(1_000, 5_000),
        }
    }

    /// No faults, no skew, no random writes: for the scenario tests.
    fn quiet(nodes: usize, policy: ConflictPolicy) -> Self {
        Self {
            nodes,
            keys: 4,
            policy,
            ordered: true,
            loss: 0.0,
            silent_loss: false,
            dup: 0.0,
            reorder: 0.0,
            replace_on_dial: false,
            write_ms: 0,
            write_rate: 0.0,
            delete_p: 0.25,
            crash_p: 0.0,
            partition_p: 0.0,
            heal_p: 0.0,
            step_p: 0.0,
            collect_p: 0.0,
            apply_fail_p: 0.0,
            apply_delay_max: 0,
            naive_collection: false,
            skews: vec![0; nodes],
            reset_skews_at_heal: false,
            window: 4096,
            batch: 256,
            resend_after_ms: 1_000,
            backoff_min_ms: 100,
            backoff_max_ms: 2_000,
        }
    }

    fn config(&self, i: usize) -> Config {
        let mut c = Config::new(i as u64 + 1, name(i));
        c.max_skew_ms = MAX_SKEW_MS;
        c.window = self.window;
        c.batch = self.batch;
        c.resend_after_ms = self.resend_after_ms;
        c.backoff_min_ms = self.backoff_min_ms;
        c.backoff_max_ms = self.backoff_max_ms;
        c
    }
}

// ---------------------------------------------------------------------------------------------
// What happened during a run (summed over runs to show what was covered).

#[derive(Debug, Clone, Default)]
struct Counters {
    runs: u64,
    ordered_runs: u64,
    writes: u64,
    deletes: u64,
    writes_skipped_down: u64,
    crashes: u64,
    partitions: u64,
    heals: u64,
    clock_steps: u64,
    messages: u64,
    entry_messages: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    dropped_closed: u64,
    no_connection: u64,
    connections: u64,
    replaced: u64,
    dial_failures: u64,
    apply_failures: u64,
    apply_refused: u64,
    collected: u64,
    rejected_clocks: u64,
    duplicates: u64,
    gaps: u64,
    /// Entries messages sent more than a second after convergence (should be none).
    late_entry_messages: u64,
    converge_ms_max: u64,
    converge_ms_sum: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        sum!(
            runs,
            ordered_runs,
            writes,
            deletes,
            writes_skipped_down,
            crashes,
            partitions,
            heals,
            clock_steps,
            messages,
            entry_messages,
            lost,
            duplicated,
            reordered,
            dropped_closed,
            no_connection,
            connections,
            replaced,
            dial_failures,
            apply_failures,
            apply_refused,
            collected,
            rejected_clocks,
            duplicates,
            gaps,
            late_entry_messages,
            converge_ms_sum
        );
        self.converge_ms_max = self.converge_ms_max.max(o.converge_ms_max);
    }

    fn add_stats(&mut self, s: &Stats) {
        self.rejected_clocks += s.rejected_clocks;
        self.duplicates += s.duplicates;
        self.gaps += s.gaps;
    }
}

// ---------------------------------------------------------------------------------------------
// Events.

enum Ev {
    Tick,
    Deliver {
        conn: u64,
        from: usize,
        to: usize,
        msg: Message<Body>,
    },
    DialDone {
        from: usize,
        to: usize,
        incarnation: u64,
    },
    Stored {
        node: usize,
        incarnation: u64,
        entries: Vec<Entry<Body>>,
    },
    Write(usize),
    Restart(usize),
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    // Reversed: BinaryHeap pops the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

fn describe(msg: &Message<Body>) -> String {
    match msg {
        Message::Hello {
            origin,
            applied,
            connected,
        } => format!("Hello o{origin} {:?} links {connected:?}", applied.0),
        Message::Entries(es) => {
            let dots: Vec<String> = es
                .iter()
                .map(|e| format!("{}:{}", e.origin, e.seq))
                .collect();
            format!("Entries [{}]", dots.join(" "))
        }
        Message::Ack {
            applied,
            connected,
            resend,
            ..
        } => format!(
            "Ack{} {:?} links {connected:?}",
            if *resend { " RESEND" } else { "" },
            applied.0
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The world.

struct World {
    p: Params,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Queued>,
    nodes: Vec<Node>,
    /// Live connection per node pair: its id.
    conns: BTreeMap<(usize, usize), u64>,
    next_conn: u64,
    /// Per connection and sending side: the last scheduled delivery (in-order mode).
    last_delivery: BTreeMap<(u64, usize), u64>,
    /// Connections ever made per pair.
    conn_count: BTreeMap<(usize, usize), u64>,
    /// Per node pair: the one-way delay before jitter.
    latency: BTreeMap<(usize, usize), u64>,
    cut: BTreeSet<(usize, usize)>,
    /// Random writes and faults at ticks (the write phase).
    chaos: bool,
    /// Every write ever made: the reference model's input.
    history: Vec<(Key, Sibling<u32>)>,
    written: Clock,
    c: Counters,
    /// Entries messages delivered to each node (kept only when `record` is set).
    record: bool,
    delivered: Vec<(usize, usize, Message<Body>)>,
    check_stable_every_event: bool,
    /// Per node: how many of its next storage applies fail (scenarios).
    fail_next: Vec<u32>,
    failure: Option<String>,
    events: u64,
    trace: Option<Vec<String>>,
    print_trace: bool,
}

impl World {
    fn new(seed: u64, p: Params) -> Self {
        let mut rng = Rng(seed ^ 0x5EED_C0DE_F00D);
        let n = p.nodes;
        let mut latency = BTreeMap::new();
        for a in 0..n {
            for b in a + 1..n {
                latency.insert((a, b), rng.range(2, 40));
            }
        }
        let names: Vec<String> = (0..n).map(name).collect();
        let nodes = (0..n)
            .map(|i| Node {
                origin: i as u64 + 1,
                disk: Disk::default(),
                live: Some(Live {
                    core: Core::new(p.config(i), Clock::default(), names.clone()),
                    hlc: Hlc::default(),
                }),
                skew_ms: p.skews[i],
                incarnation: 0,
                busy_until: 0,
            })
            .collect();
        let mut w = Self {
            p,
            rng,
            now: T0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            conns: BTreeMap::new(),
            next_conn: 1,
            last_delivery: BTreeMap::new(),
            conn_count: BTreeMap::new(),
            latency,
            cut: BTreeSet::new(),
            chaos: false,
            history: Vec::new(),
            written: Clock::default(),
            c: Counters::default(),
            record: false,
            delivered: Vec::new(),
            check_stable_every_event: false,
            fail_next: vec![0; n],
            failure: None,
            events: 0,
            trace: None,
            print_trace: false,
        };
        w.schedule(T0 + TICK_MS, Ev::Tick);
        w
    }

    fn log(&mut self, f: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let line = format!("{:>7} {}", self.now - T0, f());
            if self.print_trace {
                eprintln!("{line}");
            }
            t.push(line);
        }
    }

    fn fail(&mut self, msg: String) {
        if self.failure.is_none() {
            self.log(|| format!("FAILURE: {msg}"));
            self.failure = Some(msg);
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Queued {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn wall(&self, n: usize) -> u64 {
        (self.now as i64 + self.nodes[n].skew_ms) as u64
    }

    fn up(&self, n: usize) -> bool {
        self.nodes[n].live.is_some()
    }

    fn core(&self, n: usize) -> &Core<Body> {
        &self.nodes[n].live.as_ref().expect("node is up").core
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        self.up(a) && self.up(b) && !self.cut.contains(&pair(a, b))
    }

    /// Runs every event up to `t` (inclusive); the clock then reads `t`.
    fn run_until(&mut self, t: u64) {
        while self.failure.is_none() {
            match self.queue.peek() {
                Some(q) if q.at <= t => {}
                _ => break,
            }
            let q = self.queue.pop().expect("peeked");
            self.now = q.at;
            self.events += 1;
            if self.events > MAX_EVENTS {
                let msg = format!(
                    "event storm: {} events by {} ms ({} messages, {} entries messages)",
                    self.events,
                    self.now - T0,
                    self.c.messages,
                    self.c.entry_messages
                );
                self.fail(msg);
                return;
            }
            self.handle(q.ev);
            if self.check_stable_every_event {
                self.check_stable();
            }
        }
        self.now = self.now.max(t);
    }

    fn run_for(&mut self, ms: u64) {
        self.run_until(self.now + ms);
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick => self.tick(),
            Ev::Deliver {
                conn,
                from,
                to,
                msg,
            } => {
                if self.conns.get(&pair(from, to)) != Some(&conn) {
                    self.c.dropped_closed += 1;
                    return;
                }
                self.log(|| format!("n{to} <- n{from}: {}", describe(&msg)));
                if self.record && matches!(msg, Message::Entries(_)) {
                    self.delivered.push((from, to, msg.clone()));
                }
                let wall = self.wall(to);
                let live = self.nodes[to]
                    .live
                    .as_mut()
                    .expect("a connection's end is up");
                live.core.received(&name(from), msg, wall);
                self.drain(to);
            }
            Ev::DialDone {
                from,
                to,
                incarnation,
            } => {
                if self.nodes[from].incarnation != incarnation || !self.up(from) {
                    return;
                }
                if self.reachable(from, to) {
                    self.connect(from, to);
                } else {
                    self.c.dial_failures += 1;
                    self.log(|| format!("n{from} dial n{to} failed"));
                    let wall = self.wall(from);
                    let live = self.nodes[from].live.as_mut().expect("checked");
                    live.core.disconnected(&name(to), wall);
                    self.drain(from);
                }
            }
            Ev::Stored {
                node,
                incarnation,
                entries,
            } => {
                if self.nodes[node].incarnation == incarnation && self.up(node) {
                    self.store(node, entries);
                }
            }
            Ev::Write(n) => {
                if self.up(n) {
                    self.write(n);
                } else {
                    self.c.writes_skipped_down += 1;
                }
            }
            Ev::Restart(n) => {
                if !self.up(n) {
                    self.restart(n);
                }
            }
        }
    }

    fn tick(&mut self) {
        self.schedule(self.now + TICK_MS, Ev::Tick);
        if self.chaos {
            self.chaos_tick();
        }
        if self.p.collect_p > 0.0 && self.rng.chance(self.p.collect_p) {
            let n = self.rng.below(self.p.nodes as u64) as usize;
            self.collect(n);
        }
        for n in 0..self.p.nodes {
            let wall = self.wall(n);
            if let Some(live) = &mut self.nodes[n].live {
                live.core.tick(wall);
                self.drain(n);
            }
        }
        self.check_stable();
        for n in 0..self.p.nodes {
            if let Some(live) = &self.nodes[n].live {
                if live.core.applied_clock() != &self.nodes[n].disk.applied {
                    let msg = format!(
                        "harness: n{n}'s core applied {:?} != disk {:?}",
                        live.core.applied_clock().0,
                        self.nodes[n].disk.applied.0
                    );
                    self.fail(msg);
                }
            }
        }
    }

    /// The write phase's random writes and faults, once per tick.
    fn chaos_tick(&mut self) {
        let n = self.p.nodes as u64;
        for _ in 0..3 {
            if self.rng.chance(self.p.write_rate / 3.0) {
                let node = self.rng.below(n) as usize;
                let at = self.now + self.rng.below(TICK_MS);
                self.schedule(at, Ev::Write(node));
            }
        }
        if self.rng.chance(self.p.crash_p) {
            let node = self.rng.below(n) as usize;
            if self.up(node) {
                self.crash(node);
                let at = self.now + self.rng.range(200, 4_000);
                self.schedule(at, Ev::Restart(node));
            }
        }
        if self.rng.chance(self.p.partition_p) {
            self.partition();
        }
        if !self.cut.is_empty() && self.rng.chance(self.p.heal_p) {
            self.c.heals += 1;
            if self.rng.chance(0.5) {
                self.log(|| "heal all cuts".into());
                self.cut.clear();
            } else {
                let i = self.rng.below(self.cut.len() as u64) as usize;
                let c = *self.cut.iter().nth(i).expect("in range");
                self.log(|| format!("heal cut {c:?}"));
                self.cut.remove(&c);
            }
        }
        if self.rng.chance(self.p.step_p) {
            let node = self.rng.below(n) as usize;
            let skew = random_skew(&mut self.rng);
            self.c.clock_steps += 1;
            self.log(|| format!("n{node} clock steps to skew {skew} ms"));
            self.nodes[node].skew_ms = skew;
        }
    }

    fn partition(&mut self) {
        let n = self.p.nodes;
        self.c.partitions += 1;
        let mut cuts = Vec::new();
        if self.rng.chance(0.5) {
            let a = self.rng.below(n as u64) as usize;
            let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
            cuts.push(pair(a, b));
        } else {
            // A split: a random proper subset against the rest.
            let mask = self.rng.range(1, (1 << n) - 2);
            for a in 0..n {
                for b in a + 1..n {
                    if (mask >> a) & 1 != (mask >> b) & 1 {
                        cuts.push((a, b));
                    }
                }
            }
        }
        self.log(|| format!("partition {cuts:?}"));
        for c in cuts {
            self.cut(c.0, c.1);
        }
    }

    /// Cuts the network between two nodes (closing their connection).
    fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert(pair(a, b));
        self.close(a, b);
    }

    fn heal(&mut self) {
        self.chaos = false;
        self.cut.clear();
        self.p.loss = 0.0;
        for n in 0..self.p.nodes {
            if !self.up(n) {
                self.restart(n);
            }
            if self.p.reset_skews_at_heal {
                self.nodes[n].skew_ms = self.rng.below(100) as i64 - 50;
            }
        }
        self.log(|| "HEAL: all up, no cuts, no loss".into());
    }

    fn drain(&mut self, n: usize) {
        let actions = match &mut self.nodes[n].live {
            Some(live) => live.core.poll(),
            None => return,
        };
        for a in actions {
            self.action(n, a);
        }
    }

    fn action(&mut self, n: usize, a: Action<Body>) {
        match a {
            Action::Dial(peer) => {
                let to = index(&peer);
                let mut at = self.now + 2 * self.latency[&pair(n, to)] + self.rng.below(10);
                if !self.reachable(n, to) {
                    // A dial into the void fails after a timeout.
                    at += self.rng.range(100, 1_000);
                }
                self.log(|| format!("n{n} dials n{to}"));
                let incarnation = self.nodes[n].incarnation;
                self.schedule(
                    at,
                    Ev::DialDone {
                        from: n,
                        to,
                        incarnation,
                    },
                );
            }
            Action::Send(peer, msg) => self.send(n, index(&peer), msg),
            Action::SendRange {
                peer,
                origin,
                from,
                to,
            } => {
                let mut entries = Vec::new();
                for s in from..=to {
                    match self.nodes[n].disk.log.get(&(origin, s)) {
                        Some(e) => entries.push(e.clone()),
                        None => {
                            self.fail(format!(
                                "n{n} was asked to send {origin}:{s}, which its log lacks \
                                 (applied {:?})",
                                self.nodes[n].disk.applied.0
                            ));
                            return;
                        }
                    }
                }
                self.send(n, index(&peer), Message::Entries(entries));
            }
            Action::Apply { entries, .. } => {
                let delay = if self.p.apply_delay_max == 0 {
                    0
                } else {
                    self.rng.below(self.p.apply_delay_max + 1)
                };
                let at = self.now.max(self.nodes[n].busy_until) + delay;
                self.nodes[n].busy_until = at;
                let incarnation = self.nodes[n].incarnation;
                self.schedule(
                    at,
                    Ev::Stored {
                        node: n,
                        incarnation,
                        entries,
                    },
                );
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Message<Body>) {
        let Some(&conn) = self.conns.get(&pair(from, to)) else {
            self.c.no_connection += 1;
            return;
        };
        self.c.messages += 1;
        if matches!(msg, Message::Entries(_)) {
            self.c.entry_messages += 1;
        }
        let base = self.now + self.latency[&pair(from, to)] + self.rng.below(10);
        if self.p.ordered {
            let last = self.last_delivery.entry((conn, from)).or_insert(0);
            let at = base.max(*last);
            *last = at;
            self.schedule(
                at,
                Ev::Deliver {
                    conn,
                    from,
                    to,
                    msg,
                },
            );
            return;
        }
        if self.rng.chance(self.p.loss) {
            // A QUIC connection delivers what is sent on it or fails: a lost message takes the
            // connection down (what else is in flight on it is lost too). Silent loss on a
            // live connection is outside the core's contract (see
            // `silent_loss_on_a_live_connection_is_repaired`).
            self.c.lost += 1;
            self.log(|| format!("n{from} -> n{to} LOST: {}", describe(&msg)));
            if !self.p.silent_loss {
                self.close(from, to);
            }
            return;
        }
        let mut at = base;
        if self.rng.chance(self.p.reorder) {
            self.c.reordered += 1;
            at += self.rng.range(1, 300);
        }
        if self.rng.chance(self.p.dup) {
            self.c.duplicated += 1;
            let again = at + self.rng.below(200);
            let copy = msg.clone();
            self.schedule(
                again,
                Ev::Deliver {
                    conn,
                    from,
                    to,
                    msg: copy,
                },
            );
        }
        self.schedule(
            at,
            Ev::Deliver {
                conn,
                from,
                to,
                msg,
            },
        );
    }

    fn connect(&mut self, a: usize, b: usize) {
        if self.conns.contains_key(&pair(a, b)) {
            if !self.p.replace_on_dial {
                return;
            }
            self.c.replaced += 1;
            self.close(a, b);
        }
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(pair(a, b), id);
        *self.conn_count.entry(pair(a, b)).or_insert(0) += 1;
        self.c.connections += 1;
        self.log(|| format!("n{a} - n{b} connected (conn {id})"));
        for (x, y) in [(a, b), (b, a)] {
            let wall = self.wall(x);
            let live = self.nodes[x].live.as_mut().expect("both ends are up");
            live.core.connected(&name(y), wall);
            self.drain(x);
        }
    }

    /// Closes the connection between two nodes, if any: both (live) ends hear of it and what is
    /// in flight on it is lost.
    fn close(&mut self, a: usize, b: usize) {
        if self.conns.remove(&pair(a, b)).is_none() {
            return;
        }
        self.log(|| format!("n{a} - n{b} closed"));
        for (x, y) in [(a, b), (b, a)] {
            let wall = self.wall(x);
            if let Some(live) = &mut self.nodes[x].live {
                live.core.disconnected(&name(y), wall);
                self.drain(x);
            }
        }
    }

    fn crash(&mut self, n: usize) {
        self.c.crashes += 1;
        self.log(|| format!("n{n} CRASHES"));
        if let Some(live) = self.nodes[n].live.take() {
            self.c.add_stats(live.core.stats());
        }
        self.nodes[n].incarnation += 1;
        self.nodes[n].busy_until = 0;
        for m in 0..self.p.nodes {
            if m != n {
                self.close(n, m);
            }
        }
    }

    fn restart(&mut self, n: usize) {
        self.log(|| format!("n{n} restarts"));
        let names: Vec<String> = (0..self.p.nodes).map(name).collect();
        let core = Core::new(self.p.config(n), self.nodes[n].disk.applied.clone(), names);
        let hlc = Hlc::resume(self.nodes[n].disk.hlc);
        self.nodes[n].live = Some(Live { core, hlc });
    }

    /// A local write of 1 to 3 random keys, committed at once.
    fn write(&mut self, n: usize) {
        let count = self.rng.range(1, 3.min(self.p.keys as u64));
        let mut keys = BTreeSet::new();
        while keys.len() < count as usize {
            keys.insert(self.rng.below(self.p.keys as u64) as Key);
        }
        let writes: Vec<(Key, Option<u32>)> = keys
            .into_iter()
            .map(|k| {
                if self.rng.chance(self.p.delete_p) {
                    (k, None)
                } else {
                    (k, Some(self.rng.below(1_000_000) as u32))
                }
            })
            .collect();
        self.write_keys(n, &writes);
    }

    /// A local write of these distinct keys, committed at once.
    fn write_keys(&mut self, n: usize, writes: &[(Key, Option<u32>)]) {
        let wall = self.wall(n);
        let policy = self.p.policy;
        let node = &mut self.nodes[n];
        let live = node.live.as_mut().expect("writes go to live nodes");
        let origin = node.origin;
        let seq = node.disk.applied.0.get(&origin).copied().unwrap_or(0) + 1;
        let hlc = live.hlc.now(wall);
        let mut body = Vec::new();
        for &(key, value) in writes {
            let siblings = node.disk.keys.entry(key).or_default();
            let mut seen = version::seen(siblings);
            // A key with no versions may have had its tombstone collected: the write comes
            // after it (a key with versions has them carry what they had seen).
            if siblings.is_empty() && !self.p.naive_collection {
                seen.merge(&node.disk.collected);
            }
            let sibling = Sibling {
                version: Version::new(hlc, origin, seq, &seen),
                value,
            };
            version::merge(policy, siblings, sibling.clone());
            self.history.push((key, sibling));
            body.push(Write { key, value, seen });
            self.c.writes += 1;
            if value.is_none() {
                self.c.deletes += 1;
            }
        }
        let entry = Entry {
            origin,
            seq,
            hlc,
            body,
        };
        let line = format!("n{n} writes {origin}:{seq} hlc {hlc:#x} {:?}", entry.body);
        node.disk.log.insert((origin, seq), entry);
        node.disk.applied.add(origin, seq);
        node.disk.hlc = live.hlc.last();
        self.written.add(origin, seq);
        let mut clock = Clock::default();
        clock.add(origin, seq);
        live.core.applied(&clock, wall);
        self.log(|| line);
        self.drain(n);
    }

    /// The storage's answer to an `Apply`: all of the batch or (a failure) none of it.
    fn store(&mut self, n: usize, entries: Vec<Entry<Body>>) {
        let wall = self.wall(n);
        let scripted = self.fail_next[n] > 0;
        if scripted {
            self.fail_next[n] -= 1;
        }
        if scripted || (self.p.apply_fail_p > 0.0 && self.rng.chance(self.p.apply_fail_p)) {
            self.c.apply_failures += 1;
            self.log(|| format!("n{n} storage FAILS applying {} entries", entries.len()));
            let live = self.nodes[n].live.as_mut().expect("checked");
            live.core.apply_failed(wall);
            self.drain(n);
            return;
        }
        // Like the store's `append_log`: each origin's log stays contiguous, an entry that does
        // not follow what is applied is refused (possible only after an earlier failure).
        let mut next = self.nodes[n].disk.applied.clone();
        for e in &entries {
            if next.0.get(&e.origin).copied().unwrap_or(0) + 1 != e.seq {
                if self.p.apply_fail_p == 0.0 {
                    let msg = format!(
                        "n{n}'s core handed out {}:{} to apply, which does not follow what is \
                         applied ({:?}), with no storage failure before",
                        e.origin, e.seq, self.nodes[n].disk.applied.0
                    );
                    self.fail(msg);
                    return;
                }
                self.c.apply_refused += 1;
                let applied = self.nodes[n].disk.applied.0.clone();
                self.log(|| {
                    format!(
                        "n{n} storage REFUSES {}:{} (applied {applied:?})",
                        e.origin, e.seq
                    )
                });
                let live = self.nodes[n].live.as_mut().expect("checked");
                live.core.apply_failed(wall);
                self.drain(n);
                return;
            }
            next.add(e.origin, e.seq);
        }
        let policy = self.p.policy;
        let node = &mut self.nodes[n];
        let live = node.live.as_mut().expect("checked");
        let mut clock = Clock::default();
        for e in entries {
            live.hlc
                .observe(e.hlc, wall, u64::MAX)
                .expect("no skew bound here");
            for w in &e.body {
                let siblings = node.disk.keys.entry(w.key).or_default();
                let sibling = Sibling {
                    version: Version::new(e.hlc, e.origin, e.seq, &w.seen),
                    value: w.value,
                };
                version::merge(policy, siblings, sibling);
            }
            node.disk.applied.add(e.origin, e.seq);
            clock.add(e.origin, e.seq);
            node.disk.log.insert((e.origin, e.seq), e);
        }
        node.disk.hlc = live.hlc.last();
        live.core.applied(&clock, wall);
        self.log(|| format!("n{n} applies {:?}", clock.0));
        self.drain(n);
    }

    /// Tombstone collection: a key whose only sibling is a tombstone every peer has confirmed
    /// is deleted outright.
    fn collect(&mut self, n: usize) {
        let Some(live) = &self.nodes[n].live else {
            return;
        };
        let stable = live.core.stable();
        let disk = &mut self.nodes[n].disk;
        let collectable: Vec<Key> = disk
            .keys
            .iter()
            .filter(|(_, s)| {
                s.len() == 1
                    && s[0].value.is_none()
                    && stable.contains(s[0].version.origin, s[0].version.seq)
            })
            .map(|(k, _)| *k)
            .collect();
        let mut missing = None;
        for k in &collectable {
            let t = disk.keys.remove(k).expect("listed").remove(0);
            // What the tombstone had seen is here already (every peer's confirmed clock covers
            // the tombstone, so each origin's writes before it were applied here): none of it
            // can arrive later and come back to life.
            if !disk.applied.covers(&t.version.context) {
                missing = Some((*k, t.version.context.clone()));
            }
            disk.collected.merge(&t.version.context);
        }
        let applied = disk.applied.0.clone();
        if let Some((k, context)) = missing {
            self.fail(format!(
                "n{n} collected key {k}'s tombstone (context {:?}) before holding all it had \
                 seen (applied {applied:?})",
                context.0
            ));
        }
        if !collectable.is_empty() {
            self.c.collected += collectable.len() as u64;
            self.log(|| format!("n{n} collects keys {collectable:?} (stable {:?})", stable.0));
        }
    }

    /// `stable()` of every live node covers only entries every node holds durably.
    fn check_stable(&mut self) {
        for n in 0..self.p.nodes {
            let Some(live) = &self.nodes[n].live else {
                continue;
            };
            let stable = live.core.stable();
            let lacking = self
                .nodes
                .iter()
                .position(|other| !other.disk.applied.covers(&stable));
            if let Some(m) = lacking {
                let msg = format!(
                    "n{n}'s stable() {:?} covers entries n{m} lacks (n{m} applied {:?})",
                    stable.0, self.nodes[m].disk.applied.0
                );
                self.fail(msg);
                return;
            }
        }
    }

    /// A message handed straight to a node's core (bypassing the network).
    fn inject(&mut self, from: usize, to: usize, msg: Message<Body>) {
        let wall = self.wall(to);
        let live = self.nodes[to]
            .live
            .as_mut()
            .expect("injected into a live node");
        live.core.received(&name(from), msg, wall);
        self.drain(to);
    }

    /// What node `n` shows for a key (absent: `None`).
    fn visible(&self, n: usize, key: Key) -> Option<u32> {
        self.nodes[n]
            .disk
            .keys
            .get(&key)
            .and_then(|s| version::winner(self.p.policy, s))
            .and_then(|w| w.value)
    }

    /// Runs until every node holds every entry; the time that took, or `None` past `bound_ms`.
    fn run_to_convergence(&mut self, bound_ms: u64) -> Option<u64> {
        let start = self.now;
        while !self.converged() {
            if self.failure.is_some() || self.now - start > bound_ms {
                return None;
            }
            self.run_for(TICK_MS);
        }
        Some(self.now - start)
    }

    fn tail(&self) -> String {
        let t = self.trace.as_deref().unwrap_or_default();
        t[t.len().saturating_sub(80)..].join("\n")
    }

    fn converged(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| n.live.is_some() && n.disk.applied == self.written)
    }

    /// The final assertions (after convergence).
    fn check_final(&self) -> Result<(), String> {
        let total = self
            .history
            .iter()
            .map(|(_, s)| (s.version.origin, s.version.seq));
        let entries: BTreeSet<(u64, u64)> = total.collect();
        let first = &self.nodes[0].disk;
        for (i, n) in self.nodes.iter().enumerate() {
            let d = &n.disk;
            if d.applied != self.written {
                return Err(format!(
                    "n{i} applied {:?}, written {:?}",
                    d.applied.0, self.written.0
                ));
            }
            let logged: BTreeSet<(u64, u64)> = d.log.keys().copied().collect();
            if logged != entries {
                return Err(format!("n{i}'s log holds {logged:?}, written {entries:?}"));
            }
            if d.log != first.log {
                return Err(format!("n{i}'s log differs from n0's"));
            }
        }
        let reference = reference(self.p.policy, &self.history);
        for (i, n) in self.nodes.iter().enumerate() {
            let state = normalise(&n.disk.keys);
            for key in 0..self.p.keys {
                let got = state.get(&key);
                let want = reference.get(&key);
                let visible = |s: Option<&Vec<Sibling<u32>>>| {
                    s.and_then(|s| version::winner(self.p.policy, s))
                        .and_then(|w| w.value)
                };
                if visible(got) != visible(want) {
                    return Err(format!(
                        "key {key}: n{i} shows {:?}, the reference {:?}\n  n{i} holds {}\n  \
                         reference maximal {}",
                        visible(got),
                        visible(want),
                        show(got),
                        show(want)
                    ));
                }
                if got != want {
                    return Err(format!(
                        "key {key}: n{i}'s siblings differ from the reference\n  n{i} holds {}\n  \
                         reference {}",
                        show(got),
                        show(want)
                    ));
                }
            }
            if state != normalise(&first.keys) {
                return Err(format!("n{i}'s state differs from n0's"));
            }
        }
        Ok(())
    }
}

fn show(s: Option<&Vec<Sibling<u32>>>) -> String {
    let Some(s) = s else {
        return "(absent)".into();
    };
    let mut out = String::new();
    for x in s {
        let v = &x.version;
        let _ = write!(
            out,
            "[{}:{} hlc {:#x} ctx {:?} = {:?}] ",
            v.origin, v.seq, v.hlc, v.context.0, x.value
        );
    }
    out
}

/// A node's state with keys whose only sibling is a tombstone left out (collected or not).
fn normalise(keys: &BTreeMap<Key, Vec<Sibling<u32>>>) -> BTreeMap<Key, Vec<Sibling<u32>>> {
    keys.iter()
        .filter(|(_, s)| !(s.is_empty() || (s.len() == 1 && s[0].value.is_none())))
        .map(|(k, s)| (*k, s.clone()))
        .collect()
}

/// The policy in plain terms, from every write ever made: per key, the writes no other write
/// has seen; last-write-wins keeps only the highest `(hlc, origin)` of them.
fn reference(
    policy: ConflictPolicy,
    history: &[(Key, Sibling<u32>)],
) -> BTreeMap<Key, Vec<Sibling<u32>>> {
    let mut by_key: BTreeMap<Key, Vec<&Sibling<u32>>> = BTreeMap::new();
    for (k, s) in history {
        by_key.entry(*k).or_default().push(s);
    }
    let mut out = BTreeMap::new();
    for (k, writes) in by_key {
        let mut maximal: Vec<Sibling<u32>> = writes
            .iter()
            .filter(|w| {
                !writes
                    .iter()
                    .any(|o| o.version != w.version && o.version.has_seen(&w.version))
            })
            .map(|w| (*w).clone())
            .collect();
        maximal.sort_by_key(|w| w.version.order());
        if policy == ConflictPolicy::LastWriteWins {
            maximal = maximal.split_off(maximal.len() - 1);
        }
        out.insert(k, maximal);
    }
    normalise(&out)
}

// ---------------------------------------------------------------------------------------------
// One seeded run.

struct Outcome {
    c: Counters,
}

fn run_seed(seed: u64, trace: bool, print: bool) -> (Result<Outcome, String>, Vec<String>, Params) {
    let mut rng = Rng(seed);
    let p = Params::random(&mut rng);
    let mut w = World::new(seed, p.clone());
    if trace {
        w.trace = Some(Vec::new());
        w.print_trace = print;
        w.log(|| format!("seed {seed}: {p:?}"));
    }
    let result = simulate(&mut w);
    (result, w.trace.take().unwrap_or_default(), p)
}

fn simulate(w: &mut World) -> Result<Outcome, String> {
    w.chaos = true;
    w.run_until(T0 + w.p.write_ms);
    if let Some(f) = w.failure.take() {
        return Err(f);
    }
    w.heal();
    let healed = w.now;
    loop {
        w.run_for(TICK_MS);
        if let Some(f) = w.failure.take() {
            return Err(f);
        }
        if w.converged() {
            break;
        }
        if w.now - healed > CONVERGE_BOUND_MS {
            let applied: Vec<String> = w
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| format!("n{i} {:?}", n.disk.applied.0))
                .collect();
            return Err(format!(
                "no convergence {} ms after healing: written {:?}, applied {}",
                w.now - healed,
                w.written.0,
                applied.join(", ")
            ));
        }
    }
    let took = w.now - healed;
    // Settle, then count what is still being sent.
    w.run_for(1_000);
    let before = w.c.entry_messages;
    w.run_for(2_000);
    if let Some(f) = w.failure.take() {
        return Err(f);
    }
    w.c.late_entry_messages = w.c.entry_messages - before;
    w.check_final()
        .map_err(|e| format!("{e}\n(converged {took} ms after healing)"))?;
    let mut c = w.c.clone();
    for n in &w.nodes {
        if let Some(live) = &n.live {
            c.add_stats(live.core.stats());
        }
    }
    c.runs = 1;
    c.ordered_runs = w.p.ordered as u64;
    c.converge_ms_max = took;
    c.converge_ms_sum = took;
    Ok(Outcome { c })
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed; on failure, runs it again with the trace on and describes it.
fn check_seed(seed: u64) -> Result<Counters, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(seed, false, false).0));
    let err = match outcome {
        Ok(Ok(o)) => return Ok(o.c),
        Ok(Err(e)) => e,
        Err(panic) => panic_message(panic),
    };
    let traced = catch_unwind(AssertUnwindSafe(|| run_seed(seed, true, false)));
    let (trace, p) = match traced {
        Ok((_, trace, p)) => (trace, Some(p)),
        Err(_) => (Vec::new(), None),
    };
    let tail: Vec<&String> = trace.iter().rev().take(60).collect();
    let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
    Err(format!(
        "seed {seed} failed: {err}\n\
         policy {:?}, nodes {:?}, ordered connections {:?}\nparams {p:?}\n\
         last trace lines:\n{}\n\
         re-run: SIM_SEED={seed} cargo test -p vektagraf --test replication_sim -- --nocapture",
        p.as_ref().map(|p| p.policy),
        p.as_ref().map(|p| p.nodes),
        p.as_ref().map(|p| p.ordered),
        tail.join("\n"),
    ))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        format!("panic: {s}")
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

#[test]
fn simulated_clusters_converge_to_the_reference_state() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let print = std::env::var("SIM_TRACE").is_ok();
        let (result, trace, p) = run_seed(seed, true, print);
        match result {
            Ok(o) => println!("seed {seed} passed ({p:?})\n{:#?}", o.c),
            Err(e) => {
                let tail = trace.len().saturating_sub(200);
                panic!(
                    "seed {seed} failed: {e}\nparams {p:?}\nlast trace lines:\n{}",
                    trace[tail..].join("\n")
                );
            }
        }
        return;
    }
    let first = env_u64("SIM_FIRST").unwrap_or(0);
    let runs = env_u64("SIM_RUNS").unwrap_or(RUNS);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u64;
    let started = std::time::Instant::now();
    let results: Vec<Result<Counters, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|k| {
                s.spawn(move || {
                    let mut total = Counters::default();
                    for seed in (first + k..first + runs).step_by(workers as usize) {
                        total.add(&check_seed(seed)?);
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| Err(panic_message(p))))
            .collect()
    });
    let mut total = Counters::default();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(c) => total.add(&c),
            Err(e) => failures.push(e),
        }
    }
    println!(
        "{} runs in {:.1} s ({} with in-order connections); mean convergence {} ms after \
         healing, max {} ms\n{total:#?}",
        total.runs,
        started.elapsed().as_secs_f64(),
        total.ordered_runs,
        total.converge_ms_sum / total.runs.max(1),
        total.converge_ms_max
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Focused scenarios.

/// A scenario world: no faults unless the test adds them, the trace kept for failure messages.
fn scenario(seed: u64, p: Params) -> World {
    let mut w = World::new(seed, p);
    w.trace = Some(Vec::new());
    w
}

fn assert_ok(w: &World) {
    assert!(w.failure.is_none(), "{:?}\n{}", w.failure, w.tail());
}

#[test]
fn entries_travel_a_to_b_to_c_while_a_c_is_cut() {
    let mut w = scenario(1, Params::quiet(3, ConflictPolicy::VectorClock));
    w.cut(0, 2);
    w.run_for(1_000);
    for _ in 0..10 {
        w.write(0);
        w.run_for(30);
    }
    w.run_for(2_000);
    assert_ok(&w);
    assert_eq!(w.nodes[2].disk.applied.0.get(&1), Some(&10), "{}", w.tail());
    assert!(!w.conn_count.contains_key(&(0, 2)), "A and C never talked");
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
}

/// C first hears A directly (so B does not forward A's entries to C), then A–C is cut while A
/// keeps writing: B must start forwarding, not only once A goes quiet.
#[test]
fn forwarding_starts_when_a_direct_link_is_cut_while_its_origin_keeps_writing() {
    let mut w = scenario(2, Params::quiet(3, ConflictPolicy::LastWriteWins));
    w.run_for(1_000);
    assert_eq!(w.conns.len(), 3, "a full mesh\n{}", w.tail());
    w.cut(0, 2);
    for _ in 0..100 {
        w.write(0);
        w.run_for(50);
    }
    assert_ok(&w);
    let has = w.nodes[2].disk.applied.0.get(&1).copied().unwrap_or(0);
    assert!(
        has >= 80,
        "after 5 s of writes at A (one per 50 ms), C holds only {has} of A's 100 entries\n{}",
        w.tail()
    );
}

#[test]
fn entries_from_a_clock_far_ahead_are_refused_until_the_others_catch_up() {
    let mut p = Params::quiet(3, ConflictPolicy::LastWriteWins);
    p.skews = vec![10_000, 0, 0];
    let resend_after_ms = p.resend_after_ms;
    let mut w = scenario(3, p);
    w.run_for(1_000);
    let before = w.c.entry_messages;
    w.write(0);
    w.write(0);
    w.write(0);
    w.run_for(3_000);
    assert_ok(&w);
    for n in 1..3 {
        assert!(!w.nodes[n].disk.applied.contains(1, 1), "{}", w.tail());
        assert!(w.core(n).stats().rejected_clocks > 0, "{}", w.tail());
        assert!(
            Hlc::wall_ms(w.nodes[n].disk.hlc) <= w.wall(n),
            "n{n}'s clock was dragged ahead"
        );
    }
    // Refused entries are sent again about once per `resend_after_ms`, not once a round trip.
    let sent = w.c.entry_messages - before;
    let bound = 2 * (3 * (3_000 / resend_after_ms + 2));
    assert!(
        sent <= bound,
        "{sent} entries messages in 3 s while refused (bound {bound})\n{}",
        w.tail()
    );
    // Some 8 s after the writes, the others' clocks are within the bound.
    w.run_for(10_000);
    assert_ok(&w);
    assert!(w.converged(), "{}", w.tail());
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
}

#[test]
fn a_restarted_node_catches_up() {
    let mut p = Params::quiet(3, ConflictPolicy::Manual);
    p.window = 4;
    p.batch = 2;
    let mut w = scenario(4, p);
    w.run_for(1_000);
    for _ in 0..3 {
        w.write(2);
        w.run_for(20);
    }
    w.run_for(500);
    w.crash(2);
    for i in 0..40 {
        w.write(i % 2);
        w.run_for(25);
    }
    w.run_for(1_000);
    assert!(!w.converged());
    assert_eq!(
        w.nodes[2].disk.applied.0.get(&3),
        Some(&3),
        "its disk survived"
    );
    w.restart(2);
    let took = w.run_to_convergence(10_000);
    assert_ok(&w);
    assert!(took.is_some(), "{}", w.tail());
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
}

/// The storage fails to apply the last entry an origin wrote; nothing later from that origin
/// reveals the gap, yet the receiver asks for it again.
#[test]
fn a_failed_apply_of_an_origins_last_entry_is_asked_for_again() {
    let mut w = scenario(7, Params::quiet(2, ConflictPolicy::VectorClock));
    w.run_for(1_000);
    w.fail_next[1] = 1;
    w.write(0);
    w.run_for(3_000);
    assert_ok(&w);
    assert_eq!(w.c.apply_failures, 1);
    assert!(w.converged(), "{}", w.tail());
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
}

#[test]
fn duplicate_messages_do_not_change_state() {
    let mut p = Params::quiet(3, ConflictPolicy::VectorClock);
    p.ordered = false;
    p.dup = 1.0;
    p.reorder = 0.3;
    let mut w = scenario(5, p);
    w.record = true;
    w.run_for(1_000);
    for i in 0..30 {
        w.write(i % 3);
        w.run_for(15);
    }
    assert!(w.run_to_convergence(10_000).is_some(), "{}", w.tail());
    w.run_for(1_000);
    assert_ok(&w);
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
    let duplicates: u64 = (0..3).map(|n| w.core(n).stats().duplicates).sum();
    assert!(duplicates > 0);
    // Everything delivered, delivered again: nothing changes.
    let disks: Vec<Disk> = w.nodes.iter().map(|n| n.disk.clone()).collect();
    w.record = false;
    for (from, to, msg) in std::mem::take(&mut w.delivered) {
        w.inject(from, to, msg);
    }
    w.run_for(2_000);
    assert_ok(&w);
    for (n, d) in disks.iter().enumerate() {
        assert!(w.nodes[n].disk == *d, "n{n} changed\n{}", w.tail());
    }
    w.check_final()
        .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
}

/// Slow and failing storage, gaps and duplicates, crashes and collection: after every event,
/// no node's `stable()` covers an entry some node has not durably applied (else a tombstone
/// could be collected while a write that has not seen it can still be made).
#[test]
fn stable_never_covers_an_entry_some_peer_lacks() {
    for seed in 0..120 {
        let mut rng = Rng(seed ^ 0xABCD);
        let mut p = Params::random(&mut rng);
        p.apply_delay_max = 150;
        p.apply_fail_p = 0.2;
        p.collect_p = 0.5;
        if !p.ordered {
            p.reorder = 0.5;
        }
        let mut w = World::new(seed, p.clone());
        w.check_stable_every_event = true;
        if let Err(e) = simulate(&mut w) {
            let mut again = scenario(seed, p.clone());
            again.check_stable_every_event = true;
            let _ = simulate(&mut again);
            panic!("seed {seed}: {e}\nparams {p:?}\n{}", again.tail());
        }
    }
}

/// A tombstone every peer has confirmed is collected (the key deleted outright); a write made
/// afterwards must still count as having seen it, or nodes that have not collected it yet keep
/// both as concurrent versions (first-write-wins then shows the tombstone there, the write on
/// the node that collected: they never agree).
#[test]
fn a_write_after_collecting_a_tombstone_has_seen_it() {
    for naive in [false, true] {
        let mut p = Params::quiet(3, ConflictPolicy::FirstWriteWins);
        p.naive_collection = naive;
        let mut w = scenario(6, p);
        w.run_for(1_000);
        w.write_keys(2, &[(0, Some(7))]);
        w.run_for(200);
        w.write_keys(2, &[(0, None)]);
        // Traffic from the others, so n2 acknowledges (and so confirms) its own delete.
        for i in 0..10 {
            w.write_keys(i % 2, &[(1, Some(i as u32))]);
            w.run_for(100);
        }
        assert!(w.run_to_convergence(5_000).is_some(), "{}", w.tail());
        w.run_for(2_000);
        assert!(
            w.core(0).stable().contains(3, 2),
            "n0's stable {:?}\n{}",
            w.core(0).stable().0,
            w.tail()
        );
        w.collect(0);
        assert!(!w.nodes[0].disk.keys.contains_key(&0), "collected on n0");
        assert!(w.nodes[1].disk.keys.contains_key(&0), "not collected on n1");
        w.write_keys(0, &[(0, Some(8))]);
        assert!(w.run_to_convergence(5_000).is_some(), "{}", w.tail());
        w.run_for(1_000);
        assert_ok(&w);
        let shown: Vec<Option<u32>> = (0..3).map(|n| w.visible(n, 0)).collect();
        if naive {
            // What goes wrong when a write's context is only its key's siblings.
            assert_eq!(shown, vec![Some(8), None, None], "{}", w.tail());
            assert!(w.check_final().is_err());
        } else {
            assert_eq!(shown, vec![Some(8); 3], "{}", w.tail());
            w.check_final()
                .unwrap_or_else(|e| panic!("{e}\n{}", w.tail()));
        }
    }
}

/// QUIC streams never lose a message on a live connection, but the core does not rely on it:
/// entries lost silently are sent again when no acknowledgement comes (go-back-N after twice
/// `resend_after_ms`) or asked for again when something reveals them, and a lost Hello is made
/// good by the next acknowledgement or heartbeat (which carries the origin too).
#[test]
fn silent_loss_on_a_live_connection_is_repaired() {
    let mut failures = Vec::new();
    for seed in 0..env_u64("SIM_RUNS").unwrap_or(1_000) {
        let mut rng = Rng(seed);
        let mut p = Params::random(&mut rng);
        p.ordered = false;
        p.loss = 0.05;
        p.silent_loss = true;
        let mut w = World::new(seed, p.clone());
        if let Err(e) = simulate(&mut w) {
            let mut again = scenario(seed, p);
            let _ = simulate(&mut again);
            let trace = again.trace.unwrap_or_default();
            let lost: Vec<&String> = trace.iter().filter(|l| l.contains("LOST")).collect();
            failures.push(format!(
                "seed {seed}: {}\n  lost: {lost:?}",
                e.lines().next().unwrap_or_default()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
