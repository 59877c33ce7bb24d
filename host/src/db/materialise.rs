//! Materialising a log entry: the one step local writes, remote operations and replay share.
//! For each write it reads the key's versions from the transaction, merges the new version
//! under the collection's conflict policy (`replication::version`), and works out what the
//! engine must change (only when the visible version changed) and what storage must hold. The
//! committer gives the engine its changes first, then [`Materialised::store`] stages storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{ConflictPolicy, NodeKey};
use crate::replication::version::{self, Clock, Sibling, Version};
use crate::runtime::wit;
use crate::store::records::{
    LogNode, LogWrite, SiblingValue, StoredEdge, StoredObject, StoredSibling,
};
use crate::store::{Resolved, WriteTxn};

use super::collection::{shard_of, Collection};
use super::plan::{target, Target};
use crate::plugins::sandbox::ResolveSibling;
use crate::plugins::Registry;

pub(super) type ShardKey = (String, u32);

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// A batch of this node: contexts are computed here, links need both ends.
    Local,
    /// Another node's entry: contexts as logged; nothing is refused for the state it meets.
    Remote,
    /// Versions from another node's state (a bootstrap snapshot, an anti-entropy repair):
    /// merged as remote writes, each under its own dot, and not logged.
    State,
}

/// The dot and timestamp of the entry being materialised.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stamp {
    pub origin: u64,
    pub seq: u64,
    pub hlc: u64,
}

type Versions = Vec<Sibling<SiblingValue>>;

/// What an entry does.
#[derive(Default)]
pub(super) struct Materialised {
    /// The entry's writes as logged (local: with their contexts and the unlinks a delete
    /// implies).
    pub log: Vec<LogWrite>,
    pub engine: BTreeMap<ShardKey, Vec<wit::Mutation>>,
    /// Per collection, the engine changes (for snapshot scheduling).
    pub changed: HashMap<String, u64>,
    /// Writes that met concurrent versions, by policy.
    pub conflicts: Vec<ConflictPolicy>,
    /// Remote writes into a collection this node has dropped (discarded).
    pub discarded: u64,
    /// The final versions of every key touched, staged by `store`.
    keys: HashMap<Target, (Policy, Versions)>,
    order: Vec<Target>,
    /// Objects whose visible version changed, by shard; `finish` turns them into `engine`.
    visible_changed: BTreeMap<ShardKey, Vec<LogNode>>,
    /// What collected tombstones had seen (read once, when a local write meets a key with no
    /// versions).
    collected: Option<Clock>,
    /// The resolver plugin of each collection touched that has one.
    resolvers: HashMap<String, String>,
    /// Objects of such collections whose siblings changed: what readers see now (`None`:
    /// the plain winner, no resolved value).
    resolved: Vec<(LogNode, Option<Resolved>)>,
}

#[derive(Clone, Copy)]
struct Policy(ConflictPolicy);

fn to_version(s: &StoredSibling) -> Sibling<SiblingValue> {
    Sibling {
        version: Version::new(s.hlc, s.origin, s.seq, &s.seen),
        value: match &s.value {
            SiblingValue::Deleted => None,
            v => Some(v.clone()),
        },
    }
}

fn to_resolve_sibling(s: &Sibling<SiblingValue>) -> ResolveSibling {
    ResolveSibling {
        origin: s.version.origin,
        seq: s.version.seq,
        hlc: s.version.hlc,
        context: s.version.context.0.iter().map(|(o, q)| (*o, *q)).collect(),
        value: match &s.value {
            Some(SiblingValue::Object { properties, vector }) => {
                Some((properties.clone(), vector.clone()))
            }
            _ => None,
        },
    }
}

/// What a version had seen besides itself.
fn seen_of(v: &Version) -> Clock {
    let mut c = v.context.clone();
    c.0.remove(&v.origin);
    c
}

