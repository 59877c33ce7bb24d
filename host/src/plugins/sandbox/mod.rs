//! The wasmtime side of plugins. PLACEHOLDER with the agreed API, replaced by the real one.
#![allow(dead_code, unused_variables)]

use std::path::Path;
use std::time::Instant;

use edge_config::PluginLimits;

use super::{Grants, PluginError, World};
use crate::db::DbHandle;

pub struct Sandbox {}

#[derive(Clone)]
pub struct Compiled {
    world: World,
    hash: [u8; 32],
}

impl Compiled {
    pub fn world(&self) -> World {
        self.world
    }
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

pub struct HandlerCall {
    pub name: String,
    pub db: DbHandle,
    pub grants: Grants,
    pub deadline: Option<Instant>,
}

pub struct ResolveSibling {
    pub origin: u64,
    pub seq: u64,
    pub hlc: u64,
    pub context: Vec<(u64, u64)>,
    pub value: Option<(String, Option<Vec<f32>>)>,
}

pub struct ResolvedObject {
    pub properties: String,
    pub vector: Option<Vec<f32>>,
}

impl Sandbox {
    pub fn new(limits: PluginLimits, cache_dir: Option<&Path>) -> Result<Sandbox, PluginError> {
        Ok(Sandbox {})
    }
    pub fn compile(&self, wasm: &[u8]) -> Result<Compiled, PluginError> {
        Err(PluginError::Rejected("not yet".into()))
    }
    pub fn handle(
        &self,
        c: &Compiled,
        call: &HandlerCall,
        input: &[u8],
    ) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::Rejected("not yet".into()))
    }
    pub fn resolve(
        &self,
        c: &Compiled,
        name: &str,
        collection: &str,
        id: &str,
        siblings: Vec<ResolveSibling>,
    ) -> Result<Option<ResolvedObject>, PluginError> {
        Err(PluginError::Rejected("not yet".into()))
    }
}
