//! Small components for the sandbox's tests, made at test time from core modules in WAT and
//! the real plugin WIT (`wit/`) with `wit-component`: the canonical ABI is written out by
//! hand, which keeps each one a few lines and the build fast (no guest crate to compile).
//!
//! Each handler module has a bump allocator (`cabi_realloc`), a return area at 16..32 and
//! static data from 256 on; the allocator starts at 4096.

use std::path::Path;

use anyhow::Context;
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// The few WASI interfaces the test components import (a subset of the real ones: a
/// component only imports the functions it declares).
const WASI_IO: &str = r#"
package wasi:io@0.2.0;
interface poll {
    resource pollable { block: func(); }
}
"#;

const WASI_CLOCKS: &str = r#"
package wasi:clocks@0.2.0;
interface monotonic-clock {
    use wasi:io/poll@0.2.0.{pollable};
    type instant = u64;
    type duration = u64;
    now: func() -> instant;
    subscribe-duration: func(when: duration) -> pollable;
}
interface wall-clock {
    record datetime { seconds: u64, nanoseconds: u32 }
    now: func() -> datetime;
}
"#;

const WASI_RANDOM: &str = r#"
package wasi:random@0.2.0;
interface random { get-random-u64: func() -> u64; }
"#;

/// A later version of the package, to be refused.
const NEXT_VERSION: &str = r#"
package vektagraf:engine@0.2.0;
interface handler { handle: func(input: list<u8>) -> list<u8>; }
world plugin { export handler; }
"#;

const TEST_WORLDS: &str = r#"
package test:plugins;
interface raw { peek: func() -> u32; }
world plugin { include vektagraf:engine/plugin@0.1.0; }
world resolver { include vektagraf:engine/resolver@0.1.0; }
world with-wasi {
    include vektagraf:engine/plugin@0.1.0;
    import wasi:clocks/monotonic-clock@0.2.0;
    import wasi:clocks/wall-clock@0.2.0;
    import wasi:random/random@0.2.0;
}
world with-raw {
    include vektagraf:engine/plugin@0.1.0;
    import raw;
}
"#;

/// The worlds components can be made for.
#[derive(Debug, Clone, Copy)]
pub enum TestWorld {
    Plugin,
    Resolver,
    /// A plugin that also imports WASI clocks and random.
    WithWasi,
    /// A plugin that also imports an interface no node offers.
    WithRaw,
    /// `vektagraf:engine/handler@0.2.0`.
    NextVersion,
    /// `vektagraf:engine/handler@0.1.0` whose `handle` answers a bare list (not a result).
    MistypedHandler,
}

/// A component of `world` whose core module is `wat`.
pub fn component(world: TestWorld, wat: &str) -> anyhow::Result<Vec<u8>> {
    let mut resolve = Resolve::default();
    resolve.push_str("wasi-io.wit", WASI_IO)?;
    resolve.push_str("wasi-clocks.wit", WASI_CLOCKS)?;
    resolve.push_str("wasi-random.wit", WASI_RANDOM)?;
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
    let mistyped = tempfile::tempdir()?;
    if let TestWorld::MistypedHandler = world {
        for f in ["engine.wit", "plugin.wit"] {
            let text = std::fs::read_to_string(wit.join(f))?.replace(
                "handle: func(input: list<u8>) -> result<list<u8>, error>;",
                "handle: func(input: list<u8>) -> list<u8>;",
            );
            std::fs::write(mistyped.path().join(f), text)?;
        }
        resolve.push_dir(mistyped.path())?;
    } else {
        resolve.push_dir(&wit)?;
    }
    let next = resolve.push_str("next.wit", NEXT_VERSION)?;
    let tests = resolve.push_str("tests.wit", TEST_WORLDS)?;
    let (package, name) = match world {
        TestWorld::Plugin | TestWorld::MistypedHandler => (tests, "plugin"),
        TestWorld::Resolver => (tests, "resolver"),
        TestWorld::WithWasi => (tests, "with-wasi"),
        TestWorld::WithRaw => (tests, "with-raw"),
        TestWorld::NextVersion => (next, "plugin"),
    };
    let world = resolve.select_world(&[package], Some(name))?;
    let mut module = wat::parse_str(wat).context("parsing the test module")?;
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)?;
    ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()
}

/// Bytes as a WAT data string.
pub fn data(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// A little-endian u32 as a WAT data string.
pub fn le(v: u32) -> String {
    data(&v.to_le_bytes())
}

/// A handler module: memory, allocator, `extra` (imports, data, functions) and a `handle`
/// export whose body is `body` (params `$ptr`, `$len`; it leaves the return area's address).
pub fn handler(extra: &str, body: &str) -> String {
    module(
        extra,
        "vektagraf:engine/handler@0.1.0#handle",
        "(param $ptr i32) (param $len i32)",
        body,
    )
}

/// A resolver module whose `resolve` export has the body `body` (params `$cp $cl $ip $il $sp
/// $sl`: collection, id, siblings) and leaves the return area's address (16).
pub fn resolver(extra: &str, body: &str) -> String {
    module(
        extra,
        "vektagraf:engine/resolve@0.1.0#resolve",
        "(param $cp i32) (param $cl i32) (param $ip i32) (param $il i32) (param $sp i32) (param $sl i32)",
        body,
    )
}

/// A module with the allocator, `extra`, and one export `export` taking `params`.
pub fn module(extra: &str, export: &str, params: &str, body: &str) -> String {
    format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (global $bump (mut i32) (i32.const 4096))
  (func $realloc (export "cabi_realloc")
        (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $bump) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (global.set $bump (i32.add (local.get $p) (local.get $size)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (global.get $bump) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (local.get $p))
  (func (export "{export}") {params} (result i32)
    {body})
)"#
    )
}

/// Handler body: answers `ok(list)` of `len` bytes at `ptr` (WAT expressions).
pub fn ok(ptr: &str, len: &str) -> String {
    format!(
        "(i32.store8 (i32.const 16) (i32.const 0))
    (i32.store (i32.const 20) {ptr})
    (i32.store (i32.const 24) {len})
    (i32.const 16)"
    )
}

/// Handler body: answers `err(failed(text))`; `text` must be in a data segment at 256.
pub fn failed(len: usize) -> String {
    format!(
        "(i32.store8 (i32.const 16) (i32.const 1))
    (i32.store8 (i32.const 20) (i32.const 3))
    (i32.store (i32.const 24) (i32.const 256))
    (i32.store (i32.const 28) (i32.const {len}))
    (i32.const 16)"
    )
}

/// Handler body: passes on the `result<_, error>` at `at` if it is an error, else runs `then`.
pub fn or_pass_error(at: u32, then: &str) -> String {
    format!(
        "(if (i32.load8_u (i32.const {at}))
      (then
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store8 (i32.const 20) (i32.load8_u (i32.const {p4})))
        (i32.store (i32.const 24) (i32.load (i32.const {p8})))
        (i32.store (i32.const 28) (i32.load (i32.const {p12})))
        (return (i32.const 16))))
    {then}",
        p4 = at + 4,
        p8 = at + 8,
        p12 = at + 12,
    )
}
