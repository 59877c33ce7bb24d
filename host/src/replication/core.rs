//! The replication protocol as a state machine without I/O (like quinn-proto): the driver feeds
//! it connection events, messages and the current time, and carries out the [`Action`]s it
//! returns — dial a peer, send a message, send a range of the local log, apply entries. No
//! sockets, clocks or threads here, so the simulation tests run it through partitions,
//! reordering, duplication, crashes and clock skew deterministically.
//!
//! Positions: every node's operation log holds, per origin, a contiguous run of entries
//! `1..=applied[origin]`. On connect, peers exchange `Hello` with their applied clocks; each then
//! pushes what the other lacks, from every origin (so an entry travels A → B → C while A–C is
//! cut), within a window of unacknowledged entries. A receiver hands entries to the driver only
//! in sequence per origin (duplicates are dropped, a gap asks the sender to resend from what it
//! has), refuses entries stamped too far in the future of its clock, and acknowledges with its
//! applied clock. Entries of an origin the peer reports a live connection to are not forwarded
//! (the origin sends them itself), which keeps a full mesh from sending each entry twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::hlc::Hlc;
use super::version::Clock;

/// A peer, by the node id its certificate carries.
pub type PeerName = String;

#[derive(Debug, Clone)]
pub struct Config {
    /// This node's origin number (the `origin` of its log entries).
    pub origin: u64,
    pub name: PeerName,
    /// Entries stamped more than this far ahead of local wall time are refused.
    pub max_skew_ms: u64,
    /// Unacknowledged entries in flight to one peer.
    pub window: u64,
    /// Entries per `SendRange`.
    pub batch: u64,
    /// Redial backoff: starts at `backoff_min_ms`, doubles up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// A peer that has entries we lack and sent nothing for this long is asked to resend.
    pub resend_after_ms: u64,
    /// How often the state digests are compared with a peer in step with us (0: never).
    pub anti_entropy_ms: u64,
}

impl Config {
    pub fn new(origin: u64, name: impl Into<PeerName>) -> Self {
        Self {
            origin,
            name: name.into(),
            max_skew_ms: 60_000,
            window: 4096,
            batch: 256,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            resend_after_ms: 1_000,
            anti_entropy_ms: 30_000,
        }
    }
}

