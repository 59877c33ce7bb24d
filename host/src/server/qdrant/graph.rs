//! Our extensions beside the Qdrant routes, in the same envelope: typed edges (link and unlink
//! in batches), traversal, hybrid k-NN-then-expand, collection statistics (with the
//! collection's state digest and conflict policy), and a point's versions with the resolve
//! that replaces them (the `manual` conflict policy, docs/replication.md).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::api::{
    check_fields, check_read_fields, update_result, Api, ApiError, Body, Cx, WriteParams,
};
use super::ids;
use super::points::{short, Form};
use crate::model::{
    Batch, ConflictPolicy, Direction, NodeKey, Role, SearchOptions, Step, TraverseOptions,
};

/// One end of an edge: a point id of this collection, or `{"collection": .., "id": ..}`.
fn end(name: &str, v: Option<&Value>, what: &str) -> Result<NodeKey, ApiError> {
    match v {
        Some(Value::Object(m)) => {
            let coll = m
                .get("collection")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad(format!("{what}: `collection` must be a string")))?;
            Ok(NodeKey::new(
                coll,
                ids::to_ours(m.get("id").unwrap_or(&Value::Null))?,
            ))
        }
        Some(id) => Ok(NodeKey::new(name, ids::to_ours(id)?)),
        None => Err(ApiError::bad(format!("{what} is missing"))),
    }
}

fn key_json(k: &NodeKey) -> Value {
    json!({"collection": k.collection, "id": ids::to_qdrant(&k.id)})
}

fn step_json(s: &Step) -> Value {
    json!({
        "collection": s.node.collection,
        "id": ids::to_qdrant(&s.node.id),
        "depth": s.depth,
        "via": s.via.as_ref().map(|(label, from)| json!({"label": label, "from": key_json(from)})),
    })
}

#[utoipa::path(put, path = "/collections/{name}/edges", tag = "vektagraf", params(("name" = String, Path)),
    request_body(content = Object, description = "`{link: [{from, label, to, properties?}], unlink: [{from, label, to}]}`; an end is a point id or {collection, id}"),
    responses((status = 200, description = "UpdateResult"), (status = 404, description = "an end does not exist")))]
pub async fn edges(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_edges", &headers, Role::Write, move |cx| {
        cx.db.collection_spec(&name)?;
        let mut batch = Batch::new();
        for (k, v) in &body {
            let list = v
                .as_array()
                .ok_or_else(|| ApiError::bad(format!("`{k}` must be a list of edges")))?;
            for (i, e) in list.iter().enumerate() {
                let what = format!("{k}[{i}]");
                let e = e
                    .as_object()
                    .ok_or_else(|| ApiError::bad(format!("{what} is not an object")))?;
                let label = e
                    .get("label")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad(format!("{what}: `label` must be a string")))?;
                let from = end(&name, e.get("from"), &format!("{what}.from"))?;
                let to = end(&name, e.get("to"), &format!("{what}.to"))?;
                match k.as_str() {
                    "link" => {
                        let props = e.get("properties").cloned().unwrap_or_else(|| json!({}));
                        batch.link(from, label, to, props);
                    }
                    "unlink" => {
                        batch.unlink(from, label, to);
                    }
                    other => {
                        return Err(ApiError::bad(format!(
                            "unknown field `{other}` (link, unlink)"
                        )))
                    }
                }
            }
        }
        if batch.len() > cx.max_batch {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} edges is more than this node's limit of {}",
                    batch.len(),
                    cx.max_batch
                ),
            ));
        }
        let seq = if batch.is_empty() {
            0
        } else {
            cx.db.write_before(batch, Some(cx.deadline))?.seq
        };
        Ok(update_result(seq))
    })
    .await
}

