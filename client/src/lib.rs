//! The Vektagraf Edge client: talks to a cluster of nodes over QUIC (ALPN `vektagraf/1`, one
//! bidirectional stream per request, frames of [`vektagraf_proto`]), with
//!
//! - a **pool** of `pool_size` QUIC connections per node, opened on first use, used in turn,
//!   replaced when they close; TLS 1.3 against the nodes' CA, with session resumption;
//! - **load balancing** ([`Strategy`]): round-robin, least-connections, weighted (smooth
//!   weighted round-robin), consistent-hash (by a request key: the object id or collection
//!   name), nearest (lowest measured round-trip time) — see [`balance`];
//! - **health checks**: every `health_interval` each node is pinged; its round-trip time is
//!   smoothed and it is marked up or down;
//! - a **circuit breaker** per node ([`breaker`]): opened by consecutive failures, half-open
//!   after `reset_timeout`, closed again by a successful trial request;
//! - **failover**: a request that failed for a reason another node may not share (connection,
//!   timeout, overloaded/unavailable) is retried on another node with exponential backoff and
//!   jitter, if it is idempotent or certainly was not sent;
//! - typed errors ([`ClientError`]) that name the node and say what went wrong.
//!
//! Nodes that are down, unhealthy or whose breaker is open are skipped; when every node is,
//! requests go to any of them, so a recovering cluster is found again.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use vektagraf_client::{parse_endpoints, read_ca_file, Client, ClientConfig};
//! use vektagraf_client::proto::model::{Batch, SearchOptions};
//!
//! let config = ClientConfig {
//!     endpoints: parse_endpoints("quic://10.0.0.1:7400=2,quic://10.0.0.2:7400")?,
//!     ca_pem: read_ca_file("ca.pem")?,
//!     token: std::env::var("VEKTAGRAF_TOKEN")?,
//!     strategy: "least-connections".parse()?,
//!     ..ClientConfig::default()
//! };
//! let client = Client::connect(config).await?; // never fails because a node is down
//! let mut batch = Batch::new();
//! batch.upsert("docs", "a", serde_json::json!({"title": "A"}), Some(vec![0.1, 0.2, 0.3]));
//! client.write(batch, Some("import-1/batch-0".into())).await?; // keyed: safe to retry
//! let hits = client.search("docs", vec![0.1, 0.2, 0.3], SearchOptions::k(10)).await?;
//! for state in client.endpoint_states() {
//!     println!("{} {} breaker {} rtt {:?}", state.addr, state.healthy, state.breaker, state.rtt);
//! }
//! # let _ = hits;
//! # Ok(())
//! # }
//! ```

pub mod balance;
pub mod breaker;
mod client;
mod config;
mod error;
mod pool;
mod tls;

pub use breaker::BreakerState;
pub use client::{Client, ClusterStatus, CollectionDigest, EndpointState, Handshake, Pong};
pub use config::{
    parse_endpoints, read_ca_file, BreakerConfig, ClientConfig, Endpoint, RetryConfig, Strategy,
    DEFAULT_MAX_FRAME,
};
pub use error::ClientError;
/// The protocol crate: the model types the typed calls take and return, [`Op`](proto::Op)
/// and [`Reply`](proto::Reply) for [`Client::call`].
pub use vektagraf_proto as proto;

/// Locks a mutex, ignoring poisoning (the guarded state stays consistent: every update is a
/// few assignments that cannot panic half-way).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
