//! The client: picks a node, sends the request on a pooled connection, retries elsewhere when
//! that is safe, keeps every node's health and breaker up to date.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::Connection;
use serde_json::Value;
use tokio::task::AbortHandle;
use vektagraf_proto::frame::{parse_header, HEADER_LEN};
use vektagraf_proto::model::{
    Batch, CollectionSpec, CollectionStats, Direction, Edge, Hit, HybridHit, NewToken, NodeKey,
    Object, ObjectVersions, PluginInfo, Receipt, Role, SearchOptions, Step, TokenInfo,
    TraverseOptions, Write,
};
use vektagraf_proto::{decode_response, Op, Reply, Request, Response};

use crate::balance::{Balancer, Candidate};
use crate::breaker::{Breaker, BreakerState};
use crate::config::{split_addr, ClientConfig, Endpoint};
use crate::error::ClientError;
use crate::lock;
use crate::pool::{Pool, Quic};
use crate::tls::Tls;

/// Calls and matches the expected reply variant; another variant is a protocol error.
macro_rules! expect {
    ($client:ident, $op:expr, $key:expr, $pattern:pat => $value:expr) => {{
        let op = $op;
        let op_name = op.name();
        let done = $client.inner().call(op, $key).await?;
        match done.reply {
            $pattern => Ok($value),
            other => Err(unexpected(
                &$client.inner().nodes[done.node].endpoint.addr,
                op_name,
                &other,
            )),
        }
    }};
}

/// Weight of a new round-trip sample in the smoothed RTT (like TCP's SRTT: 1/8).
const RTT_GAIN: f64 = 0.125;

/// A handle on a cluster of nodes. Cheap to clone (the clones share pools, health and
/// breakers); the background health checks stop when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// What the clones of a client share; dropping it (with the last clone) stops the health
/// checks at once, even one in the middle of a ping.
struct Handle {
    inner: Arc<Inner>,
    health_tasks: Vec<AbortHandle>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.health_tasks {
            task.abort();
        }
    }
}

struct Inner {
    config: ClientConfig,
    quic: Quic,
    nodes: Vec<Node>,
    balancer: Mutex<Balancer>,
}

struct Node {
    endpoint: Endpoint,
    pool: Pool,
    state: Mutex<NodeState>,
    in_flight: AtomicUsize,
    requests: AtomicU64,
}

struct NodeState {
    healthy: bool,
    breaker: Breaker,
    rtt: Option<Duration>,
}

/// One endpoint as the client sees it now (for tools and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointState {
    pub addr: String,
    pub weight: u32,
    /// The last health check passed (true until the first one says otherwise).
    pub healthy: bool,
    pub breaker: BreakerState,
    /// Requests from this client in flight to it.
    pub in_flight: usize,
    /// Smoothed round-trip time of the health pings.
    pub rtt: Option<Duration>,
    /// Requests it answered (with a reply or an error), health pings not counted.
    pub requests: u64,
    /// Open pooled connections.
    pub connections: usize,
}

/// A collection's state digest on one node ([`Client::digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionDigest {
    /// The endpoint that answered: a digest is one node's state.
    pub endpoint: String,
    /// 32 lowercase hex digits; equal on two nodes exactly when they hold the same objects,
    /// edges and versions of the collection.
    pub digest: String,
    pub objects: u64,
    pub edges: u64,
    /// Other versions kept: tombstones and concurrent siblings.
    pub versions: u64,
}

/// A node's replication state ([`Client::cluster_status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    /// The endpoint that answered.
    pub endpoint: String,
    /// The replicator's state (docs/protocol.md, `cluster_status`); `None` when the node
    /// does not replicate.
    pub status: Option<Value>,
}

/// A node's answer to [`Client::ping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// The endpoint that answered.
    pub endpoint: String,
    pub node_id: u64,
    pub version: String,
    /// The node has opened its storage and serves requests.
    pub ready: bool,
    /// The whole call, connecting included if no pooled connection was open.
    pub elapsed: Duration,
}

/// One measured connection setup ([`Client::handshake`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub addr: String,
    /// From the first packet to the handshake's completion (QUIC + TLS 1.3: one round trip
    /// plus the node's work; a full handshake also carries and verifies the certificate).
    pub elapsed: Duration,
    /// TLS resumed a session from a ticket (no certificate was sent or verified).
    pub resumed: bool,
    /// A ping on the new connection, after the handshake.
    pub ping: Duration,
}

/// Why one attempt failed, and whether the request may have reached the node.
struct Failure {
    error: ClientError,
    sent: bool,
}

