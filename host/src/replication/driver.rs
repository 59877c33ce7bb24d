//! The thin QUIC driver around the replication [`Core`]: one task owns the core and carries
//! out its actions; each peer connection has a reader and a writer task; one applier task
//! hands remote entries to the database in the order the core accepted them.
//!
//! Wire: ALPN `vektagraf-peer/1`, mutual TLS under the cluster CA. Per connection, one
//! bidirectional stream carrying frames `u32 LE length | postcard body`: first a [`Hello`]
//! each way (the node id it claims must be the one in its certificate), then core messages.
//! Of two peers, the one whose id sorts first dials (so a pair never holds two connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::core::{Action, Config, Core, Entry, Message, PeerName};
use super::hlc::system_wall_ms;
use super::state_sync::{self, Repair, SnapshotPart};
use super::tls::{peer_node_id, server_name, PeerTls};
use super::version::Clock;
use crate::db::{RemoteEntry, StateJob};
use crate::store::records::LogEntry;
use crate::store::{StateExport, StateRow};
use crate::Database;

/// What the driver needs to run.
pub struct Options {
    pub listen: SocketAddr,
    /// Peers: node id, `host:port` of its replication listener, region.
    pub peers: Vec<(String, String, String)>,
    pub region: String,
    pub tls: PeerTls,
    pub core: Config,
    /// Largest frame accepted from a peer.
    pub max_frame_bytes: u64,
    pub idle_timeout: Duration,
    /// Log entries are kept at least this long (and until every peer has them).
    pub log_retention: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    protocol: u32,
    node: String,
    origin: u64,
}

/// 2: state snapshots and anti-entropy messages. 3: plugin records in the log and in state
/// headers.
const PROTOCOL: u32 = 3;

/// A dial not through its QUIC handshake by then is abandoned (and tried again).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often tombstones every peer has seen are looked for and the log trimmed.
const TOMBSTONE_GC: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
}

fn peer_err(peer: impl Into<String>, reason: impl ToString) -> DriverError {
    DriverError::Peer {
        peer: peer.into(),
        reason: reason.to_string(),
    }
}

