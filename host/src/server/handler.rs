//! One request, start to finish on a blocking thread: limits, then the database call bounded by
//! the request's deadline, then the reply. Authentication happened before (see `quic.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edge_config::NodeLimits;
use vektagraf_proto::{ErrorCode, ErrorReply, Op, Reply};

use crate::error::Error;
use crate::model::{PluginInfo, Receipt, Role};
use crate::plugins::{Grants, PluginError, World};
use crate::replication::driver::Status;
use crate::Database;

/// Maps a database error to what the client is told.
pub fn reply_error(e: Error) -> ErrorReply {
    let code = match &e {
        Error::Invalid(_) => ErrorCode::BadRequest,
        Error::UnknownCollection(_) | Error::UnknownObject { .. } | Error::UnknownPlugin(_) => {
            ErrorCode::NotFound
        }
        Error::TooLarge(_) => ErrorCode::TooLarge,
        Error::Overloaded(_) => ErrorCode::Overloaded,
        Error::CollectionConflict { .. } => ErrorCode::Conflict,
        Error::EngineTrap { .. } => ErrorCode::EngineFailed,
        Error::Unavailable { .. } | Error::Closed => ErrorCode::Unavailable,
        Error::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
        _ => ErrorCode::Internal,
    };
    ErrorReply::new(code, e.to_string())
}

fn too_large(what: String) -> ErrorReply {
    ErrorReply::new(ErrorCode::TooLarge, what)
}

/// Receipts of recent writes by idempotency key, so a retried write is not applied twice.
/// In memory: a retry after the node restarted writes again (every write is state-idempotent
/// on its own: upserts replace, deletes and unlinks of missing things are no-ops).
#[derive(Default)]
pub struct Idempotency {
    seen: Mutex<HashMap<String, (Instant, Option<Receipt>)>>,
}

/// How long a key is remembered, and how many keys at most.
const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
const IDEMPOTENCY_MAX: usize = 100_000;

impl Idempotency {
    /// `Ok(Some(receipt))`: already done; `Ok(None)`: go ahead (the key is now in flight).
    fn begin(&self, key: &str) -> Result<Option<Receipt>, ErrorReply> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= IDEMPOTENCY_MAX {
            seen.retain(|_, (t, _)| now.duration_since(*t) < IDEMPOTENCY_TTL);
        }
        match seen.get(key) {
            Some((t, done)) if now.duration_since(*t) < IDEMPOTENCY_TTL => match done {
                Some(r) => Ok(Some(*r)),
                None => Err(ErrorReply::new(
                    ErrorCode::Overloaded,
                    "a write with this idempotency key is in progress; retry to get its receipt",
                )),
            },
            _ => {
                seen.insert(key.to_owned(), (now, None));
                Ok(None)
            }
        }
    }

    fn end(&self, key: &str, result: Option<Receipt>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Some(r) => {
                seen.insert(key.to_owned(), (Instant::now(), Some(r)));
            }
            None => {
                seen.remove(key);
            }
        }
    }
}

/// Everything a handler needs besides the request.
pub struct Context<'a> {
    pub db: &'a Database,
    pub limits: &'a NodeLimits,
    pub idempotency: &'a Idempotency,
    pub ready: bool,
    /// The replicator's state, when the node replicates.
    pub replication: Option<&'a Mutex<Status>>,
    /// The caller's role, from its token (`None`: an operation that needs no token).
    pub role: Option<Role>,
}

