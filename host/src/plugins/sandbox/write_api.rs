//! The `write` import: one atomic batch through the database's committer, before the call's
//! deadline. Without the `write` grant every call answers `denied`.

use serde_json::Value;

use super::bindings::{write, WitError};
use super::call::CallState;
use super::read_api::{json, wit_error};
use crate::model::{Batch, NodeKey};
use crate::runtime::wit;

/// `text` as a JSON object (properties of an object or an edge).
fn properties(what: &str, text: &str) -> Result<Value, WitError> {
    match json(what, text)? {
        v @ Value::Object(_) => Ok(v),
        _ => Err(WitError::Invalid(format!("{what} are not a JSON object"))),
    }
}

fn key(n: wit::NodeRef) -> NodeKey {
    NodeKey::new(n.collection, n.id)
}

/// The batch `ops` on `collection` stand for.
pub(super) fn batch(collection: &str, ops: Vec<write::WriteOp>) -> Result<Batch, WitError> {
    let mut b = Batch::new();
    for op in ops {
        match op {
            write::WriteOp::Upsert(o) => {
                let p = properties(&format!("the properties of `{}`", o.id), &o.properties)?;
                b.upsert(collection, &o.id, p, o.vector);
            }
            write::WriteOp::Delete(id) => {
                b.delete(collection, &id);
            }
            write::WriteOp::Link(l) => {
                let p = properties(
                    &format!("the properties of edge `{}`", l.label),
                    &l.properties,
                )?;
                b.link(key(l.from), &l.label, key(l.to), p);
            }
            write::WriteOp::Unlink(l) => {
                b.unlink(key(l.from), &l.label, key(l.to));
            }
        }
    }
    Ok(b)
}

impl write::Host for CallState {
    fn write(&mut self, collection: String, ops: Vec<write::WriteOp>) -> Result<u32, WitError> {
        if !self.grants.write {
            return Err(WitError::Denied(format!(
                "plugin `{}` was uploaded without the write grant",
                self.name
            )));
        }
        let batch = batch(&collection, ops)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        self.db()?
            .write_before(batch, Some(self.deadline))
            .map_err(wit_error)?;
        Ok(n)
    }
}