/// What `vektagraf cluster status`, `/ready` and `/metrics` show.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Status {
    pub node: String,
    pub region: String,
    /// This node's origin number (hex).
    pub origin: String,
    /// Per origin (hex), the last log entry applied here.
    pub applied: HashMap<String, u64>,
    pub peers: Vec<PeerStatus>,
    pub rejected_clocks: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Peers refused at the handshake (unknown id, id not matching the certificate).
    pub refused_peers: u64,
    /// Tombstones forgotten once every peer had seen them.
    pub tombstones_collected: u64,
    /// Log entries trimmed (every peer had them, and the index snapshots cover them).
    pub log_trimmed: u64,
    /// Per origin (hex), the highest seq the log no longer holds.
    pub horizon: HashMap<String, u64>,
    /// State snapshots sent to peers that lacked trimmed entries, and merged from peers.
    pub snapshots_sent: u64,
    pub snapshots_received: u64,
    /// Anti-entropy: digest comparisons started, and versions merged from peers' rows.
    pub comparisons: u64,
    pub repaired_versions: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PeerStatus {
    pub id: String,
    pub region: String,
    pub address: String,
    pub connected: bool,
    /// Our log entries it has not acknowledged.
    pub lag_ops: u64,
    /// How long it has been behind (0 when caught up).
    pub lag_ms: u64,
    /// Milliseconds since we last heard from it (None: never).
    pub last_contact_ms: Option<u64>,
    pub entries_sent: u64,
    pub entries_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[derive(Default)]
struct Io {
    sent: AtomicU64,
    received: AtomicU64,
}

enum Event {
    Connected {
        peer: String,
        id: u64,
        conn: quinn::Connection,
        tx: mpsc::UnboundedSender<Outgoing>,
    },
    Closed {
        peer: String,
        id: u64,
        reason: String,
    },
    DialFailed {
        peer: String,
        reason: String,
    },
    Message {
        peer: String,
        msg: Message<LogEntry>,
    },
    ApplyFailed(String),
    /// A state export for the peer is open (its clock known).
    SnapshotReady {
        peer: String,
        export: Box<StateExport>,
    },
    /// A snapshot could not be exported or merged: the connection restarts.
    StateFailed {
        peer: String,
        reason: String,
    },
    Installed(String),
    Send {
        peer: String,
        msg: Message<LogEntry>,
    },
    Horizon(Clock),
}

enum Outgoing {
    Message(Message<LogEntry>),
    Range { origin: u64, from: u64, to: u64 },
    Snapshot(Box<StateExport>),
}

/// What the applier merges, in the order the core accepted it.
enum Delivery {
    Entries(Vec<Entry<LogEntry>>),
    Snapshot {
        peer: String,
        body: Vec<u8>,
        last: bool,
    },
    Repair(Vec<StateRow>),
}

/// A running replicator.
pub struct Replicator {
    endpoint: quinn::Endpoint,
    tracker: tokio_util::task::TaskTracker,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    db: Arc<Database>,
    me: String,
    origin: u64,
    peers: HashMap<String, (String, String)>,
    io: HashMap<String, Io>,
    refused: AtomicU64,
    collected: AtomicU64,
    trimmed: AtomicU64,
    snapshots_sent: AtomicU64,
    snapshots_received: AtomicU64,
    comparisons: AtomicU64,
    repaired: AtomicU64,
    retention: Duration,
    max_frame: u64,
    events: mpsc::UnboundedSender<Event>,
    next_conn: AtomicU64,
    /// Tasks that hold the endpoint or a connection: shutdown waits for them, so the
    /// replication port is free when it returns.
    tracker: tokio_util::task::TaskTracker,
}

impl Replicator {
    pub async fn start(db: Arc<Database>, opts: Options) -> Result<Replicator, DriverError> {
        let Options {
            listen,
            peers,
            region,
            tls,
            core,
            max_frame_bytes,
            idle_timeout,
            log_retention,
        } = opts;
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok());
        transport.keep_alive_interval(Some(idle_timeout / 4));
        transport.stream_receive_window(quinn::VarInt::from_u32(16 << 20));
        transport.receive_window(quinn::VarInt::from_u32(64 << 20));
        transport.send_window(64 << 20);
        let transport = Arc::new(transport);
        let mut server = tls.server.clone();
        server.transport_config(transport.clone());
        let mut client = tls.client.clone();
        client.transport_config(transport);
        let mut endpoint =
            quinn::Endpoint::server(server, listen).map_err(|source| DriverError::Bind {
                addr: listen,
                source,
            })?;
        endpoint.set_default_client_config(client);

        let (events_tx, events) = mpsc::unbounded_channel();
        let applied = Clock(db.applied_clock());
        let peer_names: Vec<PeerName> = peers.iter().map(|p| p.0.clone()).collect();
        let shared = Arc::new(Shared {
            me: tls.node_id.clone(),
            origin: core.origin,
            io: peers.iter().map(|p| (p.0.clone(), Io::default())).collect(),
            peers: peers
                .iter()
                .map(|(n, a, r)| (n.clone(), (a.clone(), r.clone())))
                .collect(),
            refused: AtomicU64::new(0),
            collected: AtomicU64::new(0),
            trimmed: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_received: AtomicU64::new(0),
            comparisons: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            retention: log_retention,
            max_frame: max_frame_bytes,
            events: events_tx,
            next_conn: AtomicU64::new(1),
            tracker: tokio_util::task::TaskTracker::new(),
            db,
        });
        let status = Arc::new(Mutex::new(Status {
            node: tls.node_id.clone(),
            region,
            origin: format!("{:016x}", core.origin),
            ..Status::default()
        }));
        let cancel = CancellationToken::new();
        let shared_tracker = shared.tracker.clone();
        let mut core = Core::new(core, applied, peer_names);
        match shared.db.log_horizon() {
            Ok(h) => core.set_horizon(&h),
            Err(e) => tracing::warn!(error = %e, "reading the log's horizon"),
        }
        shared.tracker.spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            cancel.clone(),
        ));
        let task = tokio::spawn(run(
            core,
            endpoint.clone(),
            shared,
            events,
            status.clone(),
            cancel.clone(),
        ));
        Ok(Replicator {
            tracker: shared_tracker,
            endpoint,
            status,
            cancel,
            task,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// The shared status, refreshed every 100 ms.
    pub fn status_handle(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"shutting down");
        let _ = self.task.await;
        self.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.tracker.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

/// The core's task: events in, actions out.
async fn run(
    mut core: Core<LogEntry>,
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<Event>,
    status: Arc<Mutex<Status>>,
    cancel: CancellationToken,
) {
    let mut conns: HashMap<String, (u64, mpsc::UnboundedSender<Outgoing>, quinn::Connection)> =
        HashMap::new();
    let mut dialling = std::collections::HashSet::new();
    let mut log = shared.db.watch_log();
    let mut seen = log.borrow_and_update().clone();
    let (apply_tx, apply_rx) = mpsc::unbounded_channel::<Delivery>();
    tokio::spawn(applier(shared.clone(), apply_rx));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gc = tokio::time::interval(TOMBSTONE_GC);
    gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                core.tick(system_wall_ms());
                publish_status(&core, &shared, &conns, &status);
            }
            _ = gc.tick() => {
                let stable = core.stable();
                if !stable.0.is_empty() {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || housekeeping(&shared, stable));
                }
            }
            changed = log.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = log.borrow_and_update().clone();
                // Only what advanced: our own commits need no acknowledgement round.
                let mut delta = Clock::default();
                for (o, s) in &now.0 {
                    if !seen.contains(*o, *s) {
                        delta.add(*o, *s);
                    }
                }
                seen = now;
                core.applied(&delta, system_wall_ms());
            }
            Some(ev) = events.recv() => {
                let now = system_wall_ms();
                match ev {
                    Event::Connected { peer, id, conn, tx } => {
                        dialling.remove(&peer);
                        if let Some((_, _, old)) = conns.insert(peer.clone(), (id, tx, conn)) {
                            old.close(quinn::VarInt::from_u32(1), b"replaced");
                        }
                        tracing::info!(%peer, "replication peer connected");
                        core.connected(&peer, now);
                    }
                    Event::Closed { peer, id, reason } => {
                        if conns.get(&peer).is_some_and(|c| c.0 == id) {
                            conns.remove(&peer);
                            tracing::info!(%peer, %reason, "replication peer disconnected");
                            core.disconnected(&peer, now);
                        }
                    }
                    Event::DialFailed { peer, reason } => {
                        dialling.remove(&peer);
                        tracing::debug!(%peer, %reason, "dialling a replication peer failed");
                        core.disconnected(&peer, now);
                    }
                    Event::Message { peer, msg } => core.received(&peer, msg, now),
                    Event::ApplyFailed(reason) => {
                        tracing::warn!(%reason, "applying replicated entries failed; they will be asked for again");
                        core.apply_failed(now);
                    }
                    Event::SnapshotReady { peer, export } => {
                        tracing::info!(%peer, "sending a state snapshot (the peer lacks entries the log no longer holds)");
                        shared.snapshots_sent.fetch_add(1, Ordering::Relaxed);
                        core.snapshot_sent(&peer, export.header.clock.clone(), now);
                        send(&conns, &peer, Outgoing::Snapshot(export));
                    }
                    Event::StateFailed { peer, reason } => {
                        tracing::warn!(%peer, %reason, "a state snapshot failed; reconnecting");
                        core.installed(&peer);
                        if let Some((_, _, c)) = conns.get(&peer) {
                            c.close(quinn::VarInt::from_u32(3), b"state snapshot failed");
                        }
                    }
                    Event::Installed(peer) => {
                        shared.snapshots_received.fetch_add(1, Ordering::Relaxed);
                        core.installed(&peer);
                    }
                    Event::Send { peer, msg } => send(&conns, &peer, Outgoing::Message(msg)),
                    Event::Horizon(h) => core.set_horizon(&h),
                }
            }
        }
        for action in core.poll() {
            match action {
                Action::Dial(peer) => {
                    // Of two peers, the one whose id sorts first dials; once at a time (a
                    // handshake slower than the redial backoff must not be replaced by the
                    // next attempt, and that one by the next).
                    if shared.me < peer
                        && !conns.contains_key(&peer)
                        && dialling.insert(peer.clone())
                    {
                        shared
                            .tracker
                            .spawn(dial(endpoint.clone(), shared.clone(), peer));
                    }
                }
                Action::Send(peer, msg) => send(&conns, &peer, Outgoing::Message(msg)),
                Action::SendRange {
                    peer,
                    origin,
                    from,
                    to,
                } => send(&conns, &peer, Outgoing::Range { origin, from, to }),
                Action::Apply { entries, .. } => {
                    let _ = apply_tx.send(Delivery::Entries(entries));
                }
                Action::Install { peer, body, last } => {
                    let _ = apply_tx.send(Delivery::Snapshot { peer, body, last });
                }
                Action::SendSnapshot { peer } => {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || {
                        let ev = match shared.db.export_state(None) {
                            Ok(export) => Event::SnapshotReady {
                                peer,
                                export: Box::new(export),
                            },
                            Err(e) => Event::StateFailed {
                                peer,
                                reason: e.to_string(),
                            },
                        };
                        let _ = shared.events.send(ev);
                    });
                }
                Action::Compare { peer } => {
                    shared.comparisons.fetch_add(1, Ordering::Relaxed);
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || match shared.db.digests() {
                        Ok((clock, collections)) => {
                            repair_send(&shared, &peer, &Repair::Digests { clock, collections })
                        }
                        Err(e) => tracing::warn!(error = %e, "anti-entropy: reading digests"),
                    });
                }
                Action::Repair { peer, body } => {
                    let shared = shared.clone();
                    let apply_tx = apply_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let answered = state_sync::decode(&body).and_then(|msg| {
                            state_sync::answer(&shared.db, msg, state_chunk(&shared))
                        });
                        match answered {
                            Ok(a) => {
                                for m in &a.send {
                                    repair_send(&shared, &peer, m);
                                }
                                if !a.merge.is_empty() {
                                    let _ = apply_tx.send(Delivery::Repair(a.merge));
                                }
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "anti-entropy failed"),
                        }
                    });
                }
            }
        }
    }
    for (_, (_, _, c)) in conns {
        c.close(quinn::VarInt::from_u32(0), b"shutting down");
    }
}

