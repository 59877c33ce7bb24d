//! The HTTP data API's error paths, straight into the router (axum's test utilities): each bad
//! request gets the right status and a reason, and changes nothing.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use edge_config::{DatabaseConfig, NodeConfig};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::api::Api;
use crate::model::Role;
use crate::server::handler::Idempotency;
use crate::server::metrics::Metrics;
use crate::server::Shared;
use crate::Database;

struct Fixture {
    app: Router,
    api: Arc<Api>,
    admin: String,
    reader: String,
    _dir: tempfile::TempDir,
}

fn fixture(max_frame_bytes: u64) -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let admin = db.tokens().create("admin", Role::Admin)?.token;
    let reader = db.tokens().create("reader", Role::Read)?.token;
    let mut limits = NodeConfig::default().limits;
    limits.max_frame_bytes = max_frame_bytes;
    limits.max_http_requests = 1;
    let shared = Arc::new(Shared {
        db: Arc::new(db),
        limits,
        metrics: Metrics::new(),
        idempotency: Idempotency::default(),
        connections: AtomicU64::new(0),
        tracker: TaskTracker::new(),
        stopping: CancellationToken::new(),
        default_conflict: crate::model::ConflictPolicy::LastWriteWins,
        replication: None,
    });
    let api = Arc::new(Api::new(shared));
    Ok(Fixture {
        app: super::routes(api.clone()),
        api,
        admin,
        reader,
        _dir: dir,
    })
}

impl Fixture {
    /// Sends a request with a raw body; returns the status, `Retry-After` and the JSON answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> anyhow::Result<(StatusCode, Option<String>, Value)> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("api-key", t);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned()))?)
            .await?;
        let status = resp.status();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
        Ok((status, retry, serde_json::from_slice(&bytes)?))
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let (s, _, v) = self
            .send(method, path, Some(&self.admin), &body.to_string())
            .await?;
        Ok((s, v))
    }

    async fn count(&self) -> anyhow::Result<u64> {
        let (s, v) = self
            .admin(Method::POST, "/collections/c/points/count", json!({}))
            .await?;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["result"]["count"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no count in {v}"))
    }
}

fn error_of(v: &Value) -> &str {
    v["status"]["error"].as_str().unwrap_or("")
}

