//! The client protocol over QUIC: one connection per client (or several), one bidirectional
//! stream per request. Each stream: read one request frame (size checked from its header
//! before the body is read, and the whole frame due within `read_timeout`), authorise it, run
//! it on a blocking thread bounded by its deadline, write one response frame, finish.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vektagraf_proto::frame::{parse_header, FrameError, HEADER_LEN};
use vektagraf_proto::{encode_response, ErrorCode, ErrorReply, Op, Request, Response};

use super::handler::{describe, handle, Context};
use super::Shared;
use crate::auth::AuthError;

/// Close codes a client may see on its connection.
pub const CLOSE_SHUTDOWN: u32 = 1;
pub const CLOSE_TOO_MANY: u32 = 2;
/// STOP_SENDING code when a request frame is refused before all of it was read.
pub const STOP_REFUSED: u32 = 3;

/// Accepts connections until `stop` fires.
pub async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let shared = shared.clone();
        let stop = stop.clone();
        shared.tracker.clone().spawn(async move {
            let remote = incoming.remote_address();
            let connecting = match incoming.accept() {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "handshake refused");
                    return;
                }
            };
            let conn = match tokio::time::timeout(shared.limits.read_timeout, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "handshake timed out");
                    return;
                }
            };
            let span = tracing::debug_span!("connection", %remote);
            serve_connection(conn, shared, stop).instrument(span).await;
        });
    }
}

/// Counts a connection for its lifetime.
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.active_connections.dec();
    }
}

async fn serve_connection(conn: Connection, shared: Arc<Shared>, stop: CancellationToken) {
    let max = shared.limits.max_connections;
    if shared.connections.fetch_add(1, Ordering::Relaxed) >= max {
        shared.connections.fetch_sub(1, Ordering::Relaxed);
        shared.metrics.connections_refused.inc();
        let reason =
            format!("node at its connection limit ({max} connections); try later or another node");
        conn.close(VarInt::from_u32(CLOSE_TOO_MANY), reason.as_bytes());
        return;
    }
    shared.metrics.active_connections.inc();
    let _active = Active(&shared);
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            s = conn.accept_bi() => s,
        };
        match stream {
            Ok((send, recv)) => {
                let shared = shared.clone();
                shared
                    .tracker
                    .clone()
                    .spawn(serve_stream(send, recv, shared));
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection ended");
                return;
            }
        }
    }
    // Shutting down: requests already accepted finish (they are tracked); the endpoint closes
    // the connection after them.
}

/// Why a request frame could not be read.
enum ReadFailure {
    /// The client went away or reset the stream: nobody to answer.
    Gone,
    /// Answer with this error.
    Refuse(ErrorReply),
}

async fn read_frame(recv: &mut RecvStream, max: u64) -> Result<Vec<u8>, ReadFailure> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(0) => ReadFailure::Gone,
        quinn::ReadExactError::FinishedEarly(n) => ReadFailure::Refuse(ErrorReply::new(
            ErrorCode::BadRequest,
            format!("truncated frame: the stream ended after {n} byte(s) of the 5-byte header"),
        )),
        quinn::ReadExactError::ReadError(_) => ReadFailure::Gone,
    })?;
    let len = parse_header(header, max).map_err(|e| {
        let code = match e {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::BadRequest,
        };
        ReadFailure::Refuse(ErrorReply::new(code, e.to_string()))
    })?;
    // Grow with what actually arrives, so a header that promises a large frame costs nothing
    // until its bytes come.
    let mut body = Vec::with_capacity(len.min(1 << 20));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(ReadFailure::Refuse(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!(
                        "truncated frame: the header announced {len} body bytes, the stream ended after {}",
                        body.len()
                    ),
                )))
            }
            Err(_) => return Err(ReadFailure::Gone),
        }
    }
    Ok(body)
}

