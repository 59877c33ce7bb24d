//! Index snapshots as files: one per shard, replaced and swept; restored by filling the
//! engine's graph in with the stored objects (the snapshot holds no properties or live
//! vectors); objects changed after a snapshot re-applied; the log trimmed at a checkpoint of
//! a database that never replicated; disk use per object bounded.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig};

const DIM: usize = 16;

fn vector(i: usize, salt: u64) -> Vec<f32> {
    let mut s = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    (0..DIM)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn create(db: &Database, metric: Metric) -> Result<()> {
    let mut spec = CollectionSpec::new("c", DIM as u32);
    spec.metric = metric;
    db.create_collection(spec)?;
    Ok(())
}

fn upsert_range(db: &Database, ids: std::ops::Range<usize>, salt: u64) -> Result<()> {
    let mut b = Batch::new();
    for i in ids {
        b.upsert(
            "c",
            &format!("o{i}"),
            json!({"i": i, "salt": salt}),
            Some(vector(i, salt)),
        );
    }
    db.write(b)?;
    Ok(())
}

fn snapshot_files(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    Ok(names)
}

/// Every query's ids by the index and by exact search (on a few hundred objects, an HNSW
/// with a generous ef finds the exact answer).
fn answers(db: &Database, exact: bool) -> Result<Vec<Vec<String>>> {
    let mut opts = SearchOptions::k(5);
    opts.ef = Some(200);
    opts.exact = exact;
    (0..20)
        .map(|q| {
            Ok(db
                .search("c", &vector(q, 777), &opts)?
                .into_iter()
                .map(|h| h.id)
                .collect())
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

#[test]
fn a_shard_has_one_snapshot_file_replaced_on_rewrite_and_orphans_are_swept() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let before = {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        create(&db, Metric::Cosine)?;
        upsert_range(&db, 0..300, 1)?;
        db.checkpoint()?;
        let first = snapshot_files(dir.path())?;
        assert_eq!(first.len(), 1, "{first:?}");
        upsert_range(&db, 0..40, 2)?;
        db.checkpoint()?;
        let second = snapshot_files(dir.path())?;
        assert_eq!(second.len(), 1, "{second:?}");
        assert_ne!(
            first, second,
            "the rewrite is a new file; the old one is gone"
        );
        let answers = answers(&db, false)?;
        db.close()?;
        answers
    };
    // A crash between writing a file and naming it in the database leaves these behind.
    std::fs::write(dir.path().join("snapshots/c-0-1-1.snap"), b"orphan")?;
    std::fs::write(dir.path().join("snapshots/c-0-2-2.snap.tmp"), b"partial")?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    assert_eq!(snapshot_files(dir.path())?.len(), 1);
    let report = &db.startup()[0].1[0];
    assert!(
        report.restored_snapshot && report.rebuilt == 0 && report.replayed == 0,
        "{report:?}"
    );
    assert_eq!(answers(&db, false)?, before);
    assert_eq!(answers(&db, false)?, answers(&db, true)?);
    let o = db.get("c", "o7")?.expect("o7 is stored");
    assert_eq!(o.properties, json!({"i": 7, "salt": 2}));
    // Dropping the collection takes its snapshot file with it.
    db.drop_collection("c")?;
    assert!(snapshot_files(dir.path())?.is_empty());
    Ok(())
}

#[test]
fn objects_changed_after_a_snapshot_are_reapplied_on_open() -> Result<()> {
    for metric in [Metric::Cosine, Metric::Dot, Metric::Euclidean] {
        let dir = tempfile::tempdir()?;
        {
            let db = Database::open(dir.path(), DatabaseConfig::default())?;
            create(&db, metric)?;
            upsert_range(&db, 0..400, 1)?;
            db.checkpoint()?;
            // After the snapshot: new vectors, new properties only, deletes, new objects.
            upsert_range(&db, 0..30, 3)?;
            let mut b = Batch::new();
            for i in 30..50 {
                b.upsert(
                    "c",
                    &format!("o{i}"),
                    json!({"i": i, "renamed": true}),
                    Some(vector(i, 1)),
                );
            }
            for i in 50..60 {
                b.delete("c", &format!("o{i}"));
            }
            db.write(b)?;
            upsert_range(&db, 400..420, 4)?;
            // Dropped without a checkpoint: the log holds these writes.
        }
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        let report = &db.startup()[0].1[0];
        assert!(
            report.restored_snapshot && report.rebuilt == 0 && report.replayed == 80,
            "{metric:?}: {report:?}"
        );
        let stats = db.stats("c")?;
        assert_eq!((stats.objects, stats.vectors), (410, 410), "{metric:?}");
        assert_eq!(answers(&db, false)?, answers(&db, true)?, "{metric:?}");
        let o = db.get("c", "o35")?.expect("o35");
        assert_eq!(o.properties, json!({"i": 35, "renamed": true}));
        // A changed vector is found where it is now, not where it was.
        let mut opts = SearchOptions::k(1);
        opts.ef = Some(200);
        let hit = db.search("c", &vector(5, 3), &opts)?;
        assert_eq!(hit[0].id, "o5", "{metric:?}");
        assert!(db.get("c", "o55")?.is_none());
        let found: Vec<String> = db
            .search("c", &vector(55, 1), &SearchOptions::k(3))?
            .into_iter()
            .map(|h| h.id)
            .collect();
        assert!(!found.contains(&"o55".to_string()), "{found:?}");
    }
    Ok(())
}

#[test]
fn a_database_that_never_replicated_trims_its_log_at_a_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    create(&db, Metric::Euclidean)?;
    for chunk in 0..5 {
        upsert_range(&db, chunk * 100..(chunk + 1) * 100, 1)?;
    }
    assert!(db.log_len()? >= 5);
    db.checkpoint()?;
    assert_eq!(db.log_len()?, 0);
    upsert_range(&db, 0..10, 9)?;
    assert_eq!(
        db.log_len()?,
        1,
        "later writes are logged until the next checkpoint"
    );
    drop(db);
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let report = &db.startup()[0].1[0];
    assert!(
        report.restored_snapshot && report.replayed == 10,
        "{report:?}"
    );
    assert_eq!(answers(&db, false)?, answers(&db, true)?);
    // The later writes are there: each new vector finds its object.
    for i in 0..10 {
        let hit = db.search("c", &vector(i, 9), &SearchOptions::k(1))?;
        assert_eq!(hit[0].id, format!("o{i}"));
        let stored = db.get("c", &format!("o{i}"))?.and_then(|o| o.vector);
        assert_eq!(stored, Some(vector(i, 9)));
    }
    Ok(())
}

/// Storage-size regression check: after an import and a checkpoint, the directory (database
/// file, snapshot files, engine cache excluded) holds each object's vector about once, not
/// three times (in objects, the log and the snapshot, as it did).
#[test]
fn disk_per_object_stays_within_bound() -> Result<()> {
    const N: usize = 4000;
    const WIDE: usize = 128;
    let dir = tempfile::tempdir()?;
    {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        db.create_collection(CollectionSpec::new("w", WIDE as u32))?;
        for chunk in 0..N / 500 {
            let mut b = Batch::new();
            for i in chunk * 500..(chunk + 1) * 500 {
                let v: Vec<f32> = (0..WIDE)
                    .map(|d| ((i * 31 + d * 7) % 97) as f32 - 48.0)
                    .collect();
                b.upsert("w", &format!("object-{i}"), json!({"i": i}), Some(v));
            }
            db.write(b)?;
        }
        db.close()?;
    }
    let raw = (N * WIDE * 4) as u64;
    let total = dir_bytes(dir.path())? - dir_bytes(&dir.path().join("engine-cache"))?;
    let ratio = total as f64 / raw as f64;
    eprintln!("{total} bytes on disk for {raw} bytes of vectors: {ratio:.2}x");
    assert!(
        ratio <= 2.5,
        "{total} bytes on disk for {raw} bytes of vectors: {ratio:.2}x"
    );
    Ok(())
}

#[test]
fn automatic_snapshots_bound_what_a_crash_replays_to_a_fiftieth_of_the_collection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DatabaseConfig {
        snapshot_every_ops: 20,
        ..DatabaseConfig::default()
    };
    {
        let db = Database::open(dir.path(), config.clone())?;
        create(&db, Metric::Euclidean)?;
        for start in (0..1500).step_by(10) {
            upsert_range(&db, start..start + 10, 1)?;
        }
        // Stopped without a checkpoint, as a crash would leave it.
    }
    let db = Database::open(dir.path(), config)?;
    let report = &db.startup()[0].1[0];
    // The last snapshot came at most max(20, its size / 50) mutations (plus the rest of a
    // batch) before the end: at most 1490 objects then, so 29, plus 9.
    assert!(
        report.restored_snapshot && report.rebuilt == 0 && report.replayed <= 38,
        "{report:?}"
    );
    assert_eq!(db.stats("c")?.objects, 1500);
    assert_eq!(answers(&db, false)?, answers(&db, true)?);
    Ok(())
}
