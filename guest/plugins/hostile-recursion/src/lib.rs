//! Test fixture `hostile-recursion`: `handle` recurses without end; every level uses the
//! result of the next through `black_box`, so the optimiser can turn it neither into a loop
//! nor into a constant. The Wasm stack overflows (a trap); the node must answer with an error
//! and count a fault.

use std::hint::black_box;

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

fn depth(n: u64) -> u64 {
    if black_box(n) == 0 {
        return 0;
    }
    black_box(depth(black_box(n - 1))).wrapping_add(1)
}

struct Recursion;

impl Guest for Recursion {
    fn handle(_input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let levels = depth(black_box(u64::MAX));
        Ok(levels.to_string().into_bytes())
    }
}

export!(Recursion);
