//! Test fixture `hostile-write`: a `plugin` that writes. Uploaded without the `write` grant,
//! `write.write` answers `denied` and the plugin returns that very error as its own.
//! With the grant it upserts the object `hostile-write` (properties `{"by": "hostile-write"}`,
//! no vector) and answers the number of operations applied (`1`).
//!
//! Input: the collection's name as UTF-8 text (empty: `items`). Output: `1`.

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;
use vektagraf::engine::types::Object;
use vektagraf::engine::write::{self, WriteOp};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "plugin",
});

struct Write;

impl Guest for Write {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        let collection = match String::from_utf8(input) {
            Ok(name) if !name.trim().is_empty() => name.trim().to_string(),
            Ok(_) => "items".to_string(),
            Err(_) => return Err(Error::Invalid("input: not UTF-8".into())),
        };
        let op = WriteOp::Upsert(Object {
            id: "hostile-write".into(),
            properties: r#"{"by": "hostile-write"}"#.into(),
            vector: None,
        });
        // Without the grant: Err(Error::Denied(..)), passed on unchanged.
        let applied = write::write(&collection, &[op])?;
        Ok(applied.to_string().into_bytes())
    }
}

export!(Write);
