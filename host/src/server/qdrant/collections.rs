//! `GET /`, and collections: list, exists, create, info, delete, payload indexes.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::api::{update_result, Api, ApiError, Body, Cx, WriteParams};
use super::points::{short, Form};
use crate::model::{CollectionSpec, Metric, Role};

/// The Qdrant version whose REST API this node speaks (qdrant-client checks it).
pub const QDRANT_VERSION: &str = "1.20.0";

/// `GET /`: who answers. Open, like `/health`: qdrant-client reads it before any token check.
/// Not in the envelope: Qdrant answers `{title, version, commit}` bare, and qdrant-client reads
/// `version` at the top level.
#[utoipa::path(get, path = "/", tag = "qdrant", responses((status = 200, description = "Name and Qdrant API version")))]
pub async fn root() -> Response {
    axum::Json(json!({
        "title": "vektagraf-edge (Qdrant-compatible API)",
        "version": QDRANT_VERSION,
        "vektagraf_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

#[utoipa::path(get, path = "/collections", tag = "qdrant", responses((status = 200, description = "Collection names")))]
pub async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    api.run("http_list_collections", &headers, Role::Read, |cx| {
        let names: Vec<Value> = cx
            .db
            .collections()
            .into_iter()
            .map(|s| json!({"name": s.name}))
            .collect();
        Ok(json!({ "collections": names }))
    })
    .await
}

#[utoipa::path(get, path = "/collections/{name}/exists", tag = "qdrant", params(("name" = String, Path)), responses((status = 200, description = "`{exists: bool}`")))]
pub async fn exists(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    api.run("http_collection_exists", &headers, Role::Read, move |cx| {
        Ok(json!({"exists": cx.db.collection_spec(&name).is_ok()}))
    })
    .await
}

#[utoipa::path(put, path = "/collections/{name}", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "Qdrant's CreateCollection: `vectors` {size, distance} (or {\"\": {..}}), `hnsw_config`, `shard_number`"),
    responses((status = 200, description = "true"), (status = 409, description = "already exists"), (status = 400, description = "unsupported or wrong parameters")))]
pub async fn create(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    let conflict = api.shared.default_conflict;
    api.run("http_create_collection", &headers, Role::Write, move |cx| {
        params.check()?;
        let (mut spec, meta) = spec_of(&name, &body)?;
        spec.conflict = conflict;
        if cx.db.collection_spec(&name).is_ok() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("Wrong input: Collection `{name}` already exists!"),
            ));
        }
        cx.db.create_collection(spec)?;
        cx.db.set_collection_meta(&name, &meta)?;
        Ok(Value::Bool(true))
    })
    .await
}

