//! Point writes: upsert (list or column batch), delete (by ids or filter), payload set,
//! overwrite, delete keys and clear. Every write is durable when answered (`wait` is accepted
//! either way). Payload changes read each point and write it back whole in one batch: a
//! concurrent write to the same point between the two may be overwritten (docs/http-api.md).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::api::{check_fields, update_result, Api, ApiError, Body, Cx, WriteParams};
use super::points::{exclude, parse_key, short, Form, Part};
use super::{filter, ids};
use crate::model::{Batch, NodeKey, Object, Role, Write};

fn commit(cx: &Cx<'_>, batch: Batch) -> Result<u64, ApiError> {
    if batch.is_empty() {
        return Ok(0);
    }
    if batch.len() > cx.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} writes in one request is more than this node's limit of {} (max_batch_writes)",
                batch.len(),
                cx.max_batch
            ),
        ));
    }
    Ok(cx.db.write_before(batch, Some(cx.deadline))?.seq)
}

fn payload_of(v: Option<&Value>, what: &str) -> Result<Value, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(p @ Value::Object(_)) => Ok(p.clone()),
        Some(other) => Err(ApiError::bad(format!(
            "{what}: the payload `{}` is not a JSON object",
            short(other)
        ))),
    }
}

#[utoipa::path(put, path = "/collections/{name}/points", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{points: [{id, vector, payload}]}` or `{batch: {ids, vectors, payloads}}`"),
    responses((status = 200, description = "UpdateResult"), (status = 400, description = "wrong dimension, bad id...")))]
pub async fn upsert(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_upsert", &headers, Role::Write, move |cx| {
        params.check()?;
        check_fields(&body, &["points", "batch"], "the upsert")?;
        let form = Form::load(cx, &name)?;
        let mut batch = Batch::new();
        match (body.get("points"), body.get("batch")) {
            (Some(Value::Array(points)), None) => {
                for (i, p) in points.iter().enumerate() {
                    let what = format!("point {i}");
                    let p = p
                        .as_object()
                        .ok_or_else(|| ApiError::bad(format!("{what} is not an object")))?;
                    check_fields(p, &["id", "vector", "payload"], &what)?;
                    let id = ids::to_ours(p.get("id").unwrap_or(&Value::Null))?;
                    let vector = p
                        .get("vector")
                        .ok_or_else(|| ApiError::bad(format!("{what} has no `vector`")))?;
                    let vector = form.vector_in(vector, &what)?;
                    let payload = payload_of(p.get("payload"), &what)?;
                    batch.upsert(&name, &id, payload, Some(vector));
                }
            }
            (None, Some(Value::Object(cols))) => {
                check_fields(cols, &["ids", "vectors", "payloads"], "the batch")?;
                let list = |k: &str| cols.get(k).and_then(Value::as_array);
                let idv = list("ids").ok_or_else(|| ApiError::bad("`batch.ids` must be a list"))?;
                let vectors = match cols.get("vectors") {
                    Some(Value::Array(v)) => v.clone(),
                    Some(Value::Object(m)) if m.len() == 1 && m.contains_key("") => m
                        .get("")
                        .and_then(Value::as_array)
                        .cloned()
                        .ok_or_else(|| {
                            ApiError::bad("`batch.vectors.\"\"` must be a list of vectors")
                        })?,
                    Some(Value::Object(_)) => {
                        return Err(ApiError::unsupported(
                            "named vectors other than `\"\"` in `batch.vectors`",
                        ))
                    }
                    _ => return Err(ApiError::bad("`batch.vectors` must be a list of vectors")),
                };
                let payloads = list("payloads");
                if vectors.len() != idv.len() || payloads.is_some_and(|p| p.len() != idv.len()) {
                    return Err(ApiError::bad(format!(
                        "`batch` columns differ in length: {} ids, {} vectors, {} payloads",
                        idv.len(),
                        vectors.len(),
                        payloads.map_or(idv.len(), Vec::len)
                    )));
                }
                for (i, id) in idv.iter().enumerate() {
                    let what = format!("batch row {i}");
                    let id = ids::to_ours(id)?;
                    let vector = form.vector_in(&vectors[i], &what)?;
                    let payload = payload_of(payloads.and_then(|p| p.get(i)), &what)?;
                    batch.upsert(&name, &id, payload, Some(vector));
                }
            }
            _ => {
                return Err(ApiError::bad(
                    "the upsert takes `points` (a list) or `batch` (columns)",
                ))
            }
        }
        Ok(update_result(commit(cx, batch)?))
    })
    .await
}

/// The ids a `PointsSelector` names: `points` (ids) or `filter`.
fn selected(cx: &Cx<'_>, name: &str, body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    match (body.get("points"), body.get("filter")) {
        (Some(Value::Array(list)), None) => ids::list_to_ours(list),
        (None, Some(f)) => {
            let expr = filter::translate(Some(f))?.unwrap_or_else(|| serde_json::json!({}));
            Ok(cx.reads.filter(name, &expr, usize::MAX)?)
        }
        _ => Err(ApiError::bad(
            "select points with `points` (a list of ids) or `filter`",
        )),
    }
}

#[utoipa::path(post, path = "/collections/{name}/points/delete", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{points: [ids]}` or `{filter}`"), responses((status = 200, description = "UpdateResult")))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_delete", &headers, Role::Write, move |cx| {
        params.check()?;
        check_fields(&body, &["points", "filter"], "the delete")?;
        cx.db.collection_spec(&name)?;
        let targets = selected(cx, &name, &body)?;
        let mut last = 0;
        // A delete by filter may name more points than one batch holds.
        for chunk in targets.chunks(cx.max_batch.max(1)) {
            let mut batch = Batch::new();
            for id in chunk {
                batch.delete(&name, id);
            }
            last = commit(cx, batch)?;
        }
        Ok(update_result(last))
    })
    .await
}