/// Runs one authorised operation.
pub fn handle(cx: &Context<'_>, op: Op, deadline: Instant) -> Result<Reply, ErrorReply> {
    let db = cx.db;
    let reads = db.until(Some(deadline));
    let rows_limit = cx.limits.max_query_rows as usize;
    let r = match op {
        Op::Ping {} => Reply::Pong {
            node_id: db.node_id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ready: cx.ready,
        },
        Op::CreateCollection { spec } => Reply::Created {
            created: db.create_collection(spec).map_err(reply_error)?,
        },
        Op::ListCollections {} => Reply::Collections {
            specs: db.collections(),
        },
        Op::Write {
            batch,
            idempotency_key,
        } => {
            if batch.len() as u64 > cx.limits.max_batch_writes {
                return Err(too_large(format!(
                    "batch of {} writes is larger than this node's limit of {}",
                    batch.len(),
                    cx.limits.max_batch_writes
                )));
            }
            let Some(key) = idempotency_key else {
                let receipt = db
                    .write_before(batch, Some(deadline))
                    .map_err(reply_error)?;
                return Ok(Reply::Written { receipt });
            };
            if key.is_empty() || key.len() > 64 {
                return Err(ErrorReply::new(
                    ErrorCode::BadRequest,
                    "an idempotency key must be 1 to 64 bytes",
                ));
            }
            if let Some(receipt) = cx.idempotency.begin(&key)? {
                return Ok(Reply::Written { receipt });
            }
            let result = db.write_before(batch, Some(deadline));
            cx.idempotency.end(&key, result.as_ref().ok().copied());
            Reply::Written {
                receipt: result.map_err(reply_error)?,
            }
        }
        Op::Get { collection, ids } => {
            if ids.len() > rows_limit {
                return Err(too_large(format!(
                    "{} ids in one get is more than this node's limit of {rows_limit}",
                    ids.len()
                )));
            }
            let objects = ids
                .iter()
                .map(|id| db.get(&collection, id))
                .collect::<Result<_, _>>()
                .map_err(reply_error)?;
            Reply::Objects { objects }
        }
        Op::Search {
            collection,
            options,
            vectors,
        } => {
            let dim = db
                .collection_spec(&collection)
                .map_err(reply_error)?
                .dimension as usize;
            if vectors.len() / dim.max(1) > rows_limit {
                return Err(too_large(format!(
                    "{} query rows is more than this node's limit of {rows_limit}",
                    vectors.len() / dim.max(1)
                )));
            }
            Reply::Hits {
                rows: reads
                    .search_batch(&collection, &vectors, &options)
                    .map_err(reply_error)?,
            }
        }
        Op::Filter {
            collection,
            expression,
            limit,
        } => Reply::Ids {
            ids: reads
                .filter(&collection, &expression, limit as usize)
                .map_err(reply_error)?,
        },
        Op::Traverse { start, options } => Reply::Steps {
            steps: reads.traverse(&start, &options).map_err(reply_error)?,
        },
        Op::Hybrid {
            collection,
            vector,
            search,
            expand,
        } => Reply::Hybrid {
            hits: reads
                .hybrid(&collection, &vector, &search, &expand)
                .map_err(reply_error)?,
        },
        Op::Edges {
            node,
            label,
            direction,
        } => Reply::Edges {
            edges: db
                .edges(&node, label.as_deref(), direction)
                .map_err(reply_error)?,
        },
        Op::Stats { collection } => {
            let names = match collection {
                Some(c) => vec![c],
                None => db.collections().into_iter().map(|s| s.name).collect(),
            };
            Reply::Stats {
                stats: names
                    .iter()
                    .map(|n| reads.stats(n))
                    .collect::<Result<_, _>>()
                    .map_err(reply_error)?,
            }
        }
        Op::Digest { collection } => {
            let d = db.digest(&collection).map_err(reply_error)?;
            Reply::Digest {
                digest: d.hex(),
                objects: d.objects,
                edges: d.edges,
                versions: d.versions,
            }
        }
        Op::Versions { collection, id } => Reply::Versions {
            versions: db.versions(&collection, &id).map_err(reply_error)?,
        },
        Op::ClusterStatus {} => Reply::Cluster {
            status: cluster_status_json(cx.replication),
        },
        Op::Checkpoint {} => {
            db.checkpoint().map_err(reply_error)?;
            Reply::Done {}
        }
        Op::TokenCreate { name, role } => Reply::Token {
            token: db.tokens().create(&name, role).map_err(reply_error)?,
        },
        Op::TokenList {} => Reply::Tokens {
            tokens: db.tokens().list(),
        },
        Op::TokenRevoke { id } => Reply::Revoked {
            revoked: db.tokens().revoke(&id).map_err(reply_error)?,
        },
        op @ (Op::PluginUpload { .. }
        | Op::PluginList {}
        | Op::PluginShow { .. }
        | Op::PluginCall { .. }
        | Op::PluginEnable { .. }
        | Op::PluginRollback { .. }
        | Op::PluginDelete { .. }) => return plugin_op(db, cx.role, op, deadline),
        other => {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("operation `{}` is not supported by this node", other.name()),
            ))
        }
    };
    Ok(r)
}

