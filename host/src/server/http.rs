//! The node's HTTP port: `/health` (the process is up), `/ready` (storage open, every engine
//! shard loaded, not shutting down) and `/metrics` (Prometheus text), open to all; beside them
//! the data API in Qdrant's dialect (`qdrant/`), which needs a token.
//!
//! When the node replicates, `/ready` also shows each peer's connection and lag; readiness
//! itself never depends on peers.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::Shared;
use crate::replication::driver::Status;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(shared.clone())
        .merge(super::qdrant::router(shared))
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

fn lock(status: &Mutex<Status>) -> MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `/ready` shows of replication: this node and, per peer, its connection and lag.
fn replication_json(status: &Status) -> Value {
    json!({
        "node": status.node,
        "peers": status.peers.iter().map(|p| json!({
            "id": p.id,
            "connected": p.connected,
            "lag_ops": p.lag_ops,
            "lag_ms": p.lag_ms,
            "last_contact_ms": p.last_contact_ms,
        })).collect::<Vec<_>>(),
    })
}

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let s = shared.clone();
    let broken = tokio::task::spawn_blocking(move || s.db.broken_shards())
        .await
        .unwrap_or_else(|e| vec![format!("readiness check failed: {e}")]);
    let mut body = if shared.stopping.is_cancelled() {
        json!({"ready": false, "reason": "shutting down"})
    } else if broken.is_empty() {
        json!({"ready": true})
    } else {
        json!({"ready": false, "reason": "engine shards unavailable", "shards": broken})
    };
    let ready = body["ready"] == Value::Bool(true);
    // Peers are shown, never counted against readiness: a region cut off from the others
    // (a partition, peers down) keeps serving its local reads and writes, which replicate once
    // the peers are back. A load balancer must not take it out of service for that.
    if let Some(status) = &shared.replication {
        body["replication"] = replication_json(&lock(status));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || {
        let status = shared.replication.as_ref().map(|s| lock(s).clone());
        shared.metrics.render(&shared.db, status.as_ref())
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use axum::body::Body;
    use axum::http::Request;
    use edge_config::NodeConfig;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;
    use tower::ServiceExt;
    use vektagraf_proto::{Op, Reply};

    use super::*;
    use crate::model::{Batch, CollectionSpec, ConflictPolicy};
    use crate::replication::driver::PeerStatus;
    use crate::server::handler::{handle, Context, Idempotency};
    use crate::server::metrics::Metrics;
    use crate::Database;

    fn shared(db: Database, replication: Option<Status>) -> Arc<Shared> {
        Arc::new(Shared {
            db: Arc::new(db),
            limits: NodeConfig::default().limits,
            metrics: Metrics::new(),
            idempotency: Idempotency::default(),
            connections: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            default_conflict: ConflictPolicy::LastWriteWins,
            replication: replication.map(|s| Arc::new(Mutex::new(s))),
        })
    }

    async fn get(shared: &Arc<Shared>, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let resp = router(shared.clone())
            .oneshot(Request::builder().uri(path).body(Body::empty())?)
            .await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        Ok((status, String::from_utf8(bytes.to_vec())?))
    }

    fn op(shared: &Shared, op: Op) -> Result<Reply, vektagraf_proto::ErrorReply> {
        let cx = Context {
            db: &shared.db,
            limits: &shared.limits,
            idempotency: &shared.idempotency,
            ready: true,
            replication: shared.replication.as_deref(),
            role: Some(crate::model::Role::Admin),
        };
        handle(
            &cx,
            op,
            std::time::Instant::now() + std::time::Duration::from_secs(30),
        )
    }

    #[tokio::test]
    async fn a_replicating_node_shows_its_peers_and_stays_ready_without_them() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path(), crate::DatabaseConfig::default())?;
        db.create_collection(CollectionSpec::new("c", 2))?;
        let mut b = Batch::new();
        b.upsert("c", "a", serde_json::json!({}), Some(vec![1.0, 0.0]));
        db.write(b)?;
        let status = Status {
            node: "a".into(),
            region: "eu".into(),
            peers: vec![PeerStatus {
                id: "b".into(),
                region: "us".into(),
                connected: false,
                lag_ops: 3,
                lag_ms: 4200,
                last_contact_ms: None,
                ..PeerStatus::default()
            }],
            rejected_clocks: 1,
            ..Status::default()
        };
        let s = shared(db, Some(status.clone()));

        // Its only peer is unreachable, and it is ready all the same.
        let (code, body) = get(&s, "/ready").await?;
        assert_eq!(code, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(
            v,
            json!({"ready": true, "replication": {"node": "a", "peers": [
                {"id": "b", "connected": false, "lag_ops": 3, "lag_ms": 4200, "last_contact_ms": null}
            ]}})
        );
        let (code, text) = get(&s, "/metrics").await?;
        assert_eq!(code, StatusCode::OK);
        for line in [
            "vektagraf_replication_peer_connected{peer=\"b\"} 0",
            "vektagraf_replication_lag_operations{peer=\"b\"} 3",
            "vektagraf_replication_lag_seconds{peer=\"b\"} 4.2",
            "vektagraf_replication_rejected_clocks_total 1",
            "vektagraf_replication_conflicts_total{policy=\"manual\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }

        // Over the protocol: the same status as JSON, and the collection's digest.
        let Ok(Reply::Cluster { status: json_text }) = op(&s, Op::ClusterStatus {}) else {
            anyhow::bail!("no cluster reply");
        };
        assert_eq!(serde_json::from_str::<Value>(&json_text)?, json!(status));
        let Ok(Reply::Digest {
            digest,
            objects,
            edges,
            versions,
        }) = op(
            &s,
            Op::Digest {
                collection: "c".into(),
            },
        )
        else {
            anyhow::bail!("no digest reply");
        };
        assert_eq!(digest, s.db.digest("c")?.hex());
        assert_eq!((objects, edges, versions), (1, 0, 0));
        let missing = op(
            &s,
            Op::Digest {
                collection: "nope".into(),
            },
        );
        assert_eq!(
            missing.map_err(|e| e.code),
            Err(vektagraf_proto::ErrorCode::NotFound)
        );

        // A node that does not replicate: no replication figures, and `null` over the protocol.
        let dir = tempfile::tempdir()?;
        let s = shared(
            Database::open(dir.path(), crate::DatabaseConfig::default())?,
            None,
        );
        assert_eq!(
            get(&s, "/ready").await?,
            (StatusCode::OK, r#"{"ready":true}"#.to_owned())
        );
        assert_eq!(
            op(&s, Op::ClusterStatus {}),
            Ok(Reply::Cluster {
                status: "null".into()
            })
        );
        Ok(())
    }
}
