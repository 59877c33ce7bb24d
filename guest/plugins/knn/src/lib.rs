//! `knn`: one k-NN search through the plugin read API, answered as JSON. The same search as
//! the built-in one, so the two can be compared (the difference is the plugin call and the
//! JSON on both sides).
//!
//! Input:  `{"collection": "packages", "vector": [0.1, ...], "k": 10, "ef": 0, "filter": {...}}`
//!         (`k` defaults to 10, `ef` to 0 = the collection's default, `filter` is optional
//!         and written as in docs/query.md).
//! Output: `[{"id": "curl", "score": 0.93}, ...]`, best first; `score` is the search's score
//!         (similarity for cosine and dot, distance for euclidean).

use exports::vektagraf::engine::handler::Guest;
use serde::{Deserialize, Serialize};
use vektagraf::engine::errors::Error;
use vektagraf::engine::read::{self, SearchQuery};

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
    #[serde(default)]
    ef: u32,
    #[serde(default)]
    filter: Option<serde_json::Value>,
}

fn default_k() -> u32 {
    10
}

#[derive(Serialize)]
struct Hit {
    id: String,
    score: f32,
}

struct Knn;

impl Guest for Knn {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let input: Input =
            serde_json::from_slice(&input).map_err(|e| Error::Invalid(format!("input: {e}")))?;
        let rows = read::search(&SearchQuery {
            collection: input.collection,
            vectors: input.vector,
            count: 1,
            k: input.k,
            ef: input.ef,
            filter: input.filter.map(|f| f.to_string()),
        })?;
        let hits: Vec<Hit> = rows
            .into_iter()
            .next()
            .unwrap_or_default()
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                score: h.score,
            })
            .collect();
        serde_json::to_vec(&hits).map_err(|e| Error::Failed(format!("output: {e}")))
    }
}

export!(Knn);
