//! Where the data commands run: a database directory opened in-process, or nodes over QUIC
//! (`--remote`). Both answer the same calls, so every command prints the same either way.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use vektagraf_client::{Client, ClientConfig, ClusterStatus};

use crate::model::{
    Batch, CollectionSpec, CollectionStats, Hit, NewToken, NodeKey, Object, ObjectVersions,
    PluginInfo, Receipt, Role, SearchOptions, Step, TokenInfo, TraverseOptions,
};
use crate::plugins::Grants;
use crate::store::Digest;
use crate::Database;

/// The operations the CLI needs (from several threads at once: `search --threads`).
pub trait Backend: Sync {
    fn create_collection(&self, spec: CollectionSpec) -> Result<bool>;
    /// Drops a collection; false if there was none. Local only: the protocol has no drop yet.
    fn drop_collection(&self, name: &str) -> Result<bool>;
    fn collections(&self) -> Result<Vec<CollectionSpec>>;
    fn collection_spec(&self, name: &str) -> Result<CollectionSpec>;
    fn write(&self, batch: Batch) -> Result<Receipt>;
    /// Writes batches in order of submission; `done(rows)` is called for each batch once it
    /// is durable. A remote backend keeps several in flight (pipelining).
    fn write_all(
        &self,
        batches: &mut dyn Iterator<Item = Result<(Batch, usize)>>,
        done: &mut dyn FnMut(usize),
    ) -> Result<()>;
    fn get(&self, collection: &str, id: &str) -> Result<Option<Object>>;
    fn versions(&self, collection: &str, id: &str) -> Result<ObjectVersions>;
    fn search_batch(
        &self,
        collection: &str,
        rows: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>>;
    fn traverse(&self, start: &NodeKey, opts: &TraverseOptions) -> Result<Vec<Step>>;
    fn stats(&self, collection: Option<String>) -> Result<Vec<CollectionStats>>;
    /// The collection's state digest (with `--remote`: of the node that answers).
    fn digest(&self, collection: &str) -> Result<Digest>;
    /// A node's replication state. Remote only: replication runs in a node (`serve`), and a
    /// directory opened by the CLI has no peers, so a local answer could only mislead.
    fn cluster_status(&self) -> Result<ClusterStatus>;
    fn checkpoint(&self) -> Result<()>;
    fn token_create(&self, name: &str, role: Role) -> Result<NewToken>;
    fn token_list(&self) -> Result<Vec<TokenInfo>>;
    fn token_revoke(&self, id: &str) -> Result<bool>;
    /// A new version of plugin `name`; `grants`: `write`, `clock`, `random`.
    fn plugin_upload(&self, name: &str, wasm: Vec<u8>, grants: &[String]) -> Result<PluginInfo>;
    fn plugins(&self) -> Result<Vec<PluginInfo>>;
    fn plugin(&self, name: &str) -> Result<PluginInfo>;
    /// Calls query plugin `name`; its output bytes.
    fn plugin_call(&self, name: &str, input: Vec<u8>) -> Result<Vec<u8>>;
    fn plugin_enable(&self, name: &str, enabled: bool) -> Result<PluginInfo>;
    fn plugin_rollback(&self, name: &str, version: u32) -> Result<PluginInfo>;
    fn plugin_delete(&self, name: &str) -> Result<()>;
    /// Closes cleanly (a local database checkpoints its indexes).
    fn close(self: Box<Self>) -> Result<()>;
}

impl Backend for Database {
    fn create_collection(&self, spec: CollectionSpec) -> Result<bool> {
        Ok(Database::create_collection(self, spec)?)
    }
    fn drop_collection(&self, name: &str) -> Result<bool> {
        Ok(Database::drop_collection(self, name)?)
    }
    fn collections(&self) -> Result<Vec<CollectionSpec>> {
        Ok(Database::collections(self))
    }
    fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        Ok(Database::collection_spec(self, name)?)
    }
    fn write(&self, batch: Batch) -> Result<Receipt> {
        Ok(Database::write(self, batch)?)
    }
    fn write_all(
        &self,
        batches: &mut dyn Iterator<Item = Result<(Batch, usize)>>,
        done: &mut dyn FnMut(usize),
    ) -> Result<()> {
        for b in batches {
            let (batch, rows) = b?;
            Database::write(self, batch)?;
            done(rows);
        }
        Ok(())
    }
    fn get(&self, collection: &str, id: &str) -> Result<Option<Object>> {
        Ok(Database::get(self, collection, id)?)
    }
    fn versions(&self, collection: &str, id: &str) -> Result<ObjectVersions> {
        Ok(Database::versions(self, collection, id)?)
    }
    fn search_batch(
        &self,
        collection: &str,
        rows: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        Ok(Database::search_batch(self, collection, rows, opts)?)
    }
    fn traverse(&self, start: &NodeKey, opts: &TraverseOptions) -> Result<Vec<Step>> {
        Ok(Database::traverse(self, start, opts)?)
    }
    fn stats(&self, collection: Option<String>) -> Result<Vec<CollectionStats>> {
        let names = match collection {
            Some(c) => vec![c],
            None => Database::collections(self)
                .into_iter()
                .map(|s| s.name)
                .collect(),
        };
        Ok(names
            .iter()
            .map(|n| Database::stats(self, n))
            .collect::<crate::Result<_>>()?)
    }
    fn digest(&self, collection: &str) -> Result<Digest> {
        Ok(Database::digest(self, collection)?)
    }
    fn cluster_status(&self) -> Result<ClusterStatus> {
        anyhow::bail!(
            "cluster status needs --remote quic://HOST:PORT pointing at a running node: replication runs in `vektagraf serve`, and a data directory opened by the CLI has no peers"
        )
    }
    fn checkpoint(&self) -> Result<()> {
        Ok(Database::checkpoint(self)?)
    }
    fn token_create(&self, name: &str, role: Role) -> Result<NewToken> {
        Ok(self.tokens().create(name, role)?)
    }
    fn token_list(&self) -> Result<Vec<TokenInfo>> {
        Ok(self.tokens().list())
    }
    fn token_revoke(&self, id: &str) -> Result<bool> {
        Ok(self.tokens().revoke(id)?)
    }
    fn plugin_upload(&self, name: &str, wasm: Vec<u8>, grants: &[String]) -> Result<PluginInfo> {
        let grants =
            Grants::parse(grants.iter().map(String::as_str)).map_err(anyhow::Error::msg)?;
        Ok(PluginInfo::from(&Database::plugin_upload(
            self, name, wasm, grants,
        )?))
    }
    fn plugins(&self) -> Result<Vec<PluginInfo>> {
        Ok(Database::plugins(self)
            .iter()
            .map(PluginInfo::from)
            .collect())
    }
    fn plugin(&self, name: &str) -> Result<PluginInfo> {
        Ok(PluginInfo::from(&Database::plugin(self, name)?))
    }
    fn plugin_call(&self, name: &str, input: Vec<u8>) -> Result<Vec<u8>> {
        // No deadline of its own: `plugins.call_timeout_ms` bounds the call.
        Ok(Database::plugin_call(self, name, &input, None)?)
    }
    fn plugin_enable(&self, name: &str, enabled: bool) -> Result<PluginInfo> {
        Ok(PluginInfo::from(&Database::plugin_enable(
            self, name, enabled,
        )?))
    }
    fn plugin_rollback(&self, name: &str, version: u32) -> Result<PluginInfo> {
        Ok(PluginInfo::from(&Database::plugin_rollback(
            self, name, version,
        )?))
    }
    fn plugin_delete(&self, name: &str) -> Result<()> {
        Ok(Database::plugin_delete(self, name)?)
    }
    fn close(self: Box<Self>) -> Result<()> {
        Ok(Database::close(*self)?)
    }
}