/// A successful call: the reply and the node that gave it.
struct Done {
    reply: Reply,
    node: usize,
    elapsed: Duration,
}

/// How a request's exchange on an open connection failed.
enum ExchangeError {
    /// The stream could not be opened: nothing was sent.
    NotSent(String),
    /// The connection or stream broke after the request may have left.
    Lost(String),
    Protocol(String),
}

/// Counts a request in flight on a node; if it is the breaker's half-open trial and ends
/// without an outcome (the call was cancelled), frees the trial.
struct InFlight<'a> {
    node: &'a Node,
    trial: bool,
}

impl<'a> InFlight<'a> {
    fn new(node: &'a Node, trial: bool) -> Self {
        node.in_flight.fetch_add(1, Ordering::SeqCst);
        Self { node, trial }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.trial {
            lock(&self.node.state).breaker.abandon();
        }
    }
}

/// Whether a failed attempt may be repeated on another node: only if the failure may not
/// happen there (connection trouble, timeouts, retryable server errors), and only if
/// repeating cannot do the work twice (the operation is idempotent, or it certainly never
/// reached the node).
pub(crate) fn may_retry(error: &ClientError, sent: bool, idempotent: bool) -> bool {
    error.is_retryable() && (idempotent || !sent)
}

impl Client {
    /// Sets up TLS, pools and the balancer, and starts the health checks. Does not connect:
    /// a node that is down now fails no call until one is sent to it. Must run inside a
    /// Tokio runtime (the health checks and the QUIC endpoints live there).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        config.validate()?;
        let quic = Quic::new(Tls::new(&config.ca_pem)?)?;
        let nodes = config
            .endpoints
            .iter()
            .map(|endpoint| Node {
                endpoint: endpoint.clone(),
                pool: Pool::new(config.pool_size),
                state: Mutex::new(NodeState {
                    healthy: true,
                    breaker: Breaker::new(config.breaker),
                    rtt: None,
                }),
                in_flight: AtomicUsize::new(0),
                requests: AtomicU64::new(0),
            })
            .collect();
        let inner = Arc::new(Inner {
            balancer: Mutex::new(Balancer::new(config.strategy, &config.endpoints)),
            quic,
            nodes,
            config,
        });
        let health_tasks = if inner.config.health_interval.is_zero() {
            Vec::new()
        } else {
            (0..inner.nodes.len())
                .map(|i| tokio::spawn(health_loop(inner.clone(), i)).abort_handle())
                .collect()
        };
        Ok(Client {
            handle: Arc::new(Handle {
                inner,
                health_tasks,
            }),
        })
    }

    fn inner(&self) -> &Inner {
        &self.handle.inner
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner().config
    }

    /// Sends `op` to a node chosen by the strategy (without a key: consistent-hash goes
    /// round-robin) and returns its reply; retries as [`Client::call_keyed`] describes.
    pub async fn call(&self, op: Op) -> Result<Reply, ClientError> {
        Ok(self.inner().call(op, None).await?.reply)
    }

    /// Like [`Client::call`], with the key that the consistent-hash strategy routes by (other
    /// strategies ignore it).
    ///
    /// A connection failure, a timeout or a retryable server error (overloaded, unavailable,
    /// deadline exceeded) is retried on another node, up to `retry.max_attempts` attempts in
    /// all with exponential backoff, if the operation is idempotent
    /// ([`Op::is_idempotent`]: reads, and writes with an idempotency key) or if the request
    /// certainly did not leave (the connection could not be opened).
    pub async fn call_keyed(&self, op: Op, key: &str) -> Result<Reply, ClientError> {
        Ok(self.inner().call(op, Some(key)).await?.reply)
    }

    /// Sends `op` to one given endpoint (one of the configured ones), once, without retry:
    /// for per-node operations such as `stats` or `checkpoint` of a particular node.
    pub async fn call_on(&self, addr: &str, op: Op) -> Result<Reply, ClientError> {
        let inner = self.inner();
        let i = inner
            .nodes
            .iter()
            .position(|n| n.endpoint.addr == addr)
            .ok_or_else(|| {
                ClientError::Config(format!(
                    "endpoint `{addr}` is not one of this client's endpoints"
                ))
            })?;
        let frame = inner.frame(op, &inner.config.token);
        inner
            .attempt(i, &frame)
            .await
            .map_err(|failure| failure.error)
    }

    /// Every endpoint's health, breaker, load and round-trip time, in configuration order.
    /// Closes the client's connections now, so the nodes free them at once (otherwise they
    /// close when the client is dropped and the nodes notice at their idle timeout). Calls
    /// made afterwards fail.
    pub async fn close(&self) {
        self.inner().quic.close().await;
    }

    pub fn endpoint_states(&self) -> Vec<EndpointState> {
        let now = Instant::now();
        self.inner()
            .nodes
            .iter()
            .map(|node| {
                let state = lock(&node.state);
                EndpointState {
                    addr: node.endpoint.addr.clone(),
                    weight: node.endpoint.weight,
                    healthy: state.healthy,
                    breaker: state.breaker.state(now),
                    in_flight: node.in_flight.load(Ordering::SeqCst),
                    rtt: state.rtt,
                    requests: node.requests.load(Ordering::SeqCst),
                    connections: node.pool.open_connections(),
                }
            })
            .collect()
    }

    /// Opens a new connection to `addr` (`host:port`, any node, not only the configured ones),
    /// times its handshake, pings on it and closes it. With `resume`, TLS offers a session
    /// ticket from an earlier connection to that server name (the pool's connections store
    /// them too) and the result says whether the node accepted it; without, the handshake is
    /// always a full one and no ticket is used or stored. To compare: `handshake(a, false)`,
    /// then `handshake(a, true)` twice (the first of them may have no ticket yet).
    ///
    /// Whether a handshake was resumed is inferred from whether the node's certificate was
    /// verified during it, so a full handshake of another connection at the same moment
    /// (a pool reconnecting) can make a resumed one look full.
    pub async fn handshake(&self, addr: &str, resume: bool) -> Result<Handshake, ClientError> {
        let inner = self.inner();
        split_addr(addr)
            .map_err(|reason| ClientError::Config(format!("endpoint `{addr}`: {reason}")))?;
        let connect_error = |reason: String| ClientError::Connect {
            endpoint: addr.to_string(),
            reason,
        };
        let verified = inner.quic.tls.verifier.verified();
        let start = Instant::now();
        let conn = tokio::time::timeout(
            inner.config.connect_timeout,
            inner.quic.connect(addr, resume),
        )
        .await
        .map_err(|_| connect_error(handshake_timeout(inner.config.connect_timeout)))?
        .map_err(connect_error)?;
        let elapsed = start.elapsed();
        let resumed = inner.quic.tls.verifier.verified() == verified;
        // A round trip on the connection: proves the node speaks the protocol, and makes
        // sure its session tickets (sent right after the handshake) have arrived.
        let frame = inner.frame(Op::Ping {}, "");
        let start = Instant::now();
        let reply = inner
            .exchange_on(&conn, addr, &frame, inner.config.request_timeout)
            .await;
        let ping = start.elapsed();
        conn.close(0u32.into(), b"handshake measured");
        match reply.map_err(|f| f.error)? {
            Reply::Pong { .. } => Ok(Handshake {
                addr: addr.to_string(),
                elapsed,
                resumed,
                ping,
            }),
            other => Err(unexpected(addr, "ping", &other)),
        }
    }

    /// Pings a node (chosen by the strategy).
    pub async fn ping(&self) -> Result<Pong, ClientError> {
        let done = self.inner().call(Op::Ping {}, None).await?;
        let endpoint = self.inner().nodes[done.node].endpoint.addr.clone();
        match done.reply {
            Reply::Pong {
                node_id,
                version,
                ready,
            } => Ok(Pong {
                endpoint,
                node_id,
                version,
                ready,
                elapsed: done.elapsed,
            }),
            other => Err(unexpected(&endpoint, "ping", &other)),
        }
    }

    /// Creates a collection; `false`: it already existed with the same parameters.
    pub async fn create_collection(&self, spec: CollectionSpec) -> Result<bool, ClientError> {
        let key = spec.name.clone();
        expect!(self, Op::CreateCollection { spec }, Some(&key), Reply::Created { created } => created)
    }

    pub async fn list_collections(&self) -> Result<Vec<CollectionSpec>, ClientError> {
        expect!(self, Op::ListCollections {}, None, Reply::Collections { specs } => specs)
    }

    /// Commits a batch atomically. With an idempotency key (up to 64 bytes) a retry, by this
    /// client or a later one, returns the first receipt instead of writing again, so the
    /// client may retry the batch on another node; without one, a batch whose connection
    /// broke after sending is not retried (it may or may not have been committed).
    pub async fn write(
        &self,
        batch: Batch,
        idempotency_key: Option<String>,
    ) -> Result<Receipt, ClientError> {
        let key = batch.writes.first().map(|w| match w {
            Write::Upsert { key, .. } | Write::Delete { key } | Write::Resolve { key, .. } => {
                key.id.clone()
            }
            Write::Link { from, .. } | Write::Unlink { from, .. } => from.id.clone(),
        });
        expect!(
            self,
            Op::Write { batch, idempotency_key },
            key.as_deref(),
            Reply::Written { receipt } => receipt
        )
    }

    /// The objects with these ids, in order (`None` where there is none).
    pub async fn get(
        &self,
        collection: impl Into<String>,
        ids: Vec<String>,
    ) -> Result<Vec<Option<Object>>, ClientError> {
        let key = ids.first().cloned();
        expect!(
            self,
            Op::Get { collection: collection.into(), ids },
            key.as_deref(),
            Reply::Objects { objects } => objects
        )
    }

    /// Every version of one object (siblings written concurrently in different regions
    /// included) with the causal context a [`Batch::resolve`] passes back to replace them.
    pub async fn versions(
        &self,
        collection: impl Into<String>,
        id: impl Into<String>,
    ) -> Result<ObjectVersions, ClientError> {
        let id = id.into();
        let key = id.clone();
        expect!(
            self,
            Op::Versions { collection: collection.into(), id },
            Some(key.as_str()),
            Reply::Versions { versions } => versions
        )
    }

    /// k-NN for each row of `vectors` (row-major, the collection's dimension per row).
    pub async fn search(
        &self,
        collection: impl Into<String>,
        vectors: Vec<f32>,
        options: SearchOptions,
    ) -> Result<Vec<Vec<Hit>>, ClientError> {
        let collection = collection.into();
        let key = collection.clone();
        expect!(
            self,
            Op::Search { collection, options, vectors },
            Some(&key),
            Reply::Hits { rows } => rows
        )
    }

    /// Ids of the objects matching a filter expression (docs/query.md).
    pub async fn filter(
        &self,
        collection: impl Into<String>,
        expression: Value,
        limit: u32,
    ) -> Result<Vec<String>, ClientError> {
        let collection = collection.into();
        let key = collection.clone();
        expect!(
            self,
            Op::Filter { collection, expression, limit },
            Some(&key),
            Reply::Ids { ids } => ids
        )
    }

    pub async fn traverse(
        &self,
        start: NodeKey,
        options: TraverseOptions,
    ) -> Result<Vec<Step>, ClientError> {
        let key = start.id.clone();
        expect!(self, Op::Traverse { start, options }, Some(&key), Reply::Steps { steps } => steps)
    }

    /// k-NN, then each hit expanded along its edges.
    pub async fn hybrid(
        &self,
        collection: impl Into<String>,
        vector: Vec<f32>,
        search: SearchOptions,
        expand: TraverseOptions,
    ) -> Result<Vec<HybridHit>, ClientError> {
        let collection = collection.into();
        let key = collection.clone();
        expect!(
            self,
            Op::Hybrid { collection, vector, search, expand },
            Some(&key),
            Reply::Hybrid { hits } => hits
        )
    }

    pub async fn edges(
        &self,
        node: NodeKey,
        label: Option<String>,
        direction: Direction,
    ) -> Result<Vec<Edge>, ClientError> {
        let key = node.id.clone();
        expect!(
            self,
            Op::Edges { node, label, direction },
            Some(&key),
            Reply::Edges { edges } => edges
        )
    }

    /// Stats of one collection, or of every one.
    pub async fn stats(
        &self,
        collection: Option<String>,
    ) -> Result<Vec<CollectionStats>, ClientError> {
        let key = collection.clone();
        expect!(self, Op::Stats { collection }, key.as_deref(), Reply::Stats { stats } => stats)
    }

    /// The state digest of a collection on a node chosen by the strategy (by the collection's
    /// name under consistent hashing); compare the digests of every node (each a client of
    /// its own, or [`Client::call_on`]) to see whether replication has converged.
    pub async fn digest(
        &self,
        collection: impl Into<String>,
    ) -> Result<CollectionDigest, ClientError> {
        let collection = collection.into();
        let key = collection.clone();
        let done = self
            .inner()
            .call(Op::Digest { collection }, Some(&key))
            .await?;
        let endpoint = self.inner().nodes[done.node].endpoint.addr.clone();
        match done.reply {
            Reply::Digest {
                digest,
                objects,
                edges,
                versions,
            } => Ok(CollectionDigest {
                endpoint,
                digest,
                objects,
                edges,
                versions,
            }),
            other => Err(unexpected(&endpoint, "digest", &other)),
        }
    }

    /// The replication state of a node chosen by the strategy: its peers, their connection
    /// and lag, and the replicator's counters.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        let done = self.inner().call(Op::ClusterStatus {}, None).await?;
        let endpoint = self.inner().nodes[done.node].endpoint.addr.clone();
        match done.reply {
            Reply::Cluster { status } => {
                let value: Value =
                    serde_json::from_str(&status).map_err(|e| ClientError::Protocol {
                        endpoint: endpoint.clone(),
                        reason: format!("the cluster status is not JSON: {e}"),
                    })?;
                Ok(ClusterStatus {
                    endpoint,
                    status: (!value.is_null()).then_some(value),
                })
            }
            other => Err(unexpected(&endpoint, "cluster_status", &other)),
        }
    }

    /// Asks a node (chosen by the strategy; [`Client::call_on`] names one) to checkpoint.
    pub async fn checkpoint(&self) -> Result<(), ClientError> {
        expect!(self, Op::Checkpoint {}, None, Reply::Done {} => ())
    }

    /// Creates an API token (never retried after it may have been sent: a retry could create
    /// a second token).
    pub async fn token_create(
        &self,
        name: impl Into<String>,
        role: Role,
    ) -> Result<NewToken, ClientError> {
        expect!(
            self,
            Op::TokenCreate { name: name.into(), role },
            None,
            Reply::Token { token } => token
        )
    }

    pub async fn token_list(&self) -> Result<Vec<TokenInfo>, ClientError> {
        expect!(self, Op::TokenList {}, None, Reply::Tokens { tokens } => tokens)
    }

    /// Revokes a token by its id; `false`: there was no such (unrevoked) token.
    pub async fn token_revoke(&self, id: impl Into<String>) -> Result<bool, ClientError> {
        expect!(self, Op::TokenRevoke { id: id.into() }, None, Reply::Revoked { revoked } => revoked)
    }

    /// Uploads a new version of plugin `name` (a WebAssembly component; created if new),
    /// which becomes the running one on every node. `grants`: `write`, `clock`, `random`
    /// (docs/plugins.md). Needs the admin role. Never retried after it may have been sent: a
    /// retry would add a second version.
    pub async fn plugin_upload(
        &self,
        name: impl Into<String>,
        wasm: Vec<u8>,
        grants: &[&str],
    ) -> Result<PluginInfo, ClientError> {
        let name = name.into();
        let key = name.clone();
        let grants = grants.iter().map(|g| (*g).to_owned()).collect();
        expect!(
            self,
            Op::PluginUpload { name, wasm, grants },
            Some(&key),
            Reply::Plugin { plugin } => plugin
        )
    }

    /// Every plugin, by name.
    pub async fn plugins(&self) -> Result<Vec<PluginInfo>, ClientError> {
        expect!(self, Op::PluginList {}, None, Reply::Plugins { plugins } => plugins)
    }

    /// One plugin with all its versions (`NotFound` if there is none).
    pub async fn plugin(&self, name: impl Into<String>) -> Result<PluginInfo, ClientError> {
        let name = name.into();
        let key = name.clone();
        expect!(self, Op::PluginShow { name }, Some(&key), Reply::Plugin { plugin } => plugin)
    }

    /// Calls query plugin `name` with `input`; its output, as the plugin wrote it. A plugin
    /// with the `write` grant needs the write role. Never retried after it may have been
    /// sent (the plugin may write); a fault of the plugin is a server error with
    /// [`ErrorCode::PluginFailed`](vektagraf_proto::ErrorCode::PluginFailed).
    pub async fn plugin_call(
        &self,
        name: impl Into<String>,
        input: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let name = name.into();
        let key = name.clone();
        expect!(
            self,
            Op::PluginCall { name, input },
            Some(&key),
            Reply::Output { output } => output
        )
    }

    /// Enables (or disables) a plugin everywhere; the plugin as it is now.
    pub async fn plugin_enable(
        &self,
        name: impl Into<String>,
        enabled: bool,
    ) -> Result<PluginInfo, ClientError> {
        let name = name.into();
        let key = name.clone();
        expect!(
            self,
            Op::PluginEnable { name, enabled },
            Some(&key),
            Reply::Plugin { plugin } => plugin
        )
    }

    /// Makes an uploaded version the running one again, and enables the plugin.
    pub async fn plugin_rollback(
        &self,
        name: impl Into<String>,
        version: u32,
    ) -> Result<PluginInfo, ClientError> {
        let name = name.into();
        let key = name.clone();
        expect!(
            self,
            Op::PluginRollback { name, version },
            Some(&key),
            Reply::Plugin { plugin } => plugin
        )
    }

    /// Deletes a plugin and all its versions, everywhere.
    pub async fn plugin_delete(&self, name: impl Into<String>) -> Result<(), ClientError> {
        let name = name.into();
        let key = name.clone();
        expect!(self, Op::PluginDelete { name }, Some(&key), Reply::Done {} => ())
    }
}