/// The replicator's state as JSON text (`null` when the node does not replicate).
pub fn cluster_status_json(replication: Option<&Mutex<Status>>) -> String {
    let Some(status) = replication else {
        return "null".to_owned();
    };
    let status = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
    serde_json::to_string(&status).unwrap_or_else(|_| "null".to_owned())
}

/// What an operation does, in the words of a refusal ("may not ...").
pub fn describe(op: &Op) -> &'static str {
    match op {
        Op::TokenCreate { .. } | Op::TokenList {} | Op::TokenRevoke { .. } => "manage tokens",
        Op::PluginUpload { .. }
        | Op::PluginEnable { .. }
        | Op::PluginRollback { .. }
        | Op::PluginDelete { .. } => "manage plugins",
        _ => match op.required_role() {
            Some(Role::Admin) => "administer",
            Some(Role::Write) => "write",
            _ => "read",
        },
    }
}

/// Runs one plugin operation (ops 19 to 25) for a caller of `role`, whose token was already
/// checked against the operation's [`Op::required_role`]. The QUIC handler and the HTTP
/// routes (`qdrant/plugins.rs`) both call this, so they answer alike.
pub fn plugin_op(
    db: &Database,
    role: Option<Role>,
    op: Op,
    deadline: Instant,
) -> Result<Reply, ErrorReply> {
    let info = |r: &crate::plugins::PluginRecord| Reply::Plugin {
        plugin: PluginInfo::from(r),
    };
    let r = match op {
        Op::PluginUpload { name, wasm, grants } => {
            let grants = Grants::parse(grants.iter().map(String::as_str))
                .map_err(|e| ErrorReply::new(ErrorCode::BadRequest, e))?;
            info(&db.plugin_upload(&name, wasm, grants).map_err(reply_error)?)
        }
        Op::PluginList {} => Reply::Plugins {
            plugins: db.plugins().iter().map(PluginInfo::from).collect(),
        },
        Op::PluginShow { name } => info(&db.plugin(&name).map_err(reply_error)?),
        Op::PluginCall { name, input } => {
            let record = db.plugin(&name).map_err(reply_error)?;
            let version = record.active_version();
            if version.is_some_and(|v| v.grants.write) && role.is_none_or(|r| r < Role::Write) {
                let has = role.map_or("none".to_owned(), |r| r.to_string());
                return Err(ErrorReply::new(
                    ErrorCode::Forbidden,
                    format!(
                        "the token's role `{has}` may not call plugin `{name}`: it has the `write` grant, so calling it needs `write`"
                    ),
                ));
            }
            if !record.enabled {
                let why = record
                    .note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                return Err(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("plugin `{name}` is disabled{why}; an admin can enable it again (`vektagraf plugin enable {name}`)"),
                ));
            }
            if let Some(v) = version.filter(|v| v.world != World::Plugin) {
                return Err(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!(
                        "plugin `{name}` is a {} component: only `plugin` components are called directly",
                        v.world
                    ),
                ));
            }
            Reply::Output {
                output: db
                    .plugin_call(&name, &input, Some(deadline))
                    .map_err(plugin_call_error)?,
            }
        }
        Op::PluginEnable { name, enabled } => {
            info(&db.plugin_enable(&name, enabled).map_err(reply_error)?)
        }
        Op::PluginRollback { name, version } => {
            info(&db.plugin_rollback(&name, version).map_err(reply_error)?)
        }
        Op::PluginDelete { name } => {
            db.plugin_delete(&name).map_err(reply_error)?;
            Reply::Done {}
        }
        other => {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("operation `{}` is not a plugin operation", other.name()),
            ))
        }
    };
    Ok(r)
}

/// Maps a failed plugin call: every fault of the plugin (deadline, fuel, memory, stack, trap)
/// and an error it answered with are `PluginFailed`; what kept the node from running it is
/// `NotFound` (no such plugin), `BadRequest` (disabled, not callable), `Unavailable` (the
/// database is closing) or `Internal`.
pub fn plugin_call_error(e: PluginError) -> ErrorReply {
    let code = match &e {
        PluginError::Rejected(_) | PluginError::NotRunnable { .. } => ErrorCode::BadRequest,
        PluginError::Unknown(_) => ErrorCode::NotFound,
        PluginError::Closed => ErrorCode::Unavailable,
        PluginError::Host { .. } => ErrorCode::Internal,
        _ => ErrorCode::PluginFailed,
    };
    ErrorReply::new(code, e.to_string())
}
