//! Test fixture `hostile-alloc`: `handle` allocates 1 MiB after 1 MiB, touching each, and
//! keeps them all, until growing the memory fails and the allocator aborts (a trap). The node
//! must stop it at its memory cap, answer with an error and count a fault.

use std::hint::black_box;

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

struct Alloc;

impl Guest for Alloc {
    fn handle(_input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let mut kept: Vec<Vec<u8>> = Vec::new();
        loop {
            kept.push(black_box(vec![0xA5; 1 << 20]));
            black_box(&kept);
        }
    }
}

export!(Alloc);
