//! The public data model: collections, objects, edges, queries and their answers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A value that breaks the model's rules (a bad collection name, an unknown metric...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

type Error = InvalidInput;
type Result<T, E = InvalidInput> = std::result::Result<T, E>;

impl InvalidInput {
    fn invalid(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Cosine,
    Dot,
    Euclidean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Our HNSW: delete, update, byte snapshots (fast restart).
    Hnsw,
    /// The hora crate's HNSW: rebuilt from storage on every open.
    Hora,
}

macro_rules! text_enum {
    ($t:ty, $what:literal, $($name:literal => $v:expr),*) => {
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($name => Ok($v),)*
                    other => Err(Error::invalid(format!(
                        concat!("unknown ", $what, " `{}` (expected one of: {})"),
                        other,
                        [$($name),*].join(", ")
                    ))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = match self { $(x if *x == $v => $name,)* _ => "?" };
                f.write_str(name)
            }
        }
    };
}
text_enum!(Metric, "metric", "cosine" => Metric::Cosine, "dot" => Metric::Dot, "euclidean" => Metric::Euclidean);
text_enum!(IndexKind, "index", "hnsw" => IndexKind::Hnsw, "hora" => IndexKind::Hora);

/// How a collection decides between versions of one object or edge written concurrently in
/// different regions (docs/replication.md). Set when the collection is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The version with the highest `(hlc, node)` wins.
    #[default]
    LastWriteWins,
    /// Among concurrent versions, the lowest `(hlc, node)` wins; a write made after seeing the
    /// current version replaces it.
    FirstWriteWins,
    /// Concurrent versions are kept as siblings; reads see the one a resolver plugin picks,
    /// else the highest `(hlc, node)`.
    VectorClock,
    /// Concurrent versions are kept as siblings and all returned by a versions read; a write
    /// carrying their causal context resolves them.
    Manual,
}
text_enum!(ConflictPolicy, "conflict policy",
    "last-write-wins" => ConflictPolicy::LastWriteWins,
    "first-write-wins" => ConflictPolicy::FirstWriteWins,
    "vector-clock" => ConflictPolicy::VectorClock,
    "manual" => ConflictPolicy::Manual);

/// A collection's parameters. Created once; creating it again with the same parameters is a
/// no-op, with others an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    pub dimension: u32,
    pub metric: Metric,
    pub index: IndexKind,
    pub m: u32,
    pub ef_construction: u32,
    pub ef_search: u32,
    pub shards: u32,
    /// Absent in specs written before replication: last-write-wins.
    #[serde(default)]
    pub conflict: ConflictPolicy,
    /// Under the vector-clock policy: the resolver plugin that merges concurrent versions
    /// into the one readers see (docs/plugins.md). Without one, or when it fails, the
    /// version with the highest `(hlc, node)` is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<String>,
}

impl CollectionSpec {
    /// Defaults: cosine, our HNSW with M=16, ef_construction=200, ef_search=64, one shard.
    pub fn new(name: impl Into<String>, dimension: u32) -> Self {
        Self {
            name: name.into(),
            dimension,
            metric: Metric::Cosine,
            index: IndexKind::Hnsw,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            shards: 1,
            conflict: ConflictPolicy::LastWriteWins,
            resolver: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::invalid(format!(
                "collection `{}`: {what}",
                self.name
            )))
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad("name must be 1 to 64 characters of A-Z, a-z, 0-9, `_` or `-`".into());
        }
        if !(1..=65_536).contains(&self.dimension) {
            return bad(format!("dimension {} is not in 1..=65536", self.dimension));
        }
        if !(2..=64).contains(&self.m) {
            return bad(format!("m {} is not in 2..=64", self.m));
        }
        if !(1..=4096).contains(&self.ef_construction) || !(1..=4096).contains(&self.ef_search) {
            return bad("ef_construction and ef_search must be in 1..=4096".into());
        }
        if self.index == IndexKind::Hora && self.metric == Metric::Dot {
            return bad("the hora index cannot search by inner product (hora 0.1.1 returns the farthest vectors); use the hnsw index, or cosine".into());
        }
        if !(1..=64).contains(&self.shards) {
            return bad(format!("shards {} is not in 1..=64", self.shards));
        }
        if self.resolver.is_some() && self.conflict != ConflictPolicy::VectorClock {
            return bad(format!(
                "a resolver plugin decides conflicts under the vector-clock policy only (this one is {})",
                self.conflict
            ));
        }
        Ok(())
    }
}

