//! Wire forms of the model's types (byte layouts in `docs/protocol.md`, section "Types").

use crate::codec::{DecodeError, Reader, Wire};
use crate::model::{
    Batch, CollectionSpec, CollectionStats, ConflictPolicy, Direction, Edge, Hit, HybridHit,
    IndexKind, Metric, NewToken, NodeKey, Object, ObjectVersion, ObjectVersions, PluginInfo,
    PluginVersionInfo, Receipt, Role, SearchOptions, Step, TokenInfo, TraverseOptions, Write,
};
use crate::{wire_struct, wire_tag};

wire_tag!(
    Metric,
    Metric::Cosine = 0,
    Metric::Dot = 1,
    Metric::Euclidean = 2
);
wire_tag!(IndexKind, IndexKind::Hnsw = 0, IndexKind::Hora = 1);
wire_tag!(
    Direction,
    Direction::Out = 0,
    Direction::In = 1,
    Direction::Both = 2
);
wire_tag!(Role, Role::Read = 0, Role::Write = 1, Role::Admin = 2);
wire_tag!(
    ConflictPolicy,
    ConflictPolicy::LastWriteWins = 0,
    ConflictPolicy::FirstWriteWins = 1,
    ConflictPolicy::VectorClock = 2,
    ConflictPolicy::Manual = 3
);

wire_struct!(CollectionSpec {
    name: String,
    dimension: u32,
    metric: Metric,
    index: IndexKind,
    m: u32,
    ef_construction: u32,
    ef_search: u32,
    shards: u32,
    conflict: ConflictPolicy,
    resolver: Option<String>,
});
wire_struct!(NodeKey {
    collection: String,
    id: String
});
wire_struct!(Batch { writes: Vec<Write> });
wire_struct!(Receipt {
    origin: u64,
    seq: u64,
    hlc: u64
});
wire_struct!(Object {
    id: String,
    properties: serde_json::Value,
    vector: Option<Vec<f32>>,
    version: Receipt,
});
wire_struct!(ObjectVersion {
    hlc: u64,
    origin: u64,
    seq: u64,
    visible: bool,
    properties: Option<serde_json::Value>,
    vector: Option<Vec<f32>>,
});
wire_struct!(ObjectVersions {
    context: String,
    versions: Vec<ObjectVersion>,
});
wire_struct!(Hit {
    id: String,
    score: f32
});
wire_struct!(Step {
    node: NodeKey,
    depth: u32,
    via: Option<(String, NodeKey)>,
});
wire_struct!(Edge {
    from: NodeKey,
    label: String,
    to: NodeKey,
    properties: serde_json::Value,
});
wire_struct!(HybridHit { hit: Hit, neighbours: Vec<Step> });
wire_struct!(CollectionStats {
    spec: CollectionSpec,
    objects: u64,
    vectors: u64,
    deleted_slots: u64,
    engine_memory_bytes: u64,
    snapshot_seq: u64,
});
wire_struct!(TraverseOptions {
    label: Option<String>,
    direction: Direction,
    depth: u32,
    limit: u32,
});
wire_struct!(TokenInfo {
    id: String,
    name: String,
    role: Role,
    created_ms: u64
});
wire_struct!(PluginVersionInfo {
    version: u32,
    world: String,
    grants: Vec<String>,
    sha256: String,
    size: u64,
    uploaded_ms: u64,
    origin: u64,
});
wire_struct!(PluginInfo {
    name: String,
    active: u32,
    enabled: bool,
    note: Option<String>,
    versions: Vec<PluginVersionInfo>,
});
wire_struct!(NewToken {
    info: TokenInfo,
    token: String
});

/// `k` travels as a `u32`.
impl Wire for SearchOptions {
    const MIN_SIZE: usize = 4 + 1 + 1 + 1;
    fn put(&self, out: &mut Vec<u8>) {
        u32::try_from(self.k).unwrap_or(u32::MAX).put(out);
        self.ef.put(out);
        self.filter.put(out);
        self.exact.put(out);
    }
    fn get(r: &mut Reader<'_>, _field: &'static str) -> Result<Self, DecodeError> {
        Ok(SearchOptions {
            k: r.u32("k")? as usize,
            ef: Wire::get(r, "ef")?,
            filter: Wire::get(r, "filter")?,
            exact: r.bool("exact")?,
        })
    }
}

impl Wire for Write {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Write::Upsert {
                key,
                properties,
                vector,
            } => {
                out.push(1);
                key.put(out);
                properties.put(out);
                vector.put(out);
            }
            Write::Delete { key } => {
                out.push(2);
                key.put(out);
            }
            Write::Link {
                from,
                label,
                to,
                properties,
            } => {
                out.push(3);
                from.put(out);
                label.put(out);
                to.put(out);
                properties.put(out);
            }
            Write::Unlink { from, label, to } => {
                out.push(4);
                from.put(out);
                label.put(out);
                to.put(out);
            }
            Write::Resolve {
                key,
                context,
                properties,
                vector,
            } => {
                out.push(5);
                key.put(out);
                context.put(out);
                properties.put(out);
                vector.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>, _field: &'static str) -> Result<Self, DecodeError> {
        Ok(match r.u8("write")? {
            1 => Write::Upsert {
                key: Wire::get(r, "key")?,
                properties: Wire::get(r, "properties")?,
                vector: Wire::get(r, "vector")?,
            },
            2 => Write::Delete {
                key: Wire::get(r, "key")?,
            },
            3 => Write::Link {
                from: Wire::get(r, "from")?,
                label: Wire::get(r, "label")?,
                to: Wire::get(r, "to")?,
                properties: Wire::get(r, "properties")?,
            },
            4 => Write::Unlink {
                from: Wire::get(r, "from")?,
                label: Wire::get(r, "label")?,
                to: Wire::get(r, "to")?,
            },
            5 => Write::Resolve {
                key: Wire::get(r, "key")?,
                context: Wire::get(r, "context")?,
                properties: Wire::get(r, "properties")?,
                vector: Wire::get(r, "vector")?,
            },
            t => {
                return Err(DecodeError::invalid(
                    "write",
                    format!("unknown write tag {t} (1 upsert, 2 delete, 3 link, 4 unlink)"),
                ))
            }
        })
    }
}
