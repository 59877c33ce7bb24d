//! Plugins over HTTP (docs/plugins.md, docs/http-api.md): the protocol's plugin operations
//! (ops 19 to 25) behind REST routes, run by the same code as over QUIC
//! ([`plugin_op`]), so roles, checks and errors are the same.
//!
//! Answers are in the usual envelope, except a call's: the plugin's output bytes as they are,
//! `application/json` when they are JSON, else `application/octet-stream`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use vektagraf_proto::{ErrorCode, ErrorReply, Op, Reply};

use super::api::{ok, Api, ApiError};
use crate::model::Role;
use crate::server::handler::plugin_op;

/// Bytes, as they are.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

/// A request body taken as it is (a component, a call's input), up to the node's frame limit
/// (`node.max_frame_bytes`).
pub struct Raw(pub Vec<u8>);

impl FromRequest<Arc<Api>> for Raw {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Arc<Api>) -> Result<Self, ApiError> {
        let limit = api.shared.limits.max_frame_bytes;
        Bytes::from_request(req, api)
            .await
            .map(|b| Raw(Vec::from(b)))
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("Payload too large: the request body is larger than this node's limit of {limit} bytes (node.max_frame_bytes)"),
                    )
                } else {
                    ApiError::new(
                        e.status(),
                        format!("Request body rejected: {}", e.body_text()),
                    )
                }
            })
    }
}

/// The HTTP status of a protocol error code.
fn api_error(e: ErrorReply) -> ApiError {
    let (status, prefix) = match e.code {
        ErrorCode::BadRequest => (StatusCode::BAD_REQUEST, "Wrong input: "),
        ErrorCode::Unauthenticated => (StatusCode::UNAUTHORIZED, ""),
        ErrorCode::Forbidden => (StatusCode::FORBIDDEN, ""),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "Not found: "),
        ErrorCode::Conflict => (StatusCode::CONFLICT, ""),
        ErrorCode::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, ""),
        ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Payload too large: "),
        ErrorCode::Overloaded => (StatusCode::TOO_MANY_REQUESTS, ""),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, ""),
        // The plugin trapped, ran out of fuel, memory or time, or answered with an error: the
        // node is fine, and the same input would most likely fail again.
        ErrorCode::PluginFailed => (StatusCode::UNPROCESSABLE_ENTITY, ""),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, ""),
    };
    ApiError::new(status, format!("{prefix}{}", e.message))
}

/// Runs a plugin operation with the role the protocol gives it.
async fn run(
    api: &Arc<Api>,
    operation: &'static str,
    headers: &HeaderMap,
    op: Op,
    respond: fn(Reply, Instant) -> Response,
) -> Response {
    let needs = op.required_role().unwrap_or(Role::Read);
    api.run_with(
        operation,
        headers,
        needs,
        move |cx| plugin_op(cx.db, Some(cx.role), op, cx.deadline).map_err(api_error),
        respond,
    )
    .await
}

/// A request refused before it ran, counted like the others.
fn refuse(api: &Api, operation: &str, e: ApiError) -> Response {
    api.shared.metrics.error(operation, e.kind());
    e.into_response()
}

/// A reply in the envelope: a plugin, the list, or `true` for a delete.
fn envelope(reply: Reply, started: Instant) -> Response {
    let result = match reply {
        Reply::Plugin { plugin } => json!(plugin),
        Reply::Plugins { plugins } => json!(plugins),
        Reply::Done {} => Value::Bool(true),
        other => json!({"reply": other.name()}),
    };
    ok(result, started)
}

/// A call's output, unchanged.
fn output(reply: Reply, _started: Instant) -> Response {
    let Reply::Output { output } = reply else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a plugin call answered `{}`", reply.name()),
        )
        .into_response();
    };
    let json = serde_json::from_slice::<serde::de::IgnoredAny>(&output).is_ok();
    let content_type = if json {
        "application/json"
    } else {
        "application/octet-stream"
    };
    ([(header::CONTENT_TYPE, content_type)], output).into_response()
}

/// `?grant=write,clock` or `?grant=write&grant=clock`; no other parameter.
fn grants(params: Vec<(String, String)>) -> Result<Vec<String>, ApiError> {
    let mut grants = Vec::new();
    for (k, v) in params {
        if k != "grant" {
            return Err(ApiError::bad(format!(
                "unknown query parameter `{k}` (an upload takes `grant`)"
            )));
        }
        grants.extend(
            v.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(grants)
}

#[utoipa::path(post, path = "/plugins/{name}", tag = "vektagraf", operation_id = "plugin_upload",
    params(("name" = String, Path, description = "1 to 64 of a-z, 0-9, `-` and `_`"),
        ("grant" = Option<String>, Query, description = "`write`, `clock`, `random`: comma-separated, or the parameter repeated")),
    request_body(content = inline(Binary), content_type = "application/wasm", description = "The component (any content type is accepted)"),
    responses((status = 200, description = "The plugin with its new version, which now runs"),
        (status = 400, description = "not a component, a world or version this node does not run, an unknown grant, a bad name"),
        (status = 403, description = "needs the admin role"),
        (status = 413, description = "larger than `plugins.max_component_mib` or `node.max_frame_bytes`")))]
