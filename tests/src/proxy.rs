//! A fault-injecting UDP proxy to put between two nodes that talk QUIC over loopback, to
//! simulate a WAN: delay, jitter, loss, duplication, reordering and a full cut (partition), all
//! changeable while a test runs.
//!
//! ```text
//!   client ──► proxy.local_addr() ──(faults)──► flow socket ──► upstream
//!   client ◄── proxy.local_addr() ◄─(faults)── flow socket ◄── upstream
//! ```
//!
//! Every distinct client address gets its own flow socket, so the upstream sees distinct peers
//! (as it would without the proxy). Only the side that sends first needs the proxy's address: a
//! node that should *dial* through the proxy is given `proxy.local_addr()` instead of the other
//! node's address; connections dialled the other way need a second proxy.
//!
//! The proxy runs on its own thread with a current-thread tokio runtime, so it works the same
//! from plain `#[test]`s and from `#[tokio::test]`s, and does not starve or get starved by the
//! test's runtime. It stops (closing its sockets) when dropped, also while a test panics.
//!
//! Faults apply per direction (one-way delay, as netem does it), so a round trip through the
//! proxy takes at least twice `Faults::delay`. Randomness comes from a seeded SplitMix64, so a
//! run is reproducible given the seed and the order in which datagrams arrive.

use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// The least time a reordered datagram is held back for (on top of its delay).
const MIN_REORDER_HOLD: Duration = Duration::from_millis(10);

/// What happens to datagrams crossing the proxy, in one direction (or both).
///
/// Probabilities are in `[0, 1]` (values outside are clamped, NaN counts as 0). Each datagram is
/// first lost with probability `loss`; a survivor gets a second copy with probability
/// `duplicate`; each copy is then delayed by `delay` plus a uniform random share of `jitter`
/// (jitter alone can reorder datagrams, as on a real path), and with probability `reorder` is
/// held back by an extra random `H..2H`, where `H = max(delay + jitter, 10 ms)`, so that the
/// datagrams arriving meanwhile overtake it. While `cut` is set every datagram is dropped,
/// including those already waiting out their delay.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    pub delay: Duration,
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub cut: bool,
    /// Seeds the proxy's random generator; changing it (through [`UdpProxy::set_faults`])
    /// restarts the generator, keeping it does not.
    pub seed: u64,
}

impl Default for Faults {
    /// No faults at all.
    fn default() -> Self {
        Faults {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            cut: false,
            seed: 0x5eed_f0f0_1234_abcd,
        }
    }
}

impl Faults {
    /// No faults (the same as `Faults::default()`).
    pub fn none() -> Self {
        Self::default()
    }

