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

/// A plugin: its versions, which one runs, whether it runs. Every change (upload, enable,
/// disable, rollback, delete) writes the whole record; two records of one name are combined
/// by [`PluginRecord::merge`], the same on every node whatever the order they arrive in.
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
    /// The `(hlc, origin)` of the latest delete: versions uploaded before it are gone, even
    /// when a record that still lists them arrives late.
    pub cleared: (u64, u64),
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

    /// The version number the next upload gets.
    pub fn next_version(&self) -> u32 {
        self.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1
    }

    /// The record two changes of one plugin make together: the control fields (active,
    /// enabled, deleted, note) of the later change by `(hlc, origin)`; the versions of both,
    /// less those uploaded before the latest delete; where both name the same version number
    /// (uploaded on two nodes at once) the later upload keeps it. Commutative, associative
    /// and idempotent, so every node converges on one record.
    pub fn merge(&self, other: &PluginRecord) -> PluginRecord {
        // Two changes never share `(hlc, origin)`; the other fields only make the choice
        // total, so merging stays commutative even for a corrupt pair.
        let rank = |r: &PluginRecord| (r.order(), r.active, r.enabled, r.deleted, r.note.clone());
        let later = if rank(other) > rank(self) {
            other
        } else {
            self
        };
        let cleared = self.cleared.max(other.cleared);
        let mut versions: Vec<PluginVersion> = Vec::new();
        for v in self.versions.iter().chain(&other.versions) {
            if (v.hlc, v.origin) <= cleared {
                continue;
            }
            match versions.iter_mut().find(|k| k.version == v.version) {
                Some(k) if (v.hlc, v.origin) > (k.hlc, k.origin) => *k = v.clone(),
                Some(_) => {}
                None => versions.push(v.clone()),
            }
        }
        versions.sort_by_key(|v| v.version);
        PluginRecord {
            name: later.name.clone(),
            versions,
            cleared,
            ..later.clone()
        }
    }
}

impl From<&PluginRecord> for crate::model::PluginInfo {
    fn from(r: &PluginRecord) -> Self {
        crate::model::PluginInfo {
            name: r.name.clone(),
            active: r.active,
            enabled: r.enabled,
            note: r.note.clone(),
            versions: r
                .versions
                .iter()
                .map(|v| crate::model::PluginVersionInfo {
                    version: v.version,
                    world: v.world.to_string(),
                    grants: v.grants.names().into_iter().map(String::from).collect(),
                    sha256: v.hash.iter().map(|b| format!("{b:02x}")).collect(),
                    size: v.size,
                    uploaded_ms: crate::replication::hlc::Hlc::wall_ms(v.hlc),
                    origin: v.origin,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(version: u32, hlc: u64, origin: u64) -> PluginVersion {
        PluginVersion {
            version,
            hash: [version as u8 ^ hlc as u8; 32],
            world: World::Plugin,
            grants: Grants::default(),
            size: 1,
            hlc,
            origin,
        }
    }

    fn record() -> impl Strategy<Value = PluginRecord> {
        (
            proptest::collection::vec((1u32..4, 0u64..20, 0u64..3), 0..4),
            0u32..4,
            any::<bool>(),
            any::<bool>(),
            (0u64..20, 0u64..3),
            0u64..10,
        )
            .prop_map(|(vs, active, enabled, deleted, (hlc, origin), cleared)| {
                PluginRecord {
                    name: "p".into(),
                    versions: vs.into_iter().map(|(v, h, o)| version(v, h, o)).collect(),
                    active,
                    enabled,
                    deleted,
                    note: None,
                    cleared: (cleared, 0),
                    hlc,
                    origin,
                }
            })
    }

    proptest! {
        #[test]
        fn merging_converges(a in record(), b in record(), c in record()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            let m = a.merge(&b);
            prop_assert_eq!(m.merge(&m), m.clone());
            prop_assert_eq!(m.merge(&a), m.clone());
        }
    }

    #[test]
    fn a_late_record_does_not_bring_back_versions_deleted_since() {
        let old = PluginRecord {
            name: "p".into(),
            versions: vec![version(1, 1, 0), version(2, 2, 0)],
            active: 2,
            enabled: true,
            deleted: false,
            note: None,
            cleared: (0, 0),
            hlc: 2,
            origin: 0,
        };
        let after_delete = PluginRecord {
            versions: vec![version(1, 5, 1)],
            active: 1,
            cleared: (4, 1),
            hlc: 5,
            origin: 1,
            ..old.clone()
        };
        let m = old.merge(&after_delete);
        assert_eq!(m.versions, vec![version(1, 5, 1)]);
        assert_eq!(m.active, 1);
    }
}
