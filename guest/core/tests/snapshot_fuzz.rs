//! Damaged and arbitrary shard snapshots. [`Shard::restore`] and the snapshot [`Reader`] under it
//! must refuse them with an error: never panic, and never allocate memory that no byte of the
//! snapshot accounts for (a damaged length must not become a multi-gigabyte allocation inside the
//! engine's 4 GiB Wasm memory). A snapshot whose checksum was forged after the damage may be
//! accepted, but the shard it gives must then answer without panicking.
//!
//! `Hnsw::read` checks the dimension and `m` before sizing anything by them (the checksum is only
//! checked at the end), and checks that links and the entry point agree with the levels, so a
//! forged snapshot cannot make a later search index out of bounds.
//!
//! The reader trusts the total it is told to expect (the host's record of the snapshot's size)
//! as far as allocations go: every length is checked against it before anything is allocated.
//!
//! Case counts follow `PROPTEST_CASES` (default 256): `PROPTEST_CASES=10000 cargo test --release
//! -p vektagraf-engine-core --test snapshot_fuzz` for a long run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use vektagraf_engine_core::codec::{Reader, SliceSource, Writer, CHUNK};
use vektagraf_engine_core::shard::{SearchRequest, Shard};
use vektagraf_engine_core::{CollectionConfig, EngineError, IndexKind, Metric, Mutation, Object};

/// The global allocator: the system's, noting the largest single request of each thread that
/// is being watched (per thread, so tests running in parallel do not see each other).
struct Watch;

thread_local! {
    /// `Some(largest request so far)` while this thread is watched.
    static LARGEST: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: allocations made while the thread is being torn down are not watched.
    let _ = LARGEST.try_with(|l| {
        if let Some(m) = l.get() {
            l.set(Some(m.max(size)));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; noting a size touches only a
// const-initialised thread-local `Cell` (no allocation, no destructor).
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Watch = Watch;

/// Runs `f`; returns its result and the largest single allocation it made.
fn watched<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(Some(0)));
    let out = f();
    (out, LARGEST.with(|l| l.replace(None)).unwrap_or(0))
}

/// The most a restore of `total` snapshot bytes may ask for at once. The decoded state may be
/// larger than its bytes (a one-byte level becomes a 24-byte `Vec` header, a slot a 24-byte
/// owner, a row reserves room for 16 rows, reader buffers double), but by a constant factor.
fn bound(total: usize) -> usize {
    64 * total + 2 * CHUNK
}

const DIM: usize = 4;

fn config(metric: Metric, m: u32) -> CollectionConfig {
    CollectionConfig {
        name: "fuzz".into(),
        dimension: DIM as u32,
        metric,
        index: IndexKind::Hnsw,
        m,
        ef_construction: 16,
        ef_search: 8,
        shards: 1,
    }
}

/// What a shard is built from: objects (id number, an optional vector) and ids deleted after.
#[derive(Debug, Clone)]
struct Spec {
    metric: Metric,
    m: u32,
    objects: Vec<(u8, Option<[i8; DIM]>)>,
    deleted: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![
            Just(Metric::Cosine),
            Just(Metric::Dot),
            Just(Metric::Euclidean)
        ],
        2..6u32,
        proptest::collection::vec(
            (0..24u8, proptest::option::weighted(0.8, any::<[i8; DIM]>())),
            0..24,
        ),
        proptest::collection::vec(0..24u8, 0..6),
    )
        .prop_map(|(metric, m, objects, deleted)| Spec {
            metric,
            m,
            objects,
            deleted,
        })
}

fn vector(v: &[i8; DIM]) -> Vec<f32> {
    // Never the zero vector, which cosine refuses.
    v.iter().map(|&x| f32::from(x) + 0.5).collect()
}

fn build(s: &Spec) -> Shard {
    let mut shard = Shard::new(config(s.metric, s.m), 0).expect("a valid config");
    let upserts = s
        .objects
        .iter()
        .map(|(id, v)| {
            Mutation::Upsert(Object {
                id: format!("o{id}"),
                properties: format!(r#"{{"n": {id}, "tag": "t{}"}}"#, id % 3),
                vector: v.as_ref().map(vector),
            })
        })
        .collect();
    shard.apply(upserts).expect("valid upserts");
    let deletes = s
        .deleted
        .iter()
        .map(|id| Mutation::Delete(format!("o{id}")))
        .collect();
    shard.apply(deletes).expect("deletes");
    shard
}

/// The same configuration, empty: where snapshots are restored.
fn fresh(s: &Spec) -> Shard {
    Shard::new(config(s.metric, s.m), 0).expect("a valid config")
}

/// A change to a valid snapshot.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR one byte with a non-zero mask.
    Flip(prop::sample::Index, u8),
    /// Keep only a strict prefix.
    Truncate(prop::sample::Index),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Overwrite(prop::sample::Index, Vec<u8>),
    /// Set a little-endian `u32` (the snapshot is mostly `u32` fields).
    Word(prop::sample::Index, u32),
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    use prop::sample::Index;
    prop_oneof![
        4 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Damage::Flip(i, m)),
        1 => any::<Index>().prop_map(Damage::Truncate),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Insert(i, b)),
        1 => any::<Index>().prop_map(Damage::Delete),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Damage::Overwrite(i, b)),
        2 => (
            any::<Index>(),
            prop_oneof![Just(0), Just(1), Just(u32::MAX), Just(u32::MAX - 1), 0..64u32, any::<u32>()]
        )
            .prop_map(|(i, w)| Damage::Word(i, w)),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Damage::Append),
    ]
}

