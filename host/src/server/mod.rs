//! The edge node: the database behind a QUIC client protocol and an HTTP port.
//!
//! [`Node::start`] opens the data directory, loads TLS (or makes a development CA), binds both
//! ports and serves until [`Node::shutdown`]; [`run`] does both around a shutdown future, so
//! `main` only wires signals and tests run real nodes on port 0.
//!
//! - `quic.rs`: connections, streams, frames, limits, authorisation.
//! - `handler.rs`: one request against the database, bounded by its deadline.
//! - `http.rs`: `/health`, `/ready`, `/metrics`.
//! - `qdrant/`: the HTTP data API in Qdrant's REST dialect, and our graph extensions.
//! - `metrics.rs`: the Prometheus registry.
//! - `tls.rs`: certificates (configured, or a development CA).

mod handler;
mod http;
pub mod metrics;
pub mod qdrant;
mod quic;
mod replication;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use edge_config::{NodeConfig, NodeLimits};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::Role;
use crate::Database;
use handler::Idempotency;
use metrics::Metrics;

pub use quic::{CLOSE_SHUTDOWN, CLOSE_TOO_MANY};

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("opening the database in {dir}: {source}")]
    Database {
        dir: PathBuf,
        #[source]
        source: crate::Error,
    },
    #[error("closing the database: {0}")]
    Close(#[source] crate::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// What every connection and request task shares.
pub(crate) struct Shared {
    db: Arc<Database>,
    limits: NodeLimits,
    metrics: Metrics,
    idempotency: Idempotency,
    /// Open client connections, checked against `max_connections`.
    connections: AtomicU64,
    /// Every connection and request task, so shutdown can wait for the requests in flight.
    tracker: TaskTracker,
    /// Fired when shutdown begins: stop accepting connections and streams.
    stopping: CancellationToken,
    /// The policy of collections created through the HTTP API.
    default_conflict: crate::model::ConflictPolicy,
    /// The replicator's state, when the node replicates.
    replication: Option<Arc<std::sync::Mutex<crate::replication::driver::Status>>>,
}

impl Shared {
    fn is_ready(&self) -> bool {
        !self.stopping.is_cancelled()
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    quic_addr: SocketAddr,
    http_addr: SocketAddr,
    http_task: tokio::task::JoinHandle<()>,
    accept_task: tokio::task::JoinHandle<()>,
    ca_file: Option<PathBuf>,
    admin_token: Option<(String, PathBuf)>,
    grace: Duration,
    replicator: Option<crate::replication::driver::Replicator>,
}

/// Where the first admin token is written (mode 0600).
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

impl Node {
    /// Opens the database and starts serving. On the first start of a data directory without
    /// tokens, creates an admin token (see [`Node::new_admin_token`]).
    pub async fn start(config: NodeConfig) -> Result<Node, ServeError> {
        let dir = config.data_dir.clone();
        let db = {
            let (d, database) = (dir.clone(), config.database.clone());
            tokio::task::spawn_blocking(move || Database::open(&d, database))
                .await
                .map_err(|e| ServeError::io("opening the database", std::io::Error::other(e)))?
                .map_err(|source| ServeError::Database {
                    dir: dir.clone(),
                    source,
                })?
        };
        let db = Arc::new(db);
        if let Some(file) = &config.admin_token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| ServeError::io(format!("reading {}", file.display()), e))?;
            db.tokens()
                .ensure(token.trim(), "admin (from file)", Role::Admin)
                .map_err(|source| ServeError::Database {
                    dir: file.clone(),
                    source,
                })?;
        }
        let admin_token = if db.tokens().is_empty() {
            let t = db.tokens().create("admin", Role::Admin).map_err(|source| {
                ServeError::Database {
                    dir: dir.clone(),
                    source,
                }
            })?;
            let path = admin_token_path(&dir);
            tls::write_private(&path, format!("{}\n", t.token).as_bytes())?;
            Some((t.token, path))
        } else {
            None
        };
        let (files, ca_file) = match &config.tls {
            Some(f) => (f.clone(), None),
            None => (
                tls::ensure_dev_certificate(&dir, &dev_names(&config))?,
                Some(tls::dev_ca_path(&dir)),
            ),
        };
        let crypto = tls::server_crypto(&files)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(transport(&config.limits)));
        let endpoint = quinn::Endpoint::server(server, config.quic_listen).map_err(|source| {
            ServeError::Bind {
                addr: config.quic_listen,
                what: "QUIC",
                source,
            }
        })?;
        let quic_addr = endpoint
            .local_addr()
            .map_err(|e| ServeError::io("reading the QUIC address", e))?;
        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.http_listen,
                what: "HTTP",
                source,
            })?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| ServeError::io("reading the HTTP address", e))?;
        let default_conflict = replication::default_conflict(&config)?;
        let replicator = replication::start(&db, &config).await?;
        if replicator.is_some() {
            db.note_replication()
                .map_err(|source| ServeError::Database {
                    dir: config.data_dir.clone(),
                    source,
                })?;
        }
        let shared = Arc::new(Shared {
            default_conflict,
            replication: replicator.as_ref().map(|r| r.status_handle()),
            db,
            limits: config.limits.clone(),
            metrics: Metrics::new(),
            idempotency: Idempotency::default(),
            connections: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
        });
        let accept_task = tokio::spawn(quic::accept_loop(
            endpoint.clone(),
            shared.clone(),
            shared.stopping.clone(),
        ));
        let http_task = {
            let stop = shared.stopping.clone();
            let app = http::router(shared.clone());
            // Answers go out as soon as they are written (no Nagle delay on small replies).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            });
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            })
        };
        if replicator.is_none() {
            // Without peers, the log is kept only until the index snapshots cover it.
            let (db, stop) = (shared.db.clone(), shared.stopping.clone());
            shared.tracker.spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let db = db.clone();
                    let trimmed = tokio::task::spawn_blocking(move || {
                        db.trim_log(None, std::time::Duration::ZERO)
                    })
                    .await;
                    if let Ok(Err(e)) = trimmed {
                        tracing::warn!(error = %e, "trimming the operation log failed");
                    }
                }
            });
        }
        tracing::info!(%quic_addr, %http_addr, node_id = shared.db.node_id(), "node started");
        Ok(Node {
            shared,
            endpoint,
            quic_addr,
            http_addr,
            http_task,
            accept_task,
            ca_file,
            admin_token,
            grace: config.limits.shutdown_grace,
            replicator,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.quic_addr
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The CA file clients trust, when the node uses its development certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The admin token made at this start (first start of the directory), and its file.
    pub fn new_admin_token(&self) -> Option<(&str, &Path)> {
        self.admin_token
            .as_ref()
            .map(|(t, p)| (t.as_str(), p.as_path()))
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.shared.db
    }

    /// The address peers dial for replication, when the node replicates.
    pub fn replication_addr(&self) -> Option<SocketAddr> {
        self.replicator.as_ref().and_then(|r| r.local_addr())
    }

    /// The replicator's state (peers, lag), when the node replicates.
    pub fn replication_status(&self) -> Option<crate::replication::driver::Status> {
        self.replicator.as_ref().map(|r| r.status())
    }

    /// Stops accepting, lets requests in flight finish (up to the grace period), closes the
    /// connections and the database (with an index checkpoint).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        tracing::info!("shutting down");
        self.shared.stopping.cancel();
        if let Some(r) = self.replicator {
            r.shutdown().await;
        }
        self.endpoint.set_server_config(None);
        let _ = self.accept_task.await;
        self.shared.tracker.close();
        if tokio::time::timeout(self.grace, self.shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "requests still running at the end of the grace period");
        }
        self.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"node shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        let _ = self.http_task.await;
        let shared = self.shared;
        tokio::task::spawn_blocking(move || {
            // Request tasks are done; the last reference closes the database.
            match Arc::try_unwrap(shared) {
                Ok(s) => match Arc::try_unwrap(s.db) {
                    Ok(db) => db.close().map_err(ServeError::Close),
                    Err(db) => db.checkpoint().map_err(ServeError::Close),
                },
                Err(s) => s.db.checkpoint().map_err(ServeError::Close),
            }
        })
        .await
        .map_err(|e| ServeError::io("closing the database", std::io::Error::other(e)))?
    }
}

/// Names a development certificate covers besides localhost: the QUIC address the node
/// listens on, when it is a specific one (a wildcard address names no host).
fn dev_names(config: &NodeConfig) -> Vec<String> {
    let ip = config.quic_listen.ip();
    if ip.is_unspecified() || ip.is_loopback() {
        Vec::new()
    } else {
        vec![ip.to_string()]
    }
}

/// The QUIC transport limits of client connections.
fn transport(limits: &NodeLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let streams =
        quinn::VarInt::from_u64(limits.max_streams_per_connection).unwrap_or(quinn::VarInt::MAX);
    t.max_concurrent_bidi_streams(streams);
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(limits.connection_timeout).ok());
    t.stream_receive_window(quinn::VarInt::from_u32(4 << 20));
    t.receive_window(quinn::VarInt::from_u32(16 << 20));
    t.send_window(16 << 20);
    t
}

/// Starts a node, serves until `shutdown` completes, then stops it gracefully.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let node = Node::start(config).await?;
    shutdown.await;
    node.shutdown().await
}