fn send(
    conns: &HashMap<String, (u64, mpsc::UnboundedSender<Outgoing>, quinn::Connection)>,
    peer: &str,
    out: Outgoing,
) {
    if let Some((_, tx, _)) = conns.get(peer) {
        let _ = tx.send(out);
    }
}

fn publish_status(
    core: &Core<LogEntry>,
    shared: &Shared,
    conns: &HashMap<String, (u64, mpsc::UnboundedSender<Outgoing>, quinn::Connection)>,
    status: &Mutex<Status>,
) {
    let now = system_wall_ms();
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    s.applied = core
        .applied_clock()
        .0
        .iter()
        .map(|(o, q)| (format!("{o:016x}"), *q))
        .collect();
    s.rejected_clocks = core.stats().rejected_clocks;
    s.duplicates = core.stats().duplicates;
    s.gaps = core.stats().gaps;
    s.refused_peers = shared.refused.load(Ordering::Relaxed);
    s.tombstones_collected = shared.collected.load(Ordering::Relaxed);
    s.log_trimmed = shared.trimmed.load(Ordering::Relaxed);
    s.horizon = core
        .horizon()
        .0
        .iter()
        .map(|(o, q)| (format!("{o:016x}"), *q))
        .collect();
    s.snapshots_sent = shared.snapshots_sent.load(Ordering::Relaxed);
    s.snapshots_received = shared.snapshots_received.load(Ordering::Relaxed);
    s.comparisons = shared.comparisons.load(Ordering::Relaxed);
    s.repaired_versions = shared.repaired.load(Ordering::Relaxed);
    s.peers = core
        .peers()
        .iter()
        .map(|(name, p)| {
            let (lag_ops, lag_ms) = core.lag(name, now).unwrap_or_default();
            let (address, region) = shared.peers.get(name).cloned().unwrap_or_default();
            let io = shared.io.get(name);
            PeerStatus {
                id: name.clone(),
                region,
                address,
                connected: conns.contains_key(name) && p.origin.is_some(),
                lag_ops,
                lag_ms,
                last_contact_ms: p.last_heard_ms.map(|t| now.saturating_sub(t)),
                entries_sent: p.entries_sent,
                entries_received: p.entries_received,
                bytes_sent: io.map_or(0, |i| i.sent.load(Ordering::Relaxed)),
                bytes_received: io.map_or(0, |i| i.received.load(Ordering::Relaxed)),
            }
        })
        .collect();
}

