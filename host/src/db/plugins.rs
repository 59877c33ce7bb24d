//! Plugins in the database: changes go through the committer as logged transactions of their
//! own (`LogWrite::Plugin`), so they replicate like any write; calls run on the caller's
//! thread in a fresh sandboxed instance (plugins/).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::plugins::registry::Verdict;
use crate::plugins::sandbox::HandlerCall;
use crate::plugins::{Grants, PluginError, PluginRecord, PluginVersion, World};
use crate::store::records::LogWrite;
use crate::store::WriteTxn;

use super::commit::{Committer, Job};
use super::engine::ENGINE_PLUGIN;
use super::Database;

/// A change an admin (or the fault counter) makes to one plugin.
pub(crate) enum PluginChange {
    /// A new version, checked and compiled already; it becomes the running one.
    Upload {
        name: String,
        wasm: Vec<u8>,
        hash: [u8; 32],
        world: World,
        grants: Grants,
    },
    Enable {
        name: String,
        enabled: bool,
        note: Option<String>,
    },
    Rollback {
        name: String,
        version: u32,
    },
    Delete {
        name: String,
    },
}

impl PluginChange {
    fn name(&self) -> &str {
        match self {
            PluginChange::Upload { name, .. }
            | PluginChange::Enable { name, .. }
            | PluginChange::Rollback { name, .. }
            | PluginChange::Delete { name } => name,
        }
    }
}

/// Plugin names: what a URL path and a metric label carry without escaping.
pub fn check_plugin_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "plugin name `{name}`: use 1 to 64 of a-z, 0-9, `-` and `_`"
        )))
    }
}

impl Committer {
    /// Carries out one change as its own logged transaction; the record as stored after it.
    pub(super) fn change_plugin(&mut self, change: PluginChange) -> Result<PluginRecord> {
        let name = change.name().to_owned();
        let origin = self.origin;
        let mut out = None;
        self.commit_alone(|txn, hlc| {
            let current = txn.plugin(&name)?;
            let live = current.clone().filter(|r| !r.deleted);
            let missing = || Error::UnknownPlugin(name.clone());
            let (record, blob) = match change {
                PluginChange::Upload {
                    name,
                    wasm,
                    hash,
                    world,
                    grants,
                } => {
                    let base = live.clone();
                    let version = PluginVersion {
                        version: base.as_ref().map_or(1, |r| r.next_version()),
                        hash,
                        world,
                        grants,
                        size: wasm.len() as u64,
                        hlc,
                        origin,
                    };
                    let mut versions = base.map(|r| r.versions).unwrap_or_default();
                    let active = version.version;
                    versions.push(version);
                    let cleared = current.as_ref().map_or((0, 0), |r| r.cleared);
                    let blob = Some((hash, wasm));
                    let record = PluginRecord {
                        name,
                        versions,
                        active,
                        enabled: true,
                        deleted: false,
                        note: None,
                        cleared,
                        hlc,
                        origin,
                    };
                    (record, blob)
                }
                PluginChange::Enable { enabled, note, .. } => {
                    let r = live.ok_or_else(missing)?;
                    let record = PluginRecord {
                        enabled,
                        note,
                        hlc,
                        origin,
                        ..r
                    };
                    (record, None)
                }
                PluginChange::Rollback { version, .. } => {
                    let r = live.ok_or_else(missing)?;
                    if !r.versions.iter().any(|v| v.version == version) {
                        let known: Vec<String> =
                            r.versions.iter().map(|v| v.version.to_string()).collect();
                        return Err(Error::invalid(format!(
                            "plugin `{name}` has no version {version} (it has {})",
                            known.join(", ")
                        )));
                    }
                    let record = PluginRecord {
                        active: version,
                        enabled: true,
                        note: None,
                        hlc,
                        origin,
                        ..r
                    };
                    (record, None)
                }
                PluginChange::Delete { .. } => {
                    let r = live.ok_or_else(missing)?;
                    let record = PluginRecord {
                        versions: Vec::new(),
                        active: 0,
                        enabled: false,
                        deleted: true,
                        note: None,
                        cleared: (hlc, origin),
                        hlc,
                        origin,
                        ..r
                    };
                    (record, None)
                }
            };
            if let Some((hash, bytes)) = &blob {
                if !txn.has_plugin_blob(hash)? {
                    txn.put_plugin_blob(hash, bytes)?;
                }
            }
            txn.put_plugin(&record)?;
            if record.deleted {
                txn.prune_plugin_blobs()?;
            }
            out = Some(record.clone());
            Ok(LogWrite::Plugin {
                record,
                blob: blob.map(|(_, bytes)| bytes),
            })
        })?;
        let record = out.ok_or_else(|| Error::Storage("a plugin change stored nothing".into()))?;
        self.inner.plugins.installed(record.clone());
        if record.name == ENGINE_PLUGIN {
            self.engine_changed();
        }
        Ok(record)
    }
}

impl Committer {
    /// Disables the resolvers that reached their fault threshold during the last commits.
    pub(super) fn disable_faulty_resolvers(&mut self) {
        for (name, note) in self.inner.plugins.take_to_disable() {
            tracing::warn!(plugin = %name, %note, "disabling a faulty resolver");
            let change = PluginChange::Enable {
                name: name.clone(),
                enabled: false,
                note: Some(note),
            };
            if let Err(e) = self.change_plugin(change) {
                tracing::error!(plugin = %name, error = %e, "disabling a faulty resolver failed");
            }
        }
    }