/// Writes the answer and waits (briefly) until the client has it, so a shutdown that follows
/// does not discard an answer still in flight.
async fn respond(mut send: SendStream, response: &Response, max_frame: u64) {
    let mut bytes = encode_response(response);
    if bytes.len() as u64 > max_frame {
        let e = ErrorReply::new(
            ErrorCode::TooLarge,
            format!(
                "the answer is {} bytes, more than this node's frame limit of {max_frame} bytes; ask for fewer rows or a smaller k",
                bytes.len()
            ),
        );
        bytes = encode_response(&Err(e));
    }
    // A client that left cannot be answered; nothing else to do.
    if send.write_all(&bytes).await.is_err() || send.finish().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
}

fn auth_error(e: AuthError) -> ErrorReply {
    let code = match e {
        AuthError::Forbidden { .. } => ErrorCode::Forbidden,
        _ => ErrorCode::Unauthenticated,
    };
    ErrorReply::new(code, e.to_string())
}

async fn serve_stream(send: SendStream, mut recv: RecvStream, shared: Arc<Shared>) {
    let started = Instant::now();
    let limits = &shared.limits;
    let body = match tokio::time::timeout(
        limits.read_timeout,
        read_frame(&mut recv, limits.max_frame_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(ReadFailure::Gone)) => {
            shared.metrics.error("unknown", "client_gone");
            return;
        }
        Ok(Err(ReadFailure::Refuse(e))) => {
            shared.metrics.error("unknown", e.code.name());
            let _ = recv.stop(VarInt::from_u32(STOP_REFUSED));
            respond(send, &Err(e), limits.max_frame_bytes).await;
            return;
        }
        Err(_) => {
            shared.metrics.error("unknown", "read_timeout");
            let _ = recv.stop(VarInt::from_u32(STOP_REFUSED));
            let e = ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "the request frame did not arrive within {} ms",
                    limits.read_timeout.as_millis()
                ),
            );
            respond(send, &Err(e), limits.max_frame_bytes).await;
            return;
        }
    };
    let request = match Request::decode(&body) {
        Ok(r) => r,
        Err(e) => {
            shared.metrics.error("unknown", "bad_request");
            let e = ErrorReply::new(ErrorCode::BadRequest, format!("malformed request: {e}"));
            respond(send, &Err(e), limits.max_frame_bytes).await;
            return;
        }
    };
    let operation = request.op.name();
    let response = run(&shared, request, started)
        .instrument(tracing::debug_span!("request", operation))
        .await;
    shared.metrics.observe(
        operation,
        started.elapsed(),
        response.as_ref().err().map(|e| e.code.name()),
    );
    respond(send, &response, shared.limits.max_frame_bytes).await;
}

/// Authorises and runs a decoded request within its deadline.
async fn run(shared: &Arc<Shared>, request: Request, started: Instant) -> Response {
    let role = match request.op.required_role() {
        Some(needs) => Some(
            shared
                .db
                .tokens()
                .authorize(&request.token, needs, describe(&request.op))
                .map_err(auth_error)?,
        ),
        None => None,
    };
    let limits = &shared.limits;
    let timeout = match request.timeout_ms {
        0 => limits.default_timeout,
        ms => Duration::from_millis(u64::from(ms)).min(limits.max_timeout),
    };
    let deadline = started + timeout;
    let worker = {
        let shared = shared.clone();
        let op: Op = request.op;
        tokio::task::spawn_blocking(move || {
            let cx = Context {
                db: &shared.db,
                limits: &shared.limits,
                idempotency: &shared.idempotency,
                ready: shared.is_ready(),
                replication: shared.replication.as_deref(),
                role,
            };
            handle(&cx, op, deadline)
        })
    };
    // Engine calls stop at the deadline by themselves; a write already in its commit is not
    // interrupted, so give the work a little slack before answering for it.
    let slack = Duration::from_millis(250);
    match tokio::time::timeout_at((deadline + slack).into(), worker).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("the request handler failed: {e}"),
        )),
        Err(_) => Err(ErrorReply::new(
            ErrorCode::DeadlineExceeded,
            format!(
                "no answer within the request's {} ms (a write may still commit)",
                timeout.as_millis()
            ),
        )),
    }
}
