//! Test fixture `hostile-loop`: `handle` never returns. The node must stop it by fuel or by
//! the call deadline, answer the caller with an error and count a fault.

use std::hint::black_box;

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

struct Loop;

impl Guest for Loop {
    fn handle(_input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut n: u64 = 0;
        loop {
            n = black_box(n.wrapping_add(1));
        }
    }
}

export!(Loop);
