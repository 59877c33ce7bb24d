//! k-NN: the universal `points/query` (and its batch), and the older `points/search`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::api::{check_read_fields, Api, ApiError, Body, Cx};
use super::points::{short, Form, Selection};
use super::reads::{limit_of, page};
use super::{filter, ids};
use crate::model::Role;
use crate::model::{Metric, SearchOptions};

/// One k-NN request, whichever endpoint it came from.
struct Knn {
    /// `None`: no query, points in id order (score 0).
    target: Option<Target>,
    filter: Option<Value>,
    limit: usize,
    offset: usize,
    threshold: Option<f32>,
    ef: Option<u32>,
    exact: bool,
    sel: Selection,
}

enum Target {
    Vector(Vec<f32>),
    /// Nearest to a stored point's vector; the point itself is left out.
    Point(String),
}

const QUERY_FIELDS: &[&str] = &[
    "query",
    "using",
    "filter",
    "params",
    "score_threshold",
    "limit",
    "offset",
    "with_payload",
    "with_vector",
    "prefetch",
    "lookup_from",
];

/// Parses a `QueryRequest`.
fn query_request(cx: &Cx<'_>, form: &Form, body: &Map<String, Value>) -> Result<Knn, ApiError> {
    check_read_fields(body, QUERY_FIELDS, "the query")?;
    for k in ["prefetch", "lookup_from"] {
        if body.get(k).is_some_and(|v| !v.is_null() && v != &json!([])) {
            return Err(ApiError::unsupported(format!("`{k}`")));
        }
    }
    using(body.get("using"))?;
    let target = match body.get("query") {
        None | Some(Value::Null) => None,
        Some(q) => Some(query_target(form, q)?),
    };
    knn(cx, body, target, false)
}

fn using(v: Option<&Value>) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(other) => Err(ApiError::unsupported(format!(
            "named vectors other than `\"\"` (using: {other})"
        ))),
    }
}

/// `query`: a vector, a point id, or `{"nearest": vector | id}`.
fn query_target(form: &Form, q: &Value) -> Result<Target, ApiError> {
    match q {
        Value::Array(_) => Ok(Target::Vector(form.vector_in(q, "query")?)),
        Value::Number(_) | Value::String(_) => Ok(Target::Point(ids::to_ours(q)?)),
        Value::Object(m) => {
            let mut it = m.iter().filter(|(_, v)| !v.is_null());
            match (it.next(), it.next()) {
                (Some((k, v)), None) if k == "nearest" => query_target(form, v),
                (Some((k, _)), Some((k2, _))) if k == "nearest" || k2 == "nearest" => Err(
                    ApiError::unsupported("`nearest` with `mmr` (diversity re-ranking)"),
                ),
                (Some((k, _)), None) => Err(match k.as_str() {
                    "indices" | "values" => ApiError::unsupported("sparse vectors"),
                    "recommend" | "discover" | "context" | "order_by" | "fusion" | "rrf"
                    | "formula" | "sample" | "relevance_feedback" => {
                        ApiError::unsupported(format!("the `{k}` query"))
                    }
                    _ => ApiError::bad(format!("unknown query kind `{k}`")),
                }),
                _ => Err(ApiError::bad(format!(
                    "`query`: `{}` is not a query",
                    short(q)
                ))),
            }
        }
        other => Err(ApiError::bad(format!(
            "`query`: `{}` is not a vector or a point id",
            short(other)
        ))),
    }
}

/// The parts `query` and `search` share: filter, limits, threshold, params, selection.
fn knn(
    cx: &Cx<'_>,
    body: &Map<String, Value>,
    target: Option<Target>,
    payload_default: bool,
) -> Result<Knn, ApiError> {
    let (mut ef, mut exact) = (None, false);
    if let Some(p) = body.get("params").filter(|p| !p.is_null()) {
        let p = p
            .as_object()
            .ok_or_else(|| ApiError::bad("`params` must be an object"))?;
        for (k, v) in p {
            match k.as_str() {
                "hnsw_ef" if v.is_null() => {}
                "hnsw_ef" => {
                    ef = Some(
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| (1..=4096).contains(n))
                            .ok_or_else(|| {
                                ApiError::bad(format!("`params.hnsw_ef`: `{v}` is not in 1..=4096"))
                            })?,
                    )
                }
                "exact" => exact = v.as_bool().unwrap_or(false),
                "indexed_only" | "quantization" | "acorn" => {}
                other => {
                    return Err(ApiError::bad(format!(
                        "unknown field `{other}` in `params`"
                    )))
                }
            }
        }
    }
    let threshold = match body.get("score_threshold") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| ApiError::bad(format!("`score_threshold`: `{v}` is not a number")))?
                as f32,
        ),
    };
    let offset = limit_of(body.get("offset"), 0, cx.max_rows)?;
    Ok(Knn {
        target,
        filter: filter::translate(body.get("filter"))?,
        limit: limit_of(body.get("limit"), 10, cx.max_rows)?,
        offset,
        threshold,
        ef,
        exact,
        sel: Selection::parse(
            body.get("with_payload"),
            body.get("with_vector"),
            payload_default,
        )?,
    })
}