/// One log entry on the wire; `B` is the entry's body (opaque here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry<B> {
    pub origin: u64,
    pub seq: u64,
    pub hlc: u64,
    pub body: B,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<B> {
    /// First message each way on a connection.
    Hello {
        origin: u64,
        applied: Clock,
        /// Origins this node has a live connection to.
        connected: Vec<u64>,
    },
    Entries(Vec<Entry<B>>),
    Ack {
        /// The sender's origin again: a Hello lost on a live connection is made good by the
        /// next acknowledgement (or heartbeat).
        origin: u64,
        applied: Clock,
        connected: Vec<u64>,
        /// The receiver dropped entries (a gap, a clock too far ahead): send again from
        /// `applied`.
        resend: bool,
    },
    /// Part of a state snapshot, sent instead of entries the log no longer holds (opaque
    /// here: the driver exports and merges it). The last part makes the receiver's log move
    /// on to the snapshot's clock.
    Snapshot {
        body: Vec<u8>,
        last: bool,
    },
    /// Anti-entropy: digests and rows of key ranges (opaque here).
    Repair(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action<B> {
    /// Open a connection to the peer (and report `connected` or `disconnected`).
    Dial(PeerName),
    Send(PeerName, Message<B>),
    /// Send local log entries `from..=to` of `origin` to the peer, as `Message::Entries`.
    SendRange {
        peer: PeerName,
        origin: u64,
        from: u64,
        to: u64,
    },
    /// Apply these entries (in order; each origin's are contiguous and follow what is
    /// applied), then report [`Core::applied`] or [`Core::apply_failed`].
    Apply {
        peer: PeerName,
        entries: Vec<Entry<B>>,
    },
    /// The peer lacks entries the log no longer holds: export the state and send it as
    /// `Message::Snapshot` parts, reporting [`Core::snapshot_sent`] with the export's clock.
    SendSnapshot {
        peer: PeerName,
    },
    /// Merge a snapshot part from the peer (in order with `Apply`); after the last part,
    /// report [`Core::installed`].
    Install {
        peer: PeerName,
        body: Vec<u8>,
        last: bool,
    },
    /// We and the peer hold the same clock: compare state digests with it.
    Compare {
        peer: PeerName,
    },
    /// An anti-entropy message from the peer, for the driver.
    Repair {
        peer: PeerName,
        body: Vec<u8>,
    },
}

/// A snapshot on its way to a peer.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Outbound {
    #[default]
    None,
    /// Asked for; the export's clock is not known yet.
    Preparing,
    /// Sent, consistent at this clock; done once the peer acknowledges it.
    Sent(Clock),
}

/// What the core knows about one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    /// The peer's origin number, once it said hello.
    pub origin: Option<u64>,
    pub connected: bool,
    /// Its applied clock, as it last told us.
    pub theirs: Clock,
    /// What we have sent it on this connection.
    pub sent: Clock,
    /// Origins it has live connections to.
    pub links: BTreeSet<u64>,
    pub last_heard_ms: Option<u64>,
    /// A snapshot we are sending it (nothing else is pushed meanwhile).
    pub snapshot: Outbound,
    /// It is sending us a snapshot (no resend is asked for meanwhile: entries after the
    /// snapshot's clock are refused until it is merged, then asked for again).
    pub installing: bool,
    /// While its snapshot comes: when its latest part other than the last arrived (a snapshot
    /// whose parts stop coming before the last is given up).
    inbound_ms: Option<u64>,
    /// When the snapshot we are sending it was sent.
    snapshot_ms: u64,
    compared_ms: u64,
    /// Our clock at the last comparison with it.
    compared_at: Option<Clock>,
    /// When it was last caught up with everything we have.
    pub caught_up_ms: Option<u64>,
    retry_at_ms: u64,
    backoff_ms: u64,
    /// Its clock, once we applied every entry of its own it had when it sent it: a tombstone
    /// all peers' confirmed clocks cover can be collected (no write that has not seen it can
    /// still arrive).
    pub confirmed: Clock,
    candidate: Option<Clock>,
    asked_resend_ms: u64,
    /// Entries from it were refused while a resend had just been asked for: ask again when
    /// due (one request per `resend_after_ms`, however many messages are refused).
    resend_owed: bool,
    /// When entries from it last arrived (a peer that has more but sends none is asked again).
    last_entries_ms: Option<u64>,
    /// When its acknowledged clock last advanced while we had entries in flight to it.
    progress_ms: u64,
    last_heartbeat_ms: u64,
    pub entries_sent: u64,
    pub entries_received: u64,
}

/// Counters the driver exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rejected_clocks: u64,
    pub duplicates: u64,
    pub gaps: u64,
}

/// An acknowledgement: the sender's origin, applied clock and live links.
fn ack<B>(origin: u64, applied: &Clock, links: &[u64], resend: bool) -> Message<B> {
    Message::Ack {
        origin,
        applied: applied.clone(),
        connected: links.to_vec(),
        resend,
    }
}

/// Entries sent to a peer and not yet acknowledged.
fn in_flight(p: &PeerState) -> u64 {
    p.sent
        .0
        .iter()
        .map(|(o, s)| s.saturating_sub(p.theirs.0.get(o).copied().unwrap_or(0)))
        .sum()
}

pub struct Core<B> {
    config: Config,
    applied: Clock,
    /// Per origin, the highest seq the local log no longer holds: a peer lacking one of
    /// these gets a snapshot.
    horizon: Clock,
    /// Entries handed out by `Apply` and not yet reported.
    applying: Clock,
    peers: BTreeMap<PeerName, PeerState>,
    actions: Vec<Action<B>>,
    stats: Stats,
}