fn unexpected(endpoint: &str, op: &str, reply: &Reply) -> ClientError {
    ClientError::Protocol {
        endpoint: endpoint.to_string(),
        reason: format!("answered `{op}` with a `{}` reply", reply.name()),
    }
}

fn handshake_timeout(after: Duration) -> String {
    format!("no handshake within {after:?}")
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner().config.endpoints)
            .field("strategy", &self.inner().config.strategy)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn frame(&self, op: Op, token: &str) -> Vec<u8> {
        let timeout_ms = u32::try_from(self.config.request_timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        Request {
            timeout_ms,
            token: token.to_string(),
            op,
        }
        .encode()
    }

    async fn call(&self, op: Op, key: Option<&str>) -> Result<Done, ClientError> {
        let idempotent = op.is_idempotent();
        let op_name = op.name();
        let frame = self.frame(op, &self.config.token);
        let retry = self.config.retry;
        let mut excluded = vec![false; self.nodes.len()];
        let mut last = None;
        for attempt in 1..=retry.max_attempts {
            if attempt > 1 {
                tokio::time::sleep(retry.backoff(attempt - 1, fastrand::f64())).await;
            }
            let i = self.pick(key, &excluded).ok_or_else(|| {
                ClientError::NoEndpoint("this client has no endpoints".to_string())
            })?;
            let start = Instant::now();
            match self.attempt(i, &frame).await {
                Ok(reply) => {
                    return Ok(Done {
                        reply,
                        node: i,
                        elapsed: start.elapsed(),
                    })
                }
                Err(Failure { error, sent }) => {
                    if !may_retry(&error, sent, idempotent) {
                        return Err(error);
                    }
                    tracing::debug!(op = op_name, attempt, %error, "attempt failed; retrying");
                    excluded[i] = true;
                    last = Some(error);
                }
            }
        }
        let error =
            last.unwrap_or_else(|| ClientError::NoEndpoint("no attempt was made".to_string()));
        Err(self.final_error(error))
    }

    /// After the last attempt: if it failed to reach its node and no node is available,
    /// say that the cluster is down (with the last error) rather than blame one node.
    fn final_error(&self, error: ClientError) -> ClientError {
        let unreachable = matches!(
            error,
            ClientError::Connect { .. }
                | ClientError::Disconnected { .. }
                | ClientError::Timeout { .. }
        );
        let now = Instant::now();
        let none_available = self.nodes.iter().all(|node| {
            let state = lock(&node.state);
            !(state.healthy && state.breaker.allows(now))
        });
        if unreachable && none_available {
            let n = self.nodes.len();
            let nodes = if n == 1 {
                "the only node is failing health checks or has an open breaker".to_string()
            } else {
                format!("all {n} nodes are failing health checks or have open breakers")
            };
            return ClientError::NoEndpoint(format!("{nodes}; last error: {error}"));
        }
        error
    }

    fn pick(&self, key: Option<&str>, excluded: &[bool]) -> Option<usize> {
        let now = Instant::now();
        let candidates: Vec<Candidate> = self
            .nodes
            .iter()
            .zip(excluded)
            .map(|(node, &excluded)| {
                let state = lock(&node.state);
                Candidate {
                    available: state.healthy && state.breaker.allows(now),
                    excluded,
                    in_flight: node.in_flight.load(Ordering::SeqCst),
                    rtt: state.rtt,
                }
            })
            .collect();
        lock(&self.balancer).pick(&candidates, key)
    }

    /// One attempt on node `i`, with its accounting: in flight, breaker, requests answered.
    async fn attempt(&self, i: usize, frame: &[u8]) -> Result<Reply, Failure> {
        let node = &self.nodes[i];
        let trial = lock(&node.state).breaker.on_attempt(Instant::now());
        let mut in_flight = InFlight::new(node, trial);
        let start = Instant::now();
        let result = self.send(node, frame).await;
        let elapsed = start.elapsed();
        let failed = match &result {
            Ok(_) => false,
            Err(failure) => failure.error.is_node_failure(),
        };
        if matches!(
            result,
            Ok(_)
                | Err(Failure {
                    error: ClientError::Server { .. },
                    ..
                })
        ) {
            node.requests.fetch_add(1, Ordering::SeqCst);
        }
        {
            let mut state = lock(&node.state);
            let before = state.breaker.state(Instant::now());
            state.breaker.record(failed, elapsed, Instant::now());
            let after = state.breaker.state(Instant::now());
            if before != after {
                tracing::info!(node = %node.endpoint, %before, %after, "circuit breaker");
            }
        }
        in_flight.trial = false;
        result
    }

    /// Gets a pooled connection and exchanges the request on it.
    async fn send(&self, node: &Node, frame: &[u8]) -> Result<Reply, Failure> {
        let addr = &node.endpoint.addr;
        let conn = self.pooled_connection(node).await?;
        self.exchange_on(&conn, addr, frame, self.config.request_timeout)
            .await
    }

    async fn pooled_connection(&self, node: &Node) -> Result<Connection, Failure> {
        let addr = &node.endpoint.addr;
        let not_sent = |reason: String| Failure {
            error: ClientError::Connect {
                endpoint: addr.clone(),
                reason,
            },
            sent: false,
        };
        tokio::time::timeout(self.config.connect_timeout, node.pool.get(&self.quic, addr))
            .await
            .map_err(|_| not_sent(handshake_timeout(self.config.connect_timeout)))?
            .map_err(not_sent)
    }

    /// One request and its answer on an open connection, within `timeout`.
    async fn exchange_on(
        &self,
        conn: &Connection,
        addr: &str,
        frame: &[u8],
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let sent = AtomicBool::new(false);
        let outcome =
            tokio::time::timeout(timeout, exchange(conn, frame, self.config.max_frame, &sent))
                .await;
        let endpoint = addr.to_string();
        match outcome {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(error))) => Err(Failure {
                error: ClientError::Server { endpoint, error },
                sent: true,
            }),
            Ok(Err(ExchangeError::NotSent(reason))) => Err(Failure {
                error: ClientError::Connect { endpoint, reason },
                sent: false,
            }),
            Ok(Err(ExchangeError::Lost(reason))) => Err(Failure {
                error: ClientError::Disconnected { endpoint, reason },
                sent: true,
            }),
            Ok(Err(ExchangeError::Protocol(reason))) => Err(Failure {
                error: ClientError::Protocol { endpoint, reason },
                sent: true,
            }),
            Err(_) => Err(Failure {
                error: ClientError::Timeout {
                    endpoint,
                    after: timeout,
                },
                sent: sent.load(Ordering::SeqCst),
            }),
        }
    }

    /// One health check of node `i`: a ping on a pooled connection. Marks the node up (if
    /// ready) or down, smooths its round-trip time, and counts a failure against its breaker
    /// (a success does not close a breaker: that takes a request).
    async fn health_check(&self, i: usize, frame: &[u8]) {
        let node = &self.nodes[i];
        let addr = &node.endpoint.addr;
        // A ping slower than a handshake may take means the node is in trouble.
        let timeout = self.config.connect_timeout;
        let outcome = match self.pooled_connection(node).await {
            Err(failure) => Err(failure.error),
            Ok(conn) => {
                let start = Instant::now();
                let reply = self.exchange_on(&conn, addr, frame, timeout).await;
                let rtt = start.elapsed();
                if let Err(Failure {
                    error: ClientError::Timeout { .. },
                    ..
                }) = reply
                {
                    // Probably a dead path: reconnect next time instead of waiting for the
                    // idle timeout.
                    conn.close(0u32.into(), b"ping timed out");
                }
                reply.map(|reply| (reply, rtt)).map_err(|f| f.error)
            }
        };
        let now = Instant::now();
        let mut state = lock(&node.state);
        let was_healthy = state.healthy;
        match outcome {
            Ok((Reply::Pong { ready, .. }, rtt)) => {
                state.healthy = ready;
                state.rtt = Some(match state.rtt {
                    None => rtt,
                    Some(old) => old.mul_f64(1.0 - RTT_GAIN) + rtt.mul_f64(RTT_GAIN),
                });
                if !ready && was_healthy {
                    tracing::warn!(node = %addr, "node is not ready");
                }
            }
            Ok((other, _)) => {
                state.healthy = false;
                state.breaker.on_failure(now);
                tracing::warn!(node = %addr, "{}", unexpected(addr, "ping", &other));
            }
            Err(error) => {
                state.healthy = false;
                if error.is_node_failure() {
                    state.breaker.on_failure(now);
                }
                if was_healthy {
                    tracing::warn!(node = %addr, %error, "health check failed");
                }
            }
        }
        if state.healthy && !was_healthy {
            tracing::info!(node = %addr, "node is up");
        }
    }
}

