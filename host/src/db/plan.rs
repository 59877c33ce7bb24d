//! Planning a local batch: validate each write against its collection's spec and reduce the
//! batch to one write per object and per edge (the last one wins, in the batch's order), as
//! log writes whose causal contexts `materialise` fills in (a resolving write brings its own).
//! No storage, no engine.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{Batch, NodeKey, Write};
use crate::replication::version::Clock;
use crate::store::records::{LogNode, LogWrite};

use super::collection::Collection;
use super::validate::{check_id, check_label, check_vector, properties_text};

pub(super) fn log_node(k: &NodeKey) -> LogNode {
    LogNode {
        collection: k.collection.clone(),
        id: k.id.clone(),
    }
}

/// What a write is about: one object, or one edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Target {
    Object(LogNode),
    Edge(LogNode, String, LogNode),
}

pub(super) fn target(w: &LogWrite) -> Option<Target> {
    match w {
        LogWrite::Upsert { node, .. } | LogWrite::Delete { node, .. } => {
            Some(Target::Object(node.clone()))
        }
        LogWrite::Link {
            from, label, to, ..
        }
        | LogWrite::Unlink {
            from, label, to, ..
        } => Some(Target::Edge(from.clone(), label.clone(), to.clone())),
        LogWrite::CreateCollection { .. }
        | LogWrite::DropCollection { .. }
        | LogWrite::Plugin { .. } => None,
    }
}

fn upsert(
    collection: &mut impl FnMut(&str) -> Result<Arc<Collection>>,
    key: &NodeKey,
    properties: &serde_json::Value,
    vector: &Option<Vec<f32>>,
    seen: Clock,
) -> Result<LogWrite> {
    let c = collection(&key.collection)?;
    check_id(key)?;
    let properties = properties_text(&format!("object `{}`", key.id), properties)?;
    if let Some(v) = vector {
        check_vector(&c.spec, &key.id, v)?;
    }
    Ok(LogWrite::Upsert {
        node: log_node(key),
        properties,
        vector: vector.clone(),
        seen,
    })
}

/// A delete, turning the batch's earlier links touching the object into unlinks.
fn delete(out: &mut [Option<LogWrite>], key: &NodeKey, seen: Clock) -> LogWrite {
    let node = log_node(key);
    for slot in out.iter_mut() {
        if let Some(LogWrite::Link {
            from, label, to, ..
        }) = slot
        {
            if *from == node || *to == node {
                *slot = Some(LogWrite::Unlink {
                    from: from.clone(),
                    label: label.clone(),
                    to: to.clone(),
                    seen: Clock::default(),
                });
            }
        }
    }
    LogWrite::Delete { node, seen }
}

/// Validates `batch` and returns its log writes, one per object and edge. A delete of an
/// object turns the batch's earlier links touching it into unlinks (its stored edges are
/// unlinked by `materialise`).
pub(super) fn plan(
    batch: &Batch,
    mut collection: impl FnMut(&str) -> Result<Arc<Collection>>,
) -> Result<Vec<LogWrite>> {
    let mut out: Vec<Option<LogWrite>> = Vec::with_capacity(batch.writes.len());
    let mut at: HashMap<Target, usize> = HashMap::new();
    let seen = Clock::default;
    for w in &batch.writes {
        let write = match w {
            Write::Upsert {
                key,
                properties,
                vector,
            } => upsert(&mut collection, key, properties, vector, seen())?,
            Write::Delete { key } => {
                collection(&key.collection)?;
                delete(&mut out, key, seen())
            }
            Write::Resolve {
                key,
                context,
                properties,
                vector,
            } => {
                let given = Clock::from_token(context).map_err(Error::invalid)?;
                match properties {
                    Some(p) => upsert(&mut collection, key, p, vector, given)?,
                    None => {
                        collection(&key.collection)?;
                        check_id(key)?;
                        delete(&mut out, key, given)
                    }
                }
            }
            Write::Link {
                from,
                label,
                to,
                properties,
            } => {
                collection(&from.collection)?;
                collection(&to.collection)?;
                check_label(label)?;
                let properties = properties_text(
                    &format!("edge `{}` -{label}-> `{}`", from.id, to.id),
                    properties,
                )?;
                LogWrite::Link {
                    from: log_node(from),
                    label: label.clone(),
                    to: log_node(to),
                    properties,
                    seen: seen(),
                }
            }
            Write::Unlink { from, label, to } => {
                collection(&from.collection)?;
                collection(&to.collection)?;
                LogWrite::Unlink {
                    from: log_node(from),
                    label: label.clone(),
                    to: log_node(to),
                    seen: seen(),
                }
            }
        };
        if let Some(t) = target(&write) {
            if let Some(old) = at.insert(t, out.len()) {
                out[old] = None;
            }
        }
        out.push(Some(write));
    }
    Ok(out.into_iter().flatten().collect())
}
