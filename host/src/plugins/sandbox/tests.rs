//! The sandbox against real components (made from WAT, see `test_components`): world
//! detection and refusals, calls, every limit, WASI restrictions, the imports against a real
//! database, resolvers, the cache; and what a call costs.

use std::time::{Duration, Instant};

use edge_config::PluginLimits;
use sha2::{Digest, Sha256};

use super::bindings::{read, write, WitError};
use super::call::{self, CallSetup};
use super::test_components::{self as tc, TestWorld};
use super::*;
use crate::model::{Batch, CollectionSpec, NodeKey};
use crate::runtime::{wit, DEFAULT_ENGINE};
use crate::Database;

fn limits() -> PluginLimits {
    PluginLimits {
        memory_limit_bytes: 8 << 20,
        fuel_per_call: 200_000_000,
        call_timeout: Duration::from_secs(2),
        ..PluginLimits::default()
    }
}

fn echo() -> anyhow::Result<Vec<u8>> {
    tc::component(
        TestWorld::Plugin,
        &tc::handler("", &tc::ok("(local.get $ptr)", "(local.get $len)")),
    )
}

/// A database with collection `c` (2 dimensions) holding `a` and `b`, `a -knows-> b`.
fn database() -> anyhow::Result<(tempfile::TempDir, Database)> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), crate::DatabaseConfig::default())?;
    db.create_collection(CollectionSpec::new("c", 2))?;
    let mut b = Batch::new();
    b.upsert("c", "a", serde_json::json!({"n": 1}), Some(vec![1.0, 0.0]))
        .upsert("c", "b", serde_json::json!({"n": 2}), Some(vec![0.0, 1.0]))
        .link(
            NodeKey::new("c", "a"),
            "knows",
            NodeKey::new("c", "b"),
            serde_json::json!({}),
        );
    db.write(b)?;
    Ok((dir, db))
}

fn call(db: &Database, name: &str, grants: Grants) -> anyhow::Result<HandlerCall> {
    Ok(HandlerCall {
        name: name.into(),
        db: db.handle().ok_or_else(|| anyhow::anyhow!("closed"))?,
        grants,
        deadline: None,
    })
}