async fn with_collection(max_frame_bytes: u64) -> anyhow::Result<Fixture> {
    let f = fixture(max_frame_bytes)?;
    let (s, v) = f
        .admin(
            Method::PUT,
            "/collections/c",
            json!({"vectors": {"size": 3, "distance": "Dot"}}),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = f
        .admin(
            Method::PUT,
            "/collections/c/points?wait=true",
            json!({"points": [{"id": 1, "vector": [1, 0, 0], "payload": {"a": 1}}]}),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    Ok(f)
}

#[tokio::test]
async fn bad_bodies_get_a_reason_and_change_nothing() -> anyhow::Result<()> {
    let f = with_collection(4096).await?;
    let upsert = "/collections/c/points";
    let cases: Vec<(&str, StatusCode, &str)> = vec![
        (
            "{\"points\": [",
            StatusCode::BAD_REQUEST,
            "Format error in JSON body",
        ),
        (
            "[1, 2]",
            StatusCode::BAD_REQUEST,
            "Format error in JSON body",
        ),
        (
            r#"{"points": [{"id": 2, "vector": [1, "x", 0]}]}"#,
            StatusCode::BAD_REQUEST,
            "element 1 of the vector",
        ),
        (
            r#"{"points": [{"id": 2, "vector": [1, 0]}]}"#,
            StatusCode::BAD_REQUEST,
            "expected dim: 3, got 2",
        ),
        (
            r#"{"points": [{"id": -2, "vector": [1, 0, 0]}]}"#,
            StatusCode::BAD_REQUEST,
            "point id -2",
        ),
        (
            r#"{"points": [{"id": 2, "vector": [1, 0, 0], "colour": 1}]}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            r#"{"points": [], "wat": true}"#,
            StatusCode::BAD_REQUEST,
            "unknown field `wat`",
        ),
        (
            r#"{"points": [{"id": 2, "vector": [1, 0, 0], "payload": [1]}]}"#,
            StatusCode::BAD_REQUEST,
            "not a JSON object",
        ),
        (
            r#"{"points": [{"id": 2, "vector": {"dense": [1, 0, 0]}}]}"#,
            StatusCode::BAD_REQUEST,
            "named vectors",
        ),
        (
            r#"{"points": [{"id": 2, "vector": {"": {"indices": [1], "values": [1.0]}}}]}"#,
            StatusCode::BAD_REQUEST,
            "sparse vector",
        ),
        (
            r#"{"points": [{"id": 2, "vector": [1, 0, 0]}], "shard_key": "eu"}"#,
            StatusCode::BAD_REQUEST,
            "sharding keys",
        ),
    ];
    for (body, status, says) in cases {
        let (s, _, v) = f.send(Method::PUT, upsert, Some(&f.admin), body).await?;
        assert_eq!(s, status, "{body}: {v}");
        assert!(error_of(&v).contains(says), "{body}: {v}");
    }
    // A body over the limit is refused before it is read whole.
    let huge = format!("{{\"points\": [{}]}}", "0,".repeat(4096));
    let (s, _, v) = f.send(Method::PUT, upsert, Some(&f.admin), &huge).await?;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(f.count().await?, 1, "nothing was written");
    Ok(())
}

#[tokio::test]
async fn queries_refuse_what_they_cannot_honour() -> anyhow::Result<()> {
    let f = with_collection(1 << 20).await?;
    let query = "/collections/c/points/query";
    for (method, path, body, status, says) in [
        (
            Method::POST,
            query,
            json!({"query": {"recommend": {"positive": [1]}}}),
            StatusCode::BAD_REQUEST,
            "the `recommend` query",
        ),
        (
            Method::POST,
            query,
            json!({"query": [1, 0, 0], "using": "dense"}),
            StatusCode::BAD_REQUEST,
            "named vectors",
        ),
        (
            Method::POST,
            query,
            json!({"query": [1, 0, 0], "prefetch": [{"query": [1, 0, 0]}]}),
            StatusCode::BAD_REQUEST,
            "`prefetch`",
        ),
        (
            Method::POST,
            query,
            json!({"query": [1, 0, 0], "filter": {"must": [{"key": "g", "geo_radius": {}}]}}),
            StatusCode::BAD_REQUEST,
            "geo_radius",
        ),
        (
            Method::POST,
            query,
            json!({"query": [1, 0, 0], "filter": {"must": [{"key": "a", "match": {"value": 1.5}}]}}),
            StatusCode::BAD_REQUEST,
            "1.5",
        ),
        (
            Method::POST,
            query,
            json!({"query": 99}),
            StatusCode::NOT_FOUND,
            "No point with id 99",
        ),
        (
            Method::POST,
            query,
            json!({"query": [1, 0, 0], "params": {"hnsw_ef": 0}}),
            StatusCode::BAD_REQUEST,
            "hnsw_ef",
        ),
        (
            Method::POST,
            "/collections/nope/points/query",
            json!({"query": [1, 0, 0]}),
            StatusCode::NOT_FOUND,
            "Not found: Collection `nope` doesn't exist!",
        ),
        (
            Method::PUT,
            "/collections/c",
            json!({"vectors": {"size": 3, "distance": "Dot"}}),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            Method::PUT,
            "/collections/d",
            json!({"vectors": {"size": 3, "distance": "Manhattan"}}),
            StatusCode::BAD_REQUEST,
            "Manhattan",
        ),
        (
            Method::GET,
            "/collections/c/nonsense",
            json!({}),
            StatusCode::NOT_FOUND,
            "is not an endpoint",
        ),
    ] {
        let (s, v) = f.admin(method, path, body.clone()).await?;
        assert_eq!(s, status, "{path} {body}: {v}");
        assert!(error_of(&v).contains(says), "{path} {body}: {v}");
    }
    // Qdrant's exact wording, which clients look for.
    let (_, v) = f
        .admin(
            Method::POST,
            "/collections/nope/points/query",
            json!({"query": [1, 0, 0]}),
        )
        .await?;
    assert_eq!(error_of(&v), "Not found: Collection `nope` doesn't exist!");
    Ok(())
}

#[tokio::test]
async fn tokens_roles_and_the_request_limit() -> anyhow::Result<()> {
    let f = with_collection(1 << 20).await?;
    let write = r#"{"points": [{"id": 5, "vector": [0, 1, 0]}]}"#;
    let (s, _, v) = f
        .send(Method::PUT, "/collections/c/points", None, write)
        .await?;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _, v) = f
        .send(
            Method::PUT,
            "/collections/c/points",
            Some("vg_000000000000_00"),
            write,
        )
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _, v) = f
        .send(Method::PUT, "/collections/c/points", Some(&f.reader), write)
        .await?;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(error_of(&v).contains("may not write"), "{v}");
    // Bearer tokens work like api-key.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/collections/c/points/count")
        .header(header::AUTHORIZATION, format!("Bearer {}", f.reader))
        .body(Body::from("{}"))?;
    assert_eq!(f.app.clone().oneshot(req).await?.status(), StatusCode::OK);
    assert_eq!(f.count().await?, 1, "refused writes wrote nothing");
    // With every permit taken, the next request is told to come back.
    let held = f.api.permits.try_acquire()?;
    let (s, retry, v) = f
        .send(
            Method::POST,
            "/collections/c/points/count",
            Some(&f.reader),
            "{}",
        )
        .await?;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    drop(held);
    assert_eq!(f.count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn stats_show_the_conflict_policy_and_the_state_digest() -> anyhow::Result<()> {
    let f = with_collection(1 << 20).await?;
    let stats = |token: String| {
        let f = &f;
        async move {
            let (s, _, v) = f
                .send(Method::GET, "/collections/c/stats", Some(&token), "")
                .await?;
            anyhow::Ok((s, v))
        }
    };
    let (s, v) = stats(f.reader.clone()).await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["result"];
    assert_eq!(r["objects"], 1, "{v}");
    assert_eq!(r["conflict"], "last-write-wins", "{v}");
    assert_eq!(r["spec"]["conflict"], r["conflict"], "{v}");
    let digest = r["digest"].as_str().unwrap_or_default().to_owned();
    assert!(
        digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "{v}"
    );
    assert_eq!(digest, f.api.shared.db.digest("c")?.hex());

    // The same state gives the same digest; a write changes it.
    let (_, v) = stats(f.reader.clone()).await?;
    assert_eq!(v["result"]["digest"].as_str(), Some(digest.as_str()));
    let (s, v) = f
        .admin(
            Method::PUT,
            "/collections/c/points?wait=true",
            json!({"points": [{"id": 2, "vector": [0, 1, 0]}]}),
        )
        .await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = stats(f.reader.clone()).await?;
    assert_eq!(v["result"]["objects"], 2, "{v}");
    assert_ne!(v["result"]["digest"].as_str(), Some(digest.as_str()), "{v}");

    let (s, _, v) = f
        .send(Method::GET, "/collections/nope/stats", Some(&f.reader), "")
        .await?;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    Ok(())
}
