//! One call: a fresh wasmtime `Store` with its limits (memory, fuel, epoch deadline), the
//! host state the imports see, and how a failed call is reported.

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::limiter::{CallLimiter, MemoryCapReached};
use super::wasi::{self, CallClock, Capture};
use crate::db::DbHandle;
use crate::plugins::{Grants, PluginError};
use crate::runtime::epoch::ticks;

/// The data of one call's store.
pub(super) struct CallState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: CallLimiter,
    /// The plugin's name, for logs and errors.
    pub name: String,
    /// The database the `read` and `write` imports work on (none for resolvers).
    pub db: Option<DbHandle>,
    pub grants: Grants,
    /// When the call must be over: the sooner of its limit and the caller's deadline.
    pub deadline: Instant,
    pub clock: CallClock,
    pub stdout: Capture,
    pub stderr: Capture,
    /// Messages logged so far (the `logging` import drops them past a limit).
    pub logged: u32,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

// `types` and `errors` declare types only.
impl crate::runtime::wit::Host for CallState {}
impl super::bindings::plugin::vektagraf::engine::errors::Host for CallState {}

/// What a call runs with.
pub(super) struct CallSetup {
    pub name: String,
    pub db: Option<DbHandle>,
    pub grants: Grants,
    pub deadline: Instant,
    pub memory_bytes: u64,
    /// `None`: the engine does not meter fuel (measurements only).
    pub fuel: Option<u64>,
}

/// A fresh store for one call. The epoch deadline is counted from now.
pub(super) fn store(engine: &Engine, setup: CallSetup) -> Result<Store<CallState>, PluginError> {
    let w = wasi::context(setup.grants);
    let left = setup.deadline.saturating_duration_since(Instant::now());
    let name = setup.name;
    let state = CallState {
        wasi: w.ctx,
        table: ResourceTable::new(),
        limiter: CallLimiter::new(setup.memory_bytes),
        name: name.clone(),
        db: setup.db,
        grants: setup.grants,
        deadline: setup.deadline,
        clock: w.clock,
        stdout: w.stdout,
        stderr: w.stderr,
        logged: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(ticks(left));
    if let Some(fuel) = setup.fuel {
        store.set_fuel(fuel).map_err(|e| PluginError::Host {
            name,
            reason: format!("setting the call's fuel: {e}"),
        })?;
    }
    Ok(store)
}

/// Logs what the plugin wrote to stdout and stderr during the call.
pub(super) fn log_output(state: &CallState) {
    for (stream, c) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let text = c.text();
        if !text.is_empty() {
            tracing::debug!(plugin = %state.name, stream, output = %text, "plugin output");
        }
    }
}

/// Sorts a failed instantiation or call into the limit it ran into, or a plain trap.
pub(super) fn classify(state: &CallState, memory_bytes: u64, err: wasmtime::Error) -> PluginError {
    let name = state.name.clone();
    tracing::debug!(plugin = %name, error = ?err, "plugin call failed");
    if state.limiter.refused || err.downcast_ref::<MemoryCapReached>().is_some() {
        return PluginError::Memory {
            name,
            limit_mib: memory_bytes >> 20,
        };
    }
    let reason = match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => return PluginError::Fuel(name),
        Some(Trap::Interrupt) => return PluginError::Timeout(name),
        Some(Trap::StackOverflow) => return PluginError::Stack(name),
        Some(trap) => trap.to_string(),
        None => match err.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => format!("it exited with status {code}"),
            None => format!("{err:#}"),
        },
    };
    let stderr = state.stderr.text();
    let reason = if stderr.is_empty() {
        reason
    } else {
        format!("{reason}; its stderr: {stderr}")
    };
    PluginError::Trap { name, reason }
}