    /// A typical WAN link: one-way `delay` and a `loss` probability.
    pub fn wan(delay: Duration, loss: f64) -> Self {
        Self::default().with_delay(delay).with_loss(loss)
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    pub fn with_duplicate(mut self, duplicate: f64) -> Self {
        self.duplicate = duplicate;
        self
    }

    pub fn with_reorder(mut self, reorder: f64) -> Self {
        self.reorder = reorder;
        self
    }

    pub fn with_cut(mut self, cut: bool) -> Self {
        self.cut = cut;
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Which way a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a client to the upstream.
    ToUpstream,
    /// From the upstream back to a client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// A snapshot of the proxy's counters (both directions together).
///
/// Every received datagram is either dropped or forwarded, once or (when duplicated) twice, so
/// once nothing is in flight `forwarded + dropped == received + duplicated`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams that reached the proxy.
    pub received: u64,
    /// Datagrams sent on (each copy of a duplicated one counts).
    pub forwarded: u64,
    /// Datagrams lost, cut, or that could not be sent on.
    pub dropped: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies held back to be overtaken.
    pub reordered: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    clients: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// SplitMix64: tiny, fast, and good enough to draw faults from.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p` (no draw when `p` is 0 or less, so fault-free traffic leaves
    /// the stream untouched).
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }

    /// Uniform in `[0, d)`.
    fn share_of(&mut self, d: Duration) -> Duration {
        if d.is_zero() {
            Duration::ZERO
        } else {
            d.mul_f64(self.next_f64())
        }
    }
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

/// Faults per direction and the generator, behind one lock.
struct FaultState {
    faults: [Faults; 2],
    seed: u64,
    rng: SplitMix64,
}

struct Shared {
    state: Mutex<FaultState>,
    counters: Counters,
}

impl Shared {
    fn new(faults: Faults) -> Shared {
        Shared {
            state: Mutex::new(FaultState {
                seed: faults.seed,
                rng: SplitMix64(faults.seed),
                faults: [faults.clone(), faults],
            }),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A panic while holding the lock leaves nothing half-updated worth refusing.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delays after which to send the copies of a datagram that just arrived going `dir` (none:
    /// dropped).
    fn plan(&self, dir: Direction) -> Vec<Duration> {
        let c = &self.counters;
        bump(&c.received, 1);
        let mut state = self.lock();
        let FaultState { faults, rng, .. } = &mut *state;
        let f = &faults[dir.index()];
        if f.cut || rng.chance(probability(f.loss)) {
            bump(&c.dropped, 1);
            return Vec::new();
        }
        let copies = if rng.chance(probability(f.duplicate)) {
            bump(&c.duplicated, 1);
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let mut d = f.delay + rng.share_of(f.jitter);
                if rng.chance(probability(f.reorder)) {
                    bump(&c.reordered, 1);
                    let hold = (f.delay + f.jitter).max(MIN_REORDER_HOLD);
                    d += hold + rng.share_of(hold);
                }
                d
            })
            .collect()
    }

    fn is_cut(&self, dir: Direction) -> bool {
        self.lock().faults[dir.index()].cut
    }
}

/// Where a datagram goes.
enum Target {
    /// Through a client's flow socket (connected to the upstream).
    Upstream(Arc<UdpSocket>),
    /// Through the listening socket to a client.
    Client(SocketAddr),
}

impl Target {
    fn direction(&self) -> Direction {
        match self {
            Target::Upstream(_) => Direction::ToUpstream,
            Target::Client(_) => Direction::ToClient,
        }
    }
}

/// A datagram waiting for its time; ordered by time, then by arrival.
struct Scheduled {
    at: Instant,
    seq: u64,
    target: Target,
    data: Arc<[u8]>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Hands arriving datagrams to the scheduler.
#[derive(Clone)]
struct Ingress {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Scheduled>,
    seq: Arc<AtomicU64>,
}

impl Ingress {
    fn arrive(&self, data: &[u8], target: impl Fn() -> Target) {
        let now = Instant::now();
        let delays = self.shared.plan(target().direction());
        if delays.is_empty() {
            return;
        }
        let data: Arc<[u8]> = Arc::from(data);
        for d in delays {
            let item = Scheduled {
                at: now + d,
                seq: self.seq.fetch_add(1, Ordering::Relaxed),
                target: target(),
                data: data.clone(),
            };
            if self.queue.send(item).is_err() {
                // Shutting down.
                bump(&self.shared.counters.dropped, 1);
            }
        }
    }
}

/// A running proxy; stops when dropped.
pub struct UdpProxy {
    local: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UdpProxy {
    /// A proxy on `127.0.0.1`, port chosen by the OS, forwarding to `upstream`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> io::Result<UdpProxy> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream, faults)
    }

    /// A proxy listening on `listen` (e.g. the port of a proxy that was stopped, or `[::1]:0`).
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr, faults: Faults) -> io::Result<Self> {
        let listener = std::net::UdpSocket::bind(listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::new(faults));
        let (shutdown, stop) = oneshot::channel();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("udp-proxy-{}", local.port()))
            .spawn({
                let shared = shared.clone();
                // The runtime is made and dropped on this thread only: dropping one inside the
                // caller's async context (a `#[tokio::test]`) would panic.
                move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let listener = {
                        let _guard = runtime.enter();
                        match UdpSocket::from_std(listener) {
                            Ok(listener) => Arc::new(listener),
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                return;
                            }
                        }
                    };
                    let _ = ready.send(Ok(()));
                    runtime.block_on(async move {
                        tokio::select! {
                            _ = stop => {}
                            () = run(listener, upstream, shared) => {}
                        }
                    });
                    // Dropping the runtime here cancels the flow and scheduler tasks and closes
                    // every socket.
                }
            })?;
        let started = started
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the proxy thread died while starting")));
        if let Err(e) = started {
            let _ = thread.join();
            return Err(e);
        }
        Ok(UdpProxy {
            local,
            upstream,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Where clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Replaces the faults of both directions.
    pub fn set_faults(&self, faults: Faults) {
        let mut state = self.shared.lock();
        if faults.seed != state.seed {
            state.seed = faults.seed;
            state.rng = SplitMix64(faults.seed);
        }
        state.faults = [faults.clone(), faults];
    }

    /// Replaces the faults of one direction only (e.g. an asymmetric partition). The seed is
    /// shared by both directions and follows the same rule as in [`UdpProxy::set_faults`].
    pub fn set_faults_one_way(&self, dir: Direction, faults: Faults) {
        let mut state = self.shared.lock();
        if faults.seed != state.seed {
            state.seed = faults.seed;
            state.rng = SplitMix64(faults.seed);
        }
        state.faults[dir.index()] = faults;
    }

    /// The faults currently applied going `dir`.
    pub fn faults(&self, dir: Direction) -> Faults {
        self.shared.lock().faults[dir.index()].clone()
    }

    /// Partitions (`true`) or heals (`false`) the link, both ways, keeping the other faults.
    pub fn cut(&self, cut: bool) {
        let mut state = self.shared.lock();
        for f in &mut state.faults {
            f.cut = cut;
        }
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            received: c.received.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicated: c.duplicated.load(Ordering::Relaxed),
            reordered: c.reordered.load(Ordering::Relaxed),
        }
    }

    /// How many distinct client addresses have sent through the proxy.
    pub fn clients(&self) -> u64 {
        self.shared.counters.clients.load(Ordering::Relaxed)
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Never panic in drop (a test may be unwinding already).
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for UdpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpProxy")
            .field("local", &self.local)
            .field("upstream", &self.upstream)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Whether a receive error is one a UDP socket just reports and carries on from (an ICMP port
/// unreachable for an earlier send, say).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn pause_after(e: &io::Error) {
    if !transient(e) {
        // Do not spin on a persistent error.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn run(listener: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let (queue, scheduled) = mpsc::unbounded_channel();
    tokio::spawn(deliver(scheduled, listener.clone(), shared.clone()));
    let ingress = Ingress {
        shared: shared.clone(),
        queue,
        seq: Arc::new(AtomicU64::new(0)),
    };
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match listener.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                pause_after(&e).await;
                continue;
            }
        };
        let flow = match flows.get(&client) {
            Some(flow) => flow.clone(),
            None => match open_flow(upstream).await {
                Ok(flow) => {
                    bump(&shared.counters.clients, 1);
                    tokio::spawn(read_upstream(flow.clone(), client, ingress.clone()));
                    flows.insert(client, flow.clone());
                    flow
                }
                Err(e) => {
                    eprintln!("udp proxy: cannot open a flow for {client} to {upstream}: {e}");
                    bump(&shared.counters.received, 1);
                    bump(&shared.counters.dropped, 1);
                    continue;
                }
            },
        };
        ingress.arrive(&buf[..n], || Target::Upstream(flow.clone()));
    }
}

/// A socket of its own for one client, connected to the upstream.
async fn open_flow(upstream: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let ip = match (upstream.is_ipv4(), upstream.ip().is_loopback()) {
        (true, true) => Ipv4Addr::LOCALHOST.into(),
        (true, false) => Ipv4Addr::UNSPECIFIED.into(),
        (false, true) => Ipv6Addr::LOCALHOST.into(),
        (false, false) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    socket.connect(upstream).await?;
    Ok(Arc::new(socket))
}

/// Replies from the upstream to one client.
async fn read_upstream(flow: Arc<UdpSocket>, client: SocketAddr, ingress: Ingress) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match flow.recv(&mut buf).await {
            Ok(n) => ingress.arrive(&buf[..n], || Target::Client(client)),
            Err(e) => pause_after(&e).await,
        }
    }
}

/// Sends every datagram at its time, earliest first (arrival order among equals).
async fn deliver(
    mut queue: mpsc::UnboundedReceiver<Scheduled>,
    listener: Arc<UdpSocket>,
    shared: Arc<Shared>,
) {
    let mut pending: BinaryHeap<Scheduled> = BinaryHeap::new();
    loop {
        let next = pending.peek().map(|s| s.at);
        let wake = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = queue.recv() => match item {
                Some(item) => pending.push(item),
                None => return,
            },
            () = wake => {}
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|s| s.at <= now) {
            let Some(item) = pending.pop() else { break };
            send(&item, &listener, &shared).await;
        }
    }
}

async fn send(item: &Scheduled, listener: &UdpSocket, shared: &Shared) {
    let c = &shared.counters;
    if shared.is_cut(item.target.direction()) {
        bump(&c.dropped, 1);
        return;
    }
    let sent = match &item.target {
        Target::Upstream(flow) => flow.send(&item.data).await,
        Target::Client(addr) => listener.send_to(&item.data, *addr).await,
    };
    match sent {
        Ok(_) => bump(&c.forwarded, 1),
        Err(_) => bump(&c.dropped, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashSet;
    use std::net::UdpSocket as StdUdpSocket;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant as StdInstant;

    /// A UDP echo server on loopback that counts what it echoed and who sent it.
    struct Echo {
        addr: SocketAddr,
        echoed: Arc<AtomicU64>,
        peers: Arc<Mutex<HashSet<SocketAddr>>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Echo {
        fn start() -> Echo {
            let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind echo");
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .expect("read timeout");
            let addr = socket.local_addr().expect("echo address");
            let echoed = Arc::new(AtomicU64::new(0));
            let peers = Arc::new(Mutex::new(HashSet::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = std::thread::spawn({
                let (echoed, peers, stop) = (echoed.clone(), peers.clone(), stop.clone());
                move || {
                    let mut buf = [0u8; MAX_DATAGRAM];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = socket.recv_from(&mut buf) {
                            peers.lock().expect("peers").insert(from);
                            if socket.send_to(&buf[..n], from).is_ok() {
                                echoed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
            Echo {
                addr,
                echoed,
                peers,
                stop,
                thread: Some(thread),
            }
        }

        fn echoed(&self) -> u64 {
            self.echoed.load(Ordering::Relaxed)
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn client() -> StdUdpSocket {
        let socket = StdUdpSocket::bind("127.0.0.1:0").expect("bind client");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        socket
    }

    /// Everything that arrives until nothing has for `quiet`.
    fn drain(socket: &StdUdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut last = StdInstant::now();
        while last.elapsed() < quiet {
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(buf[..n].to_vec());
                last = StdInstant::now();
            }
        }
        got
    }

    /// Sends `count` numbered datagrams in small batches (so no socket buffer overflows on a
    /// busy machine), collecting the replies; returns them in arrival order.
    fn exchange(socket: &StdUdpSocket, to: SocketAddr, first: u32, count: u32) -> Vec<u32> {
        let mut got = Vec::new();
        let ids: Vec<u32> = (first..first + count).collect();
        for batch in ids.chunks(25) {
            for id in batch {
                socket.send_to(&id.to_le_bytes(), to).expect("send");
            }
            got.extend(
                drain(socket, Duration::from_millis(150))
                    .into_iter()
                    .map(|d| {
                        u32::from_le_bytes(d.as_slice().try_into().expect("a 4-byte datagram"))
                    }),
            );
        }
        got
    }

    /// Waits (a while at most) until nothing is in flight inside the proxy.
    fn settle(proxy: &UdpProxy) -> Stats {
        let deadline = StdInstant::now() + Duration::from_secs(10);
        loop {
            let s = proxy.stats();
            if s.forwarded + s.dropped == s.received + s.duplicated || StdInstant::now() > deadline
            {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn without_faults_everything_comes_back_in_order() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none()).expect("proxy");
        let socket = client();
        let got = exchange(&socket, proxy.local_addr(), 0, 100);
        assert_eq!(got, (0..100).collect::<Vec<_>>());
        let s = settle(&proxy);
        assert_eq!(
            s,
            Stats {
                received: 200,
                forwarded: 200,
                ..Stats::default()
            }
        );
        assert_eq!(proxy.clients(), 1);
    }

    #[test]
    fn a_cut_drops_everything_until_healed() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none()).expect("proxy");
        let socket = client();
        proxy.cut(true);
        assert!(exchange(&socket, proxy.local_addr(), 0, 20).is_empty());
        assert_eq!(echo.echoed(), 0);
        assert_eq!(proxy.stats().dropped, 20);

        proxy.cut(false);
        let got = exchange(&socket, proxy.local_addr(), 100, 20);
        assert_eq!(got, (100..120).collect::<Vec<_>>());

        // One way only: requests get through, replies do not.
        proxy.set_faults_one_way(Direction::ToClient, Faults::none().with_cut(true));
        let before = echo.echoed();
        assert!(exchange(&socket, proxy.local_addr(), 200, 10).is_empty());
        assert_eq!(echo.echoed(), before + 10);
        assert!(!proxy.faults(Direction::ToUpstream).cut);
    }

    #[test]
    fn a_cut_also_drops_datagrams_in_flight() {
        let echo = Echo::start();
        let faults = Faults::none().with_delay(Duration::from_millis(300));
        let proxy = UdpProxy::start(echo.addr, faults).expect("proxy");
        let socket = client();
        socket.send_to(b"late", proxy.local_addr()).expect("send");
        // Wait for the proxy to hold it, then cut before its delay is over.
        let deadline = StdInstant::now() + Duration::from_secs(5);
        while proxy.stats().received == 0 && StdInstant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        proxy.cut(true);
        assert!(drain(&socket, Duration::from_millis(800)).is_empty());
        let s = settle(&proxy);
        assert_eq!((s.received, s.dropped, s.forwarded), (1, 1, 0));
    }

    #[test]
    fn loss_drops_some_and_the_counters_agree() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none().with_loss(0.5)).expect("proxy");
        let socket = client();
        let n = 200u64;
        let got = exchange(&socket, proxy.local_addr(), 0, n as u32).len() as u64;
        let s = settle(&proxy);
        let reached_upstream = echo.echoed();
        assert!(got > 0 && got < n, "{got} of {n} came back");
        assert!(reached_upstream >= got && reached_upstream < n);
        assert_eq!(s.received, n + reached_upstream);
        assert_eq!(s.forwarded, reached_upstream + got);
        assert_eq!(s.dropped, n - got);
        assert_eq!((s.duplicated, s.reordered), (0, 0));
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let faults = Faults::none()
            .with_loss(0.2)
            .with_duplicate(0.2)
            .with_reorder(0.2)
            .with_jitter(Duration::from_millis(7))
            .with_seed(7);
        let draws = |faults: &Faults| {
            let shared = Shared::new(faults.clone());
            let plans: Vec<Vec<Duration>> = (0..500)
                .map(|i| {
                    let dir = if i % 3 == 0 {
                        Direction::ToClient
                    } else {
                        Direction::ToUpstream
                    };
                    shared.plan(dir)
                })
                .collect();
            let c = &shared.counters;
            let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
            assert_eq!(count(&c.received), 500);
            assert!(count(&c.dropped) > 0 && count(&c.duplicated) > 0 && count(&c.reordered) > 0);
            plans
        };
        let first = draws(&faults);
        assert_eq!(first, draws(&faults));
        assert_ne!(first, draws(&faults.clone().with_seed(8)));
        // Jitter stays within its bound; only reordered copies wait longer.
        let hold = MIN_REORDER_HOLD;
        assert!(first.iter().flatten().all(|d| *d < Duration::from_millis(7)
            || (*d >= hold && *d < 2 * hold + Duration::from_millis(7))));
    }

    #[test]
    fn duplication_makes_extra_copies() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none().with_duplicate(1.0)).expect("proxy");
        let socket = client();
        let n = 20u32;
        let mut got = exchange(&socket, proxy.local_addr(), 0, n);
        got.sort_unstable();
        // Doubled on the way there, and each echo doubled on the way back.
        let expected: Vec<u32> = (0..n).flat_map(|i| [i; 4]).collect();
        assert_eq!(got, expected);
        let s = settle(&proxy);
        let n = u64::from(n);
        assert_eq!(echo.echoed(), 2 * n);
        assert_eq!(s.duplicated, 3 * n);
        assert_eq!(s.forwarded, 6 * n);
    }

    #[test]
    fn delay_applies_each_way() {
        let echo = Echo::start();
        let delay = Duration::from_millis(100);
        let proxy = UdpProxy::start(echo.addr, Faults::none()).expect("proxy");
        let socket = client();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut buf = [0u8; 16];
        let round_trip = |socket: &StdUdpSocket, buf: &mut [u8]| {
            let start = StdInstant::now();
            socket.send_to(b"ping", proxy.local_addr()).expect("send");
            let n = socket.recv(buf).expect("an echo");
            assert_eq!(&buf[..n], b"ping");
            start.elapsed()
        };
        round_trip(&socket, &mut buf);

        // Changed at runtime; lower bounds only (the machine may be slow).
        proxy.set_faults(Faults::none().with_delay(delay));
        for _ in 0..3 {
            let rtt = round_trip(&socket, &mut buf);
            assert!(rtt >= 2 * delay, "round trip {rtt:?}");
        }
        proxy.set_faults(
            Faults::none()
                .with_delay(delay)
                .with_jitter(Duration::from_millis(50)),
        );
        let rtt = round_trip(&socket, &mut buf);
        assert!(rtt >= 2 * delay, "round trip {rtt:?}");
    }

    #[test]
    fn reordering_lets_later_datagrams_overtake() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none().with_reorder(0.3)).expect("proxy");
        let socket = client();
        let n = 40u32;
        let got = exchange(&socket, proxy.local_addr(), 0, n);
        assert_ne!(got, (0..n).collect::<Vec<_>>());
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        let s = settle(&proxy);
        assert!(s.reordered > 0);
        assert_eq!(s.dropped, 0);
    }

    #[test]
    fn each_client_gets_its_own_upstream_peer() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none()).expect("proxy");
        let (a, b) = (client(), client());
        assert_eq!(exchange(&a, proxy.local_addr(), 0, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            exchange(&b, proxy.local_addr(), 10, 5),
            vec![10, 11, 12, 13, 14]
        );
        assert_eq!(exchange(&a, proxy.local_addr(), 20, 2), vec![20, 21]);
        assert_eq!(proxy.clients(), 2);
        let peers = echo.peers.lock().expect("peers").clone();
        assert_eq!(peers.len(), 2);
        assert!(!peers.contains(&a.local_addr().expect("a")));
    }

    #[test]
    fn dropping_the_proxy_stops_it() {
        let echo = Echo::start();
        let proxy = UdpProxy::start(echo.addr, Faults::none()).expect("proxy");
        let addr = proxy.local_addr();
        let socket = client();
        assert_eq!(exchange(&socket, addr, 0, 1), vec![0]);
        drop(proxy);
        // The port is free again, and nothing answers on it meanwhile.
        let again = UdpProxy::start_on(addr, echo.addr, Faults::none()).expect("rebind");
        assert_eq!(again.local_addr(), addr);
        drop(again);
        let before = echo.echoed();
        let _ = socket.send_to(b"x", addr);
        assert!(drain(&socket, Duration::from_millis(200)).is_empty());
        assert_eq!(echo.echoed(), before);
    }

    /// A QUIC server for `localhost` with a self-signed certificate, and a client trusting it.
    fn quic_pair() -> (quinn::Endpoint, quinn::ClientConfig) {
        use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let key =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert = CertificateDer::from(key.cert.der().to_vec());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
            )
            .expect("server TLS");
        tls.alpn_protocols = vec![b"proxy-test".to_vec()];
        let server = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(tls).expect("QUIC server config"),
        ));
        let endpoint = quinn::Endpoint::server(server, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("server endpoint");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("trust the certificate");
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"proxy-test".to_vec()];
        let client = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls).expect("QUIC client config"),
        ));
        (endpoint, client)
    }

    #[tokio::test]
    async fn quic_survives_delay_and_loss() {
        let (server, client_config) = quic_pair();
        let server_addr = server.local_addr().expect("server address");
        let echo = tokio::spawn({
            let server = server.clone();
            async move {
                let conn = server
                    .accept()
                    .await
                    .expect("an incoming connection")
                    .await
                    .expect("handshake");
                let (mut send, mut recv) = conn.accept_bi().await.expect("a stream");
                let data = recv.read_to_end(1 << 20).await.expect("read");
                send.write_all(&data).await.expect("write");
                send.finish().expect("finish");
                // Keep the connection until the client has everything.
                let _ = conn.closed().await;
            }
        });

        let faults = Faults::wan(Duration::from_millis(5), 0.05).with_seed(42);
        let proxy = UdpProxy::start(server_addr, faults).expect("proxy");
        let mut endpoint = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .expect("client endpoint");
        endpoint.set_default_client_config(client_config);

        let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
        let round_trip = async {
            let conn = endpoint
                .connect(proxy.local_addr(), "localhost")
                .expect("connect")
                .await
                .expect("handshake through the proxy");
            let (mut send, mut recv) = conn.open_bi().await.expect("open a stream");
            send.write_all(&payload).await.expect("write");
            send.finish().expect("finish");
            let back = recv.read_to_end(1 << 20).await.expect("read back");
            conn.close(0u32.into(), b"done");
            back
        };
        let back = tokio::time::timeout(Duration::from_secs(60), round_trip)
            .await
            .expect("the exchange finished in time");
        assert_eq!(back, payload);
        let _ = tokio::time::timeout(Duration::from_secs(5), echo).await;

        let s = proxy.stats();
        eprintln!("QUIC through the proxy: {s:?}");
        assert!(s.forwarded > 0);
        assert_eq!(proxy.clients(), 1);
        endpoint.wait_idle().await;
        server.close(0u32.into(), b"done");
    }
}