/// Our collection and the metadata to keep from a Qdrant `CreateCollection` body.
fn spec_of(name: &str, body: &Map<String, Value>) -> Result<(CollectionSpec, Value), ApiError> {
    for (k, v) in body {
        match k.as_str() {
            "vectors" | "shard_number" | "hnsw_config" | "metadata" => {}
            // Durability and layout hints that do not change answers here.
            "replication_factor"
            | "write_consistency_factor"
            | "on_disk_payload"
            | "optimizers_config"
            | "wal_config"
            | "quantization_config"
            | "timeout" => {}
            "sparse_vectors" if v.is_null() || v.as_object().is_some_and(Map::is_empty) => {}
            "sharding_method" if v.is_null() || v == "auto" => {}
            "sparse_vectors" | "sharding_method" | "init_from" | "strict_mode_config" => {
                return Err(ApiError::unsupported(format!("`{k}`")))
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown field `{other}` in the collection parameters"
                )))
            }
        }
    }
    let vectors = body.get("vectors").ok_or_else(|| {
        ApiError::bad("the collection needs `vectors`: {\"size\": n, \"distance\": \"Cosine\"}")
    })?;
    let params = match vectors.as_object() {
        Some(m) if m.contains_key("size") => m,
        Some(m) if m.len() == 1 && m.contains_key("") => m
            .get("")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::bad("`vectors.\"\"` must be {size, distance}"))?,
        Some(m) => {
            return Err(ApiError::unsupported(format!(
                "named vectors other than the unnamed `\"\"` (vectors: {})",
                m.keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        None => {
            return Err(ApiError::bad(format!(
                "`vectors`: `{}` is not {{size, distance}}",
                short(vectors)
            )))
        }
    };
    let mut spec = CollectionSpec::new(name, 0);
    let mut hnsw: Map<String, Value> = Map::new();
    for (k, v) in params {
        match k.as_str() {
            "size" => {
                spec.dimension =
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            ApiError::bad(format!(
                                "`vectors.size`: `{v}` is not a positive integer"
                            ))
                        })?
            }
            "distance" => {
                spec.metric = match v.as_str() {
                    Some("Cosine") => Metric::Cosine,
                    Some("Dot") => Metric::Dot,
                    Some("Euclid") => Metric::Euclidean,
                    Some("Manhattan") => {
                        return Err(ApiError::unsupported("the Manhattan distance"))
                    }
                    _ => {
                        return Err(ApiError::bad(format!(
                            "`vectors.distance`: `{v}` is not Cosine, Dot or Euclid"
                        )))
                    }
                }
            }
            "hnsw_config" => hnsw.extend(v.as_object().cloned().unwrap_or_default()),
            "on_disk" | "quantization_config" => {}
            "datatype" if v.is_null() || v == "float32" => {}
            "datatype" | "multivector_config" => {
                return Err(ApiError::unsupported(format!("`vectors.{k}` = {v}")))
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown field `{other}` in `vectors`"
                )))
            }
        }
    }
    if let Some(h) = body.get("hnsw_config").and_then(Value::as_object) {
        for (k, v) in h {
            hnsw.entry(k.clone()).or_insert(v.clone());
        }
    }
    spec.ef_construction = 100;
    for (k, v) in &hnsw {
        let n = || v.as_u64().and_then(|n| u32::try_from(n).ok());
        match k.as_str() {
            "m" => match n() {
                Some(0) => return Err(ApiError::unsupported("`hnsw_config.m` = 0 (no graph)")),
                Some(m) => spec.m = m,
                None => return Err(ApiError::bad(format!("`hnsw_config.m`: `{v}`"))),
            },
            "ef_construct" => {
                spec.ef_construction =
                    n().ok_or_else(|| ApiError::bad(format!("`hnsw_config.ef_construct`: `{v}`")))?
            }
            "full_scan_threshold"
            | "max_indexing_threads"
            | "on_disk"
            | "payload_m"
            | "inline_storage"
            | "memory" => {}
            other => {
                return Err(ApiError::bad(format!(
                    "unknown field `{other}` in `hnsw_config`"
                )))
            }
        }
    }
    // Qdrant searches with ef = ef_construct unless a query names `hnsw_ef`.
    spec.ef_search = spec.ef_construction.clamp(1, 4096);
    if let Some(n) = body.get("shard_number").filter(|v| !v.is_null()) {
        spec.shards = n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ApiError::bad(format!("`shard_number`: `{n}`")))?;
    }
    spec.validate()
        .map_err(|e| ApiError::from(crate::Error::from(e)))?;
    let meta = json!({
        "vectors": vectors,
        "payload_schema": {},
        "metadata": body.get("metadata").cloned().unwrap_or(Value::Null),
    });
    Ok((spec, meta))
}

#[utoipa::path(get, path = "/collections/{name}", tag = "qdrant", params(("name" = String, Path)), responses((status = 200, description = "Qdrant's CollectionInfo"), (status = 404, description = "no such collection")))]
pub async fn info(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    api.run("http_collection_info", &headers, Role::Read, move |cx| {
        collection_info(cx, &name)
    })
    .await
}

