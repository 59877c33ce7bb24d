//! What every handler of the HTTP data API shares: Qdrant's envelope
//! (`{"result": .., "status": "ok", "time": seconds}`) and error body
//! (`{"status": {"error": ".."}, "time": ..}`), authentication by `api-key` header or bearer
//! token, JSON bodies with clear errors, the request limit (429) and the run of a request on
//! the blocking pool under the node's deadline.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;

use crate::auth::AuthError;
use crate::db::Bounded;
use crate::error::Error;
use crate::model::Role;
use crate::server::Shared;
use crate::Database;

/// A refused or failed request, as Qdrant words it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 with Qdrant's "Bad request" prefix.
    pub fn bad(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, format!("Bad request: {message}"))
    }

    /// 400 for a Qdrant feature this node does not have: named, never silently ignored.
    pub fn unsupported(feature: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Bad request: {feature} is not supported by Vektagraf's Qdrant-compatible API (see docs/http-api.md)"),
        )
    }

    pub fn missing_collection(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Not found: Collection `{name}` doesn't exist!"),
        )
    }

    /// The label counted in `vektagraf_request_errors_total{kind}`.
    pub(super) fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNPROCESSABLE_ENTITY => "plugin_failed",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::TOO_MANY_REQUESTS => "overloaded",
            StatusCode::GATEWAY_TIMEOUT => "deadline_exceeded",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::UnknownCollection(name) => return Self::missing_collection(name),
            Error::UnknownObject { .. } | Error::UnknownPlugin(_) => StatusCode::NOT_FOUND,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::CollectionConflict { .. } => StatusCode::CONFLICT,
            Error::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::Unavailable { .. } | Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let prefix = match status {
            StatusCode::BAD_REQUEST => "Wrong input: ",
            StatusCode::NOT_FOUND => "Not found: ",
            _ => "",
        };
        Self::new(status, format!("{prefix}{e}"))
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = match e {
            AuthError::Missing => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        };
        let message = match e {
            AuthError::Missing => {
                "Must provide an API key or an Authorization bearer token".to_owned()
            }
            other => other.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"status": {"error": self.message}, "time": 0.0})),
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Qdrant's success envelope.
pub fn ok(result: Value, started: Instant) -> Response {
    Json(json!({
        "result": result,
        "status": "ok",
        "time": started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

/// The answer to any path this API does not have.
pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "Not found: {} {} is not an endpoint of this node (see docs/http-api.md)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A JSON request body. Syntax errors, wrong types and unknown fields are a 400 that names
/// what was wrong; an empty body reads as `{}`.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            ApiError::new(status, format!("Request body rejected: {}", e.body_text()))
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("Format error in JSON body: {e}")))
    }
}

/// Fields a read request may also carry, which change nothing here.
const READ_OPTIONS: &[&str] = &["consistency", "timeout"];

/// Refuses body fields a write does not know (`known` lists those it does): Qdrant features
/// this API lacks get a 400 that names them, anything else a 400 "unknown field". A field
/// given as `null` counts as absent.
pub fn check_fields(body: &Map<String, Value>, known: &[&str], what: &str) -> Result<(), ApiError> {
    refuse_unknown(body, |k| known.contains(&k), what)
}

/// [`check_fields`] for reads, which may also carry `consistency` and `timeout`.
pub fn check_read_fields(
    body: &Map<String, Value>,
    known: &[&str],
    what: &str,
) -> Result<(), ApiError> {
    refuse_unknown(
        body,
        |k| known.contains(&k) || READ_OPTIONS.contains(&k),
        what,
    )
}

fn refuse_unknown(
    body: &Map<String, Value>,
    known: impl Fn(&str) -> bool,
    what: &str,
) -> Result<(), ApiError> {
    match body.iter().find(|(k, v)| !known(k) && !v.is_null()) {
        None => Ok(()),
        Some((k, _)) => Err(match k.as_str() {
            "shard_key" => ApiError::unsupported("sharding keys (`shard_key`)"),
            "order_by" => ApiError::unsupported("`order_by` (scroll returns points in id order)"),
            "update_filter" => ApiError::unsupported("conditional updates (`update_filter`)"),
            _ => ApiError::bad(format!("unknown field `{k}` in {what}")),
        }),
    }
}

/// What handlers share: the node, and the permits that bound requests in flight.
pub(crate) struct Api {
    pub shared: Arc<Shared>,
    pub(super) permits: Arc<Semaphore>,
}