impl<B: Clone> Core<B> {
    /// `applied`: the local log's positions (after a restart, what storage holds).
    pub fn new(config: Config, applied: Clock, peers: impl IntoIterator<Item = PeerName>) -> Self {
        let peers = peers
            .into_iter()
            .filter(|p| *p != config.name)
            .map(|p| (p, PeerState::default()))
            .collect();
        Self {
            applying: applied.clone(),
            applied,
            horizon: Clock::default(),
            config,
            peers,
            actions: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn applied_clock(&self) -> &Clock {
        &self.applied
    }

    pub fn peers(&self) -> &BTreeMap<PeerName, PeerState> {
        &self.peers
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The local log no longer holds entries up to `horizon` (trimmed, or replaced by a
    /// snapshot merged here).
    pub fn set_horizon(&mut self, horizon: &Clock) {
        self.horizon.merge(horizon);
    }

    pub fn horizon(&self) -> &Clock {
        &self.horizon
    }

    /// The snapshot asked for by `SendSnapshot` is on its way, consistent at `clock`.
    pub fn snapshot_sent(&mut self, peer: &str, clock: Clock, now_ms: u64) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.snapshot == Outbound::Preparing {
                p.sent.merge(&clock);
                p.snapshot = Outbound::Sent(clock);
                p.progress_ms = now_ms;
                p.snapshot_ms = now_ms;
            }
        }
    }

    /// The snapshot from the peer is merged (or abandoned).
    pub fn installed(&mut self, peer: &str) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.installing = false;
            p.inbound_ms = None;
        }
    }

    fn installing(&self) -> bool {
        self.peers.values().any(|p| p.installing)
    }

    /// The actions produced since the last call.
    pub fn poll(&mut self) -> Vec<Action<B>> {
        std::mem::take(&mut self.actions)
    }

    fn links(&self) -> Vec<u64> {
        self.peers
            .values()
            .filter(|p| p.connected)
            .filter_map(|p| p.origin)
            .collect()
    }

