//! Vektagraf Edge: a vector + graph database whose index and query logic run as a WebAssembly
//! component. This crate is the host: storage, the engine runtime, the embedded API and the CLI.
//!
//! - [`Database`] (in [`db`]): open a directory in-process; writes, k-NN, filters, traversal.
//! - [`model`]: collections, objects, edges, queries and answers.
//! - [`store`]: redb tables and the operation log (the source of truth).
//! - [`runtime`]: wasmtime, the engine component, limits and traps.
//! - [`replication`]: clocks (and, later, replication between regions).
//! - [`cli`]: the `vektagraf` command line, including import and the demo.

pub mod auth;
pub mod cli;
pub mod db;
pub mod error;
pub mod plugins;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod store;

pub use db::Database;
pub use edge_config::DatabaseConfig;
pub use error::{Error, Result};
pub use vektagraf_proto::model;