fn collection_info(cx: &Cx<'_>, name: &str) -> Result<Value, ApiError> {
    let form = Form::load(cx, name)?;
    let stats = cx.reads.stats(name)?;
    let s = &form.spec;
    let distance = match s.metric {
        Metric::Cosine => "Cosine",
        Metric::Dot => "Dot",
        Metric::Euclidean => "Euclid",
    };
    let plain = json!({"size": s.dimension, "distance": distance});
    let vectors = if form.named {
        json!({ "": plain })
    } else {
        plain
    };
    let mut schema = Map::new();
    if let Some(fields) = form.meta.get("payload_schema").and_then(Value::as_object) {
        for (field, info) in fields {
            let has = json!({ field.as_str(): {"$exists": true} });
            let points = cx.reads.filter(name, &has, usize::MAX)?.len();
            let mut info = info.clone();
            info["points"] = json!(points);
            schema.insert(field.clone(), info);
        }
    }
    Ok(json!({
        "status": "green",
        "optimizer_status": "ok",
        "segments_count": s.shards,
        "points_count": stats.objects,
        "indexed_vectors_count": stats.vectors,
        "config": {
            "params": {
                "vectors": vectors,
                "shard_number": s.shards,
                "replication_factor": 1,
                "write_consistency_factor": 1,
                "on_disk_payload": false,
            },
            "hnsw_config": {
                "m": s.m, "ef_construct": s.ef_construction, "full_scan_threshold": 10000,
                "max_indexing_threads": 0, "on_disk": false,
            },
            "optimizer_config": {
                "deleted_threshold": 0.2, "vacuum_min_vector_number": 1000,
                "default_segment_number": 0, "max_segment_size": null, "memmap_threshold": null,
                "indexing_threshold": 10000, "flush_interval_sec": 5, "max_optimization_threads": null,
            },
            "wal_config": {"wal_capacity_mb": 32, "wal_segments_ahead": 0},
            "quantization_config": null,
            "metadata": form.meta.get("metadata").cloned().unwrap_or(Value::Null),
        },
        "payload_schema": schema,
    }))
}

#[utoipa::path(delete, path = "/collections/{name}", tag = "qdrant", params(("name" = String, Path)), responses((status = 200, description = "whether it existed")))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    api.run("http_delete_collection", &headers, Role::Write, move |cx| {
        Ok(Value::Bool(cx.db.drop_collection(&name)?))
    })
    .await
}

const SCHEMA_TYPES: &[&str] = &[
    "keyword", "integer", "float", "geo", "text", "bool", "datetime", "uuid",
];

/// `PUT /collections/{name}/index`: recorded and shown in `payload_schema`. Filters are
/// evaluated over the shard's objects in the engine either way (docs/http-api.md).
#[utoipa::path(put, path = "/collections/{name}/index", tag = "qdrant", params(("name" = String, Path)),
    request_body(content = Object, description = "`{field_name, field_schema}`"), responses((status = 200, description = "UpdateResult")))]
pub async fn create_index(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<WriteParams>,
    Body(body): Body<Map<String, Value>>,
) -> Response {
    api.run("http_create_index", &headers, Role::Write, move |cx| {
        params.check()?;
        if let Some(k) = body
            .keys()
            .find(|k| *k != "field_name" && *k != "field_schema")
        {
            return Err(ApiError::bad(format!(
                "unknown field `{k}` in the index request"
            )));
        }
        let field = body
            .get("field_name")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| ApiError::bad("`field_name` is required"))?;
        let (data_type, params) = match body.get("field_schema") {
            Some(Value::String(t)) => (t.clone(), Value::Null),
            Some(Value::Object(p)) => (
                p.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                Value::Object(p.clone()),
            ),
            _ => {
                return Err(ApiError::bad(
                    "`field_schema` is required (a type like \"keyword\", or {\"type\": ..})",
                ))
            }
        };
        if !SCHEMA_TYPES.contains(&data_type.as_str()) {
            return Err(ApiError::bad(format!(
                "unknown field_schema type `{data_type}` ({})",
                SCHEMA_TYPES.join(", ")
            )));
        }
        edit_schema(cx, &name, |schema| {
            let mut info = json!({"data_type": data_type});
            if !params.is_null() {
                info["params"] = params;
            }
            schema.insert(field.to_owned(), info);
        })
    })
    .await
}

#[utoipa::path(delete, path = "/collections/{name}/index/{field}", tag = "qdrant", params(("name" = String, Path), ("field" = String, Path)), responses((status = 200, description = "UpdateResult")))]
pub async fn delete_index(
    State(api): State<Arc<Api>>,
    Path((name, field)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    api.run("http_delete_index", &headers, Role::Write, move |cx| {
        edit_schema(cx, &name, |schema| {
            schema.remove(&field);
        })
    })
    .await
}

fn edit_schema(
    cx: &Cx<'_>,
    name: &str,
    edit: impl FnOnce(&mut Map<String, Value>),
) -> Result<Value, ApiError> {
    let form = Form::load(cx, name)?;
    let mut meta = match form.meta {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let schema = meta
        .entry("payload_schema")
        .or_insert_with(|| Value::Object(Map::new()));
    if !schema.is_object() {
        *schema = Value::Object(Map::new());
    }
    if let Some(s) = schema.as_object_mut() {
        edit(s);
    }
    cx.db.set_collection_meta(name, &Value::Object(meta))?;
    Ok(update_result(0))
}