/// `{label, direction, depth, limit}` of a traversal (all optional).
fn traverse_options(v: Option<&Value>) -> Result<TraverseOptions, ApiError> {
    let mut opts = TraverseOptions::default();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(opts);
    };
    let m = v
        .as_object()
        .ok_or_else(|| ApiError::bad("traversal options must be an object"))?;
    for (k, v) in m {
        let n = || {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| ApiError::bad(format!("`{k}`: `{v}` is not a non-negative integer")))
        };
        match k.as_str() {
            "label" => opts.label = v.as_str().map(str::to_owned),
            "direction" => {
                opts.direction = match v.as_str() {
                    Some("out") => Direction::Out,
                    Some("in") => Direction::In,
                    Some("both") => Direction::Both,
                    _ => {
                        return Err(ApiError::bad(format!(
                            "`direction`: `{}` is not out, in or both",
                            short(v)
                        )))
                    }
                }
            }
            "depth" => opts.depth = n()?,
            "limit" => opts.limit = n()?,
            other => {
                return Err(ApiError::bad(format!(
                    "unknown field `{other}` (label, direction, depth, limit)"
                )))
            }
        }
    }
    Ok(opts)
}

/// Our id for a point id in a path: digits are an integer id, anything else a string id.
fn path_id(id: String) -> Result<String, ApiError> {
    let given = id
        .parse::<u64>()
        .map(Value::from)
        .unwrap_or(Value::String(id));
    ids::to_ours(&given)
}

#[utoipa::path(post, path = "/collections/{name}/points/{id}/traverse", tag = "vektagraf", params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "`{label?, direction: out|in|both, depth, limit}`"),
    responses((status = 200, description = "`{steps: [{collection, id, depth, via}]}`"), (status = 404, description = "no such point")))]
pub async fn traverse(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Body(body): Body<Value>,
) -> Response {
    api.run("http_traverse", &headers, Role::Read, move |cx| {
        let start = NodeKey::new(name, path_id(id)?);
        let steps = cx.reads.traverse(&start, &traverse_options(Some(&body))?)?;
        Ok(json!({"steps": steps.iter().map(step_json).collect::<Vec<_>>()}))
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/hybrid", tag = "vektagraf", params(("name" = String, Path)),
    request_body(content = Object, description = "`{query: vector, limit, filter (a Qdrant filter), params {hnsw_ef}, expand: {label, direction, depth, limit}}`"),
    responses((status = 200, description = "`{points: [{id, score, neighbours: [step]}]}`")))]
pub async fn hybrid(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_hybrid", &headers, Role::Read, move |cx| {
        hybrid_run(cx, &name, &body)
    })
    .await
}

fn hybrid_run(cx: &Cx<'_>, name: &str, body: &Map<String, Value>) -> Result<Value, ApiError> {
    check_read_fields(
        body,
        &["query", "limit", "filter", "params", "expand"],
        "the hybrid query",
    )?;
    let form = Form::load(cx, name)?;
    let vector = form.vector_in(body.get("query").unwrap_or(&Value::Null), "query")?;
    let k = super::reads::limit_of(body.get("limit"), 10, cx.max_rows)?.max(1);
    let ef = body
        .get("params")
        .and_then(|p| p.get("hnsw_ef"))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok());
    let opts = SearchOptions {
        k,
        ef,
        filter: super::filter::translate(body.get("filter"))?,
        ..SearchOptions::default()
    };
    let hits = cx
        .reads
        .hybrid(name, &vector, &opts, &traverse_options(body.get("expand"))?)?;
    Ok(json!({"points": hits.iter().map(|h| json!({
        "id": ids::to_qdrant(&h.hit.id),
        "score": h.hit.score,
        "neighbours": h.neighbours.iter().map(step_json).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()}))
}

#[utoipa::path(get, path = "/collections/{name}/stats", tag = "vektagraf", params(("name" = String, Path)),
    responses((status = 200, description = "`{spec, objects, vectors, deleted_slots, engine_memory_bytes, snapshot_seq, conflict, digest}`: counts, engine memory, snapshot position and parameters; `conflict` is the collection's conflict policy and `digest` (32 hex digits) the hash of its state on this node, equal on two nodes exactly when they hold the same objects, edges and versions")))]