/// Every `TOMBSTONE_GC`: forgets tombstones every peer has seen and trims the log of what
/// every peer has (and the index snapshots cover).
fn housekeeping(shared: &Shared, stable: Clock) {
    match shared.db.collect_tombstones(stable.clone()) {
        Ok(n) => {
            shared.collected.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "collecting tombstones failed"),
    }
    match shared.db.trim_log(Some(&stable), shared.retention) {
        Ok(n) => {
            shared.trimmed.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "trimming the operation log failed"),
    }
    if let Ok(h) = shared.db.log_horizon() {
        let _ = shared.events.send(Event::Horizon(h));
    }
}

fn repair_send(shared: &Shared, peer: &str, msg: &Repair) {
    match state_sync::encode(msg) {
        Ok(body) => {
            let _ = shared.events.send(Event::Send {
                peer: peer.to_owned(),
                msg: Message::Repair(body),
            });
        }
        Err(e) => tracing::warn!(error = %e, "anti-entropy: encoding a message"),
    }
}

/// Applies deliveries one after another, in the order the core accepted them.
async fn applier(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Delivery>) {
    // Per peer, the header of the snapshot it is sending.
    let mut headers: HashMap<String, (Clock, Clock)> = HashMap::new();
    while let Some(delivery) = rx.recv().await {
        let db = shared.db.clone();
        match delivery {
            Delivery::Entries(entries) => {
                let batch: Vec<RemoteEntry> = entries
                    .into_iter()
                    .map(|e| (e.origin, e.seq, e.body))
                    .collect();
                let applied = tokio::task::spawn_blocking(move || db.apply_remote(batch)).await;
                let error = match applied {
                    Ok(a) => a.error.map(|e| e.to_string()),
                    Err(e) => Some(format!("the apply task failed: {e}")),
                };
                if let Some(reason) = error {
                    // Entries queued behind the failed ones would not follow what is applied.
                    while let Ok(d) = rx.try_recv() {
                        if let Delivery::Snapshot { peer, .. } = d {
                            headers.remove(&peer);
                            let _ = shared.events.send(Event::StateFailed {
                                peer,
                                reason: "entries before it failed".into(),
                            });
                        }
                    }
                    let _ = shared.events.send(Event::ApplyFailed(reason));
                }
            }
            Delivery::Repair(rows) => {
                let merged =
                    tokio::task::spawn_blocking(move || db.merge_state(StateJob::Repair(rows)))
                        .await;
                match merged {
                    Ok(Ok(n)) => {
                        shared.repaired.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "anti-entropy: merging rows failed"),
                    Err(e) => tracing::warn!(error = %e, "anti-entropy: the merge task failed"),
                }
            }
            Delivery::Snapshot { peer, body, last } => {
                let header = headers.get(&peer).cloned();
                let step = (|| -> Result<Vec<StateJob>, String> {
                    let mut jobs = match state_sync::decode::<SnapshotPart>(&body)? {
                        SnapshotPart::Header(h) => {
                            headers.insert(peer.clone(), (h.clock.clone(), h.collected.clone()));
                            vec![StateJob::Begin(h)]
                        }
                        SnapshotPart::Rows(rows) if header.is_some() => vec![StateJob::Rows(rows)],
                        SnapshotPart::Rows(_) => {
                            return Err("snapshot rows arrived without their header".into())
                        }
                    };
                    if last {
                        let (clock, collected) = headers
                            .remove(&peer)
                            .ok_or("a snapshot ended without a header")?;
                        jobs.push(StateJob::End { clock, collected });
                    }
                    Ok(jobs)
                })();
                let merged = match step {
                    Ok(jobs) => tokio::task::spawn_blocking(move || -> Result<(), String> {
                        for job in jobs {
                            db.merge_state(job).map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap_or_else(|e| Err(format!("the merge task failed: {e}"))),
                    Err(e) => Err(e),
                };
                match merged {
                    Ok(()) if last => {
                        tracing::info!(%peer, "merged a state snapshot");
                        // The log moved on: entries below the new horizon are not ours to send.
                        if let Ok(h) = shared.db.log_horizon() {
                            let _ = shared.events.send(Event::Horizon(h));
                        }
                        let _ = shared.events.send(Event::Installed(peer));
                    }
                    Ok(()) => {}
                    Err(reason) => {
                        headers.remove(&peer);
                        let _ = shared.events.send(Event::StateFailed { peer, reason });
                    }
                }
            }
        }
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => return,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { return };
        let shared = shared.clone();
        shared.clone().tracker.spawn(async move {
            let remote = incoming.remote_address();
            if let Err(e) = accept(incoming, shared.clone()).await {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%remote, error = %e, "refused a replication connection");
            }
        });
    }
}

async fn accept(incoming: quinn::Incoming, shared: Arc<Shared>) -> Result<(), DriverError> {
    let remote = incoming.remote_address().to_string();
    let conn = incoming.await.map_err(|e| peer_err(&remote, e))?;
    let peer = peer_node_id(&conn).map_err(|e| peer_err(&remote, e))?;
    if !shared.peers.contains_key(&peer) {
        conn.close(quinn::VarInt::from_u32(2), b"unknown peer");
        return Err(peer_err(peer, "not a configured peer"));
    }
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| peer_err(&peer, e))?;
    let hello: Hello = read_frame(&mut recv, 4096)
        .await
        .map_err(|e| peer_err(&peer, e))?;
    check_hello(&hello, &peer, &conn)?;
    write_frame(&mut send, &our_hello(&shared))
        .await
        .map_err(|e| peer_err(&peer, e))?;
    start_connection(shared, peer, conn, send, recv);
    Ok(())
}

async fn dial(endpoint: quinn::Endpoint, shared: Arc<Shared>, peer: String) {
    let result = async {
        let address = shared
            .peers
            .get(&peer)
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let addr = tokio::net::lookup_host(&address)
            .await
            .map_err(|e| peer_err(&peer, format!("resolving {address}: {e}")))?
            .next()
            .ok_or_else(|| peer_err(&peer, format!("{address} resolves to nothing")))?;
        let connecting = endpoint
            .connect(addr, &server_name(&peer))
            .map_err(|e| peer_err(&peer, e))?;
        // A peer that is down does not answer at all: give up well before the idle timeout,
        // so the next attempt (one at a time) finds it once it is up.
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| peer_err(&peer, format!("no answer from {address}")))?
            .map_err(|e| peer_err(&peer, e))?;
        let id = peer_node_id(&conn).map_err(|e| peer_err(&peer, e))?;
        if id != peer {
            conn.close(quinn::VarInt::from_u32(2), b"wrong node");
            return Err(peer_err(
                &peer,
                format!("{address} presented the certificate of node `{id}`"),
            ));
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| peer_err(&peer, e))?;
        write_frame(&mut send, &our_hello(&shared))
            .await
            .map_err(|e| peer_err(&peer, e))?;
        let hello: Hello = read_frame(&mut recv, 4096)
            .await
            .map_err(|e| peer_err(&peer, e))?;
        check_hello(&hello, &peer, &conn)?;
        Ok((conn, send, recv))
    }
    .await;
    match result {
        Ok((conn, send, recv)) => start_connection(shared, peer, conn, send, recv),
        Err(e) => {
            if matches!(&e, DriverError::Peer { reason, .. } if reason.contains("certificate")) {
                shared.refused.fetch_add(1, Ordering::Relaxed);
            }
            let _ = shared.events.send(Event::DialFailed {
                peer,
                reason: e.to_string(),
            });
        }
    }
}

