//! `union-resolver`: a conflict resolver (world `resolver`) for collections under the
//! vector-clock policy. It merges the concurrent versions of an object (see [`merge`]):
//! array properties are united, every other property and the vector come from the newest
//! version, and when every version is a delete the object stays deleted.
//!
//! Use: `vektagraf plugin upload union-resolver union-resolver.wasm`, then
//! `vektagraf collection create tags --dim 3 --conflict vector-clock --resolver union-resolver`.

mod merge;

use exports::vektagraf::engine::resolve::{Guest, Sibling};
use vektagraf::engine::errors::Error;
use vektagraf::engine::types::Object;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "resolver",
});

struct UnionResolver;

impl Guest for UnionResolver {
    fn resolve(
        _collection: String,
        id: String,
        siblings: Vec<Sibling>,
    ) -> Result<Option<Object>, Error> {
        let versions: Vec<merge::Version> = siblings
            .iter()
            .map(|s| merge::Version {
                hlc: s.hlc,
                origin: s.origin,
                seq: s.seq,
                value: s
                    .value
                    .as_ref()
                    .map(|o| (o.properties.as_str(), o.vector.as_deref())),
            })
            .collect();
        let merged = merge::merge(&versions).map_err(Error::Invalid)?;
        Ok(merged.map(|m| Object {
            id,
            properties: m.properties,
            vector: m.vector,
        }))
    }
}

export!(UnionResolver);
