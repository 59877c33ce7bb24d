//! `echo`: answers with its input, byte for byte. The smallest plugin there is; calling it
//! measures what a plugin call costs before the plugin does anything.
//!
//! Input: any bytes. Output: the same bytes.

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

struct Echo;

impl Guest for Echo {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(input)
    }
}

export!(Echo);
