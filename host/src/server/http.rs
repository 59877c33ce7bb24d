//! The node's HTTP port: `/health` (the process is up), `/ready` (storage open, every engine
//! shard loaded, not shutting down) and `/metrics` (Prometheus text), open to all; beside them
//! the data API in Qdrant's dialect (`qdrant/`), which needs a token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::Shared;

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

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let s = shared.clone();
    let broken = tokio::task::spawn_blocking(move || s.db.broken_shards())
        .await
        .unwrap_or_else(|e| vec![format!("readiness check failed: {e}")]);
    if shared.stopping.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "shutting down"})),
        );
    }
    if broken.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "engine shards unavailable", "shards": broken})),
        )
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || shared.metrics.render(&shared.db))
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
