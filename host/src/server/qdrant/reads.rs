//! Point reads: retrieve by ids, one point, count, and scroll (pages in id order: integer ids
//! by value, then other ids by bytes, as Qdrant orders them).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::api::{check_read_fields, Api, ApiError, Body, Cx};
use super::points::{Form, Selection};
use super::{filter, ids};
use crate::model::Role;

/// Objects for ids, in the given order, skipping missing ones, as `Record`s.
pub fn records(
    cx: &Cx<'_>,
    form: &Form,
    ids: &[String],
    sel: &Selection,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(o) = cx.db.get(&form.spec.name, id)? {
            out.push(form.record(&o, sel));
        }
    }
    Ok(out)
}

#[utoipa::path(post, path = "/collections/{name}/points", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{ids, with_payload, with_vector}`"), responses((status = 200, description = "Records (missing ids are left out)")))]
pub async fn retrieve(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_retrieve", &headers, Role::Read, move |cx| {
        check_read_fields(
            &body,
            &["ids", "with_payload", "with_vector"],
            "the retrieve",
        )?;
        let form = Form::load(cx, &name)?;
        let list = body
            .get("ids")
            .and_then(Value::as_array)
            .ok_or_else(|| ApiError::bad("`ids` must be a list of point ids"))?;
        if list.len() > cx.max_rows {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} ids is more than this node's limit of {}",
                    list.len(),
                    cx.max_rows
                ),
            ));
        }
        let sel = Selection::parse(body.get("with_payload"), body.get("with_vector"), true)?;
        Ok(Value::from(records(
            cx,
            &form,
            &ids::list_to_ours(list)?,
            &sel,
        )?))
    })
    .await
}

#[utoipa::path(get, path = "/collections/{name}/points/{id}", tag = "qdrant", params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, description = "The Record with payload and vector"), (status = 404, description = "no such point")))]
pub async fn get_point(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    api.run("http_get_point", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let given = id
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or(Value::String(id));
        let ours = ids::to_ours(&given)?;
        let sel = Selection::parse(Some(&Value::Bool(true)), Some(&Value::Bool(true)), true)?;
        records(cx, &form, &[ours], &sel)?.pop().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("Not found: No point with id {given} found"),
            )
        })
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/count", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{filter, exact}`"), responses((status = 200, description = "`{count}`")))]
pub async fn count(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_count", &headers, Role::Read, move |cx| {
        check_read_fields(&body, &["filter", "exact"], "the count")?;
        let n = match filter::translate(body.get("filter"))? {
            None => cx.reads.stats(&name)?.objects as usize,
            Some(expr) => cx.reads.filter(&name, &expr, usize::MAX)?.len(),
        };
        Ok(json!({ "count": n }))
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/scroll", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{filter, limit, offset, with_payload, with_vector}`"),
    responses((status = 200, description = "`{points, next_page_offset}`")))]
pub async fn scroll(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_scroll", &headers, Role::Read, move |cx| {
        check_read_fields(
            &body,
            &["filter", "limit", "offset", "with_payload", "with_vector"],
            "the scroll",
        )?;
        let form = Form::load(cx, &name)?;
        let limit = limit_of(body.get("limit"), 10, cx.max_rows)?;
        let sel = Selection::parse(body.get("with_payload"), body.get("with_vector"), true)?;
        let (page, next) = page(cx, &name, body.get("filter"), body.get("offset"), limit)?;
        Ok(json!({
            "points": records(cx, &form, &page, &sel)?,
            "next_page_offset": next.as_deref().map(ids::to_qdrant),
        }))
    })
    .await
}

/// `limit`: a positive integer up to the node's row limit.
pub fn limit_of(v: Option<&Value>, default: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(n) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n <= max => Ok(n),
            Some(n) => Err(ApiError::bad(format!(
                "`limit` {n} is more than this node's limit of {max}"
            ))),
            None => Err(ApiError::bad(format!(
                "`limit`: `{n}` is not a non-negative integer"
            ))),
        },
    }
}

/// One page of ids in id order from `offset` (inclusive), and the first id of the next page.
pub fn page(
    cx: &Cx<'_>,
    name: &str,
    filter: Option<&Value>,
    offset: Option<&Value>,
    limit: usize,
) -> Result<(Vec<String>, Option<String>), ApiError> {
    let mut parts = Vec::new();
    if let Some(f) = filter::translate(filter)? {
        parts.push(f);
    }
    if let Some(o) = offset.filter(|o| !o.is_null()) {
        parts.push(json!({"$id": {"$gte": ids::to_ours(o)?}}));
    }
    let mut found = cx
        .reads
        .filter(name, &json!({ "$and": parts }), limit.saturating_add(1))?;
    let next = (found.len() > limit).then(|| found.remove(limit));
    found.truncate(limit);
    Ok((found, next))
}