/// `bytes` (never empty) with `d` applied.
fn damaged(bytes: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let over = |out: &mut Vec<u8>, at: usize, b: &[u8]| {
        let end = (at + b.len()).min(out.len());
        out[at..end].copy_from_slice(&b[..end - at]);
    };
    match d {
        Damage::Flip(i, mask) => out[i.index(bytes.len())] ^= mask,
        Damage::Truncate(i) => out.truncate(i.index(bytes.len())),
        Damage::Insert(i, b) => out.insert(i.index(bytes.len() + 1), *b),
        Damage::Delete(i) => drop(out.remove(i.index(bytes.len()))),
        Damage::Overwrite(i, b) => over(&mut out, i.index(bytes.len()), b),
        Damage::Word(i, w) => over(&mut out, i.index(bytes.len()), &w.to_le_bytes()),
        Damage::Append(b) => out.extend_from_slice(b),
    }
    out
}

/// `bytes` with its last four bytes replaced by the CRC-32 of the rest, as a forger would.
fn resealed(bytes: &[u8]) -> Vec<u8> {
    let body = &bytes[..bytes.len().saturating_sub(4)];
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.raw(body);
    w.finish().expect("a Vec sink cannot fail");
    out
}

/// Restores `bytes` into `into`; returns what the restore returned and, with `bounded`, fails
/// the case if it allocated more than [`bound`] at once.
/// The snapshot is filled in with the objects `s` builds (what the host would have stored).
fn restore(
    into: &mut Shard,
    bytes: &[u8],
    bounded: bool,
    s: &Spec,
) -> Result<Result<(), EngineError>, TestCaseError> {
    let stored = build(s).export();
    let (result, largest) = watched(|| into.restore(bytes, stored).map(|_| ()));
    prop_assert!(
        !bounded || largest <= bound(bytes.len()),
        "restoring {} bytes allocated {largest} bytes at once ({result:?})",
        bytes.len()
    );
    Ok(result)
}