/// How a payload write changes a point's payload.
enum Change {
    /// `POST .../payload`: merge keys (under `key` when given); a null removes the key, as
    /// Qdrant's merge does.
    Set {
        payload: Map<String, Value>,
        key: Option<String>,
    },
    /// `PUT .../payload`: replace (under `key` when given).
    Overwrite {
        payload: Map<String, Value>,
        key: Option<String>,
    },
    /// Keys as payload paths (`a.b`, `arr[].k`; `arr[]` empties the array).
    DeleteKeys(Vec<Vec<Part>>),
    Clear,
}

impl Change {
    fn apply(&self, props: &mut Map<String, Value>) {
        match self {
            Change::Set { payload, key } => {
                if let Some(target) = at_key(props, key.as_deref()) {
                    for (k, v) in payload {
                        if v.is_null() {
                            target.remove(k);
                        } else {
                            target.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            Change::Overwrite { payload, key } => {
                if let Some(target) = at_key(props, key.as_deref()) {
                    *target = payload.clone();
                }
            }
            Change::DeleteKeys(keys) => {
                let paths: Vec<&[Part]> = keys.iter().map(Vec::as_slice).collect();
                *props = match exclude(&Value::Object(std::mem::take(props)), &paths) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
            }
            Change::Clear => props.clear(),
        }
    }
}

/// The object at a dotted key, made (or replaced by an object) on the way.
fn at_key<'a>(
    props: &'a mut Map<String, Value>,
    key: Option<&str>,
) -> Option<&'a mut Map<String, Value>> {
    let Some(key) = key else { return Some(props) };
    let mut cur = props;
    for part in key.split('.') {
        let slot = cur
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        cur = slot.as_object_mut()?;
    }
    Some(cur)
}

fn change_payload(
    cx: &Cx<'_>,
    name: &str,
    body: &Map<String, Value>,
    change: Change,
) -> Result<Value, ApiError> {
    cx.db.collection_spec(name)?;
    let by_ids = body.contains_key("points");
    let targets = selected(cx, name, body)?;
    let mut objects: Vec<Object> = Vec::with_capacity(targets.len());
    for id in &targets {
        match cx.db.get(name, id)? {
            Some(o) => objects.push(o),
            None if by_ids => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("Not found: No point with id {} found", ids::to_qdrant(id)),
                ))
            }
            None => {}
        }
    }
    let mut last = 0;
    for chunk in objects.chunks_mut(cx.max_batch.max(1)) {
        let mut batch = Batch::new();
        for o in chunk {
            let mut props = match std::mem::take(&mut o.properties) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            change.apply(&mut props);
            batch.writes.push(Write::Upsert {
                key: NodeKey::new(name, o.id.clone()),
                properties: Value::Object(props),
                vector: o.vector.take(),
            });
        }
        last = commit(cx, batch)?;
    }
    Ok(update_result(last))
}

fn payload_body(
    body: &Map<String, Value>,
) -> Result<(Map<String, Value>, Option<String>), ApiError> {
    check_fields(
        body,
        &["payload", "points", "filter", "key"],
        "the payload request",
    )?;
    let payload = match body.get("payload") {
        Some(Value::Object(m)) => m.clone(),
        _ => return Err(ApiError::bad("`payload` must be a JSON object")),
    };
    let key = match body.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && !k.contains('[') => Some(k.clone()),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "`key`: `{}` is not a dotted payload path",
                short(other)
            )))
        }
    };
    Ok((payload, key))
}

#[utoipa::path(post, path = "/collections/{name}/points/payload", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{payload, points | filter, key?}`: merge keys"), responses((status = 200, description = "UpdateResult")))]
pub async fn set_payload(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_set_payload", &headers, Role::Write, move |cx| {
        params.check()?;
        let (payload, key) = payload_body(&body)?;
        change_payload(cx, &name, &body, Change::Set { payload, key })
    })
    .await
}

#[utoipa::path(put, path = "/collections/{name}/points/payload", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{payload, points | filter, key?}`: replace the payload"), responses((status = 200, description = "UpdateResult")))]
pub async fn overwrite_payload(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_overwrite_payload", &headers, Role::Write, move |cx| {
        params.check()?;
        let (payload, key) = payload_body(&body)?;
        change_payload(cx, &name, &body, Change::Overwrite { payload, key })
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/payload/delete", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{keys, points | filter}`"), responses((status = 200, description = "UpdateResult")))]
pub async fn delete_payload(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_delete_payload", &headers, Role::Write, move |cx| {
        params.check()?;
        check_fields(&body, &["keys", "points", "filter"], "the payload delete")?;
        let keys: Vec<&str> = body
            .get("keys")
            .and_then(Value::as_array)
            .and_then(|k| k.iter().map(Value::as_str).collect())
            .ok_or_else(|| ApiError::bad("`keys` must be a list of payload keys"))?;
        let keys = keys
            .into_iter()
            .map(|k| parse_key(k, "keys"))
            .collect::<Result<_, _>>()?;
        change_payload(cx, &name, &body, Change::DeleteKeys(keys))
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/payload/clear", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{points | filter}`"), responses((status = 200, description = "UpdateResult")))]
pub async fn clear_payload(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_clear_payload", &headers, Role::Write, move |cx| {
        params.check()?;
        check_fields(&body, &["points", "filter"], "the payload clear")?;
        change_payload(cx, &name, &body, Change::Clear)
    })
    .await
}
