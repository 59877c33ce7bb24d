//! The OpenAPI document of the HTTP data API, generated from the handlers' annotations
//! (utoipa). `vektagraf openapi` prints it; `docs/openapi.json` is its committed copy, and a test
//! fails when the two differ.

use utoipa::OpenApi;

use super::{collections, graph, plugins, reads, search, writes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vektagraf Edge HTTP API",
        description = "Qdrant's REST dialect (1.x subset, see docs/http-api.md) plus Vektagraf's graph operations and plugins. Authenticate with the `api-key` header or `Authorization: Bearer <token>` (a node token, `vektagraf token create`). Every answer is `{\"result\": .., \"status\": \"ok\", \"time\": seconds}` (except a plugin call's: the plugin's output bytes); errors are `{\"status\": {\"error\": \"..\"}, \"time\": ..}` with Qdrant's status codes."
    ),
    paths(
        collections::root, collections::list, collections::exists, collections::create,
        collections::info, collections::delete, collections::create_index, collections::delete_index,
        writes::upsert, writes::delete, writes::set_payload, writes::overwrite_payload,
        writes::delete_payload, writes::clear_payload,
        reads::retrieve, reads::get_point, reads::count, reads::scroll,
        search::query, search::query_batch, search::search, search::search_batch,
        graph::edges, graph::traverse, graph::hybrid, graph::stats, graph::versions,
        graph::resolve,
        plugins::upload, plugins::list, plugins::show, plugins::call, plugins::enable,
        plugins::disable, plugins::rollback, plugins::delete,
    ),
    tags(
        (name = "qdrant", description = "Qdrant-compatible endpoints"),
        (name = "vektagraf", description = "Vektagraf's extensions: the graph, and plugins (docs/plugins.md)"),
    )
)]
pub struct ApiDoc;

/// The document as pretty-printed JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let now = super::document();
        assert!(
            committed.trim_end() == now.trim_end(),
            "docs/openapi.json is out of date: run `just openapi`"
        );
        let doc: serde_json::Value = serde_json::from_str(&now).unwrap_or_default();
        let paths = doc["paths"].as_object().map_or(0, |p| p.len());
        assert!(paths >= 20, "only {paths} paths documented");
    }
}
