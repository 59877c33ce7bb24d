//! Applying other nodes' log entries: through the same `materialise` step as local writes,
//! each entry under its own dot and timestamp, in one durable transaction per delivery.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::CollectionSpec;
use crate::replication::hlc::system_wall_ms;
use crate::replication::version::Clock;
use crate::store::records::{LogEntry, LogWrite};
use crate::store::WriteTxn;

use super::collection::Collection;
use super::commit::{collections, stage_create, stage_drop, Committer, Pending, Staged};
use super::materialise::{Source, Stamp};

/// Writes per transaction when applying a delivery (a few durable commits per delivery at
/// most; a 256-entry delivery of 1,000-object batches is not one transaction).
const CHUNK_WRITES: usize = 8192;

/// An entry of another node's log: `(origin, seq, entry)`.
pub type RemoteEntry = (u64, u64, LogEntry);

/// What became of a delivery: the entries applied (a prefix of it, per origin) and, if it
/// stopped early, why. The rest is asked for again later.
#[derive(Debug, Default)]
pub struct Applied {
    pub through: Clock,
    pub error: Option<Error>,
}

/// A collection change to carry out once the transaction is committed.
enum After {
    Load(CollectionSpec),
    Unregister(String),
    /// A plugin record changed: install it, and compile its running version ahead of calls.
    Plugin(crate::plugins::PluginRecord),
}

impl Committer {
    /// Applies a delivery, committing after each collection change (so the entries after it
    /// find the collection registered).
    pub(super) fn apply_remote(&mut self, entries: Vec<RemoteEntry>) -> Applied {
        let mut out = Applied::default();
        let mut rest = entries.into_iter().peekable();
        while rest.peek().is_some() {
            // A chunk ends after a collection change, or once it holds enough writes that one
            // transaction stays short (a catch-up shows progress, a crash redoes little).
            let mut chunk = Vec::new();
            let mut writes = 0;
            for e in rest.by_ref() {
                let change = matches!(
                    e.2.writes.as_slice(),
                    [LogWrite::CreateCollection { .. } | LogWrite::DropCollection { .. }]
                );
                writes += e.2.writes.len();
                chunk.push(e);
                if change || writes >= CHUNK_WRITES {
                    break;
                }
            }
            let applied = self.apply_chunk(chunk);
            out.through.merge(&applied.through);
            if applied.error.is_some() {
                out.error = applied.error;
                break;
            }
        }
        out
    }

