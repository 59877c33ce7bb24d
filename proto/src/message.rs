//! Requests and responses: one request frame and one response frame per QUIC stream.
//! Byte layouts: `docs/protocol.md`.

use serde_json::Value;

use crate::codec::{from_bytes, put_str, DecodeError, Reader, Wire};
use crate::frame::frame;
use crate::model::{
    Batch, CollectionSpec, CollectionStats, Direction, Edge, Hit, HybridHit, NewToken, NodeKey,
    Object, ObjectVersions, PluginInfo, Receipt, Role, SearchOptions, Step, TokenInfo,
    TraverseOptions,
};
use crate::wire_enum;

/// One request: who asks, how long they wait, and what for.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// How long the client waits, in milliseconds; 0 uses the node's default. The node gives up
    /// (and tells the engine to stop) when it runs out.
    pub timeout_ms: u32,
    /// An API token (`vg_<id>_<secret>`); empty for `ping`.
    pub token: String,
    pub op: Op,
}

wire_enum! {
    /// What a request asks for.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub enum Op {
        /// Liveness and round-trip time; needs no token.
        1 "ping" => Ping {},
        2 "create_collection" => CreateCollection { spec: CollectionSpec },
        3 "list_collections" => ListCollections {},
        /// An atomic, durable batch. A retry with the same idempotency key (up to 64 bytes)
        /// returns the first receipt instead of writing again.
        4 "write" => Write { batch: Batch, idempotency_key: Option<String> },
        5 "get" => Get { collection: String, ids: Vec<String> },
        /// k-NN for each row of `vectors` (row-major; the collection's dimension).
        6 "search" => Search { collection: String, options: SearchOptions, vectors: Vec<f32> },
        7 "filter" => Filter { collection: String, expression: Value, limit: u32 },
        8 "traverse" => Traverse { start: NodeKey, options: TraverseOptions },
        /// k-NN, then each hit expanded along its edges.
        9 "hybrid" => Hybrid {
            collection: String,
            vector: Vec<f32>,
            search: SearchOptions,
            expand: TraverseOptions,
        },
        10 "edges" => Edges { node: NodeKey, label: Option<String>, direction: Direction },
        /// Stats of one collection, or of every one.
        11 "stats" => Stats { collection: Option<String> },
        12 "checkpoint" => Checkpoint {},
        13 "token_create" => TokenCreate { name: String, role: Role },
        14 "token_list" => TokenList {},
        15 "token_revoke" => TokenRevoke { id: String },
        /// The state digest of one collection on the node that answers (equal on two nodes
        /// exactly when they hold the same objects, edges and versions).
        16 "digest" => Digest { collection: String },
        /// The node's replication state (peers, lag, counters), as JSON.
        17 "cluster_status" => ClusterStatus {},
        /// Every version of one object (siblings included) with their causal context.
        18 "versions" => Versions { collection: String, id: String },
        /// A new version of a plugin (a WebAssembly component), which then runs everywhere.
        /// `grants`: `write`, `clock`, `random`.
        19 "plugin_upload" => PluginUpload { name: String, wasm: Vec<u8>, grants: Vec<String> },
        20 "plugin_list" => PluginList {},
        21 "plugin_show" => PluginShow { name: String },
        /// Runs query plugin `name` on `input`; needs the write role when the plugin was
        /// uploaded with the write grant.
        22 "plugin_call" => PluginCall { name: String, input: Vec<u8> },
        23 "plugin_enable" => PluginEnable { name: String, enabled: bool },
        24 "plugin_rollback" => PluginRollback { name: String, version: u32 },
        25 "plugin_delete" => PluginDelete { name: String },
    }
}

impl Op {
    /// The least role that may run this operation (`None`: anyone, even without a token).
    pub fn required_role(&self) -> Option<Role> {
        match self {
            Op::Ping {} => None,
            Op::ListCollections {}
            | Op::Get { .. }
            | Op::Search { .. }
            | Op::Filter { .. }
            | Op::Traverse { .. }
            | Op::Hybrid { .. }
            | Op::Edges { .. }
            | Op::Stats { .. }
            | Op::Digest { .. }
            | Op::ClusterStatus {}
            | Op::Versions { .. }
            | Op::PluginList {}
            | Op::PluginShow { .. }
            | Op::PluginCall { .. } => Some(Role::Read),
            Op::CreateCollection { .. } | Op::Write { .. } | Op::Checkpoint {} => Some(Role::Write),
            Op::TokenCreate { .. }
            | Op::TokenList {}
            | Op::TokenRevoke { .. }
            | Op::PluginUpload { .. }
            | Op::PluginEnable { .. }
            | Op::PluginRollback { .. }
            | Op::PluginDelete { .. } => Some(Role::Admin),
        }
    }

    /// Whether sending it twice has the effect of sending it once, so a client may retry it
    /// after a failure: reads, and writes that carry an idempotency key. (A node remembers
    /// keys in memory; a keyed batch retried on another node is applied there again, which
    /// leaves the same state, since upserts replace and deletes and unlinks are no-ops when
    /// repeated.)
    pub fn is_idempotent(&self) -> bool {
        match self {
            Op::Write {
                idempotency_key, ..
            } => idempotency_key.is_some(),
            Op::TokenCreate { .. } => false,
            // An upload makes a new version each time; a call may write.
            Op::PluginUpload { .. } | Op::PluginCall { .. } => false,
            // Creating the same collection twice is a no-op; revoking twice revokes once.
            _ => true,
        }
    }
}

impl Request {
    /// The whole frame (header and body).
    pub fn encode(&self) -> Vec<u8> {
        frame(|out| {
            self.timeout_ms.put(out);
            put_str(out, &self.token);
            self.op.put(out);
        })
    }

