//! The node's data API over HTTP, in Qdrant's REST dialect (docs/http-api.md), so qdrant-client,
//! LangChain and LlamaIndex work against a node unchanged, plus our graph operations beside it.
//!
//! - `api.rs`: what every handler shares: the envelope, errors, auth, JSON bodies, the blocking
//!   pool.
//! - `ids.rs`: Qdrant point ids (integers, UUIDs) to and from our string ids.
//! - `filter.rs`: Qdrant filters translated into the engine's filter language.
//! - `points.rs`: points as Qdrant sees them (vectors, payload selectors, records).
//! - `collections.rs`, `writes.rs`, `reads.rs`, `search.rs`: the endpoints.
//! - `graph.rs`: our extensions (edges, traversal, hybrid, stats, versions and resolve).
//! - `plugins.rs`: plugin upload, list, show, call, enable/disable, rollback, delete
//!   (the protocol's plugin operations, run by the same code).
//! - `openapi.rs`: the OpenAPI document of all of it (`docs/openapi.json`).

mod api;
mod collections;
mod filter;
mod graph;
mod ids;
pub mod openapi;
mod plugins;
mod points;
mod reads;
mod search;
#[cfg(test)]
mod tests;
mod writes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;

use super::Shared;
use api::Api;

/// The Qdrant-compatible routes and our extensions.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    routes(Arc::new(Api::new(shared)))
}

fn routes(api: Arc<Api>) -> Router {
    let body_limit = usize::try_from(api.shared.limits.max_frame_bytes).unwrap_or(usize::MAX);
    Router::new()
        .route("/", get(collections::root))
        .route("/collections", get(collections::list))
        .route(
            "/collections/{name}",
            get(collections::info)
                .put(collections::create)
                .delete(collections::delete),
        )
        .route("/collections/{name}/exists", get(collections::exists))
        .route("/collections/{name}/index", put(collections::create_index))
        .route(
            "/collections/{name}/index/{field}",
            axum::routing::delete(collections::delete_index),
        )
        .route(
            "/collections/{name}/points",
            put(writes::upsert).post(reads::retrieve),
        )
        .route("/collections/{name}/points/{id}", get(reads::get_point))
        .route("/collections/{name}/points/delete", post(writes::delete))
        .route(
            "/collections/{name}/points/payload",
            post(writes::set_payload).put(writes::overwrite_payload),
        )
        .route(
            "/collections/{name}/points/payload/delete",
            post(writes::delete_payload),
        )
        .route(
            "/collections/{name}/points/payload/clear",
            post(writes::clear_payload),
        )
        .route("/collections/{name}/points/count", post(reads::count))
        .route("/collections/{name}/points/scroll", post(reads::scroll))
        .route("/collections/{name}/points/query", post(search::query))
        .route(
            "/collections/{name}/points/query/batch",
            post(search::query_batch),
        )
        .route("/collections/{name}/points/search", post(search::search))
        .route(
            "/collections/{name}/points/search/batch",
            post(search::search_batch),
        )
        .route("/collections/{name}/edges", put(graph::edges))
        .route(
            "/collections/{name}/points/{id}/traverse",
            post(graph::traverse),
        )
        .route("/collections/{name}/points/hybrid", post(graph::hybrid))
        .route(
            "/collections/{name}/points/{id}/versions",
            get(graph::versions),
        )
        .route(
            "/collections/{name}/points/{id}/resolve",
            post(graph::resolve),
        )
        .route("/collections/{name}/stats", get(graph::stats))
        .route("/plugins", get(plugins::list))
        .route(
            "/plugins/{name}",
            get(plugins::show)
                .post(plugins::upload)
                .delete(plugins::delete),
        )
        .route("/plugins/{name}/call", post(plugins::call))
        .route("/plugins/{name}/enable", post(plugins::enable))
        .route("/plugins/{name}/disable", post(plugins::disable))
        .route(
            "/plugins/{name}/rollback/{version}",
            post(plugins::rollback),
        )
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(api)
}