fn rejected(r: Result<Compiled, PluginError>) -> String {
    match r {
        Err(PluginError::Rejected(m)) => m,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn sandbox_and_compiled_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Sandbox>();
    check::<Compiled>();
}

#[test]
fn worlds_are_detected_and_bad_uploads_refused() -> anyhow::Result<()> {
    let sb = Sandbox::new(limits(), None)?;
    let wasm = echo()?;
    let c = sb.compile(&wasm)?;
    assert_eq!(c.world, World::Plugin);
    assert_eq!(c.hash, <[u8; 32]>::from(Sha256::digest(&wasm)));
    let r = tc::component(TestWorld::Resolver, &tc::resolver("", "(i32.const 16)"))?;
    assert_eq!(sb.compile(&r)?.world, World::Resolver);

    let start = Instant::now();
    let engine = Sandbox::new(PluginLimits::default(), None)?.compile(DEFAULT_ENGINE)?;
    eprintln!(
        "engine component ({} KiB) recognised and validated in {:?}",
        DEFAULT_ENGINE.len() >> 10,
        start.elapsed()
    );
    assert_eq!(engine.world, World::Engine);

    let next = tc::component(
        TestWorld::NextVersion,
        &tc::module(
            "",
            "vektagraf:engine/handler@0.2.0#handle",
            "(param i32 i32)",
            "(i32.const 16)",
        ),
    )?;
    let m = rejected(sb.compile(&next));
    assert!(m.contains("`vektagraf:engine/handler@0.2.0`"), "{m}");
    let raw = tc::component(
        TestWorld::WithRaw,
        &tc::handler(
            r#"(import "test:plugins/raw" "peek" (func $peek (result i32)))"#,
            "(drop (call $peek)) (i32.const 16)",
        ),
    )?;
    let m = rejected(sb.compile(&raw));
    assert!(m.contains("imports `test:plugins/raw`"), "{m}");
    let mistyped = tc::component(
        TestWorld::MistypedHandler,
        &tc::handler("", "(i32.const 16)"),
    )?;
    let m = rejected(sb.compile(&mistyped));
    assert!(m.contains("does not fit the plugin world"), "{m}");
    let m = rejected(sb.compile(b"\0asm\x0d\0\x01\0garbage"));
    assert!(m.contains("not a valid WebAssembly component"), "{m}");
    let m = rejected(sb.compile(&wat::parse_str("(module)")?));
    assert!(m.contains("core WebAssembly module"), "{m}");
    let m = rejected(sb.compile(b"not wasm at all"));
    assert!(m.contains("not a valid"), "{m}");
    let small = Sandbox::new(
        PluginLimits {
            max_component_bytes: 100,
            ..limits()
        },
        None,
    )?;
    let m = rejected(small.compile(&wasm));
    assert!(m.contains("at most 100"), "{m}");
    // A resolver is not a plugin, nor an engine either.
    let (_dir, db) = database()?;
    let e = sb.handle(&engine, &call(&db, "e", Grants::default())?, b"");
    assert!(matches!(e, Err(PluginError::Host { .. })), "{e:?}");
    let e = sb.resolve(&c, "p", "c", "a", Vec::new());
    assert!(matches!(e, Err(PluginError::Host { .. })), "{e:?}");
    Ok(())
}

#[test]
fn a_handler_answers_on_a_fresh_instance_each_call() -> anyhow::Result<()> {
    let sb = Sandbox::new(limits(), None)?;
    let (_dir, db) = database()?;
    let c = sb.compile(&echo()?)?;
    let call = call(&db, "echo", Grants::default())?;
    assert_eq!(sb.handle(&c, &call, b"hello")?, b"hello");
    assert_eq!(sb.handle(&c, &call, b"")?, b"");
    // An input larger than the initial memory (the allocator grows it).
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    assert_eq!(sb.handle(&c, &call, &big)?, big);

    // A global counter starts over every call: nothing is kept between calls.
    let counter = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler(
            "(global $n (mut i32) (i32.const 0))",
            &format!(
                "(global.set $n (i32.add (global.get $n) (i32.const 1)))
                 (i32.store (i32.const 256) (global.get $n))
                 {}",
                tc::ok("(i32.const 256)", "(i32.const 4)")
            ),
        ),
    )?)?;
    for _ in 0..3 {
        assert_eq!(sb.handle(&counter, &call, b"")?, [1, 0, 0, 0]);
    }

    // Its own error is passed on as `Failed`, not a fault.
    let failing = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler(r#"(data (i32.const 256) "nope")"#, &tc::failed(4)),
    )?)?;
    match sb.handle(&failing, &call, b"") {
        Err(e @ PluginError::Failed { .. }) => {
            assert!(!e.is_fault());
            assert!(e.to_string().contains("nope"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

/// Every limit, each reported as its kind; the process and the sandbox carry on.
#[test]
fn limits_stop_a_call_and_say_which() -> anyhow::Result<()> {
    let (_dir, db) = database()?;
    let spin = tc::component(
        TestWorld::Plugin,
        &tc::handler("", "(loop $l (br $l)) (i32.const 16)"),
    )?;

    // Time: the call's own limit, and the caller's sooner deadline.
    let sb = Sandbox::new(
        PluginLimits {
            fuel_per_call: u64::MAX,
            call_timeout: Duration::from_millis(300),
            ..limits()
        },
        None,
    )?;
    let c = sb.compile(&spin)?;
    let start = Instant::now();
    let e = sb.handle(&c, &call(&db, "spin", Grants::default())?, b"");
    assert!(
        matches!(e, Err(PluginError::Timeout(ref n)) if n == "spin"),
        "{e:?}"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let mut hurried = call(&db, "spin", Grants::default())?;
    hurried.deadline = Some(Instant::now() + Duration::from_millis(50));
    let start = Instant::now();
    let e = sb.handle(&c, &hurried, b"");
    assert!(matches!(e, Err(PluginError::Timeout(_))), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // A deadline already passed: not run, and not the plugin's fault.
    hurried.deadline = Some(Instant::now());
    let e = sb.handle(&c, &hurried, b"");
    assert!(
        matches!(e, Err(ref e @ PluginError::Host { .. }) if !e.is_fault()),
        "{e:?}"
    );

    // Fuel.
    let sb = Sandbox::new(
        PluginLimits {
            fuel_per_call: 1_000_000,
            call_timeout: Duration::from_secs(10),
            ..limits()
        },
        None,
    )?;
    let c = sb.compile(&spin)?;
    let e = sb.handle(&c, &call(&db, "spin", Grants::default())?, b"");
    assert!(matches!(e, Err(PluginError::Fuel(_))), "{e:?}");

    // Memory: growing past the 8 MiB cap, 1 MiB at a time.
    let sb = Sandbox::new(limits(), None)?;
    let grow = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler(
            "",
            "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
             (i32.const 16)",
        ),
    )?)?;
    let e = sb.handle(&grow, &call(&db, "grow", Grants::default())?, b"");
    assert!(
        matches!(e, Err(PluginError::Memory { limit_mib: 8, .. })),
        "{e:?}"
    );
    // A large input cannot be placed in the plugin's memory either.
    let echo = sb.compile(&echo()?)?;
    let e = sb.handle(
        &echo,
        &call(&db, "echo", Grants::default())?,
        &vec![0u8; 9 << 20],
    );
    assert!(matches!(e, Err(PluginError::Memory { .. })), "{e:?}");

    // Stack.
    let deep = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler("(func $r (call $r))", "(call $r) (i32.const 16)"),
    )?)?;
    let e = sb.handle(&deep, &call(&db, "deep", Grants::default())?, b"");
    assert!(matches!(e, Err(PluginError::Stack(_))), "{e:?}");

    // Any other trap, with its reason.
    let bad = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler("", "unreachable"),
    )?)?;
    match sb.handle(&bad, &call(&db, "bad", Grants::default())?, b"") {
        Err(e @ PluginError::Trap { .. }) => {
            assert!(e.is_fault());
            assert!(e.to_string().contains("unreachable"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    // A return area out of bounds: the host refuses to read it, no panic.
    let wild = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler("", "(i32.const -8)"),
    )?)?;
    let e = sb.handle(&wild, &call(&db, "wild", Grants::default())?, b"");
    assert!(matches!(e, Err(PluginError::Trap { .. })), "{e:?}");

    // And after all of it, in parallel too, calls work.
    std::thread::scope(|s| -> anyhow::Result<()> {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    let c = call(&db, "x", Grants::default())?;
                    let e = sb.handle(&bad, &c, b"");
                    assert!(matches!(e, Err(PluginError::Trap { .. })), "{e:?}");
                    assert_eq!(sb.handle(&echo, &c, b"still here")?, b"still here");
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a calling thread panicked"))??;
        }
        Ok(())
    })?;
    assert_eq!(
        sb.handle(&echo, &call(&db, "echo", Grants::default())?, b"ok")?,
        b"ok"
    );
    Ok(())
}

/// What WASI shows: the handler answers (wall seconds, monotonic nanoseconds, a random u64).
#[test]
fn clocks_and_random_are_fixed_without_grants() -> anyhow::Result<()> {
    let sb = Sandbox::new(limits(), None)?;
    let (_dir, db) = database()?;
    let c = sb.compile(&tc::component(
        TestWorld::WithWasi,
        &tc::handler(
            r#"(import "wasi:clocks/wall-clock@0.2.0" "now" (func $wall (param i32)))
               (import "wasi:clocks/monotonic-clock@0.2.0" "now" (func $mono (result i64)))
               (import "wasi:random/random@0.2.0" "get-random-u64" (func $rand (result i64)))"#,
            &format!(
                "(call $wall (i32.const 512))
                 (i64.store (i32.const 256) (i64.load (i32.const 512)))
                 (i64.store (i32.const 264) (call $mono))
                 (i64.store (i32.const 272) (call $rand))
                 {}",
                tc::ok("(i32.const 256)", "(i32.const 24)")
            ),
        ),
    )?)?;
    let read = |grants: Grants| -> anyhow::Result<[u64; 3]> {
        let out = sb.handle(&c, &call(&db, "wasi", grants)?, b"")?;
        let mut v = [0u64; 3];
        for (i, x) in v.iter_mut().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&out[i * 8..i * 8 + 8]);
            *x = u64::from_le_bytes(b);
        }
        Ok(v)
    };
    let [wall, mono, r1] = read(Grants::default())?;
    assert_eq!((wall, mono), (0, 0));
    let [_, _, r2] = read(Grants::default())?;
    assert_eq!(r1, r2, "the same random numbers on every call");
    let granted = Grants {
        clock: true,
        random: true,
        ..Grants::default()
    };
    let [wall, _, g1] = read(granted)?;
    let [_, _, g2] = read(granted)?;
    assert!(wall > 1_700_000_000, "{wall}");
    assert_ne!(g1, g2);

    // A sleep without end ends at the deadline; the spin after it is interrupted.
    let sb = Sandbox::new(
        PluginLimits {
            call_timeout: Duration::from_millis(300),
            fuel_per_call: u64::MAX,
            ..limits()
        },
        None,
    )?;
    let sleeper = sb.compile(&tc::component(
        TestWorld::WithWasi,
        &tc::handler(
            r#"(import "wasi:clocks/monotonic-clock@0.2.0" "subscribe-duration"
                 (func $sub (param i64) (result i32)))
               (import "wasi:io/poll@0.2.0" "[method]pollable.block" (func $block (param i32)))"#,
            "(call $block (call $sub (i64.const -1))) (loop $l (br $l)) (i32.const 16)",
        ),
    )?)?;
    let start = Instant::now();
    let e = sb.handle(&sleeper, &call(&db, "sleeper", Grants::default())?, b"");
    assert!(matches!(e, Err(PluginError::Timeout(_))), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // The same on tokio's blocking pool, where a server runs its calls (WASI's waits enter
    // that runtime instead of wasmtime-wasi's own).
    let rt = tokio::runtime::Runtime::new()?;
    let pooled_call = call(&db, "sleeper", Grants::default())?;
    let pooled = rt.block_on(rt.spawn_blocking(move || sb.handle(&sleeper, &pooled_call, b"")))?;
    assert!(matches!(pooled, Err(PluginError::Timeout(_))), "{pooled:?}");
    Ok(())
}