fn to_stored(s: &Sibling<SiblingValue>) -> StoredSibling {
    StoredSibling {
        hlc: s.version.hlc,
        origin: s.version.origin,
        seq: s.version.seq,
        seen: seen_of(&s.version),
        value: s.value.clone().unwrap_or(SiblingValue::Deleted),
    }
}

fn sorted(mut v: Versions) -> Versions {
    v.sort_by_key(|s| s.version.order());
    v
}

/// What a write had seen.
enum Seen {
    /// A plain local write: everything the key holds here.
    Everything,
    /// A remote write: as logged.
    Logged(Clock),
    /// A local resolving write: the context its versions read gave, and this node's own
    /// versions of the key (a node's writes to a key are ordered, and contexts count seqs).
    Given(Clock),
}

fn remote(source: Source, seen: Clock) -> Seen {
    match source {
        Source::Remote | Source::State => Seen::Logged(seen),
        Source::Local if seen.0.is_empty() => Seen::Everything,
        Source::Local => Seen::Given(seen),
    }
}

fn key(n: &LogNode) -> NodeKey {
    NodeKey::new(&n.collection, &n.id)
}

/// The visible sibling (a live winner) and the others, as storage keeps them.
fn split(
    policy: ConflictPolicy,
    v: &Versions,
) -> (Option<&Sibling<SiblingValue>>, Vec<StoredSibling>) {
    let visible = version::winner(policy, v).filter(|w| w.value.is_some());
    let others = v
        .iter()
        .filter(|s| !visible.is_some_and(|w| w.version == s.version))
        .map(to_stored)
        .collect();
    (visible, others)
}

pub(super) struct Context<'a> {
    pub txn: &'a WriteTxn,
    pub collection: &'a mut dyn FnMut(&str) -> Result<Arc<Collection>>,
}

/// The `meta` key that says a collection of this name was dropped here (1) or created since
/// (0): remote writes into a dropped collection are discarded rather than waited for.
pub(super) fn dropped_key(name: &str) -> String {
    format!("dropped:{name}")
}

impl Materialised {
    /// Works out what `writes` (one entry's, all under its stamp; or versions from another
    /// node's state, each under its own) do against the transaction.
    pub fn compute(
        cx: &mut Context<'_>,
        source: Source,
        writes: Vec<(Stamp, LogWrite)>,
    ) -> Result<Materialised> {
        let mut m = Materialised::default();
        let explicit: Vec<Target> = writes.iter().filter_map(|(_, w)| target(w)).collect();
        for (stamp, w) in writes {
            m.write(cx, stamp, source, w, &explicit)?;
        }
        Ok(m)
    }

