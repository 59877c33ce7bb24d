//! Merging another node's state (`store::state`): a bootstrap snapshot, when this node lacks
//! entries the peer's log no longer holds, and anti-entropy repairs. Every version of a row
//! goes through `materialise` as the remote write that made it would have (under its own dot,
//! not logged), so merging is idempotent and commutes with the log's entries.

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::replication::hlc::system_wall_ms;
use crate::replication::version::Clock;
use crate::store::records::{LogWrite, SiblingValue, StoredSibling};
use crate::store::{RowKey, StateHeader, StateRow};

use super::commit::{collections, stage_create, Committer, Pending, Staged};
use super::materialise::{dropped_key, Source, Stamp};

/// One step of merging a state export.
#[derive(Debug)]
#[non_exhaustive]
pub enum StateJob {
    /// An export starts: create the collections it lists that are missing here (not those
    /// dropped here).
    Begin(StateHeader),
    /// Rows of a snapshot: versions whose dot this node has applied are skipped (it has them,
    /// or has seen past them — a tombstone it already collected must not be undone by a
    /// snapshot exported before the delete).
    Rows(Vec<StateRow>),
    /// Rows of an anti-entropy repair (the two nodes hold the same clock): every version.
    Repair(Vec<StateRow>),
    /// The export was merged whole: every origin's log moves on to its clock.
    End { clock: Clock, collected: Clock },
}

/// A stored version as the write that made it.
fn as_write(key: &RowKey, v: StoredSibling) -> Result<(Stamp, LogWrite)> {
    let stamp = Stamp {
        origin: v.origin,
        seq: v.seq,
        hlc: v.hlc,
    };
    let seen = v.seen;
    let write = match (key, v.value) {
        (RowKey::Object(node), SiblingValue::Object { properties, vector }) => LogWrite::Upsert {
            node: node.clone(),
            properties,
            vector,
            seen,
        },
        (RowKey::Object(node), SiblingValue::Deleted) => LogWrite::Delete {
            node: node.clone(),
            seen,
        },
        (RowKey::Edge { from, label, to }, SiblingValue::Edge { properties }) => LogWrite::Link {
            from: from.clone(),
            label: label.clone(),
            to: to.clone(),
            properties,
            seen,
        },
        (RowKey::Edge { from, label, to }, SiblingValue::Deleted) => LogWrite::Unlink {
            from: from.clone(),
            label: label.clone(),
            to: to.clone(),
            seen,
        },
        _ => {
            return Err(Error::invalid(
                "a state row mixes an object key with an edge version (or the reverse)",
            ))
        }
    };
    Ok((stamp, write))
}

impl Committer {
    /// Returns how many collections were created (`Begin`) or versions merged (`Rows`).
    pub(super) fn merge_state(&mut self, job: StateJob) -> Result<u64> {
        match job {
            StateJob::Begin(header) => self.begin_state(header),
            StateJob::Rows(rows) => {
                let applied = Clock(self.inner.store.applied()?);
                self.merge_rows(rows, Some(&applied))
            }
            StateJob::Repair(rows) => self.merge_rows(rows, None),
            StateJob::End { clock, collected } => {
                let mut txn = self.inner.store.begin_write()?;
                txn.advance_to(&clock, self.origin, &collected)?;
                txn.commit()?;
                self.publish();
                // The merged rows changed engines outside the log: snapshot them now, so a
                // restart restores rather than rebuilds.
                self.checkpoint(false)?;
                Ok(0)
            }
        }
    }

    fn begin_state(&mut self, header: StateHeader) -> Result<u64> {
        let mut txn = self.inner.store.begin_write()?;
        let mut created = Vec::new();
        for spec in header.collections {
            if self.inner.collection(&spec.name).is_ok()
                || txn.meta(&dropped_key(&spec.name))? == Some(1)
            {
                continue;
            }
            stage_create(&mut txn, &spec)?;
            created.push(spec);
        }
        let mut plugins = Vec::new();
        for b in &header.plugin_blobs {
            let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b).into();
            if !txn.has_plugin_blob(&hash)? {
                txn.put_plugin_blob(&hash, b)?;
            }
        }
        for record in &header.plugins {
            plugins.push(super::plugins::merge_plugin(&mut txn, record, None)?);
        }
        txn.commit()?;
        for record in plugins {
            self.plugin_arrived(record);
        }
        let n = created.len() as u64;
        for spec in created {
            let name = spec.name.clone();
            if let Err(e) = self.inner.load_collection(spec) {
                tracing::error!(collection = %name, error = %e, "loading a collection from a peer's state");
            }
        }
        Ok(n)
    }

    /// Merges every version not covered by `skip`.
    fn merge_rows(&mut self, rows: Vec<StateRow>, skip: Option<&Clock>) -> Result<u64> {
        let mut writes = Vec::new();
        for row in rows {
            for v in row.versions.iter().cloned() {
                if skip.is_some_and(|c| c.contains(v.origin, v.seq)) {
                    continue;
                }
                let _ = self.hlc.observe(v.hlc, system_wall_ms(), u64::MAX);
                writes.push(as_write(&row.key, v)?);
            }
        }
        let n = writes.len() as u64;
        // A snapshot taken before these rows and still being published would come back (and
        // its publishing waits for the write transaction below: flush before it begins).
        self.publisher.flush();
        let mut txn = self.inner.store.begin_write()?;
        let mut pending = Pending::default();
        let mut get = collections(self.inner.clone());
        let merged = self.materialise_each(
            &mut txn,
            &mut pending,
            &mut get,
            Source::State,
            writes,
            None,
        );
        let rollback = |me: &Self, pending: &Pending| {
            for (c, s) in pending.by_shard.keys() {
                me.recover(c, *s, &Pending::default());
            }
        };
        let m = match merged {
            Ok(m) => m,
            Err(Staged::Rejected(e)) => return Err(e),
            Err(Staged::Fatal(e)) => {
                rollback(self, &pending);
                return Err(e);
            }
        };
        // Engines changed outside the log: a restart must not replay the log over their
        // snapshots (it would miss these), so they go until the next checkpoint.
        let changed: BTreeSet<&String> = m.changed.keys().collect();
        let committed = (|| -> Result<()> {
            for c in &changed {
                txn.forget_snapshots(c)?;
            }
            txn.commit()
        })();
        if let Err(e) = committed {
            rollback(self, &pending);
            return Err(e);
        }
        if !changed.is_empty() {
            self.sweep_snapshots();
        }
        let mut counts: HashMap<String, u64> = HashMap::new();
        self.tally(&m, &mut counts);
        for (c, k) in counts {
            *self.dirty.entry(c).or_default() += k;
        }
        Ok(n)
    }
}