pub async fn stats(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    api.run("http_stats", &headers, Role::Read, move |cx| {
        let s = cx.reads.stats(&name)?;
        let digest = cx.db.digest(&name)?;
        let mut v = serde_json::to_value(&s)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        v["conflict"] = json!(s.spec.conflict);
        v["digest"] = json!(digest.hex());
        Ok(v)
    })
    .await
}

#[utoipa::path(get, path = "/collections/{name}/points/{id}/versions", tag = "vektagraf", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "`{id, context, versions: [{hlc, origin, seq, visible, properties, vector}]}`: every version of the point in `(hlc, origin)` order — the visible one, siblings its collection's policy keeps, a tombstone (`properties: null`) — and the causal context that resolves exactly these (pass it to `resolve`); fields named as `vektagraf versions --json` names them. A point with no version: no versions, an empty context"),
        (status = 404, description = "no such collection")))]
pub async fn versions(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    api.run("http_versions", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let id = path_id(id)?;
        let v = cx.db.versions(&name, &id)?;
        let versions: Vec<Value> = v
            .versions
            .iter()
            .map(|x| {
                json!({
                    "hlc": x.hlc,
                    "origin": x.origin,
                    "seq": x.seq,
                    "visible": x.visible,
                    "properties": x.properties,
                    "vector": x.vector.as_deref().map(|v| form.vector_out(v)),
                })
            })
            .collect();
        Ok(json!({
            "id": ids::to_qdrant(&id),
            "context": v.context,
            "versions": versions,
        }))
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/{id}/resolve", tag = "vektagraf", params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "`{context, payload, vector?}` or `{context, delete: true}`: replaces the versions a `versions` read returned with `context` by one value (without `vector`, the point has none) or by a delete; versions written since that read stay as siblings. Only for collections whose conflict policy is `manual`"),
    responses((status = 200, description = "UpdateResult"), (status = 400, description = "not a manual collection, a malformed context, wrong dimension..."), (status = 404, description = "no such collection")))]
pub async fn resolve(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_resolve", &headers, Role::Write, move |cx| {
        params.check()?;
        check_fields(&body, &["context", "payload", "vector", "delete"], "the resolve")?;
        let form = Form::load(cx, &name)?;
        if form.spec.conflict != ConflictPolicy::Manual {
            return Err(ApiError::bad(format!(
                "collection `{name}` has the conflict policy {}: resolve is for collections whose policy is manual (a plain upsert replaces every version of a point)",
                form.spec.conflict
            )));
        }
        let id = path_id(id)?;
        let context = match body.get("context") {
            Some(Value::String(c)) => c.as_str(),
            _ => {
                return Err(ApiError::bad(
                    "`context` must be the string a versions read returned",
                ))
            }
        };
        let delete = match body.get("delete") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(other) => {
                return Err(ApiError::bad(format!(
                    "`delete`: `{}` is not true or false",
                    short(other)
                )))
            }
        };
        let given = |k: &str| body.get(k).filter(|v| !v.is_null());
        let (properties, vector) = if delete {
            if let Some(k) = ["payload", "vector"].into_iter().find(|k| given(k).is_some()) {
                return Err(ApiError::bad(format!(
                    "a resolve with `delete: true` takes no `{k}`"
                )));
            }
            (None, None)
        } else {
            let payload = match given("payload") {
                Some(p @ Value::Object(_)) => p.clone(),
                Some(other) => {
                    return Err(ApiError::bad(format!(
                        "`payload`: `{}` is not a JSON object",
                        short(other)
                    )))
                }
                None => {
                    return Err(ApiError::bad(
                        "the resolve takes `payload` (and optionally `vector`), or `delete: true`",
                    ))
                }
            };
            let vector = given("vector")
                .map(|v| form.vector_in(v, "the resolve"))
                .transpose()?;
            (Some(payload), vector)
        };
        let mut batch = Batch::new();
        batch.resolve(&name, &id, context, properties, vector);
        Ok(update_result(
            cx.db.write_before(batch, Some(cx.deadline))?.seq,
        ))
    })
    .await
}