    /// Decodes a frame body (after the header).
    pub fn decode(body: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(body);
        let req = Request {
            timeout_ms: r.u32("timeout_ms")?,
            token: r.str("token")?.to_owned(),
            op: Op::get(&mut r, "op")?,
        };
        r.finish()?;
        Ok(req)
    }
}

wire_enum! {
    /// A successful answer; which one follows from the request's operation.
    #[derive(Debug, Clone, PartialEq)]
    #[non_exhaustive]
    pub enum Reply {
        1 "pong" => Pong { node_id: u64, version: String, ready: bool },
        /// `false`: the collection already existed with the same parameters.
        2 "created" => Created { created: bool },
        3 "collections" => Collections { specs: Vec<CollectionSpec> },
        4 "written" => Written { receipt: Receipt },
        /// One entry per requested id, in order; none where the object does not exist.
        5 "objects" => Objects { objects: Vec<Option<Object>> },
        /// One list of hits per query row, best first.
        6 "hits" => Hits { rows: Vec<Vec<Hit>> },
        7 "ids" => Ids { ids: Vec<String> },
        8 "steps" => Steps { steps: Vec<Step> },
        9 "hybrid" => Hybrid { hits: Vec<HybridHit> },
        10 "edges" => Edges { edges: Vec<Edge> },
        11 "stats" => Stats { stats: Vec<CollectionStats> },
        12 "done" => Done {},
        13 "token" => Token { token: NewToken },
        14 "tokens" => Tokens { tokens: Vec<TokenInfo> },
        15 "revoked" => Revoked { revoked: bool },
        /// `digest`: 32 lowercase hex digits; the rows it covers: visible objects, edges out
        /// of them, and other versions (tombstones, siblings).
        16 "digest" => Digest { digest: String, objects: u64, edges: u64, versions: u64 },
        /// `status`: the replication state as JSON text, or `null` when the node does not
        /// replicate.
        17 "cluster" => Cluster { status: String },
        18 "versions" => Versions { versions: ObjectVersions },
        19 "plugin" => Plugin { plugin: PluginInfo },
        20 "plugins" => Plugins { plugins: Vec<PluginInfo> },
        /// What a plugin call answered, as the plugin wrote it.
        21 "output" => Output { output: Vec<u8> },
    }
}

/// Why a request failed. The code says what a client can do about it; the message says what
/// was wrong in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed frame or invalid request (bad vector, bad filter, bad spec...). Nothing written.
    BadRequest = 1,
    /// Missing, unknown or revoked token.
    Unauthenticated = 2,
    /// The token's role may not do this.
    Forbidden = 3,
    /// Unknown collection (or object, where one is required).
    NotFound = 4,
    /// The collection exists with other parameters.
    Conflict = 5,
    /// The request's time ran out; a write may or may not have been committed.
    DeadlineExceeded = 6,
    /// The frame, batch or query is larger than the node's limits.
    TooLarge = 7,
    /// The node is at a limit (connections, queue); try again later or elsewhere.
    Overloaded = 8,
    /// A shard is unavailable, or the node is shutting down: try another node.
    Unavailable = 9,
    /// The engine trapped on this request; the shard was rebuilt, nothing was written.
    EngineFailed = 10,
    /// The frame's protocol version is not spoken by this node.
    UnsupportedVersion = 11,
    /// A bug or a storage failure on the node.
    Internal = 12,
    /// A plugin trapped, ran out of fuel, memory or time, or answered with an error; the
    /// message says which. Nothing else was affected.
    PluginFailed = 13,
}

impl ErrorCode {
    pub fn from_u8(b: u8) -> Option<Self> {
        use ErrorCode::*;
        Some(match b {
            1 => BadRequest,
            2 => Unauthenticated,
            3 => Forbidden,
            4 => NotFound,
            5 => Conflict,
            6 => DeadlineExceeded,
            7 => TooLarge,
            8 => Overloaded,
            9 => Unavailable,
            10 => EngineFailed,
            11 => UnsupportedVersion,
            12 => Internal,
            13 => PluginFailed,
            _ => return None,
        })
    }

    /// A stable lower-case name (metrics labels).
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            Unauthenticated => "unauthenticated",
            Forbidden => "forbidden",
            NotFound => "not_found",
            Conflict => "conflict",
            DeadlineExceeded => "deadline_exceeded",
            TooLarge => "too_large",
            Overloaded => "overloaded",
            Unavailable => "unavailable",
            EngineFailed => "engine_failed",
            UnsupportedVersion => "unsupported_version",
            Internal => "internal",
            PluginFailed => "plugin_failed",
        }
    }

    /// Whether another node (or a later try) may succeed where this one failed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::Overloaded | ErrorCode::Unavailable | ErrorCode::DeadlineExceeded
        )
    }
}

/// A failed request as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a stream answers: a reply or an error.
pub type Response = Result<Reply, ErrorReply>;

/// The whole response frame.
pub fn encode_response(response: &Response) -> Vec<u8> {
    frame(|out| match response {
        Ok(reply) => {
            out.push(0);
            reply.put(out);
        }
        Err(e) => {
            out.push(e.code as u8);
            put_str(out, &e.message);
        }
    })
}

/// Decodes a response frame body (after the header).
pub fn decode_response(body: &[u8]) -> Result<Response, DecodeError> {
    let (&status, rest) = body.split_first().ok_or(DecodeError::Truncated("status"))?;
    if status == 0 {
        return Ok(Ok(from_bytes(rest, "reply")?));
    }
    let code = ErrorCode::from_u8(status)
        .ok_or_else(|| DecodeError::invalid("status", format!("unknown error code {status}")))?;
    let message: String = from_bytes(rest, "message")?;
    Ok(Err(ErrorReply { code, message }))
}
