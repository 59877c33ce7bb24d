//! Moving state rather than log entries between two nodes (the driver's side of it; the core
//! decides when): a snapshot for a peer that lacks entries this node's log no longer holds,
//! and anti-entropy, which compares digests of key buckets with a peer holding the same clock
//! and exchanges the rows of the buckets that differ. Both travel as opaque bodies of core
//! messages, encoded here with postcard.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::version::Clock;
use crate::store::{StateExport, StateHeader, StateRow, BUCKETS};
use crate::Database;

/// The body of a `Message::Snapshot`.
#[derive(Debug, Serialize, Deserialize)]
pub enum SnapshotPart {
    Header(StateHeader),
    Rows(Vec<StateRow>),
}

/// The body of a `Message::Repair`.
#[derive(Debug, Serialize, Deserialize)]
pub enum Repair {
    /// Every collection's digest at `clock` (the sender's applied clock).
    Digests {
        clock: Clock,
        collections: Vec<(String, u128)>,
    },
    /// One collection's digest per key bucket at `clock`.
    Buckets {
        clock: Clock,
        collection: String,
        buckets: Vec<u128>,
    },
    /// Send me your rows of these buckets.
    Want {
        collection: String,
        buckets: Vec<u8>,
    },
    /// Rows of differing buckets, to merge.
    Rows(Vec<StateRow>),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(value).map_err(|e| format!("encoding: {e}"))
}

pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    postcard::from_bytes(body).map_err(|e| format!("a malformed state message: {e}"))
}

/// The next chunk of an export, as encoded parts of at most about `budget` bytes each.
pub fn next_rows(export: &mut StateExport, budget: usize) -> Result<Option<Vec<StateRow>>, String> {
    export.next_chunk(budget).map_err(|e| e.to_string())
}

/// What to answer an anti-entropy message with (messages to send back, rows to merge here).
#[derive(Default)]
pub struct Answer {
    pub send: Vec<Repair>,
    pub merge: Vec<StateRow>,
}

/// Handles one anti-entropy message (blocking: reads storage). Digests taken at another clock
/// than ours are ignored: the entries in flight would make them differ; the core asks again
/// once both sides hold the same clock.
pub fn answer(db: &Database, msg: Repair, budget: usize) -> Result<Answer, String> {
    let mut out = Answer::default();
    match msg {
        Repair::Digests { clock, collections } => {
            let (mine, ours) = db.digests().map_err(|e| e.to_string())?;
            if mine != clock {
                return Ok(out);
            }
            for (name, sum) in &ours {
                let theirs = collections.iter().find(|(n, _)| n == name);
                match theirs {
                    Some((_, s)) if s == sum => {}
                    Some(_) => {
                        let (clock, buckets) =
                            db.bucket_digests(name).map_err(|e| e.to_string())?;
                        out.send.push(Repair::Buckets {
                            clock,
                            collection: name.clone(),
                            buckets,
                        });
                    }
                    // The same clock and not the same collections: a collection change
                    // replicates through the log; nothing to repair row by row.
                    None => {
                        tracing::warn!(collection = %name, "anti-entropy: a collection the peer lacks at the same clock")
                    }
                }
            }
        }
        Repair::Buckets {
            clock,
            collection,
            buckets,
        } => {
            let (mine, ours) = db.bucket_digests(&collection).map_err(|e| e.to_string())?;
            if mine != clock || buckets.len() != BUCKETS {
                return Ok(out);
            }
            let differ: BTreeSet<u8> = (0..BUCKETS)
                .filter(|&b| ours[b] != buckets[b])
                .map(|b| b as u8)
                .collect();
            if differ.is_empty() {
                return Ok(out);
            }
            tracing::info!(%collection, buckets = differ.len(), "anti-entropy: state differs from a peer's; exchanging those key ranges");
            out.send.push(Repair::Want {
                collection: collection.clone(),
                buckets: differ.iter().copied().collect(),
            });
            rows_of(db, collection, differ, budget, &mut out)?;
        }
        Repair::Want {
            collection,
            buckets,
        } => {
            let wanted = buckets.into_iter().collect();
            rows_of(db, collection, wanted, budget, &mut out)?;
        }
        Repair::Rows(rows) => out.merge = rows,
    }
    Ok(out)
}

fn rows_of(
    db: &Database,
    collection: String,
    buckets: BTreeSet<u8>,
    budget: usize,
    out: &mut Answer,
) -> Result<(), String> {
    let mut export = db
        .export_state(Some((collection, buckets)))
        .map_err(|e| e.to_string())?;
    while let Some(rows) = next_rows(&mut export, budget)? {
        out.send.push(Repair::Rows(rows));
    }
    Ok(())
}