fn our_hello(shared: &Shared) -> Hello {
    Hello {
        protocol: PROTOCOL,
        node: shared.me.clone(),
        origin: shared.origin,
    }
}

fn check_hello(hello: &Hello, cert_id: &str, conn: &quinn::Connection) -> Result<(), DriverError> {
    let refuse = |reason: String| {
        conn.close(quinn::VarInt::from_u32(2), reason.as_bytes());
        Err(peer_err(cert_id, reason))
    };
    if hello.protocol != PROTOCOL {
        return refuse(format!(
            "speaks replication protocol {}, this node {PROTOCOL}",
            hello.protocol
        ));
    }
    if hello.node != cert_id {
        return refuse(format!(
            "claims to be node `{}` but its certificate is node `{cert_id}`",
            hello.node
        ));
    }
    Ok(())
}

fn start_connection(
    shared: Arc<Shared>,
    peer: String,
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = shared.events.send(Event::Connected {
        peer: peer.clone(),
        id,
        conn: conn.clone(),
        tx,
    });
    shared.tracker.spawn(writer(
        shared.clone(),
        peer.clone(),
        id,
        conn.clone(),
        send,
        rx,
    ));
    shared
        .tracker
        .spawn(reader(shared.clone(), peer, id, conn, recv));
}

fn closed(shared: &Shared, peer: &str, id: u64, conn: &quinn::Connection, reason: String) {
    conn.close(quinn::VarInt::from_u32(3), reason.as_bytes());
    let _ = shared.events.send(Event::Closed {
        peer: peer.to_owned(),
        id,
        reason,
    });
}

