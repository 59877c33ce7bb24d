//! The configuration as written: every key optional, unknown keys rejected.

use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, DatabaseConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    storage: RawStorage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    memory_limit_mib: Option<u64>,
    query_timeout_ms: Option<u64>,
    apply_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    snapshot_every_ops: Option<u64>,
    group_commit_max: Option<usize>,
}

impl RawConfig {
    pub(crate) fn validate(self, file: &str) -> Result<DatabaseConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            file: file.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let mut c = DatabaseConfig::default();
        if let Some(mib) = self.engine.memory_limit_mib {
            if !(16..=4096).contains(&mib) {
                return Err(invalid(
                    "engine.memory_limit_mib",
                    "must be between 16 and 4096 (Wasm32 addresses at most 4 GiB)",
                ));
            }
            c.engine.memory_limit_bytes = mib << 20;
        }
        for (key, value, slot) in [
            (
                "engine.query_timeout_ms",
                self.engine.query_timeout_ms,
                &mut c.engine.query_timeout,
            ),
            (
                "engine.apply_timeout_ms",
                self.engine.apply_timeout_ms,
                &mut c.engine.apply_timeout,
            ),
        ] {
            if let Some(ms) = value {
                if ms < 10 {
                    return Err(invalid(key, "must be at least 10 (milliseconds)"));
                }
                *slot = Duration::from_millis(ms);
            }
        }
        if let Some(n) = self.storage.snapshot_every_ops {
            c.snapshot_every_ops = n;
        }
        if let Some(n) = self.storage.group_commit_max {
            if n == 0 {
                return Err(invalid("storage.group_commit_max", "must be at least 1"));
            }
            c.group_commit_max = n;
        }
        Ok(c)
    }
}