/// Pings node `i` every `health_interval` until aborted (when the last clone of the client
/// is dropped).
async fn health_loop(inner: Arc<Inner>, i: usize) {
    let frame = inner.frame(Op::Ping {}, "");
    loop {
        inner.health_check(i, &frame).await;
        tokio::time::sleep(inner.config.health_interval).await;
    }
}

/// Writes one request frame on a new stream and reads one response frame.
async fn exchange(
    conn: &Connection,
    frame: &[u8],
    max_frame: u64,
    sent: &AtomicBool,
) -> Result<Response, ExchangeError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| ExchangeError::NotSent(format!("connection closed: {e}")))?;
    sent.store(true, Ordering::SeqCst);
    let lost = |e: &dyn fmt::Display| ExchangeError::Lost(e.to_string());
    send.write_all(frame).await.map_err(|e| lost(&e))?;
    send.finish().map_err(|e| lost(&e))?;

    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(n) => ExchangeError::Protocol(format!(
            "the stream ended after {n} of the {HEADER_LEN} header bytes"
        )),
        quinn::ReadExactError::ReadError(e) => lost(&e),
    })?;
    let len = parse_header(header, max_frame)
        .map_err(|e| ExchangeError::Protocol(format!("response {e}")))?;
    // Grows as bytes arrive: a header cannot make the client allocate what was not sent.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(ExchangeError::Protocol(format!(
                    "the stream ended after {} of the {len} body bytes",
                    body.len()
                )))
            }
            Err(e) => return Err(lost(&e)),
        }
    }
    decode_response(&body).map_err(|e| ExchangeError::Protocol(format!("bad response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vektagraf_proto::{ErrorCode, ErrorReply};

    fn server(code: ErrorCode) -> ClientError {
        ClientError::Server {
            endpoint: "a:1".into(),
            error: ErrorReply::new(code, "x"),
        }
    }

    #[test]
    fn retries_only_what_is_safe_and_may_help() {
        let connect = ClientError::Connect {
            endpoint: "a:1".into(),
            reason: "x".into(),
        };
        let lost = ClientError::Disconnected {
            endpoint: "a:1".into(),
            reason: "x".into(),
        };
        let timeout = ClientError::Timeout {
            endpoint: "a:1".into(),
            after: Duration::from_secs(1),
        };
        // Not sent: always safe to retry elsewhere.
        assert!(may_retry(&connect, false, false));
        assert!(may_retry(&connect, false, true));
        // Sent (or maybe sent): only idempotent operations.
        for e in [&lost, &timeout, &server(ErrorCode::Unavailable)] {
            assert!(may_retry(e, true, true), "{e}");
            assert!(!may_retry(e, true, false), "{e}");
        }
        assert!(may_retry(&server(ErrorCode::Overloaded), true, true));
        assert!(may_retry(&server(ErrorCode::DeadlineExceeded), true, true));
        // Errors another node would give too: never.
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::TooLarge,
            ErrorCode::Internal,
        ] {
            assert!(!may_retry(&server(code), true, true), "{code:?}");
        }
        let protocol = ClientError::Protocol {
            endpoint: "a:1".into(),
            reason: "x".into(),
        };
        assert!(!may_retry(&protocol, true, true));
    }

    #[test]
    fn breaker_counts_node_failures_not_refusals() {
        assert!(server(ErrorCode::Unavailable).is_node_failure());
        assert!(server(ErrorCode::Overloaded).is_node_failure());
        assert!(!server(ErrorCode::BadRequest).is_node_failure());
        assert!(!server(ErrorCode::NotFound).is_node_failure());
        assert!(!server(ErrorCode::Forbidden).is_node_failure());
        assert!(ClientError::Timeout {
            endpoint: "a:1".into(),
            after: Duration::from_secs(1)
        }
        .is_node_failure());
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = ClientError::Server {
            endpoint: "127.0.0.1:7400".into(),
            error: ErrorReply::new(
                ErrorCode::Forbidden,
                "the token's role `read` may not write",
            ),
        };
        assert_eq!(
            e.to_string(),
            "node 127.0.0.1:7400: the token's role `read` may not write"
        );
        let e = ClientError::Timeout {
            endpoint: "a:7400".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(e.to_string(), "node a:7400: no answer within 1.5s");
        let e = ClientError::Connect {
            endpoint: "a:7400".into(),
            reason: handshake_timeout(Duration::from_secs(5)),
        };
        assert_eq!(
            e.to_string(),
            "node a:7400: cannot connect: no handshake within 5s"
        );
    }
}