    fn collection_of(
        &mut self,
        cx: &mut Context<'_>,
        source: Source,
        name: &str,
    ) -> Result<Option<Arc<Collection>>> {
        match (cx.collection)(name) {
            Ok(c) => Ok(Some(c)),
            Err(Error::UnknownCollection(_))
                if source != Source::Local && cx.txn.meta(&dropped_key(name))? == Some(1) =>
            {
                self.discarded += 1;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The current versions of a key: from this entry's earlier writes, else storage.
    fn versions(&self, cx: &Context<'_>, t: &Target) -> Result<Versions> {
        if let Some((_, v)) = self.keys.get(t) {
            return Ok(v.clone());
        }
        let (visible, others) = match t {
            Target::Object(n) => {
                let (o, others) = cx.txn.object_versions(&key(n))?;
                let o = o.map(|o| Sibling {
                    version: o.version(),
                    value: Some(SiblingValue::Object {
                        properties: o.properties,
                        vector: o.vector,
                    }),
                });
                (o, others)
            }
            Target::Edge(f, l, to) => {
                let (e, others) = cx.txn.edge_versions(&key(f), l, &key(to))?;
                let e = e.map(|e| Sibling {
                    version: e.version(),
                    value: Some(SiblingValue::Edge {
                        properties: e.properties,
                    }),
                });
                (e, others)
            }
        };
        Ok(sorted(
            visible
                .into_iter()
                .chain(others.iter().map(to_version))
                .collect(),
        ))
    }

    /// Merges one version into a key. Returns the write's context (as logged) and whether
    /// the visible version changed.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        cx: &Context<'_>,
        t: Target,
        policy: ConflictPolicy,
        resolved: bool,
        stamp: Stamp,
        seen: Seen,
        value: Option<SiblingValue>,
    ) -> Result<(Clock, bool)> {
        let mut v = self.versions(cx, &t)?;
        let before = version::winner(policy, &v)
            .filter(|w| w.value.is_some())
            .map(|w| w.version.clone());
        let local = !matches!(seen, Seen::Logged(_));
        let mut seen = match seen {
            Seen::Logged(c) => c,
            Seen::Everything => version::seen(&v),
            Seen::Given(mut c) => {
                for s in v.iter().filter(|s| s.version.origin == stamp.origin) {
                    c.merge(&s.version.context);
                }
                c
            }
        };
        if local && v.is_empty() {
            // The key may have had a tombstone this node has forgotten: the write has seen it.
            if self.collected.is_none() {
                self.collected = Some(cx.txn.collected()?);
            }
            if let Some(c) = &self.collected {
                seen.merge(c);
            }
        }
        let seen = seen_of(&Version::new(stamp.hlc, stamp.origin, stamp.seq, &seen));
        let incoming = Sibling {
            version: Version::new(stamp.hlc, stamp.origin, stamp.seq, &seen),
            value,
        };
        let merged = version::merge(policy, &mut v, incoming);
        if merged.conflict {
            self.conflicts.push(policy);
        }
        let after = version::winner(policy, &v)
            .filter(|w| w.value.is_some())
            .map(|w| w.version.clone());
        if !self.keys.contains_key(&t) {
            self.order.push(t.clone());
        }
        self.keys.insert(t, (Policy(policy), v));
        // Under a resolver, what readers see depends on every sibling, not just the winner.
        let changed = if resolved {
            !merged.stale
        } else {
            before != after
        };
        Ok((seen, changed))
    }

    /// Merges one write's version into its key, under its collection's policy, and queues
    /// the engine change if an object's visible version changed. Returns the context to log,
    /// or `None` for a remote write into a collection dropped here (discarded).
    fn put(
        &mut self,
        cx: &mut Context<'_>,
        stamp: Stamp,
        source: Source,
        t: Target,
        seen: Clock,
        value: Option<SiblingValue>,
    ) -> Result<Option<Clock>> {
        let collection = match &t {
            Target::Object(n) | Target::Edge(n, _, _) => n.collection.clone(),
        };
        let Some(c) = self.collection_of(cx, source, &collection)? else {
            return Ok(None);
        };
        let node = match &t {
            Target::Object(n) => Some(n.clone()),
            Target::Edge(..) => None,
        };
        let resolver = match (&c.spec.resolver, c.spec.conflict, &node) {
            (Some(r), ConflictPolicy::VectorClock, Some(_)) => Some(r.clone()),
            _ => None,
        };
        if let Some(r) = &resolver {
            self.resolvers.insert(collection.clone(), r.clone());
        }
        let seen = remote(source, seen);
        let (seen, changed) = self.merge(
            cx,
            t,
            c.spec.conflict,
            resolver.is_some(),
            stamp,
            seen,
            value,
        )?;
        if let Some(node) = node.filter(|_| changed) {
            self.engine_change(&c, &node);
        }
        Ok(Some(seen))
    }

    fn write(
        &mut self,
        cx: &mut Context<'_>,
        stamp: Stamp,
        source: Source,
        w: LogWrite,
        explicit: &[Target],
    ) -> Result<()> {
        match w {
            LogWrite::Upsert {
                node,
                properties,
                vector,
                seen,
            } => {
                let value = SiblingValue::Object {
                    properties: properties.clone(),
                    vector: vector.clone(),
                };
                let t = Target::Object(node.clone());
                let Some(seen) = self.put(cx, stamp, source, t, seen, Some(value))? else {
                    return Ok(());
                };
                self.log.push(LogWrite::Upsert {
                    node,
                    properties,
                    vector,
                    seen,
                });
            }
            LogWrite::Delete { node, seen } => {
                let t = Target::Object(node.clone());
                let Some(seen) = self.put(cx, stamp, source, t, seen, None)? else {
                    return Ok(());
                };
                self.log.push(LogWrite::Delete {
                    node: node.clone(),
                    seen,
                });
                if source == Source::Local {
                    // The edges it had go with it, each as a logged unlink (unless this batch
                    // writes that edge itself).
                    for (from, label, to) in cx.txn.edges_touching(&key(&node))? {
                        let (from, to) = (super::plan::log_node(&from), super::plan::log_node(&to));
                        let t = Target::Edge(from.clone(), label.clone(), to.clone());
                        if explicit.contains(&t) || self.keys.contains_key(&t) {
                            continue;
                        }
                        self.write(
                            cx,
                            stamp,
                            source,
                            LogWrite::Unlink {
                                from,
                                label,
                                to,
                                seen: Clock::default(),
                            },
                            explicit,
                        )?;
                    }
                }
            }
            LogWrite::Link {
                from,
                label,
                to,
                properties,
                seen,
            } => {
                if source == Source::Local {
                    for end in [&from, &to] {
                        if !self.visible(cx, end)? {
                            return Err(Error::invalid(format!(
                                "edge `{}` -{label}-> `{}`: object `{}` does not exist in collection `{}` (edges need both ends)",
                                from.id, to.id, end.id, end.collection
                            )));
                        }
                    }
                }
                let value = SiblingValue::Edge {
                    properties: properties.clone(),
                };
                let t = Target::Edge(from.clone(), label.clone(), to.clone());
                let Some(seen) = self.put(cx, stamp, source, t, seen, Some(value))? else {
                    return Ok(());
                };
                self.log.push(LogWrite::Link {
                    from,
                    label,
                    to,
                    properties,
                    seen,
                });
            }
            LogWrite::Unlink {
                from,
                label,
                to,
                seen,
            } => {
                let t = Target::Edge(from.clone(), label.clone(), to.clone());
                let Some(seen) = self.put(cx, stamp, source, t, seen, None)? else {
                    return Ok(());
                };
                self.log.push(LogWrite::Unlink {
                    from,
                    label,
                    to,
                    seen,
                });
            }
            LogWrite::CreateCollection { .. }
            | LogWrite::DropCollection { .. }
            | LogWrite::Plugin { .. } => {
                return Err(Error::Storage(
                    "a collection or plugin change inside a batch entry".into(),
                ))
            }
        }
        Ok(())
    }

    /// Whether an object is visible after this entry's earlier writes.
    fn visible(&mut self, cx: &mut Context<'_>, n: &LogNode) -> Result<bool> {
        let Some(c) = self.collection_of(cx, Source::Local, &n.collection)? else {
            return Ok(false);
        };
        let t = Target::Object(n.clone());
        let v = self.versions(cx, &t)?;
        Ok(version::winner(c.spec.conflict, &v).is_some_and(|w| w.value.is_some()))
    }

    /// Queues the engine change for an object whose visible version changed (its final state
    /// is read when the entry is done: see `finish`).
    fn engine_change(&mut self, c: &Collection, node: &LogNode) {
        let shard = shard_of(&node.id, c.spec.shards);
        let queued = self
            .visible_changed
            .entry((node.collection.clone(), shard))
            .or_default();
        if !queued.contains(node) {
            queued.push(node.clone());
            *self.changed.entry(node.collection.clone()).or_default() += 1;
        }
    }

    /// Turns the objects whose visible version changed into engine changes: their final
    /// visible state (merged by the collection's resolver, if it has one and the object has
    /// concurrent versions), or a delete.
    pub fn finish(mut self, plugins: &Registry) -> Self {
        for (shard, nodes) in std::mem::take(&mut self.visible_changed) {
            let muts = nodes
                .into_iter()
                .map(|n| {
                    if let Some(m) = self.resolve(plugins, &n) {
                        return m;
                    }
                    let winner = self
                        .keys
                        .get(&Target::Object(n.clone()))
                        .and_then(|(p, v)| version::winner(p.0, v));
                    match winner {
                        Some(Sibling {
                            value: Some(SiblingValue::Object { properties, vector }),
                            ..
                        }) => wit::Mutation::Upsert(wit::Object {
                            id: n.id,
                            properties: properties.clone(),
                            vector: vector.clone(),
                        }),
                        _ => wit::Mutation::Delete(n.id),
                    }
                })
                .collect();
            self.engine.insert(shard, muts);
        }
        self
    }

    /// For an object of a collection with a resolver: its siblings merged by the resolver
    /// as an engine change, recording the resolved value. `None` (the plain winner shows)
    /// without concurrent versions, or when the resolver fails (counted in its metrics).
    fn resolve(&mut self, plugins: &Registry, n: &LogNode) -> Option<wit::Mutation> {
        let resolver = self.resolvers.get(&n.collection)?.clone();
        let siblings = match self.keys.get(&Target::Object(n.clone())) {
            Some((_, v)) if v.len() >= 2 => v.iter().map(to_resolve_sibling).collect(),
            _ => {
                self.resolved.push((n.clone(), None));
                return None;
            }
        };
        match plugins.resolve(&resolver, &n.collection, &n.id, siblings) {
            Ok(value) => {
                let value = value.map(|o| (o.properties, o.vector));
                let m = match &value {
                    Some((properties, vector)) => wit::Mutation::Upsert(wit::Object {
                        id: n.id.clone(),
                        properties: properties.clone(),
                        vector: vector.clone(),
                    }),
                    None => wit::Mutation::Delete(n.id.clone()),
                };
                self.resolved.push((n.clone(), Some(Resolved { value })));
                Some(m)
            }
            Err(e) => {
                tracing::warn!(collection = %n.collection, id = %n.id, error = %e, "the resolver failed; the last write shows");
                self.resolved.push((n.clone(), None));
                None
            }
        }
    }

    /// Stages the final versions of every key touched.
    pub fn store(&self, txn: &mut WriteTxn) -> Result<()> {
        for (n, r) in &self.resolved {
            txn.put_resolved(&key(n), r.as_ref())?;
        }
        for t in &self.order {
            let Some((policy, v)) = self.keys.get(t) else {
                continue;
            };
            let (visible, others) = split(policy.0, v);
            match t {
                Target::Object(n) => {
                    let obj = visible.and_then(|w| match &w.value {
                        Some(SiblingValue::Object { properties, vector }) => Some(StoredObject {
                            properties: properties.clone(),
                            vector: vector.clone(),
                            hlc: w.version.hlc,
                            origin: w.version.origin,
                            seq: w.version.seq,
                            seen: seen_of(&w.version),
                        }),
                        _ => None,
                    });
                    txn.put_object_versions(&key(n), obj.as_ref(), &others)?;
                }
                Target::Edge(f, l, to) => {
                    let edge = visible.and_then(|w| match &w.value {
                        Some(SiblingValue::Edge { properties }) => Some(StoredEdge {
                            properties: properties.clone(),
                            hlc: w.version.hlc,
                            origin: w.version.origin,
                            seq: w.version.seq,
                            seen: seen_of(&w.version),
                        }),
                        _ => None,
                    });
                    txn.put_edge_versions(&key(f), l, &key(to), edge.as_ref(), &others)?;
                }
            }
        }
        Ok(())
    }
}
