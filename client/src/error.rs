//! Why a call failed, in words a person can act on.

use std::time::Duration;

use vektagraf_proto::{ErrorCode, ErrorReply};

/// A failed call. Each variant that involves a node names it (`host:port`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration is unusable (no endpoints, a bad endpoint, a bad CA file...).
    #[error("{0}")]
    Config(String),
    /// No connection could be opened: the request was certainly not sent.
    #[error("node {endpoint}: cannot connect: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The connection broke while the request was in flight: it may or may not have been
    /// carried out (a write without an idempotency key is therefore not retried).
    #[error("node {endpoint}: connection lost: {reason}")]
    Disconnected { endpoint: String, reason: String },
    /// No answer within the request timeout (the node was told the same timeout).
    #[error("node {endpoint}: no answer within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    /// The node refused or failed the request; `error.code` says what can be done about it.
    #[error("node {endpoint}: {error}")]
    Server { endpoint: String, error: ErrorReply },
    /// The node answered something this client does not understand.
    #[error("node {endpoint}: protocol error: {reason}")]
    Protocol { endpoint: String, reason: String },
    /// Every node is down (health checks fail, breakers open); the text has the last error.
    #[error("no node available: {0}")]
    NoEndpoint(String),
}

impl ClientError {
    /// The node the error came from, if one did.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            ClientError::Connect { endpoint, .. }
            | ClientError::Disconnected { endpoint, .. }
            | ClientError::Timeout { endpoint, .. }
            | ClientError::Server { endpoint, .. }
            | ClientError::Protocol { endpoint, .. } => Some(endpoint),
            ClientError::Config(_) | ClientError::NoEndpoint(_) => None,
        }
    }

    /// The node's error code, for [`ClientError::Server`].
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { error, .. } => Some(error.code),
            _ => None,
        }
    }

    /// Whether the same request may succeed on another node or later: connection failures,
    /// timeouts, and server errors whose code says so ([`ErrorCode::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
            | ClientError::NoEndpoint(_) => true,
            ClientError::Server { error, .. } => error.code.is_retryable(),
            ClientError::Config(_) | ClientError::Protocol { .. } => false,
        }
    }

    /// Whether this outcome says the node is failing (it counts against its circuit
    /// breaker): connection failures, timeouts, protocol errors, and retryable server
    /// errors. Other server errors (bad request, not found, forbidden...) mean the node works.
    pub(crate) fn is_node_failure(&self) -> bool {
        match self {
            ClientError::Server { error, .. } => error.code.is_retryable(),
            ClientError::Config(_) | ClientError::NoEndpoint(_) => false,
            _ => true,
        }
    }
}
