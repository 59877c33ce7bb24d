//! One thread advances the epoch of every wasmtime engine of the process (the engine runtime's
//! and the plugin sandbox's) every [`EPOCH_TICK`]; deadlines are whole ticks. It holds the
//! engines weakly, starts with the first one registered and ends when none is left.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

use crate::error::{Error, Result};

/// How often the epoch advances.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

struct Ticker {
    engines: Vec<EngineWeak>,
    running: bool,
}

static TICKER: Mutex<Ticker> = Mutex::new(Ticker {
    engines: Vec::new(),
    running: false,
});

fn ticker() -> MutexGuard<'static, Ticker> {
    TICKER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Advances `engine`'s epoch every tick from now on, for as long as the engine lives.
pub(crate) fn register(engine: &Engine) -> Result<()> {
    let mut t = ticker();
    t.engines.push(engine.weak());
    if !t.running {
        std::thread::Builder::new()
            .name("vektagraf-epoch".into())
            .spawn(run)
            .map_err(|e| Error::io("starting the epoch thread", e))?;
        t.running = true;
    }
    Ok(())
}

fn run() {
    loop {
        std::thread::sleep(EPOCH_TICK);
        let mut t = ticker();
        t.engines.retain(|w| match w.upgrade() {
            Some(engine) => {
                engine.increment_epoch();
                true
            }
            None => false,
        });
        if t.engines.is_empty() {
            t.running = false;
            return;
        }
    }
}

/// `d` in whole ticks, at least one.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registered engine's epoch advances: a loop with a deadline of two ticks is stopped.
    #[test]
    fn a_registered_engine_interrupts_a_loop() -> wasmtime::Result<()> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        register(&engine)?;
        let wasm = wat::parse_str(r#"(module (func (export "spin") (loop br 0)))"#)?;
        let module = wasmtime::Module::new(&engine, &wasm)?;
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(2);
        let instance = wasmtime::Instance::new(&mut store, &module, &[])?;
        let spin = instance.get_typed_func::<(), ()>(&mut store, "spin")?;
        let err = spin
            .call(&mut store, ())
            .err()
            .map(|e| e.downcast::<wasmtime::Trap>());
        assert!(
            matches!(err, Some(Ok(wasmtime::Trap::Interrupt))),
            "{err:?}"
        );
        // Dropped engines are forgotten at the next tick (a typed function holds its engine
        // too).
        let weak = engine.weak();
        drop((spin, instance, store, module, engine));
        std::thread::sleep(EPOCH_TICK * 5);
        assert!(weak.upgrade().is_none());
        Ok(())
    }

    #[test]
    fn whole_ticks() {
        assert_eq!(ticks(Duration::ZERO), 1);
        assert_eq!(ticks(EPOCH_TICK * 3), 3);
        assert_eq!(ticks(EPOCH_TICK * 3 + EPOCH_TICK / 2), 3);
    }
}
