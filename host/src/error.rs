//! The library's error type. Every variant says what was wrong in terms a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is wrong (bad vector, unknown collection, bad filter...). Nothing was written.
    #[error("{0}")]
    Invalid(String),
    #[error("collection `{0}` does not exist")]
    UnknownCollection(String),
    /// An object a request starts from (a traversal's start) does not exist.
    #[error("object `{id}` does not exist in collection `{collection}`")]
    UnknownObject { collection: String, id: String },
    /// The commit queue is full: too many writes are waiting. Nothing was written.
    #[error("the node is busy: {0} writes are already waiting to commit; retry shortly")]
    Overloaded(usize),
    #[error("there is no plugin `{0}`")]
    UnknownPlugin(String),
    /// An upload or request over a configured size limit. Nothing was written.
    #[error("{0}")]
    TooLarge(String),
    #[error("collection `{name}` already exists with other parameters ({existing})")]
    CollectionConflict { name: String, existing: String },
    /// The data directory was written by a newer Vektagraf, or is not a Vektagraf directory.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("storage: {0}")]
    Storage(String),
    /// The engine trapped, ran out of memory or time. The shard was recovered and the call had
    /// no effect.
    #[error("engine failed on collection `{collection}` shard {shard}: {reason}")]
    EngineTrap {
        collection: String,
        shard: u32,
        reason: String,
    },
    /// A shard could not be recovered; its collection answers with this until reopened.
    #[error("collection `{collection}` shard {shard} is unavailable: {reason}")]
    Unavailable {
        collection: String,
        shard: u32,
        reason: String,
    },
    #[error("engine: {0}")]
    Engine(String),
    #[error("the database is closed")]
    Closed,
    /// The caller's deadline passed before the work was done (a write refused this way was
    /// not applied).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::model::InvalidInput> for Error {
    fn from(e: crate::model::InvalidInput) -> Self {
        Error::Invalid(e.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    postcard::Error
);