/// An object's address: collection and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeKey {
    pub collection: String,
    pub id: String,
}

impl NodeKey {
    pub fn new(collection: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            collection: collection.into(),
            id: id.into(),
        }
    }
}

/// One change in a write batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Creates or replaces an object. `properties` must be a JSON object.
    Upsert {
        key: NodeKey,
        properties: Value,
        vector: Option<Vec<f32>>,
    },
    /// Deletes an object and every edge that touches it. Deleting a missing object is a no-op.
    Delete { key: NodeKey },
    /// Creates or replaces the edge `from -label-> to`. Both ends must exist (or be upserted
    /// earlier in the same batch).
    Link {
        from: NodeKey,
        label: String,
        to: NodeKey,
        properties: Value,
    },
    Unlink {
        from: NodeKey,
        label: String,
        to: NodeKey,
    },
    /// Replaces the versions of an object that a versions read returned with `context`
    /// ([`ObjectVersions::context`]); versions written since that read stay as siblings. How
    /// the `manual` policy's siblings are resolved (any policy accepts it). `properties: None`
    /// resolves them to a delete.
    Resolve {
        key: NodeKey,
        context: String,
        properties: Option<Value>,
        vector: Option<Vec<f32>>,
    },
}

/// One version of an object, as a versions read returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub hlc: u64,
    pub origin: u64,
    pub seq: u64,
    /// The one reads and the index show.
    pub visible: bool,
    /// `None`: a delete (tombstone).
    pub properties: Option<Value>,
    pub vector: Option<Vec<f32>>,
}

/// Every version an object holds (siblings when written concurrently in different places),
/// with the causal context a [`Write::Resolve`] passes back to replace them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectVersions {
    /// `origin:seq` pairs (origin in hex), comma-separated; empty when there is no version.
    pub context: String,
    pub versions: Vec<ObjectVersion>,
}

/// A batch of writes, committed atomically and durably.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub writes: Vec<Write>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn upsert(
        &mut self,
        collection: &str,
        id: &str,
        properties: Value,
        vector: Option<Vec<f32>>,
    ) -> &mut Self {
        self.writes.push(Write::Upsert {
            key: NodeKey::new(collection, id),
            properties,
            vector,
        });
        self
    }
    /// Replaces the versions a versions read returned (see [`Write::Resolve`]).
    pub fn resolve(
        &mut self,
        collection: &str,
        id: &str,
        context: &str,
        properties: Option<Value>,
        vector: Option<Vec<f32>>,
    ) -> &mut Self {
        self.writes.push(Write::Resolve {
            key: NodeKey::new(collection, id),
            context: context.to_owned(),
            properties,
            vector,
        });
        self
    }
    pub fn delete(&mut self, collection: &str, id: &str) -> &mut Self {
        self.writes.push(Write::Delete {
            key: NodeKey::new(collection, id),
        });
        self
    }
    pub fn link(
        &mut self,
        from: NodeKey,
        label: &str,
        to: NodeKey,
        properties: Value,
    ) -> &mut Self {
        self.writes.push(Write::Link {
            from,
            label: label.into(),
            to,
            properties,
        });
        self
    }
    pub fn unlink(&mut self, from: NodeKey, label: &str, to: NodeKey) -> &mut Self {
        self.writes.push(Write::Unlink {
            from,
            label: label.into(),
            to,
        });
        self
    }
    pub fn len(&self) -> usize {
        self.writes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Where a committed batch sits in the operation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub origin: u64,
    pub seq: u64,
    pub hlc: u64,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub id: String,
    pub properties: Value,
    pub vector: Option<Vec<f32>>,
    /// The write that produced this version.
    pub version: Receipt,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub id: String,
    /// Similarity for cosine and dot (higher is better), distance for euclidean (lower is better).
    pub score: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    pub k: usize,
    /// Search breadth; `None` uses the collection's `ef_search`.
    pub ef: Option<u32>,
    /// A filter expression (docs/query.md); results are exactly the k best that match.
    pub filter: Option<Value>,
    /// Brute force over every vector instead of the graph: exact, and slower.
    pub exact: bool,
}