async fn reader(
    shared: Arc<Shared>,
    peer: String,
    id: u64,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
) {
    loop {
        match read_frame_counted::<Message<LogEntry>>(&mut recv, shared.max_frame).await {
            Ok((msg, bytes)) => {
                if let Some(io) = shared.io.get(&peer) {
                    io.received.fetch_add(bytes, Ordering::Relaxed);
                }
                let _ = shared.events.send(Event::Message {
                    peer: peer.clone(),
                    msg,
                });
            }
            Err(e) => {
                closed(&shared, &peer, id, &conn, e);
                return;
            }
        }
    }
}

async fn writer(
    shared: Arc<Shared>,
    peer: String,
    id: u64,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(out) = rx.recv().await {
        let messages = match out {
            Outgoing::Snapshot(export) => {
                if let Err(e) = stream_snapshot(&shared, &peer, &mut send, export).await {
                    closed(&shared, &peer, id, &conn, e);
                    return;
                }
                continue;
            }
            Outgoing::Message(m) => vec![m],
            Outgoing::Range { origin, from, to } => {
                let db = shared.db.clone();
                let read =
                    tokio::task::spawn_blocking(move || db.log_range(origin, from, to)).await;
                match read {
                    Ok(Ok(entries)) => split(entries, shared.max_frame / 2),
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reading the operation log for a peer");
                        closed(&shared, &peer, id, &conn, format!("reading the log: {e}"));
                        return;
                    }
                    Err(_) => return,
                }
            }
        };
        for m in messages {
            match write_frame(&mut send, &m).await {
                Ok(bytes) => {
                    if let Some(io) = shared.io.get(&peer) {
                        io.sent.fetch_add(bytes, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    closed(&shared, &peer, id, &conn, e);
                    return;
                }
            }
        }
    }
}

/// Bytes of state rows per message: small enough that the receiver merges one part (one
/// transaction, one engine batch) while the next is on its way — a whole 100 MB state in one
/// part merged 2.7 times slower than the same rows in parts of about a thousand — and well
/// under the frame limit.
fn state_chunk(shared: &Shared) -> usize {
    (shared.max_frame / 2).min(4 << 20) as usize
}

/// Sends a state export as `Message::Snapshot` parts: its header, then its rows a chunk at a
/// time (read off the async threads), the last part marked.
async fn stream_snapshot(
    shared: &Arc<Shared>,
    peer: &str,
    send: &mut quinn::SendStream,
    mut export: Box<StateExport>,
) -> Result<(), String> {
    let budget = state_chunk(shared);
    let mut part = SnapshotPart::Header(export.header.clone());
    loop {
        let (next, rest) = tokio::task::spawn_blocking(move || {
            let next = state_sync::next_rows(&mut export, budget);
            (next, export)
        })
        .await
        .map_err(|e| format!("the export task failed: {e}"))?;
        export = rest;
        let next = next?;
        let msg: Message<LogEntry> = Message::Snapshot {
            body: state_sync::encode(&part)?,
            last: next.is_none(),
        };
        let bytes = write_frame(send, &msg).await?;
        if let Some(io) = shared.io.get(peer) {
            io.sent.fetch_add(bytes, Ordering::Relaxed);
        }
        match next {
            Some(rows) => part = SnapshotPart::Rows(rows),
            None => return Ok(()),
        }
    }
}

/// Entries as messages of at most about `budget` bytes each (one entry per message at least).
fn split(entries: Vec<RemoteEntry>, budget: u64) -> Vec<Message<LogEntry>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut size = 0u64;
    for (origin, seq, body) in entries {
        let bytes = approx_size(&body);
        if !current.is_empty() && size + bytes > budget {
            out.push(Message::Entries(std::mem::take(&mut current)));
            size = 0;
        }
        size += bytes;
        current.push(Entry {
            origin,
            seq,
            hlc: body.hlc,
            body,
        });
    }
    if !current.is_empty() {
        out.push(Message::Entries(current));
    }
    out
}

