//! The `plugins` and `plugin_blobs` tables: plugin records by name and component bytes by
//! content hash. Written with the log entry that carries the change (`LogWrite::Plugin`).

use redb::{ReadableDatabase, ReadableTable};

use super::records::{decode, encode, Record};
use super::{Store, WriteTxn, PLUGINS, PLUGIN_BLOBS};
use crate::error::Result;
use crate::plugins::PluginRecord;

impl Record for PluginRecord {}

impl Store {
    /// Every plugin record, deleted ones (tombstones) included, by name.
    pub fn plugins(&self) -> Result<Vec<PluginRecord>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(PLUGINS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(decode("plugin", v.value())?);
        }
        Ok(out)
    }

    /// A component's bytes by their SHA-256.
    pub fn plugin_blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let txn = self.redb().begin_read()?;
        let table = txn.open_table(PLUGIN_BLOBS)?;
        Ok(table.get(hash.as_slice())?.map(|v| v.value().to_vec()))
    }
}

impl WriteTxn {
    pub fn plugin(&self, name: &str) -> Result<Option<PluginRecord>> {
        let table = self.txn.open_table(PLUGINS)?;
        let got = table.get(name)?;
        got.map(|v| decode("plugin", v.value())).transpose()
    }

    pub fn put_plugin(&mut self, record: &PluginRecord) -> Result<()> {
        self.fault("put_plugin")?;
        self.txn
            .open_table(PLUGINS)?
            .insert(record.name.as_str(), encode(record)?.as_slice())?;
        Ok(())
    }

    pub fn has_plugin_blob(&self, hash: &[u8; 32]) -> Result<bool> {
        Ok(self
            .txn
            .open_table(PLUGIN_BLOBS)?
            .get(hash.as_slice())?
            .is_some())
    }

    pub fn put_plugin_blob(&mut self, hash: &[u8; 32], bytes: &[u8]) -> Result<()> {
        self.fault("put_plugin_blob")?;
        self.txn
            .open_table(PLUGIN_BLOBS)?
            .insert(hash.as_slice(), bytes)?;
        Ok(())
    }

    /// Removes the blobs no record's versions name any more (after a delete).
    pub fn prune_plugin_blobs(&mut self) -> Result<u64> {
        let mut keep = std::collections::HashSet::new();
        for row in self.txn.open_table(PLUGINS)?.iter()? {
            let (_, v) = row?;
            let r: PluginRecord = decode("plugin", v.value())?;
            keep.extend(r.versions.iter().map(|v| v.hash));
        }
        let mut blobs = self.txn.open_table(PLUGIN_BLOBS)?;
        let stale: Vec<Vec<u8>> = blobs
            .iter()?
            .filter_map(|row| row.ok())
            .map(|(k, _)| k.value().to_vec())
            .filter(|k| !keep.iter().any(|h| h.as_slice() == k.as_slice()))
            .collect();
        for k in &stale {
            blobs.remove(k.as_slice())?;
        }
        Ok(stale.len() as u64)
    }
}