    fn apply_chunk(&mut self, entries: Vec<RemoteEntry>) -> Applied {
        let mut out = Applied::default();
        let mut txn = match self.inner.store.begin_write() {
            Ok(t) => t,
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        };
        let mut pending = Pending::default();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut after = Vec::new();
        let mut fatal = None;
        for (origin, seq, entry) in entries {
            if origin == self.origin {
                // Our own entries coming back (after a restore, say) are already here.
                continue;
            }
            match txn.applied_seq(origin) {
                // Covered already: by a state snapshot merged since the core handed it out.
                Ok(last) if seq <= last => {
                    out.through.add(origin, seq);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            }
            let stamp = Stamp {
                origin,
                seq,
                hlc: entry.hlc,
            };
            match self.remote_entry(&mut txn, &mut pending, stamp, entry, &mut after) {
                Ok(m) => {
                    if let Some(m) = m {
                        self.tally(&m, &mut counts);
                        self.inner
                            .counters
                            .discarded
                            .fetch_add(m.discarded, std::sync::atomic::Ordering::Relaxed);
                    }
                    out.through.add(origin, seq);
                }
                Err(Staged::Rejected(e)) => {
                    out.error = Some(e);
                    break;
                }
                Err(Staged::Fatal(e)) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        let result = match fatal {
            Some(e) => Err(e),
            None => txn.commit(),
        };
        match result {
            Ok(()) => {
                for a in after {
                    match a {
                        After::Load(spec) => {
                            if let Err(e) = self.inner.load_collection(spec) {
                                tracing::error!(error = %e, "loading a replicated collection");
                            }
                        }
                        After::Unregister(name) => self.unregister(&name),
                        After::Plugin(record) => self.plugin_arrived(record),
                    }
                }
                for (c, n) in counts {
                    *self.dirty.entry(c).or_default() += n;
                }
                self.publish();
                self.snapshot_if_due();
            }
            Err(e) => {
                let touched: Vec<_> = pending.by_shard.keys().cloned().collect();
                for (c, s) in touched {
                    self.recover(&c, s, &Pending::default());
                }
                out = Applied {
                    through: Clock::default(),
                    error: Some(e),
                };
            }
        }
        out
    }

    /// One remote entry; `None` for a collection change.
    fn remote_entry(
        &mut self,
        txn: &mut WriteTxn,
        pending: &mut Pending,
        stamp: Stamp,
        entry: LogEntry,
        after: &mut Vec<After>,
    ) -> std::result::Result<Option<super::materialise::Materialised>, Staged> {
        // Whatever this node stamps next orders after what it has seen.
        let _ = self.hlc.observe(stamp.hlc, system_wall_ms(), u64::MAX);
        let log = |txn: &mut WriteTxn, writes: Vec<LogWrite>, hlc: u64| {
            txn.append_log(
                stamp.origin,
                stamp.seq,
                &LogEntry {
                    hlc: stamp.hlc,
                    writes,
                },
            )?;
            txn.set_meta("hlc", hlc)
        };
        match entry.writes.as_slice() {
            [LogWrite::CreateCollection { spec }] => {
                let parsed: CollectionSpec = serde_json::from_str(spec).map_err(|e| {
                    Staged::Rejected(Error::Storage(format!(
                        "a replicated collection spec is damaged: {e}"
                    )))
                })?;
                match self.inner.collection(&parsed.name) {
                    Ok(existing) if existing.spec != parsed => {
                        // Two regions created the name with different parameters at once:
                        // the one created first here stays (docs/replication.md).
                        tracing::warn!(collection = %parsed.name, "a replicated collection differs from the one here; keeping this one");
                        self.inner.counters.conflict(existing.spec.conflict);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        stage_create(txn, &parsed).map_err(Staged::Fatal)?;
                        after.push(After::Load(parsed));
                    }
                }
                log(txn, entry.writes, self.hlc.last()).map_err(Staged::Fatal)?;
                Ok(None)
            }
            [LogWrite::Plugin { record, blob }] => {
                let merged = super::plugins::merge_plugin(txn, record, blob.as_deref())
                    .map_err(Staged::Fatal)?;
                log(txn, entry.writes, self.hlc.last()).map_err(Staged::Fatal)?;
                after.push(After::Plugin(merged));
                Ok(None)
            }
            [LogWrite::DropCollection { name }] => {
                let name = name.clone();
                stage_drop(txn, &name).map_err(Staged::Fatal)?;
                log(txn, entry.writes, self.hlc.last()).map_err(Staged::Fatal)?;
                after.push(After::Unregister(name));
                Ok(None)
            }
            _ => {
                let mut get = collections(self.inner.clone());
                // A collection dropped earlier in this delivery is still registered until the
                // commit: treat it as gone.
                let gone: Vec<String> = after
                    .iter()
                    .filter_map(|a| match a {
                        After::Unregister(n) => Some(n.clone()),
                        After::Load(_) | After::Plugin(_) => None,
                    })
                    .collect();
                let mut get = |name: &str| -> Result<Arc<Collection>> {
                    if gone.iter().any(|g| g == name) {
                        return Err(Error::UnknownCollection(name.to_owned()));
                    }
                    get(name)
                };
                self.materialise(txn, pending, &mut get, stamp, Source::Remote, entry.writes)
                    .map(Some)
            }
        }
    }
}