/// The read and write imports, called as a plugin would (through WAT) and directly.
#[test]
fn imports_reach_the_database() -> anyhow::Result<()> {
    let sb = Sandbox::new(limits(), None)?;
    let (_dir, db) = database()?;

    // `collections` (and a log line) from a component: the first name.
    let names = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler(
            r#"(import "vektagraf:engine/read@0.1.0" "collections" (func $collections (param i32)))
               (import "vektagraf:engine/logging@0.1.0" "log" (func $log (param i32 i32 i32)))
               (data (i32.const 256) "hello")"#,
            &format!(
                "(call $log (i32.const 1) (i32.const 256) (i32.const 5))
                 (call $collections (i32.const 512))
                 {}",
                tc::or_pass_error(
                    512,
                    &tc::ok(
                        "(i32.load (i32.load (i32.const 516)))",
                        "(i32.load offset=4 (i32.load (i32.const 516)))"
                    )
                )
            ),
        ),
    )?)?;
    assert_eq!(
        sb.handle(&names, &call(&db, "names", Grants::default())?, b"")?,
        b"c"
    );

    // `write` of one upsert: denied without the grant, written with it.
    let op = [
        tc::le(0),   // upsert
        tc::le(300), // id "w1"
        tc::le(2),
        tc::le(320), // properties
        tc::le(15),
        tc::le(1), // some vector
        tc::le(352),
        tc::le(2),
    ]
    .concat();
    let writer = sb.compile(&tc::component(
        TestWorld::Plugin,
        &tc::handler(
            &format!(
                r#"(import "vektagraf:engine/write@0.1.0" "write"
                     (func $write (param i32 i32 i32 i32 i32)))
                   (data (i32.const 296) "c")
                   (data (i32.const 300) "w1")
                   (data (i32.const 320) "{{\"by\":\"plugin\"}}")
                   (data (i32.const 352) "{}")
                   (data (i32.const 400) "{op}")"#,
                tc::data(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0])
            ),
            &format!(
                "(call $write (i32.const 296) (i32.const 1) (i32.const 400) (i32.const 1) (i32.const 512))
                 {}",
                tc::or_pass_error(512, &tc::ok("(i32.const 516)", "(i32.const 4)"))
            ),
        ),
    )?)?;
    match sb.handle(&writer, &call(&db, "w", Grants::default())?, b"") {
        Err(PluginError::Failed { message, .. }) => assert_eq!(
            message,
            "denied: plugin `w` was uploaded without the write grant"
        ),
        other => panic!("{other:?}"),
    }
    assert!(db.get("c", "w1")?.is_none());
    let write = Grants {
        write: true,
        ..Grants::default()
    };
    assert_eq!(
        sb.handle(&writer, &call(&db, "w", write)?, b"")?,
        [1, 0, 0, 0]
    );
    let w1 = db
        .get("c", "w1")?
        .ok_or_else(|| anyhow::anyhow!("not written"))?;
    assert_eq!(w1.properties, serde_json::json!({"by": "plugin"}));
    assert_eq!(w1.vector, Some(vec![1.0, 0.0]));

    // The host side directly: every read, and the errors a plugin sees.
    let mut store = call::store(
        &sb.engine,
        CallSetup {
            name: "direct".into(),
            db: db.handle(),
            grants: write,
            deadline: Instant::now() + Duration::from_secs(10),
            memory_bytes: 1 << 20,
            fuel: Some(1),
        },
    )?;
    let s = store.data_mut();
    let got = read::Host::get(s, "c".into(), vec!["a".into(), "zz".into()])?;
    assert_eq!(got.len(), 2);
    let a = got[0].clone().ok_or_else(|| anyhow::anyhow!("a missing"))?;
    assert_eq!((a.id.as_str(), a.properties.as_str()), ("a", r#"{"n":1}"#));
    assert!(got[1].is_none());
    assert!(
        matches!(read::Host::get(s, "nope".into(), vec!["a".into()]), Err(WitError::Invalid(m)) if m.contains("nope"))
    );
    let query = |vectors: Vec<f32>, count, filter: Option<&str>| read::SearchQuery {
        collection: "c".into(),
        vectors,
        count,
        k: 1,
        ef: 0,
        filter: filter.map(str::to_owned),
    };
    let hits = read::Host::search(s, query(vec![0.1, 1.0, 1.0, 0.1], 2, None))?;
    let ids: Vec<&str> = hits.iter().map(|r| r[0].id.as_str()).collect();
    assert_eq!(ids, ["b", "a"]);
    assert!(matches!(
        read::Host::search(s, query(vec![1.0; 3], 1, None)),
        Err(WitError::Invalid(_))
    ));
    assert!(
        matches!(read::Host::search(s, query(vec![1.0; 2], 1, Some("{"))), Err(WitError::Invalid(m)) if m.contains("JSON"))
    );
    let all = crate::db::tests::ALL.to_owned();
    assert_eq!(
        read::Host::filter(s, "c".into(), all.clone(), 10)?,
        ["a", "b", "w1"]
    );
    assert!(matches!(
        read::Host::filter(s, "c".into(), "nope".into(), 10),
        Err(WitError::Invalid(_))
    ));
    assert!(matches!(
        read::Host::filter(s, "c".into(), all.clone(), u32::MAX),
        Err(WitError::Invalid(_))
    ));
    let start = wit::NodeRef {
        collection: "c".into(),
        id: "a".into(),
    };
    let steps = read::Host::traverse(
        s,
        wit::TraverseRequest {
            start: start.clone(),
            label: None,
            direction: wit::Direction::Out,
            depth: 2,
            limit: 10,
        },
    )?;
    let reached: Vec<&str> = steps.iter().map(|s| s.node.id.as_str()).collect();
    assert_eq!(reached, ["a", "b"]);
    let edges = read::Host::edges(s, start, None, wit::Direction::Both)?;
    assert_eq!(edges.len(), 1);
    assert_eq!(
        (edges[0].label.as_str(), edges[0].other.id.as_str()),
        ("knows", "b")
    );
    let info = read::Host::stats(s, "c".into())?;
    assert_eq!((info.dimension, info.objects), (2, 3));
    assert_eq!(read::Host::collections(s)?, ["c"]);

    let upsert = |props: &str| {
        write::WriteOp::Upsert(wit::Object {
            id: "w2".into(),
            properties: props.into(),
            vector: Some(vec![0.5, 0.5]),
        })
    };
    assert_eq!(write::Host::write(s, "c".into(), Vec::new())?, 0);
    assert!(
        matches!(write::Host::write(s, "c".into(), vec![upsert("[1]")]), Err(WitError::Invalid(m)) if m.contains("not a JSON object"))
    );
    assert!(matches!(
        write::Host::write(s, "nope".into(), vec![upsert("{}")]),
        Err(WitError::Invalid(_))
    ));
    assert_eq!(
        write::Host::write(
            s,
            "c".into(),
            vec![upsert("{}"), write::WriteOp::Delete("w1".into())]
        )?,
        2
    );
    assert!(db.get("c", "w1")?.is_none() && db.get("c", "w2")?.is_some());

    // Past the call's deadline every import answers `unavailable`.
    s.deadline = Instant::now();
    assert!(matches!(
        read::Host::collections(s),
        Err(WitError::Unavailable(_))
    ));
    assert!(matches!(
        write::Host::write(s, "c".into(), vec![upsert("{}")]),
        Err(WitError::Unavailable(_))
    ));
    Ok(())
}

/// A resolver that keeps the newest sibling (the last one), and resolvers that misbehave.
#[test]
fn resolvers_merge_siblings() -> anyhow::Result<()> {
    let sb = Sandbox::new(limits(), None)?;
    let last_wins = sb.compile(&tc::component(
        TestWorld::Resolver,
        &tc::resolver(
            "",
            "(local $last i32)
             (local.set $last (i32.add (local.get $sp)
               (i32.mul (i32.sub (local.get $sl) (i32.const 1)) (i32.const 64))))
             (i32.store8 (i32.const 16) (i32.const 0))
             (if (i32.eqz (i32.load8_u offset=32 (local.get $last)))
               (then (i32.store8 (i32.const 20) (i32.const 0)) (return (i32.const 16))))
             (i32.store8 (i32.const 20) (i32.const 1))
             (i32.store (i32.const 24) (local.get $ip))
             (i32.store (i32.const 28) (local.get $il))
             (i32.store (i32.const 32) (i32.load offset=44 (local.get $last)))
             (i32.store (i32.const 36) (i32.load offset=48 (local.get $last)))
             (i32.store8 (i32.const 40) (i32.const 0))
             (i32.const 16)",
        ),
    )?)?;
    let sibling = |seq: u64, value: Option<&str>| ResolveSibling {
        origin: 7,
        seq,
        hlc: seq << 16,
        context: vec![(7, seq - 1)],
        value: value.map(|p| (p.to_owned(), Some(vec![1.0, 2.0]))),
    };
    let got = sb.resolve(
        &last_wins,
        "lww",
        "c",
        "k",
        vec![
            sibling(1, Some(r#"{"v":1}"#)),
            sibling(2, Some(r#"{"v":2}"#)),
        ],
    )?;
    assert_eq!(
        got,
        Some(ResolvedObject {
            properties: r#"{"v":2}"#.into(),
            vector: None
        })
    );
    let got = sb.resolve(
        &last_wins,
        "lww",
        "c",
        "k",
        vec![sibling(1, Some("{}")), sibling(2, None)],
    )?;
    assert_eq!(got, None);
    // Another id, properties that are not an object: failures.
    let answer = |id: &str, props: &str| {
        format!(
            "(i32.store8 (i32.const 16) (i32.const 0))
             (i32.store8 (i32.const 20) (i32.const 1))
             (i32.store (i32.const 24) {id})
             (i32.store (i32.const 28) (i32.const 5))
             (i32.store (i32.const 32) {props})
             (i32.store (i32.const 36) (i32.const 3))
             (i32.store8 (i32.const 40) (i32.const 0))
             (i32.const 16)"
        )
    };
    let data = r#"(data (i32.const 256) "other") (data (i32.const 272) "[1]")"#;
    let other_id = sb.compile(&tc::component(
        TestWorld::Resolver,
        &tc::resolver(data, &answer("(i32.const 256)", "(i32.const 264)")),
    )?)?;
    match sb.resolve(
        &other_id,
        "r",
        "c",
        "kkkkk",
        vec![sibling(1, None), sibling(2, None)],
    ) {
        Err(PluginError::Failed { message, .. }) => {
            assert!(message.contains("`other`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let not_object = sb.compile(&tc::component(
        TestWorld::Resolver,
        &tc::resolver(data, &answer("(local.get $ip)", "(i32.const 272)")),
    )?)?;
    match sb.resolve(
        &not_object,
        "r",
        "c",
        "kkkkk",
        vec![sibling(1, None), sibling(2, None)],
    ) {
        Err(PluginError::Failed { message, .. }) => {
            assert!(message.contains("not a JSON object"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // A resolver that never ends is stopped at `resolver_timeout`.
    let sb = Sandbox::new(
        PluginLimits {
            fuel_per_call: u64::MAX,
            ..limits()
        },
        None,
    )?;
    let spin = sb.compile(&tc::component(
        TestWorld::Resolver,
        &tc::resolver("", "(loop $l (br $l)) (i32.const 16)"),
    )?)?;
    let e = sb.resolve(&spin, "r", "c", "k", vec![sibling(1, None)]);
    assert!(matches!(e, Err(PluginError::Timeout(_))), "{e:?}");
    Ok(())
}

#[test]
fn compiled_plugins_are_cached_by_content() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let sb = Sandbox::new(limits(), Some(dir.path()))?;
    let wasm = echo()?;
    let first = sb.compile(&wasm)?;
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 1);
    // Another sandbox (a restart) finds it.
    let sb = Sandbox::new(limits(), Some(dir.path()))?;
    let again = sb.compile(&wasm)?;
    assert_eq!(first.hash, again.hash);
    assert_eq!(sb.retain_cached(&[first.hash]), 0);
    assert_eq!(sb.retain_cached(&[]), 1);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
    Ok(())
}

/// What a call costs: instantiation alone, an empty call, and fuel metering on a loop.
/// Printed (`cargo test --release -p vektagraf --lib sandbox::tests::cost -- --nocapture`).
#[test]
fn cost_of_a_call() -> anyhow::Result<()> {
    let (_dir, db) = database()?;
    let wasm = echo()?;
    let spin = tc::component(
        TestWorld::Plugin,
        &tc::handler(
            "",
            "(local $i i32)
             (local.set $i (i32.const 20000000))
             (loop $l
               (local.set $i (i32.sub (local.get $i) (i32.const 1)))
               (br_if $l (local.get $i)))
             (i32.const 16)",
        ),
    )?;
    let mut lines = Vec::new();
    for fuel in [true, false] {
        let sb = Sandbox::build(limits(), None, fuel)?;
        let start = Instant::now();
        let c = sb.compile(&wasm)?;
        let compiled = start.elapsed();
        let Pre::Plugin(pre) = &c.pre else {
            anyhow::bail!("not a plugin");
        };
        let n = 1000;
        let call = call(&db, "echo", Grants::default())?;
        let setup = || {
            sb.setup(
                "echo",
                None,
                Grants::default(),
                Duration::from_secs(5),
                None,
            )
        };
        // Warm up, then measure.
        for _ in 0..20 {
            sb.handle(&c, &call, b"0123456789abcdef")?;
        }
        let start = Instant::now();
        for _ in 0..n {
            drop(call::store(&sb.engine, setup()?)?);
        }
        let store_only = start.elapsed() / n;
        let start = Instant::now();
        for _ in 0..n {
            let mut store = call::store(&sb.engine, setup()?)?;
            pre.instantiate(&mut store)
                .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        }
        let instantiate = start.elapsed() / n;
        let start = Instant::now();
        for _ in 0..n {
            sb.handle(&c, &call, b"0123456789abcdef")?;
        }
        let whole = start.elapsed() / n;
        let looped = sb.compile(&spin)?;
        let start = Instant::now();
        sb.handle(&looped, &call, b"")?;
        let looping = start.elapsed();
        lines.push(format!(
            "fuel {}: compile {compiled:?}, store (WASI context, limits) {store_only:?}, store + \
             instantiate {instantiate:?}, empty call (store, instantiate, call, drop) {whole:?}, \
             20M-iteration loop {looping:?}",
            if fuel { "on " } else { "off" },
        ));
        assert!(whole < Duration::from_millis(50), "{whole:?}");
    }
    for l in lines {
        eprintln!("sandbox cost: {l}");
    }
    Ok(())
}