/// About the encoded size of an entry (its vectors and texts).
fn approx_size(e: &LogEntry) -> u64 {
    use crate::store::records::LogWrite;
    e.writes
        .iter()
        .map(|w| {
            32 + match w {
                LogWrite::Upsert {
                    properties, vector, ..
                } => properties.len() + vector.as_ref().map_or(0, |v| v.len() * 4),
                LogWrite::Link { properties, .. } => properties.len(),
                LogWrite::CreateCollection { spec } => spec.len(),
                _ => 0,
            } as u64
        })
        .sum()
}

async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, value: &T) -> Result<u64, String> {
    let body = postcard::to_stdvec(value).map_err(|e| format!("encoding a frame: {e}"))?;
    let len = u32::try_from(body.len()).map_err(|_| "a frame over 4 GiB".to_owned())?;
    send.write_all(&len.to_le_bytes())
        .await
        .map_err(|e| e.to_string())?;
    send.write_all(&body).await.map_err(|e| e.to_string())?;
    Ok(4 + body.len() as u64)
}

async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: u64,
) -> Result<T, String> {
    read_frame_counted(recv, limit).await.map(|(v, _)| v)
}

async fn read_frame_counted<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    limit: u64,
) -> Result<(T, u64), String> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading a frame: {e}"))?;
    let len = u32::from_le_bytes(len) as u64;
    if len > limit {
        return Err(format!(
            "a frame of {len} bytes is over the {limit}-byte limit"
        ));
    }
    let mut body = vec![0u8; len as usize];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading a frame: {e}"))?;
    let value = postcard::from_bytes(&body).map_err(|e| format!("a malformed frame: {e}"))?;
    Ok((value, 4 + len))
}