pub async fn upload(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    const OPERATION: &str = "http_plugin_upload";
    // Before reading the body: a caller who may not upload does not make the node buffer it.
    if let Err(e) = api.authorize(&headers, Role::Admin) {
        return refuse(&api, OPERATION, e);
    }
    let grants = match grants(params) {
        Ok(g) => g,
        Err(e) => return refuse(&api, OPERATION, e),
    };
    let wasm = match Raw::from_request(req, &api).await {
        Ok(Raw(b)) => b,
        Err(e) => return refuse(&api, OPERATION, e),
    };
    let op = Op::PluginUpload { name, wasm, grants };
    run(&api, OPERATION, &headers, op, envelope).await
}

#[utoipa::path(get, path = "/plugins", tag = "vektagraf", operation_id = "plugin_list",
    responses((status = 200, description = "Every plugin, by name: `[{name, active, enabled, note, versions: [{version, world, grants, sha256, size, uploaded_ms, origin}]}]`")))]
pub async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    run(
        &api,
        "http_plugin_list",
        &headers,
        Op::PluginList {},
        envelope,
    )
    .await
}

#[utoipa::path(get, path = "/plugins/{name}", tag = "vektagraf", operation_id = "plugin_show", params(("name" = String, Path)),
    responses((status = 200, description = "The plugin and all its versions"), (status = 404, description = "no such plugin")))]
pub async fn show(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(
        &api,
        "http_plugin_show",
        &headers,
        Op::PluginShow { name },
        envelope,
    )
    .await
}

#[utoipa::path(post, path = "/plugins/{name}/call", tag = "vektagraf", operation_id = "plugin_call", params(("name" = String, Path)),
    request_body(content = inline(Binary), content_type = "application/octet-stream", description = "The input bytes, passed to the plugin unchanged"),
    responses((status = 200, description = "The output bytes, unchanged and not in the envelope: `application/json` when they are JSON, else `application/octet-stream`", content_type = "application/octet-stream", body = inline(Binary)),
        (status = 400, description = "the plugin is disabled or is not a query plugin"),
        (status = 403, description = "the plugin has the `write` grant and the token only `read`"),
        (status = 404, description = "no such plugin"),
        (status = 422, description = "the plugin failed: a trap, fuel, memory, stack or deadline, or an error it answered with")))]
pub async fn call(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    const OPERATION: &str = "http_plugin_call";
    if let Err(e) = api.authorize(&headers, Role::Read) {
        return refuse(&api, OPERATION, e);
    }
    let input = match Raw::from_request(req, &api).await {
        Ok(Raw(b)) => b,
        Err(e) => return refuse(&api, OPERATION, e),
    };
    let op = Op::PluginCall { name, input };
    run(&api, OPERATION, &headers, op, output).await
}

#[utoipa::path(post, path = "/plugins/{name}/enable", tag = "vektagraf", operation_id = "plugin_enable", params(("name" = String, Path)),
    responses((status = 200, description = "The plugin, enabled"), (status = 404, description = "no such plugin")))]
pub async fn enable(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let op = Op::PluginEnable {
        name,
        enabled: true,
    };
    run(&api, "http_plugin_enable", &headers, op, envelope).await
}

#[utoipa::path(post, path = "/plugins/{name}/disable", tag = "vektagraf", operation_id = "plugin_disable", params(("name" = String, Path)),
    responses((status = 200, description = "The plugin, disabled: calls are refused until it is enabled"), (status = 404, description = "no such plugin")))]
pub async fn disable(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let op = Op::PluginEnable {
        name,
        enabled: false,
    };
    run(&api, "http_plugin_disable", &headers, op, envelope).await
}

#[utoipa::path(post, path = "/plugins/{name}/rollback/{version}", tag = "vektagraf", operation_id = "plugin_rollback",
    params(("name" = String, Path), ("version" = u32, Path, description = "A version the plugin has")),
    responses((status = 200, description = "The plugin, running `version` and enabled"), (status = 400, description = "no such version"), (status = 404, description = "no such plugin")))]
pub async fn rollback(
    State(api): State<Arc<Api>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Ok(version) = version.parse::<u32>() else {
        return ApiError::bad(format!(
            "the version must be a plugin version number (1, 2, ...), not `{version}`"
        ))
        .into_response();
    };
    let op = Op::PluginRollback { name, version };
    run(&api, "http_plugin_rollback", &headers, op, envelope).await
}

#[utoipa::path(delete, path = "/plugins/{name}", tag = "vektagraf", operation_id = "plugin_delete", params(("name" = String, Path)),
    responses((status = 200, description = "`true`: the plugin and its versions are gone, on every node"), (status = 404, description = "no such plugin")))]
pub async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let op = Op::PluginDelete { name };
    run(&api, "http_plugin_delete", &headers, op, envelope).await
}
