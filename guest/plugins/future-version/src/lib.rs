//! Test fixture `future-version`: our `handler` interface, but from package
//! `vektagraf:engine@0.2.0`, a version no node runs; an upload must be refused. Its WIT is
//! inline on purpose: a copy of `errors` and `handler` from wit/plugin.wit with the version
//! changed (and no imports).

use exports::vektagraf::engine::handler::Guest;
use vektagraf::engine::errors::Error;

wit_bindgen::generate!({
    inline: "
        package vektagraf:engine@0.2.0;

        interface errors {
            variant error {
                invalid(string),
                denied(string),
                unavailable(string),
                failed(string),
            }
        }

        interface handler {
            use errors.{error};
            handle: func(input: list<u8>) -> result<list<u8>, error>;
        }

        world plugin {
            export handler;
        }
    ",
});

struct Future;

impl Guest for Future {
    fn handle(input: Vec<u8>) -> Result<Vec<u8>, Error> {
        Ok(input)
    }
}

export!(Future);