/// Runs one k-NN request: `ScoredPoint`s, best first.
fn run(cx: &Cx<'_>, form: &Form, q: Knn) -> Result<Vec<Value>, ApiError> {
    let name = &form.spec.name;
    let (vector, exclude) = match q.target {
        None => {
            let (ids, _) = page(cx, name, q.filter.as_ref(), None, q.limit + q.offset)?;
            return points(
                cx,
                form,
                ids.into_iter().skip(q.offset).map(|id| (id, 0.0)),
                &q.sel,
            );
        }
        Some(Target::Vector(v)) => (v, None),
        Some(Target::Point(id)) => {
            let o = cx.db.get(name, &id)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("Not found: No point with id {} found", ids::to_qdrant(&id)),
                )
            })?;
            let v = o.vector.ok_or_else(|| {
                ApiError::bad(format!("point {} has no vector", ids::to_qdrant(&id)))
            })?;
            (v, Some(id))
        }
    };
    let mut filter = q.filter;
    if let Some(id) = &exclude {
        let not_it = json!({"$not": {"$id": {"$in": [id]}}});
        filter = Some(match filter {
            Some(f) => json!({"$and": [f, not_it]}),
            None => not_it,
        });
    }
    let k = q.limit + q.offset;
    if k == 0 {
        return Ok(Vec::new());
    }
    let opts = SearchOptions {
        k,
        ef: q.ef,
        filter,
        exact: q.exact,
    };
    let hits = cx.reads.search(name, &vector, &opts)?;
    let euclid = form.spec.metric == Metric::Euclidean;
    let kept = hits
        .into_iter()
        .skip(q.offset)
        .filter(|h| match q.threshold {
            None => true,
            Some(t) if euclid => h.score <= t,
            Some(t) => h.score >= t,
        });
    points(cx, form, kept.map(|h| (h.id, h.score)), &q.sel)
}

fn points(
    cx: &Cx<'_>,
    form: &Form,
    hits: impl Iterator<Item = (String, f32)>,
    sel: &Selection,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (id, score) in hits {
        let o = if sel.needs_object() {
            cx.db.get(&form.spec.name, &id)?
        } else {
            None
        };
        out.push(form.scored(&id, score, o.as_ref(), sel));
    }
    Ok(out)
}

#[utoipa::path(post, path = "/collections/{name}/points/query", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "Qdrant's QueryRequest: `query` (vector, point id or {nearest}), filter, limit, offset, score_threshold, params {hnsw_ef, exact}, with_payload, with_vector"),
    responses((status = 200, description = "`{points: [ScoredPoint]}`")))]
pub async fn query(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_query", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let q = query_request(cx, &form, &body)?;
        Ok(json!({ "points": run(cx, &form, q)? }))
    })
    .await
}

/// The `searches` list of a batch body.
fn searches(body: &Map<String, Value>, max: usize) -> Result<Vec<Map<String, Value>>, ApiError> {
    check_read_fields(body, &["searches"], "the batch")?;
    let list = body
        .get("searches")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::bad("`searches` must be a list of requests"))?;
    if list.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} requests in one batch is more than this node's limit of {max}",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.as_object()
                .cloned()
                .ok_or_else(|| ApiError::bad(format!("request {i} of the batch is not an object")))
        })
        .collect()
}

#[utoipa::path(post, path = "/collections/{name}/points/query/batch", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{searches: [QueryRequest]}`"), responses((status = 200, description = "`[{points}]`")))]
pub async fn query_batch(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_query_batch", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let mut out = Vec::new();
        for s in searches(&body, cx.max_rows)? {
            let q = query_request(cx, &form, &s)?;
            out.push(json!({ "points": run(cx, &form, q)? }));
        }
        Ok(Value::from(out))
    })
    .await
}

/// Parses the older `SearchRequest`: `vector` (a list, or `{"name": "", "vector": [..]}`).
fn search_request(cx: &Cx<'_>, form: &Form, body: &Map<String, Value>) -> Result<Knn, ApiError> {
    check_read_fields(
        body,
        &[
            "vector",
            "filter",
            "params",
            "limit",
            "offset",
            "with_payload",
            "with_vector",
            "score_threshold",
        ],
        "the search",
    )?;
    let v = body
        .get("vector")
        .ok_or_else(|| ApiError::bad("the search needs a `vector`"))?;
    let vector = match v {
        Value::Object(m) if m.contains_key("name") => {
            using(m.get("name"))?;
            form.vector_in(m.get("vector").unwrap_or(&Value::Null), "vector")?
        }
        other => form.vector_in(other, "vector")?,
    };
    knn(cx, body, Some(Target::Vector(vector)), false)
}

#[utoipa::path(post, path = "/collections/{name}/points/search", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "Qdrant's SearchRequest"), responses((status = 200, description = "`[ScoredPoint]`")))]
pub async fn search(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_search", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let q = search_request(cx, &form, &body)?;
        Ok(Value::from(run(cx, &form, q)?))
    })
    .await
}

#[utoipa::path(post, path = "/collections/{name}/points/search/batch", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{searches: [SearchRequest]}`"), responses((status = 200, description = "`[[ScoredPoint]]`")))]
pub async fn search_batch(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_search_batch", &headers, Role::Read, move |cx| {
        let form = Form::load(cx, &name)?;
        let mut out = Vec::new();
        for s in searches(&body, cx.max_rows)? {
            let q = search_request(cx, &form, &s)?;
            out.push(Value::from(run(cx, &form, q)?));
        }
        Ok(Value::from(out))
    })
    .await
}
