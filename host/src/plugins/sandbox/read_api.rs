//! The `read` import: the database's reads, each under the call's deadline. A failure is an
//! `error` the plugin can handle, never a trap: the request's own fault is `invalid`, the
//! node's (storage, engine, deadline, a full queue) is `unavailable`.

use std::time::Instant;

use serde_json::Value;

use super::bindings::{read, WitError};
use super::call::CallState;
use crate::db::DbHandle;
use crate::error::Error;
use crate::model::{Direction, Metric, NodeKey, SearchOptions, TraverseOptions};
use crate::runtime::wit;

/// Most ids one `get` may name.
pub(super) const MAX_GET_IDS: usize = 10_000;
/// Most ids one `filter`, and most steps one `traverse`, may answer.
pub(super) const MAX_ROWS: u32 = 100_000;

/// The WIT error for a database error.
pub(super) fn wit_error(e: Error) -> WitError {
    match e {
        Error::Invalid(m) => WitError::Invalid(m),
        e @ (Error::UnknownCollection(_) | Error::UnknownObject { .. }) => {
            WitError::Invalid(e.to_string())
        }
        e => WitError::Unavailable(e.to_string()),
    }
}

fn invalid(m: impl Into<String>) -> WitError {
    WitError::Invalid(m.into())
}

/// Parses JSON text a plugin passed (a filter expression, properties).
pub(super) fn json(what: &str, text: &str) -> Result<Value, WitError> {
    serde_json::from_str(text).map_err(|e| invalid(format!("{what} is not valid JSON: {e}")))
}

pub(super) fn direction(d: wit::Direction) -> Direction {
    match d {
        wit::Direction::Out => Direction::Out,
        wit::Direction::In => Direction::In,
        wit::Direction::Both => Direction::Both,
    }
}

fn node_ref(k: NodeKey) -> wit::NodeRef {
    wit::NodeRef {
        collection: k.collection,
        id: k.id,
    }
}

impl CallState {
    /// The database, if the call's time is not up.
    pub(super) fn db(&self) -> Result<&DbHandle, WitError> {
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| WitError::Unavailable("this call has no database".into()))?;
        if Instant::now() >= self.deadline {
            return Err(WitError::Unavailable(
                "the call's deadline has passed".into(),
            ));
        }
        Ok(db)
    }
}

impl read::Host for CallState {
    fn get(
        &mut self,
        collection: String,
        ids: Vec<String>,
    ) -> Result<Vec<Option<wit::Object>>, WitError> {
        if ids.len() > MAX_GET_IDS {
            return Err(invalid(format!(
                "get names {} ids; at most {MAX_GET_IDS} per call",
                ids.len()
            )));
        }
        let db = self.db()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let o = db.get(&collection, &id).map_err(wit_error)?;
            out.push(o.map(|o| wit::Object {
                id: o.id,
                properties: o.properties.to_string(),
                vector: o.vector,
            }));
        }
        Ok(out)
    }

    fn search(&mut self, q: read::SearchQuery) -> Result<Vec<Vec<wit::Hit>>, WitError> {
        let db = self.db()?;
        let spec = db
            .collections()
            .into_iter()
            .find(|s| s.name == q.collection)
            .ok_or_else(|| wit_error(Error::UnknownCollection(q.collection.clone())))?;
        let rows = q.count as usize;
        if rows == 0 || q.vectors.len() != rows.saturating_mul(spec.dimension as usize) {
            return Err(invalid(format!(
                "{} values are not {rows} rows of {} (collection `{}`)",
                q.vectors.len(),
                spec.dimension,
                q.collection
            )));
        }
        let opts = SearchOptions {
            k: q.k as usize,
            ef: (q.ef > 0).then_some(q.ef),
            filter: q
                .filter
                .as_deref()
                .map(|f| json("the filter", f))
                .transpose()?,
            exact: false,
        };
        let rows = db
            .until(Some(self.deadline))
            .search_batch(&q.collection, &q.vectors, &opts)
            .map_err(wit_error)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|h| wit::Hit {
                        id: h.id,
                        score: h.score,
                    })
                    .collect()
            })
            .collect())
    }

    fn filter(
        &mut self,
        collection: String,
        expression: String,
        limit: u32,
    ) -> Result<Vec<String>, WitError> {
        if limit > MAX_ROWS {
            return Err(invalid(format!("filter limit {limit} is above {MAX_ROWS}")));
        }
        let expression = json("the filter", &expression)?;
        let db = self.db()?;
        db.until(Some(self.deadline))
            .filter(&collection, &expression, limit as usize)
            .map_err(wit_error)
    }

    fn traverse(&mut self, r: wit::TraverseRequest) -> Result<Vec<wit::Step>, WitError> {
        if r.limit > MAX_ROWS {
            return Err(invalid(format!(
                "traverse limit {} is above {MAX_ROWS}",
                r.limit
            )));
        }
        let db = self.db()?;
        let start = NodeKey::new(r.start.collection, r.start.id);
        let opts = TraverseOptions {
            label: r.label,
            direction: direction(r.direction),
            depth: r.depth,
            limit: r.limit,
        };
        let steps = db
            .until(Some(self.deadline))
            .traverse(&start, &opts)
            .map_err(wit_error)?;
        Ok(steps
            .into_iter()
            .map(|s| wit::Step {
                node: node_ref(s.node),
                depth: s.depth,
                via: s.via.map(|(label, other)| wit::EdgeRef {
                    label,
                    other: node_ref(other),
                }),
            })
            .collect())
    }

    fn edges(
        &mut self,
        node: wit::NodeRef,
        label: Option<String>,
        d: wit::Direction,
    ) -> Result<Vec<wit::EdgeRef>, WitError> {
        let db = self.db()?;
        let key = NodeKey::new(node.collection, node.id);
        let edges = db
            .edges(&key, label.as_deref(), direction(d))
            .map_err(wit_error)?;
        Ok(edges
            .into_iter()
            .map(|e| {
                let other = if e.from == key { e.to } else { e.from };
                wit::EdgeRef {
                    label: e.label,
                    other: node_ref(other),
                }
            })
            .collect())
    }

    fn stats(&mut self, collection: String) -> Result<read::CollectionInfo, WitError> {
        let db = self.db()?;
        let s = db
            .until(Some(self.deadline))
            .stats(&collection)
            .map_err(wit_error)?;
        Ok(read::CollectionInfo {
            name: s.spec.name,
            dimension: s.spec.dimension,
            metric: match s.spec.metric {
                Metric::Cosine => wit::Metric::Cosine,
                Metric::Dot => wit::Metric::Dot,
                Metric::Euclidean => wit::Metric::Euclidean,
            },
            objects: s.objects,
            shards: s.spec.shards,
        })
    }

    fn collections(&mut self) -> Result<Vec<String>, WitError> {
        Ok(self
            .db()?
            .collections()
            .into_iter()
            .map(|s| s.name)
            .collect())
    }
}
