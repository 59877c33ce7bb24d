//! `rerank`: k-NN for a wider set of candidates, then re-scored by a numeric property of each
//! object (for example a popularity count), best `k` returned.
//!
//! Input:
//! ```json
//! {"collection": "packages", "vector": [0.1, ...], "k": 10, "candidates": 50,
//!  "property": "popularity", "weight": 0.1, "ef": 0, "filter": {"section": "net"}}
//! ```
//! `collection`, `vector` and `property` are required. `k` defaults to 10, `candidates` to 50
//! (never fewer than `k`), `weight` to 0.1, `ef` to 0 (the collection's default); `filter`
//! (docs/query.md) is optional. `property` may reach into nested objects with dots
//! (`"meta.votes"`).
//!
//! Output: `[{"id": "curl", "score": 1.03, "similarity": 0.93}, ...]`, best first, at most `k`.
//! `similarity` is the search's own score; `score` is the one ranked by (see [`score`]).

mod score;

use exports::vektagraf::engine::handler::Guest;
use serde::Deserialize;
use vektagraf::engine::errors::Error;
use vektagraf::engine::read::{self, SearchQuery};
use vektagraf::engine::types::Metric;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    collection: String,
    vector: Vec<f32>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default = "default_candidates")]
    candidates: u32,
    property: String,
    #[serde(default = "default_weight")]
    weight: f64,
    #[serde(default)]
    ef: u32,
    #[serde(default)]
    filter: Option<serde_json::Value>,
}

fn default_k() -> u32 {
    10
}
fn default_candidates() -> u32 {
    50
}
fn default_weight() -> f64 {
    0.1
}

struct Rerank;

impl Guest for Rerank {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let input: Input =
            serde_json::from_slice(&input).map_err(|e| Error::Invalid(format!("input: {e}")))?;
        if !input.weight.is_finite() {
            return Err(Error::Invalid(
                "input: weight must be a finite number".into(),
            ));
        }
        // Euclidean scores are distances: lower is better.
        let higher_is_better = read::stats(&input.collection)?.metric != Metric::Euclidean;

        let hits = read::search(&SearchQuery {
            collection: input.collection.clone(),
            vectors: input.vector,
            count: 1,
            k: input.candidates.max(input.k),
            ef: input.ef,
            filter: input.filter.map(|f| f.to_string()),
        })?
        .into_iter()
        .next()
        .unwrap_or_default();

        let ids: Vec<String> = hits.iter().map(|h| h.id.clone()).collect();
        let objects = read::get(&input.collection, &ids)?;

        // An object deleted between the search and the get is left out.
        let candidates: Vec<score::Candidate> = hits
            .into_iter()
            .zip(objects)
            .filter_map(|(hit, object)| {
                let object = object?;
                let properties: serde_json::Value =
                    serde_json::from_str(&object.properties).unwrap_or_default();
                Some(score::Candidate {
                    value: score::numeric(&properties, &input.property),
                    id: hit.id,
                    similarity: hit.score,
                })
            })
            .collect();

        let ranked = score::rerank(candidates, higher_is_better, input.weight, input.k as usize);
        serde_json::to_vec(&ranked).map_err(|e| Error::Failed(format!("output: {e}")))
    }
}

export!(Rerank);
