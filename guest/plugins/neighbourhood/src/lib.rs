//! `neighbourhood`: k-NN, then what the hits depend on. Each hit's outgoing edges are followed
//! (`read.traverse`, direction out) up to `depth` steps; the objects reached are ranked by how
//! many hits reach them, then by the best hit that does (see [`rank`]).
//!
//! Input:
//! ```json
//! {"collection": "packages", "vector": [0.1, ...], "k": 10, "label": "depends",
//!  "depth": 1, "limit": 20, "ef": 0, "filter": {"section": "net"}}
//! ```
//! `collection` and `vector` are required. `k` defaults to 10, `depth` to 1, `limit` (how many
//! dependencies to return) to 20, `ef` to 0 (the collection's default); `label` (omitted: edges
//! of every label) and `filter` (docs/query.md, applies to the k-NN only) are optional. At
//! most 1,000 objects are visited from each hit.
//!
//! Output:
//! ```json
//! {"hits": [{"id": "curl", "score": 0.93}, ...],
//!  "dependencies": [{"collection": "packages", "id": "libc6", "dependents": 7, "depth": 1,
//!                    "best_hit": "curl", "best_score": 0.93, "needed_by": ["curl", ...]}, ...]}
//! ```
//! `hits` best first; `dependents` is how many hits reach the object, `needed_by` those hits
//! (best first), `best_hit`/`best_score` the first of them, `depth` the fewest steps from any.

mod rank;

use exports::vektagraf::engine::handler::Guest;
use serde::{Deserialize, Serialize};
use vektagraf::engine::errors::Error;
use vektagraf::engine::read::{self, SearchQuery};
use vektagraf::engine::types::{Direction, NodeRef, TraverseRequest};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

/// The most objects one traversal visits (the start included).
const STEPS_PER_HIT: u32 = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    collection: String,
    vector: Vec<f32>,
    #[serde(default = "default_k")]
    k: u32,
    #[serde(default)]
    label: Option<String>,
    #[serde(default = "default_depth")]
    depth: u32,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    ef: u32,
    #[serde(default)]
    filter: Option<serde_json::Value>,
}

fn default_k() -> u32 {
    10
}
fn default_depth() -> u32 {
    1
}
fn default_limit() -> usize {
    20
}

#[derive(Serialize)]
struct Output {
    hits: Vec<rank::Hit>,
    dependencies: Vec<rank::Dependency>,
}

struct Neighbourhood;

impl Guest for Neighbourhood {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let input: Input =
            serde_json::from_slice(&input).map_err(|e| Error::Invalid(format!("input: {e}")))?;
        let hits: Vec<rank::Hit> = read::search(&SearchQuery {
            collection: input.collection.clone(),
            vectors: input.vector,
            count: 1,
            k: input.k,
            ef: input.ef,
            filter: input.filter.map(|f| f.to_string()),
        })?
        .into_iter()
        .next()
        .unwrap_or_default()
        .into_iter()
        .map(|h| rank::Hit {
            id: h.id,
            score: h.score,
        })
        .collect();

        let mut reached = Vec::with_capacity(hits.len());
        for hit in &hits {
            let steps = read::traverse(&TraverseRequest {
                start: NodeRef {
                    collection: input.collection.clone(),
                    id: hit.id.clone(),
                },
                label: input.label.clone(),
                direction: Direction::Out,
                depth: input.depth,
                limit: STEPS_PER_HIT,
            })?;
            reached.push(
                steps
                    .into_iter()
                    .filter(|s| s.depth > 0) // the start itself
                    .map(|s| rank::Reached {
                        collection: s.node.collection,
                        id: s.node.id,
                        depth: s.depth,
                    })
                    .collect(),
            );
        }

        let dependencies = rank::rank(&hits, reached, input.limit);
        serde_json::to_vec(&Output { hits, dependencies })
            .map_err(|e| Error::Failed(format!("output: {e}")))
    }
}

export!(Neighbourhood);
