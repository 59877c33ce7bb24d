//! The `resolved` table: for an object with concurrent versions in a collection whose
//! resolver plugin merged them, the value readers see. Its siblings stay as they are in
//! `objects` and `versions` (digests and state exports carry those; every node computes the
//! same merge from them), and readers of the visible object read this over it.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::records::{decode, encode, Record, StoredObject};
use super::{keys, WriteTxn, RESOLVED};
use crate::error::Result;
use crate::model::NodeKey;

/// What a resolver made of an object's siblings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// The merged properties (JSON object text) and vector; none: the object reads as
    /// deleted.
    pub value: Option<(String, Option<Vec<f32>>)>,
}

impl Record for Resolved {}

/// `visible` as readers see it: with the resolved value over it, if there is one.
pub(super) fn over(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
    mut visible: StoredObject,
) -> Result<Option<StoredObject>> {
    let Some(row) = table.get(key)? else {
        return Ok(Some(visible));
    };
    let r: Resolved = decode("resolved value", row.value())?;
    Ok(r.value.map(|(properties, vector)| {
        visible.properties = properties;
        visible.vector = vector;
        visible
    }))
}

impl WriteTxn {
    /// Sets (or with `None` clears) the resolved value of an object.
    pub fn put_resolved(&mut self, node: &NodeKey, r: Option<&Resolved>) -> Result<()> {
        self.fault("put_resolved")?;
        let key = keys::node(&node.collection, &node.id);
        let mut table = self.txn.open_table(RESOLVED)?;
        match r {
            Some(r) => table.insert(key.as_slice(), encode(r)?.as_slice())?,
            None => table.remove(key.as_slice())?,
        };
        Ok(())
    }
}