impl SearchOptions {
    pub fn k(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
    Both,
}

text_enum!(Direction, "direction", "out" => Direction::Out, "in" => Direction::In, "both" => Direction::Both);

#[derive(Debug, Clone, PartialEq)]
pub struct TraverseOptions {
    pub label: Option<String>,
    pub direction: Direction,
    pub depth: u32,
    pub limit: u32,
}

impl Default for TraverseOptions {
    fn default() -> Self {
        Self {
            label: None,
            direction: Direction::Out,
            depth: 1,
            limit: 1000,
        }
    }
}

/// One node reached by a traversal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub node: NodeKey,
    pub depth: u32,
    /// The label followed and the node it was followed from (none for the start).
    pub via: Option<(String, NodeKey)>,
}

/// An edge as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub from: NodeKey,
    pub label: String,
    pub to: NodeKey,
    pub properties: Value,
}

/// A hybrid answer: a k-NN hit and what its edges lead to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HybridHit {
    pub hit: Hit,
    pub neighbours: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionStats {
    pub spec: CollectionSpec,
    pub objects: u64,
    pub vectors: u64,
    pub deleted_slots: u64,
    pub engine_memory_bytes: u64,
    /// Log position the newest index snapshot covers (0: none).
    pub snapshot_seq: u64,
}

/// What an API token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: get, search, filter, traverse, hybrid, edges, stats, collection list.
    Read,
    /// Reads, write batches, collection creation, checkpoints.
    Write,
    /// Everything, including tokens.
    Admin,
}
text_enum!(Role, "role", "read" => Role::Read, "write" => Role::Write, "admin" => Role::Admin);

/// A token as listed (its secret is never stored nor shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The public part of the token (`vg_<id>_...`), used to revoke it.
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersionInfo {
    pub version: u32,
    /// `plugin`, `resolver` or `engine`.
    pub world: String,
    /// `write`, `clock`, `random`.
    pub grants: Vec<String>,
    /// SHA-256 of the component, lowercase hex.
    pub sha256: String,
    pub size: u64,
    /// Upload time, milliseconds since the Unix epoch (from the uploading node's clock).
    pub uploaded_ms: u64,
    /// The node it was uploaded on.
    pub origin: u64,
}

/// A plugin as `plugin list` and `plugin show` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    /// The version that runs.
    pub active: u32,
    pub enabled: bool,
    /// Why it is disabled, when it was disabled automatically.
    pub note: Option<String>,
    pub versions: Vec<PluginVersionInfo>,
}

/// A token just created: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewToken {
    pub info: TokenInfo,
    /// The whole token, `vg_<id>_<secret>`, to pass as `--token`.
    pub token: String,
}

/// Id order, in which `filter` answers: ids that are canonical unsigned decimal integers
/// (digits only, no leading zero unless `0`, at most `u64::MAX`) first, by value; then every
/// other id by its bytes. Twin of `vektagraf_engine_core::id_order` in `guest/core/src/lib.rs`
/// (the guest workspace cannot depend on this crate): change both together, and their tests
/// share their cases.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn number(s: &str) -> Option<u64> {
        let b = s.as_bytes();
        let canonical =
            !b.is_empty() && b.iter().all(u8::is_ascii_digit) && (b[0] != b'0' || b.len() == 1);
        if canonical {
            s.parse().ok()
        } else {
            None
        }
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.as_bytes().cmp(b.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::id_order;
    use std::cmp::Ordering;

    /// In id order; the same list is in `guest/core/src/lib.rs`'s test of its twin.
    const IN_ORDER: [&str; 16] = [
        "0",
        "1",
        "2",
        "10",
        "99",
        "18446744073709551615",
        "",
        "+1",
        "-1",
        "00",
        "01",
        "18446744073709551616",
        "1a",
        "A",
        "a",
        "é",
    ];

    #[test]
    fn id_order_puts_numbers_first_by_value_then_bytes() {
        for (i, a) in IN_ORDER.iter().enumerate() {
            for (j, b) in IN_ORDER.iter().enumerate() {
                assert_eq!(id_order(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
        let mut shuffled = IN_ORDER;
        shuffled.reverse();
        shuffled.sort_by(|a, b| id_order(a, b));
        assert_eq!(shuffled, IN_ORDER);
        assert_eq!(id_order("7", "7"), Ordering::Equal);
    }
}
