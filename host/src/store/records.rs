//! Values stored in redb and in the operation log, encoded with postcard (a documented, stable
//! wire format: https://postcard.jamesmunns.com/wire-format) behind a one-byte version.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const RECORD_VERSION: u8 = 1;

/// An object's stored version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    /// JSON object text.
    pub properties: String,
    pub vector: Option<Vec<f32>>,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEdge {
    pub properties: String,
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
}

/// A node reference inside the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogNode {
    pub collection: String,
    pub id: String,
}

/// One change as logged. Applying a log entry's changes in order reproduces the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LogWrite {
    /// A collection's spec as JSON.
    CreateCollection { spec: String },
    Upsert {
        node: LogNode,
        properties: String,
        vector: Option<Vec<f32>>,
    },
    /// Also removes every edge touching the object.
    Delete { node: LogNode },
    Link {
        from: LogNode,
        label: String,
        to: LogNode,
        properties: String,
    },
    Unlink {
        from: LogNode,
        label: String,
        to: LogNode,
    },
}

/// One committed batch: `(origin, seq) -> LogEntry` in the `oplog` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub hlc: u64,
    pub writes: Vec<LogWrite>,
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![RECORD_VERSION];
    out.extend_from_slice(&postcard::to_stdvec(value)?);
    Ok(out)
}

pub fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&RECORD_VERSION, body)) => postcard::from_bytes(body)
            .map_err(|e| Error::Storage(format!("{what} record is damaged: {e}"))),
        Some((v, _)) => Err(Error::Storage(format!(
            "{what} record has version {v}; this build reads {RECORD_VERSION}"
        ))),
        None => Err(Error::Storage(format!("{what} record is empty"))),
    }
}
