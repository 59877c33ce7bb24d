//! What is stored (table `plugins`, by name) and replicated (`LogWrite::Plugin`) about a
//! plugin. The component bytes are stored once per content hash (table `plugin_blobs`).

use serde::{Deserialize, Serialize};

use super::{Grants, World};

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// 1, 2, ... per name, in upload order.
    pub version: u32,
    /// SHA-256 of the component bytes.
    pub hash: [u8; 32],
    pub world: World,
    pub grants: Grants,
    pub size: u64,
    /// When it was uploaded (HLC, milliseconds in the upper bits) and on which node.
    pub hlc: u64,
    pub origin: u64,
}

/// A plugin: its versions, which one runs, whether it runs. Replicated as a whole under
/// last-write-wins by `(hlc, origin)`: every change (upload, enable, disable, rollback,
/// delete) writes the whole record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub versions: Vec<PluginVersion>,
    /// The version that runs.
    pub active: u32,
    pub enabled: bool,
    /// Deleted: kept as a tombstone so a delayed older change cannot bring it back.
    pub deleted: bool,
    /// Why it was disabled, when it was disabled automatically.
    pub note: Option<String>,
    /// The change's timestamp and node: the last-write-wins order.
    pub hlc: u64,
    pub origin: u64,
}

impl PluginRecord {
    pub fn order(&self) -> (u64, u64) {
        (self.hlc, self.origin)
    }

    pub fn active_version(&self) -> Option<&PluginVersion> {
        self.versions.iter().find(|v| v.version == self.active)
    }
}