/// Nodes over QUIC, driven from the CLI's own runtime.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Batches in flight during an import.
    depth: usize,
    /// Prefix of the idempotency keys of this run's writes (random), so a write retried on
    /// another node is applied once.
    run_id: String,
    next_write: std::sync::atomic::AtomicU64,
}

impl Remote {
    pub fn connect(config: ClientConfig) -> Result<Remote> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the client runtime")?;
        let client = rt.block_on(Client::connect(config))?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Remote {
            rt,
            client,
            depth: 4,
            run_id: id.iter().map(|b| format!("{b:02x}")).collect(),
            next_write: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    fn key(&self) -> String {
        let n = self
            .next_write
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("cli-{}-{n}", self.run_id)
    }
}

impl Backend for Remote {
    fn create_collection(&self, spec: CollectionSpec) -> Result<bool> {
        Ok(self.rt.block_on(self.client.create_collection(spec))?)
    }
    fn drop_collection(&self, name: &str) -> Result<bool> {
        anyhow::bail!(
            "cannot drop collection `{name}` over --remote: the protocol has no drop operation yet; run `vektagraf --data DIR collection drop {name}` on the node's directory while it is stopped"
        )
    }
    fn collections(&self) -> Result<Vec<CollectionSpec>> {
        Ok(self.rt.block_on(self.client.list_collections())?)
    }
    fn collection_spec(&self, name: &str) -> Result<CollectionSpec> {
        self.collections()?
            .into_iter()
            .find(|s| s.name == name)
            .with_context(|| format!("collection `{name}` does not exist"))
    }
    fn write(&self, batch: Batch) -> Result<Receipt> {
        Ok(self
            .rt
            .block_on(self.client.write(batch, Some(self.key())))?)
    }
    fn write_all(
        &self,
        batches: &mut dyn Iterator<Item = Result<(Batch, usize)>>,
        done: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let mut in_flight = VecDeque::new();
        for b in batches {
            let (batch, rows) = b?;
            if in_flight.len() == self.depth {
                wait_front(&self.rt, &mut in_flight, done)?;
            }
            let (client, key) = (self.client.clone(), self.key());
            let task = self
                .rt
                .spawn(async move { client.write(batch, Some(key)).await });
            in_flight.push_back((task, rows));
        }
        while !in_flight.is_empty() {
            wait_front(&self.rt, &mut in_flight, done)?;
        }
        Ok(())
    }
    fn versions(&self, collection: &str, id: &str) -> Result<ObjectVersions> {
        Ok(self.rt.block_on(self.client.versions(collection, id))?)
    }
    fn get(&self, collection: &str, id: &str) -> Result<Option<Object>> {
        let mut found = self
            .rt
            .block_on(self.client.get(collection, vec![id.to_owned()]))?;
        Ok(found.pop().flatten())
    }
    fn search_batch(
        &self,
        collection: &str,
        rows: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        Ok(self
            .rt
            .block_on(self.client.search(collection, rows.to_vec(), opts.clone()))?)
    }
    fn traverse(&self, start: &NodeKey, opts: &TraverseOptions) -> Result<Vec<Step>> {
        Ok(self
            .rt
            .block_on(self.client.traverse(start.clone(), opts.clone()))?)
    }
    fn stats(&self, collection: Option<String>) -> Result<Vec<CollectionStats>> {
        Ok(self.rt.block_on(self.client.stats(collection))?)
    }
    fn digest(&self, collection: &str) -> Result<Digest> {
        let d = self.rt.block_on(self.client.digest(collection))?;
        let sum = u128::from_str_radix(&d.digest, 16)
            .ok()
            .filter(|_| d.digest.len() == 32)
            .with_context(|| {
                format!(
                    "{} answered digest `{}`, not 32 hex digits",
                    d.endpoint, d.digest
                )
            })?;
        Ok(Digest {
            sum,
            objects: d.objects,
            edges: d.edges,
            versions: d.versions,
        })
    }
    fn cluster_status(&self) -> Result<ClusterStatus> {
        Ok(self.rt.block_on(self.client.cluster_status())?)
    }
    fn checkpoint(&self) -> Result<()> {
        Ok(self.rt.block_on(self.client.checkpoint())?)
    }
    fn token_create(&self, name: &str, role: Role) -> Result<NewToken> {
        Ok(self.rt.block_on(self.client.token_create(name, role))?)
    }
    fn token_list(&self) -> Result<Vec<TokenInfo>> {
        Ok(self.rt.block_on(self.client.token_list())?)
    }
    fn token_revoke(&self, id: &str) -> Result<bool> {
        Ok(self.rt.block_on(self.client.token_revoke(id))?)
    }
    fn plugin_upload(&self, name: &str, wasm: Vec<u8>, grants: &[String]) -> Result<PluginInfo> {
        let grants: Vec<&str> = grants.iter().map(String::as_str).collect();
        Ok(self
            .rt
            .block_on(self.client.plugin_upload(name, wasm, &grants))?)
    }
    fn plugins(&self) -> Result<Vec<PluginInfo>> {
        Ok(self.rt.block_on(self.client.plugins())?)
    }
    fn plugin(&self, name: &str) -> Result<PluginInfo> {
        Ok(self.rt.block_on(self.client.plugin(name))?)
    }
    fn plugin_call(&self, name: &str, input: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.rt.block_on(self.client.plugin_call(name, input))?)
    }
    fn plugin_enable(&self, name: &str, enabled: bool) -> Result<PluginInfo> {
        Ok(self.rt.block_on(self.client.plugin_enable(name, enabled))?)
    }
    fn plugin_rollback(&self, name: &str, version: u32) -> Result<PluginInfo> {
        Ok(self
            .rt
            .block_on(self.client.plugin_rollback(name, version))?)
    }
    fn plugin_delete(&self, name: &str) -> Result<()> {
        Ok(self.rt.block_on(self.client.plugin_delete(name))?)
    }
    fn close(self: Box<Self>) -> Result<()> {
        self.rt.block_on(self.client.close());
        Ok(())
    }
}

type InFlight = VecDeque<(
    tokio::task::JoinHandle<Result<Receipt, vektagraf_client::ClientError>>,
    usize,
)>;

/// Waits for the oldest write in flight and reports it.
fn wait_front(
    rt: &tokio::runtime::Runtime,
    in_flight: &mut InFlight,
    done: &mut dyn FnMut(usize),
) -> Result<()> {
    if let Some((task, rows)) = in_flight.pop_front() {
        rt.block_on(task).context("a write task failed")??;
        done(rows);
    }
    Ok(())
}