/// Every query of a shard, to check that one restored from forged bytes answers without
/// panicking.
fn exercise(shard: &mut Shard, q: &[f32]) -> Result<(), EngineError> {
    for filter in [None, Some(r#"{"tag": "t1"}"#)] {
        for k in [1, 5, 50] {
            let _ = shard.search(&SearchRequest {
                vectors: q,
                k,
                ef: 0,
                filter,
                ..Default::default()
            })?;
        }
    }
    let _ = shard.filter(r#"{"n": {"$gte": 3}}"#, 100)?;
    let _ = shard.stats();
    shard.apply(vec![
        Mutation::Upsert(Object {
            id: "new".into(),
            properties: "{}".into(),
            vector: Some(q.to_vec()),
        }),
        Mutation::Delete("o1".into()),
        Mutation::Upsert(Object {
            id: "o2".into(),
            properties: "{}".into(),
            vector: Some(q.iter().map(|x| -x).collect()),
        }),
    ])?;
    let _ = shard.search(&SearchRequest {
        vectors: q,
        k: 5,
        ef: 0,
        filter: None,
        ..Default::default()
    })?;
    let again = shard.snapshot()?;
    let mut copy = Shard::new(shard.config().clone(), 0)?;
    copy.restore(&again, shard.export()).map(|_| ())
}

fn query() -> impl Strategy<Value = Vec<f32>> {
    any::<[i8; DIM]>().prop_map(|v| vector(&v))
}

/// What a shard answers, to compare a restored one with its original.
fn answers(shard: &mut Shard, q: &[f32]) -> Vec<Vec<(String, u32)>> {
    let hits = shard
        .search(&SearchRequest {
            vectors: q,
            k: 10,
            ef: 64,
            filter: None,
            ..Default::default()
        })
        .expect("search");
    hits.into_iter()
        .map(|row| row.into_iter().map(|h| (h.id, h.score.to_bits())).collect())
        .collect()
}

/// Object, vector and tombstone counts (memory use depends on how vectors grew).
fn counts(shard: &Shard) -> (u64, u64, u64) {
    let s = shard.stats();
    (s.objects, s.vectors, s.deleted_slots)
}

proptest! {
    #[test]
    fn a_damaged_snapshot_is_refused_and_the_shard_left_as_it_was(
        s in spec(),
        d in damage(),
        q in query(),
    ) {
        let mut original = build(&s);
        let bytes = original.snapshot().expect("snapshot");
        // The undamaged snapshot restores to the same shard.
        let mut copy = fresh(&s);
        prop_assert_eq!(restore(&mut copy, &bytes, true, &s)?, Ok(()));
        prop_assert_eq!(answers(&mut copy, &q), answers(&mut original, &q));
        prop_assert_eq!(counts(&copy), counts(&original));

        let bad = damaged(&bytes, &d);
        prop_assume!(bad != bytes);
        let mut target = build(&Spec { deleted: vec![], ..s.clone() });
        let before = (counts(&target), answers(&mut target, &q));
        prop_assert!(restore(&mut target, &bad, false, &s)?.is_err(), "{:?} accepted", d);
        prop_assert_eq!((counts(&target), answers(&mut target, &q)), before);
    }

    #[test]
    fn arbitrary_bytes_are_refused(
        s in spec(),
        keep in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        // Arbitrary bytes after a valid prefix of some length (zero included), so that the
        // reader gets past the magic and the configuration as often as not.
        let bytes = build(&s).snapshot().expect("snapshot");
        let mut bad = bytes[..keep.index(bytes.len())].to_vec();
        bad.extend_from_slice(&tail);
        prop_assume!(bad != bytes);
        prop_assert!(restore(&mut fresh(&s), &bad, false, &s)?.is_err());
        // With a checksum that matches, the decoder alone must refuse or cope.
        let _ = restore(&mut fresh(&s), &resealed(&bad), false, &s)?;
    }

    #[test]
    fn restoring_a_forged_snapshot_never_panics(s in spec(), d in damage()) {
        let bytes = build(&s).snapshot().expect("snapshot");
        let _ = restore(&mut fresh(&s), &resealed(&damaged(&bytes, &d)), false, &s)?;
    }

    #[test]
    fn restoring_damaged_or_arbitrary_bytes_allocates_in_proportion_to_them(
        s in spec(),
        d in damage(),
        keep in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let bytes = build(&s).snapshot().expect("snapshot");
        let bad = damaged(&bytes, &d);
        let mut arbitrary = bytes[..keep.index(bytes.len())].to_vec();
        arbitrary.extend_from_slice(&tail);
        for b in [&bad, &resealed(&bad), &arbitrary, &resealed(&arbitrary)] {
            let _ = restore(&mut fresh(&s), b, true, &s)?;
        }
    }

    #[test]
    fn a_forged_snapshot_gives_an_error_or_a_usable_shard(
        s in spec(),
        d in damage(),
        q in query(),
    ) {
        let bytes = build(&s).snapshot().expect("snapshot");
        let mut shard = fresh(&s);
        if restore(&mut shard, &resealed(&damaged(&bytes, &d)), true, &s)?.is_ok() {
            // Errors are fine (a forged index may be refused later); panics are not.
            let _ = exercise(&mut shard, &q);
        }
    }
}

/// The reader's allocations are bounded by the total it is told to expect: a length prefix that
/// claims more than what is left of it is refused before anything is allocated.
#[test]
fn a_length_beyond_the_declared_total_is_refused_before_allocating() {
    let mut bytes = Vec::new();
    {
        let mut w = Writer::new(&mut bytes);
        w.u64(1 << 40);
        w.raw(&[1; 100]);
        w.finish().expect("finish");
    }
    for total in [bytes.len() as u64, bytes.len() as u64 + 1000, 1 << 39] {
        let (result, largest) = watched(|| {
            let mut src = SliceSource(&bytes);
            let mut r = Reader::new(&mut src, total)?;
            r.bytes("payload")
        });
        assert!(result.is_err(), "{total}: {result:?}");
        assert!(largest <= 2 * CHUNK, "{total}: allocated {largest} at once");
    }
}

proptest! {
    /// Arbitrary bytes read as arbitrary sequences of values: no allocation beyond a small
    /// multiple of the declared total (here the real length).
    #[test]
    fn the_reader_allocates_in_proportion_to_the_declared_total(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        reads in proptest::collection::vec((0..8u8, 0..500usize), 0..16),
    ) {
        let (_, largest) = watched(|| -> Result<(), EngineError> {
            let mut src = SliceSource(&bytes);
            let mut r = Reader::new(&mut src, bytes.len() as u64)?;
            for (kind, n) in &reads {
                match kind {
                    0 => drop(r.u8("u8")?),
                    1 => drop(r.u32("u32")?),
                    2 => drop(r.u64("u64")?),
                    3 => drop(r.fixed(*n, "fixed")?),
                    4 => drop(r.bytes("bytes")?),
                    5 => drop(r.string("string")?),
                    6 => drop(r.u32s("u32s")?),
                    _ => drop(r.f32s_each("floats", *n, |_| ())?),
                }
            }
            r.finish()
        });
        prop_assert!(largest <= 2 * bytes.len() + 2 * CHUNK, "allocated {largest} at once for {} bytes", bytes.len());
    }
}

/// A small shard with upper layers (m = 2 gives many), tombstones and an object without a
/// vector, and its snapshot.
fn small() -> (Spec, Vec<u8>) {
    let s = Spec {
        metric: Metric::Dot,
        m: 2,
        objects: (0..12u8)
            .map(|i| {
                (
                    i,
                    (i != 5).then_some([i as i8, 3 - i as i8, 7, (i % 4) as i8]),
                )
            })
            .collect(),
        deleted: vec![3, 9],
    };
    let bytes = build(&s).snapshot().expect("snapshot");
    fresh(&s)
        .restore(&bytes, build(&s).export())
        .expect("the undamaged snapshot restores");
    (s, bytes)
}

/// Every byte of the snapshot flipped in turn, three ways: always refused.
#[test]
fn every_flipped_byte_of_a_snapshot_is_refused() {
    let (s, bytes) = small();
    for at in 0..bytes.len() {
        for mask in [0x01, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= mask;
            assert!(
                fresh(&s).restore(&bad, build(&s).export()).is_err(),
                "byte {at} ^ {mask:#x} accepted"
            );
        }
    }
}

/// Every byte of the snapshot flipped (three ways) and set to a few values with the checksum
/// forged to match: never a huge allocation, and any shard restored answers.
#[test]
fn every_damaged_or_forged_byte_is_refused_in_bounded_memory_or_gives_a_usable_shard() {
    let (s, bytes) = small();
    let q = [0.5, -1.5, 2.5, 1.0];
    let mut accepted = 0;
    for at in 0..bytes.len() {
        let values = [0, 1, 2, 3, 16, 0x7f, 0x80, 0xfe, 0xff];
        let flips = [0x01, 0x80, 0xff].map(|m| bytes[at] ^ m);
        for (forged, value) in values
            .iter()
            .map(|v| (true, *v))
            .chain(flips.iter().map(|v| (false, *v)))
        {
            let mut bad = bytes.clone();
            bad[at] = value;
            if bad == bytes {
                continue;
            }
            if forged {
                bad = resealed(&bad);
            }
            let mut shard = fresh(&s);
            let stored = build(&s).export();
            let (result, largest) = watched(|| shard.restore(&bad, stored));
            let what = format!("byte {at} = {value:#x} (checksum forged: {forged})");
            assert!(
                largest <= bound(bad.len()),
                "{what}: allocated {largest} bytes at once ({result:?})"
            );
            if result.is_ok() {
                assert!(forged, "{what}: accepted");
                accepted += 1;
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    exercise(&mut shard, &q)
                }));
                assert!(outcome.is_ok(), "{what}: the restored shard panicked");
            }
        }
    }
    // Floats, the RNG state and property values can take any value: some forgeries are valid.
    assert!(accepted > 0);
}

/// Ids are written sorted and unique; a snapshot naming an object twice (here with a forged
/// checksum) is refused rather than leaving a slot whose owner can never retire it.
#[test]
fn an_object_named_twice_is_refused() {
    let s = Spec {
        metric: Metric::Euclidean,
        m: 4,
        objects: vec![(1, Some([1, 2, 3, 4])), (2, Some([4, 3, 2, 1]))],
        deleted: vec![],
    };
    let mut bytes = build(&s).snapshot().expect("snapshot");
    let at = bytes
        .windows(2)
        .position(|w| w == b"o2")
        .expect("the id o2 is in the snapshot");
    bytes[at + 1] = b'1';
    let e = fresh(&s)
        .restore(&resealed(&bytes), build(&s).export())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(e, "snapshot: object `o1` appears twice");
}