    /// Dials peers that are down and due; resends and catches up. Call it every few hundred
    /// milliseconds.
    pub fn tick(&mut self, now_ms: u64) {
        let names: Vec<PeerName> = self.peers.keys().cloned().collect();
        let links = self.links();
        // A snapshot whose parts stopped coming before the last one (lost on a live
        // connection) is given up: what we lack is asked for again, and the peer sends anew.
        let stalled_ms = 4 * self.config.resend_after_ms;
        for p in self.peers.values_mut() {
            if p.installing
                && p.inbound_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= stalled_ms)
            {
                p.installing = false;
                p.inbound_ms = None;
            }
        }
        let installing = self.installing();
        for name in names {
            let Some(p) = self.peers.get_mut(&name) else {
                continue;
            };
            if !p.connected {
                if now_ms >= p.retry_at_ms {
                    p.backoff_ms = (p.backoff_ms * 2)
                        .clamp(self.config.backoff_min_ms, self.config.backoff_max_ms);
                    p.retry_at_ms = now_ms + p.backoff_ms;
                    self.actions.push(Action::Dial(name));
                }
                continue;
            }
            // The peer has entries we lack but has gone quiet: ask it to send from what we
            // have (what it sent may have been refused, e.g. a clock then too far ahead).
            let behind = p
                .theirs
                .0
                .iter()
                .any(|(o, s)| !self.applying.contains(*o, *s));
            let quiet = p
                .last_entries_ms
                .is_none_or(|t| now_ms.saturating_sub(t) >= self.config.resend_after_ms);
            if ((behind && quiet) || p.resend_owed)
                && !installing
                && now_ms.saturating_sub(p.asked_resend_ms) >= self.config.resend_after_ms
            {
                p.asked_resend_ms = now_ms;
                p.resend_owed = false;
                self.actions.push(Action::Send(
                    name.clone(),
                    ack(self.config.origin, &self.applied, &links, true),
                ));
            }
            // Entries in flight and no acknowledgement for a while: they were lost (on a live
            // connection, which QUIC never does, but a peer may also drop what it cannot
            // apply): send again from what it acknowledged.
            if p.snapshot == Outbound::None
                && in_flight(p) > 0
                && now_ms.saturating_sub(p.progress_ms) >= 2 * self.config.resend_after_ms
            {
                p.sent = p.theirs.clone();
                p.progress_ms = now_ms;
            }
            // A heartbeat: the peer hears from us (last contact, lag) and learns our clock and
            // links even when no entries flow.
            if now_ms.saturating_sub(p.last_heartbeat_ms) >= self.config.resend_after_ms {
                p.last_heartbeat_ms = now_ms;
                self.actions.push(Action::Send(
                    name.clone(),
                    ack(self.config.origin, &self.applied, &links, false),
                ));
            }
            // Anti-entropy, started by the peer whose name sorts first, when both hold the
            // same clock (digests of different clocks differ for want of entries in flight);
            // every tenth interval only while nothing was applied since the last comparison
            // (each one reads every collection whole, on both sides).
            let every = match &p.compared_at {
                Some(c) if *c == self.applied => self.config.anti_entropy_ms.saturating_mul(10),
                _ => self.config.anti_entropy_ms,
            };
            if every > 0
                && self.config.name < name
                && p.origin.is_some()
                && p.snapshot == Outbound::None
                && !installing
                && in_flight(p) == 0
                && p.theirs.covers(&self.applied)
                && self.applied.covers(&p.theirs)
                && now_ms.saturating_sub(p.compared_ms) >= every
            {
                p.compared_ms = now_ms;
                p.compared_at = Some(self.applied.clone());
                self.actions.push(Action::Compare { peer: name.clone() });
            }
            self.push(&name, now_ms);
        }
    }

    /// A connection to the peer is up (either side dialled).
    pub fn connected(&mut self, peer: &str, now_ms: u64) {
        let links = self.links();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.connected = true;
        p.sent = Clock::default();
        p.resend_owed = false;
        p.snapshot = Outbound::None;
        p.installing = false;
        p.inbound_ms = None;
        p.last_heard_ms = Some(now_ms);
        p.backoff_ms = 0;
        let hello = Message::Hello {
            origin: self.config.origin,
            applied: self.applied.clone(),
            connected: links,
        };
        self.actions.push(Action::Send(peer.to_owned(), hello));
    }

    /// The connection is gone (or a dial failed): redial after a backoff.
    pub fn disconnected(&mut self, peer: &str, now_ms: u64) {
        let mut lost_link = false;
        if let Some(p) = self.peers.get_mut(peer) {
            if p.connected {
                p.backoff_ms = 0;
                lost_link = p.origin.is_some();
            }
            p.connected = false;
            p.sent = Clock::default();
            p.resend_owed = false;
            p.snapshot = Outbound::None;
            p.installing = false;
            p.inbound_ms = None;
            p.backoff_ms =
                (p.backoff_ms * 2).clamp(self.config.backoff_min_ms, self.config.backoff_max_ms);
            p.retry_at_ms = now_ms + p.backoff_ms;
        }
        // The other peers do not forward us this peer's entries while they believe we hear it
        // directly: tell them at once that we no longer do.
        if lost_link {
            let links = self.links();
            for (name, p) in &self.peers {
                if p.connected {
                    self.actions.push(Action::Send(
                        name.clone(),
                        ack(self.config.origin, &self.applied, &links, false),
                    ));
                }
            }
        }
    }

    pub fn received(&mut self, peer: &str, msg: Message<B>, now_ms: u64) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        p.last_heard_ms = Some(now_ms);
        match msg {
            Message::Hello {
                origin,
                applied,
                connected,
            } => {
                p.origin = Some(origin);
                p.theirs = applied.clone();
                p.sent = applied.clone();
                p.links = connected.into_iter().collect();
                self.note_clock(peer, applied, now_ms);
                self.push(peer, now_ms);
            }
            Message::Ack {
                origin,
                applied,
                connected,
                resend,
            } => {
                if p.origin.is_none() {
                    // Its Hello was lost: start from what it says it has.
                    p.sent = applied.clone();
                }
                p.origin = Some(origin);
                p.links = connected.into_iter().collect();
                // While a snapshot is on its way, what the peer lacks is in it, unless it asks
                // again a while after the snapshot was sent (a request made before comes within
                // a round trip): it could not install it (a part lost, or its merge failed).
                let dropped = matches!(p.snapshot, Outbound::Sent(_))
                    && now_ms.saturating_sub(p.snapshot_ms) >= self.config.resend_after_ms;
                if resend && (p.snapshot == Outbound::None || dropped) {
                    // Forget what was in flight: send again from what it has.
                    p.snapshot = Outbound::None;
                    p.sent = applied.clone();
                    p.theirs = applied.clone();
                    p.progress_ms = now_ms;
                } else {
                    if !p.theirs.covers(&applied) {
                        p.progress_ms = now_ms;
                    }
                    p.theirs.merge(&applied);
                }
                if matches!(&p.snapshot, Outbound::Sent(c) if p.theirs.covers(c)) {
                    p.snapshot = Outbound::None;
                }
                self.note_clock(peer, applied, now_ms);
                self.push(peer, now_ms);
            }
            Message::Entries(entries) => self.take_entries(peer, entries, now_ms),
            Message::Snapshot { body, last } => {
                p.installing = true;
                p.inbound_ms = (!last).then_some(now_ms);
                self.actions.push(Action::Install {
                    peer: peer.to_owned(),
                    body,
                    last,
                });
            }
            Message::Repair(body) => self.actions.push(Action::Repair {
                peer: peer.to_owned(),
                body,
            }),
        }
    }

    /// Records a peer's applied clock: what it has, for pushing and for collecting tombstones.
    fn note_clock(&mut self, peer: &str, clock: Clock, now_ms: u64) {
        let applied = self.applied.clone();
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if p.theirs.covers(&applied) {
            p.caught_up_ms = Some(now_ms);
        }
        // Its clock counts as confirmed once we hold every entry of its own it had; one
        // candidate at a time, so a peer that keeps writing still gets confirmed.
        if p.candidate.is_none() {
            p.candidate = Some(clock);
        }
        self.confirm();
    }

    fn confirm(&mut self) {
        for p in self.peers.values_mut() {
            let (Some(origin), Some(c)) = (p.origin, &p.candidate) else {
                continue;
            };
            let own = c.0.get(&origin).copied().unwrap_or(0);
            if self.applied.contains(origin, own) || own == 0 {
                p.confirmed = c.clone();
                p.candidate = None;
            }
        }
    }

    fn take_entries(&mut self, peer: &str, entries: Vec<Entry<B>>, now_ms: u64) {
        let mut accepted = Vec::new();
        let mut refused = false;
        // Origins whose rest of this message is dropped (a gap or a refused clock before it).
        let mut blocked = BTreeSet::new();
        // The peer holds every entry it sends: if one is lost here (refused, or its `Apply`
        // fails), `tick` sees the peer ahead and asks for it again, even when it is the last
        // entry of its origin (which no later message would reveal).
        let mut held = Clock::default();
        if let Some(p) = self.peers.get_mut(peer) {
            p.last_entries_ms = Some(now_ms);
        }
        for e in entries {
            held.add(e.origin, e.seq);
            if blocked.contains(&e.origin) {
                continue;
            }
            let next = self.applying.0.get(&e.origin).copied().unwrap_or(0) + 1;
            if e.seq < next {
                self.stats.duplicates += 1;
                continue;
            }
            if e.seq > next {
                self.stats.gaps += 1;
                blocked.insert(e.origin);
                refused = true;
                continue;
            }
            let ahead = Hlc::wall_ms(e.hlc).saturating_sub(now_ms);
            if ahead > self.config.max_skew_ms {
                self.stats.rejected_clocks += 1;
                blocked.insert(e.origin);
                refused = true;
                continue;
            }
            self.applying.add(e.origin, e.seq);
            accepted.push(e);
        }
        if let Some(p) = self.peers.get_mut(peer) {
            p.entries_received += accepted.len() as u64;
            p.theirs.merge(&held);
        }
        // Ask for a resend at once, but at most once per `resend_after_ms`: every request makes
        // the peer send again all it has in flight, so answering each refused message (all
        // those in flight behind a gap or a clock too far ahead) would multiply the traffic
        // with every round trip. A request not sent now is sent by `tick` when due.
        let links = self.links();
        let resend_after_ms = self.config.resend_after_ms;
        let installing = self.installing();
        if let Some(p) = self.peers.get_mut(peer).filter(|_| refused) {
            if !installing && now_ms.saturating_sub(p.asked_resend_ms) >= resend_after_ms {
                p.asked_resend_ms = now_ms;
                p.resend_owed = false;
                // What is applied, not what is being applied: the peer takes this clock as
                // durable (`confirmed`, hence `stable()`), and an `Apply` may yet fail.
                self.actions.push(Action::Send(
                    peer.to_owned(),
                    ack(self.config.origin, &self.applied, &links, true),
                ));
            } else {
                p.resend_owed = true;
            }
        }
        if !accepted.is_empty() {
            self.actions.push(Action::Apply {
                peer: peer.to_owned(),
                entries: accepted,
            });
        }
    }

    /// The driver applied (or committed locally) entries up to `clock`: acknowledge them and
    /// push them on to the peers that lack them.
    pub fn applied(&mut self, clock: &Clock, now_ms: u64) {
        self.applied.merge(clock);
        self.applying.merge(clock);
        self.confirm();
        let links = self.links();
        let names: Vec<PeerName> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected)
            .map(|(n, _)| n.clone())
            .collect();
        // Entries from other origins: tell every peer what we now have, so none forwards
        // them to us again. Our own commits need no word: peers acknowledge what we push.
        let remote = clock.0.keys().any(|o| *o != self.config.origin);
        for name in names {
            if remote {
                self.actions.push(Action::Send(
                    name.clone(),
                    ack(self.config.origin, &self.applied, &links, false),
                ));
            }
            self.push(&name, now_ms);
        }
    }

    /// Applying entries failed (storage): they will be asked for again.
    pub fn apply_failed(&mut self, now_ms: u64) {
        self.applying = self.applied.clone();
        for p in self.peers.values_mut() {
            p.asked_resend_ms = 0;
            p.last_heard_ms = Some(now_ms.saturating_sub(self.config.resend_after_ms));
        }
    }

    /// Sends the peer what it lacks, within the window.
    fn push(&mut self, peer: &str, now_ms: u64) {
        let me = self.config.origin;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        if !p.connected || p.origin.is_none() || p.snapshot != Outbound::None {
            return;
        }
        if p.theirs.covers(&self.applied) {
            p.caught_up_ms = Some(now_ms);
        }
        // Origins we send it (not its own, nor those it hears directly).
        let ours = |p: &PeerState, origin: u64| {
            Some(origin) != p.origin && (origin == me || !p.links.contains(&origin))
        };
        let has = |p: &PeerState, origin: u64| {
            p.sent
                .0
                .get(&origin)
                .copied()
                .unwrap_or(0)
                .max(p.theirs.0.get(&origin).copied().unwrap_or(0))
        };
        let lacks_trimmed = self
            .horizon
            .0
            .iter()
            .any(|(&o, &h)| ours(p, o) && has(p, o) < h);
        if lacks_trimmed {
            p.snapshot = Outbound::Preparing;
            self.actions.push(Action::SendSnapshot {
                peer: peer.to_owned(),
            });
            return;
        }
        let flying = in_flight(p);
        if flying == 0 {
            p.progress_ms = now_ms;
        }
        let mut budget = self.config.window.saturating_sub(flying);
        for (&origin, &last) in &self.applied.0 {
            if budget == 0 {
                break;
            }
            // The peer's own entries, and those of an origin it hears from directly, are not
            // ours to send.
            if !ours(p, origin) {
                continue;
            }
            let mut from = has(p, origin) + 1;
            while from <= last && budget > 0 {
                let to = last.min(from + self.config.batch.min(budget) - 1);
                self.actions.push(Action::SendRange {
                    peer: peer.to_owned(),
                    origin,
                    from,
                    to,
                });
                p.entries_sent += to - from + 1;
                budget -= to - from + 1;
                p.sent.add(origin, to);
                from = to + 1;
            }
        }
    }

    /// Entries every peer has confirmed: a tombstone whose dot this covers can be collected,
    /// and (with a snapshot covering it) the log up to it trimmed. Empty until every peer has
    /// been heard from.
    pub fn stable(&self) -> Clock {
        let mut out = self.applied.clone();
        for p in self.peers.values() {
            let mut min = Clock::default();
            for (o, s) in &out.0 {
                let theirs = p.confirmed.0.get(o).copied().unwrap_or(0);
                if theirs > 0 {
                    min.add(*o, (*s).min(theirs));
                }
            }
            out = min;
        }
        out
    }

    /// Per peer: entries of ours it has not acknowledged, and for how long it has been behind.
    pub fn lag(&self, peer: &str, now_ms: u64) -> Option<(u64, u64)> {
        let p = self.peers.get(peer)?;
        // Its own entries it has by definition.
        let ops: u64 = self
            .applied
            .0
            .iter()
            .filter(|(o, _)| Some(**o) != p.origin)
            .map(|(o, s)| s.saturating_sub(p.theirs.0.get(o).copied().unwrap_or(0)))
            .sum();
        // Never caught up (never heard from, say): unknown, shown as 0.
        let ms = match p.caught_up_ms {
            Some(t) if ops > 0 => now_ms.saturating_sub(t),
            _ => 0,
        };
        Some((ops, ms))
    }
}