    /// Installs a plugin record merged from another node and compiles its running version in
    /// the background, so the first call does not wait for it.
    pub(super) fn plugin_arrived(&mut self, record: PluginRecord) {
        let name = record.name.clone();
        self.inner.plugins.installed(record);
        if name == ENGINE_PLUGIN {
            self.engine_changed();
            return;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("vektagraf-plugin-warm".into())
            .spawn(move || inner.plugins.warm(&name));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start compiling a replicated plugin");
        }
    }
}

/// Merges a plugin record from another node (a log entry or a state export) into the stored
/// one; the merged record, to install once committed.
pub(super) fn merge_plugin(
    txn: &mut WriteTxn,
    incoming: &PluginRecord,
    blob: Option<&[u8]>,
) -> Result<PluginRecord> {
    if let Some(b) = blob {
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b).into();
        if incoming.versions.iter().any(|v| v.hash == hash) && !txn.has_plugin_blob(&hash)? {
            txn.put_plugin_blob(&hash, b)?;
        }
    }
    let merged = match txn.plugin(&incoming.name)? {
        Some(stored) => stored.merge(incoming),
        None => incoming.merge(incoming),
    };
    txn.put_plugin(&merged)?;
    if merged.deleted {
        txn.prune_plugin_blobs()?;
    }
    Ok(merged)
}

impl Database {
    /// Checks, compiles and stores a new version of plugin `name` (created if new), which
    /// then runs on every node. Refused without effect if the component is too large, not
    /// a component, or not of a world and version this node runs.
    pub fn plugin_upload(&self, name: &str, wasm: Vec<u8>, grants: Grants) -> Result<PluginRecord> {
        check_plugin_name(name)?;
        let compiled = self.inner.plugins.compile(&wasm)?;
        let world = compiled.world;
        match (world == World::Engine, name == ENGINE_PLUGIN) {
            (true, true) => super::engine::check_upload(&self.inner, &wasm)?,
            (false, false) => {}
            (true, false) => {
                return Err(Error::invalid(format!(
                    "this is an engine component: upload it as the plugin named `{ENGINE_PLUGIN}`"
                )))
            }
            (false, true) => {
                return Err(Error::invalid(format!(
                "the plugin named `{ENGINE_PLUGIN}` must be an engine component; this is a {world}"
            )))
            }
        }
        if world == World::Resolver && grants != Grants::default() {
            return Err(Error::invalid(
                "a resolver cannot be granted anything: it must be deterministic",
            ));
        }
        self.submit(|reply| {
            Job::Plugin(
                PluginChange::Upload {
                    name: name.to_owned(),
                    wasm,
                    hash: compiled.hash,
                    world,
                    grants,
                },
                reply,
            )
        })
    }

    /// Every plugin, by name.
    pub fn plugins(&self) -> Vec<PluginRecord> {
        self.inner.plugins.list()
    }

    pub fn plugin(&self, name: &str) -> Result<PluginRecord> {
        self.inner.plugins.get(name)
    }

    pub fn plugin_enable(&self, name: &str, enabled: bool) -> Result<PluginRecord> {
        self.plugin_change(PluginChange::Enable {
            name: name.to_owned(),
            enabled,
            note: None,
        })
    }

    /// Makes an earlier (or later) uploaded version the running one, and enables it.
    pub fn plugin_rollback(&self, name: &str, version: u32) -> Result<PluginRecord> {
        self.plugin_change(PluginChange::Rollback {
            name: name.to_owned(),
            version,
        })
    }

    pub fn plugin_delete(&self, name: &str) -> Result<()> {
        self.plugin_change(PluginChange::Delete {
            name: name.to_owned(),
        })
        .map(|_| ())
    }

    fn plugin_change(&self, change: PluginChange) -> Result<PluginRecord> {
        self.submit(|reply| Job::Plugin(change, reply))
    }

    /// Calls query plugin `name` with `input`, on this thread, by `deadline` at the latest.
    /// A plugin that reaches `plugins.disable_after_faults` faults in a row is disabled on
    /// every node.
    pub fn plugin_call(
        &self,
        name: &str,
        input: &[u8],
        deadline: Option<Instant>,
    ) -> std::result::Result<Vec<u8>, PluginError> {
        let db = self.handle().ok_or(PluginError::Closed)?;
        let call = HandlerCall {
            name: name.to_owned(),
            db,
            grants: Grants::default(),
            deadline,
        };
        let (result, verdict) = self.inner.plugins.call(call, input);
        if let Verdict::Disable(note) = verdict {
            self.disable_faulty(name, note);
        }
        result
    }

    fn disable_faulty(&self, name: &str, note: String) {
        tracing::warn!(plugin = %name, %note, "disabling a faulty plugin");
        let change = PluginChange::Enable {
            name: name.to_owned(),
            enabled: false,
            note: Some(note),
        };
        if let Err(e) = self.plugin_change(change) {
            tracing::error!(plugin = %name, error = %e, "disabling a faulty plugin failed");
        }
    }

    /// Plugin call metrics (registered by the node with its Prometheus registry).
    pub fn plugin_metrics(&self) -> &crate::plugins::metrics::PluginMetrics {
        self.inner.plugins.metrics()
    }
}
