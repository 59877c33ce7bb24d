//! Vektagraf configuration: raw TOML ([`raw`]) is parsed with unknown keys rejected, then
//! validated once into the typed, ready-to-use [`DatabaseConfig`]. Every error names the file,
//! the key and the reason.
//!
//! ```toml
//! [engine]
//! memory_limit_mib = 4096     # per engine instance (one per shard)
//! query_timeout_ms = 10000    # epoch deadline of a query call
//! apply_timeout_ms = 120000   # epoch deadline of a write or rebuild call
//!
//! [storage]
//! snapshot_every_ops = 50000  # write index snapshots after this many logged mutations
//! group_commit_max = 64       # most write batches folded into one durable commit
//! ```

use std::path::Path;
use std::time::Duration;

mod raw;

/// What can go wrong reading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// Limits applied to every engine instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLimits {
    /// Most linear memory one instance may grow to. Wasm32 cannot address more than 4 GiB.
    pub memory_limit_bytes: u64,
    pub query_timeout: Duration,
    pub apply_timeout: Duration,
}

/// The validated configuration of an embedded database (and, later, of a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub engine: EngineLimits,
    pub snapshot_every_ops: u64,
    pub group_commit_max: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            engine: EngineLimits {
                memory_limit_bytes: 4096 << 20,
                query_timeout: Duration::from_secs(10),
                apply_timeout: Duration::from_secs(120),
            },
            snapshot_every_ops: 50_000,
            group_commit_max: 64,
        }
    }
}

impl DatabaseConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&file, &text)
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_keys_override() {
        assert_eq!(
            DatabaseConfig::from_toml("a.toml", "").expect("empty"),
            DatabaseConfig::default()
        );
        let c = DatabaseConfig::from_toml("a.toml", "[engine]\nmemory_limit_mib = 64\n")
            .expect("valid");
        assert_eq!(c.engine.memory_limit_bytes, 64 << 20);
        assert_eq!(
            c.snapshot_every_ops,
            DatabaseConfig::default().snapshot_every_ops
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = DatabaseConfig::from_toml("node.toml", "[engine]\nmemory_limit_mib = 8192\n")
            .expect_err("too big");
        assert_eq!(e.to_string(), "node.toml: `engine.memory_limit_mib`: must be between 16 and 4096 (Wasm32 addresses at most 4 GiB)");
        let e = DatabaseConfig::from_toml("node.toml", "[engine]\nmemory_limt_mib = 1\n")
            .expect_err("typo");
        let msg = e.to_string();
        assert!(
            msg.starts_with("node.toml: ") && msg.contains("unknown field `memory_limt_mib`"),
            "{msg}"
        );
        let e = DatabaseConfig::from_toml("node.toml", "[storage]\ngroup_commit_max = 0\n")
            .expect_err("zero");
        assert_eq!(
            e.to_string(),
            "node.toml: `storage.group_commit_max`: must be at least 1"
        );
    }
}