/// What the work of one request sees on the blocking pool.
pub struct Cx<'a> {
    pub db: &'a Database,
    /// The caller's role (its token passed the endpoint's check).
    pub role: Role,
    pub reads: Bounded<'a>,
    pub deadline: Instant,
    pub max_rows: usize,
    pub max_batch: usize,
}

impl Api {
    pub fn new(shared: Arc<Shared>) -> Self {
        let permits = usize::try_from(shared.limits.max_http_requests).unwrap_or(usize::MAX);
        Self {
            shared,
            permits: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// Checks the caller's token against the role an endpoint needs; the token's role.
    pub fn authorize(&self, headers: &HeaderMap, needs: Role) -> Result<Role, ApiError> {
        let token = token(headers);
        let what = match needs {
            Role::Admin => "administer",
            Role::Write => "write",
            _ => "read",
        };
        self.shared
            .db
            .tokens()
            .authorize(token.unwrap_or(""), needs, what)
            .map_err(ApiError::from)
    }

    /// Runs one request: authorisation, a permit (429 when none is left), the work on the
    /// blocking pool under the node's default deadline, metrics, and the envelope.
    pub async fn run(
        self: &Arc<Self>,
        operation: &'static str,
        headers: &HeaderMap,
        needs: Role,
        work: impl FnOnce(&Cx<'_>) -> Result<Value, ApiError> + Send + 'static,
    ) -> Response {
        self.run_with(operation, headers, needs, work, ok).await
    }

    /// [`Api::run`] with an answer of another shape than the envelope: `respond` makes the
    /// response of what the work returned (errors are answered as always).
    pub async fn run_with<T: Send + 'static>(
        self: &Arc<Self>,
        operation: &'static str,
        headers: &HeaderMap,
        needs: Role,
        work: impl FnOnce(&Cx<'_>) -> Result<T, ApiError> + Send + 'static,
        respond: impl FnOnce(T, Instant) -> Response,
    ) -> Response {
        let started = Instant::now();
        let result = self.run_inner(headers, needs, work).await;
        let metrics = &self.shared.metrics;
        match result {
            Ok(v) => {
                metrics.observe(operation, started.elapsed(), None);
                respond(v, started)
            }
            Err(e) => {
                metrics.observe(operation, started.elapsed(), Some(e.kind()));
                e.into_response()
            }
        }
    }

    async fn run_inner<T: Send + 'static>(
        self: &Arc<Self>,
        headers: &HeaderMap,
        needs: Role,
        work: impl FnOnce(&Cx<'_>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let role = self.authorize(headers, needs)?;
        // Held by the work itself: a client that goes away does not free it early.
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many requests: this node serves at most {} HTTP requests at once; retry shortly",
                    self.shared.limits.max_http_requests
                ),
            )
        })?;
        let api = self.clone();
        let deadline = Instant::now() + api.shared.limits.default_timeout;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let db: &Database = &api.shared.db;
            let cx = Cx {
                db,
                role,
                reads: db.until(Some(deadline)),
                deadline,
                max_rows: usize::try_from(api.shared.limits.max_query_rows).unwrap_or(usize::MAX),
                max_batch: usize::try_from(api.shared.limits.max_batch_writes)
                    .unwrap_or(usize::MAX),
            };
            work(&cx)
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the request failed inside the node: {e}"),
            )
        })?
    }
}

/// The token of a request: the `api-key` header, or `Authorization: Bearer ..`.
fn token(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
}

/// `?wait=..` and friends: accepted, since every write here is durable before it is answered.
#[derive(Debug, Default, serde::Deserialize)]
pub struct WriteParams {
    /// Accepted and parsed (a bad value is a 400); every write is durable when answered.
    #[serde(default)]
    #[allow(dead_code)]
    pub wait: Option<bool>,
    #[serde(default)]
    pub ordering: Option<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl WriteParams {
    pub fn check(&self) -> Result<(), ApiError> {
        if self.timeout == Some(0) {
            return Err(ApiError::bad("`timeout` must be at least 1 second"));
        }
        match self.ordering.as_deref() {
            None | Some("weak") | Some("medium") | Some("strong") => Ok(()),
            Some(other) => Err(ApiError::bad(format!(
                "unknown write ordering `{other}` (weak, medium or strong)"
            ))),
        }
    }
}

/// The answer of every write: Qdrant's `UpdateResult`.
pub fn update_result(operation_id: u64) -> Value {
    json!({"operation_id": operation_id, "status": "completed"})
}
