//! Faults inside the engine and on disk: a guest that exhausts its memory cap or its deadline
//! returns an error, writes nothing and leaves the database serving; a data directory of a
//! newer format or a damaged engine component is refused with a clear error; a damaged index
//! snapshot is noticed and the shard rebuilt from the stored objects.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig, Error};

fn vectors(n: usize, dim: usize, salt: usize) -> impl Iterator<Item = Vec<f32>> {
    (0..n).map(move |i| {
        (0..dim)
            .map(|j| (((i + salt) * 31 + j * 7) % 97) as f32 / 97.0 + 0.01)
            .collect()
    })
}

#[test]
fn exhausting_the_memory_cap_fails_the_batch_and_the_shard_keeps_serving() -> Result<()> {
    let mut config = DatabaseConfig::default();
    config.engine.memory_limit_bytes = 32 << 20;
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), config)?;
    let mut s = CollectionSpec::new("big", 1024);
    s.metric = Metric::Dot;
    db.create_collection(s)?;
    let mut b = Batch::new();
    for (i, v) in vectors(300, 1024, 0).enumerate() {
        b.upsert("big", &format!("k{i}"), json!({}), Some(v));
    }
    db.write(b)?;
    let q: Vec<f32> = vectors(1, 1024, 5).next().unwrap_or_default();
    let before = db.search("big", &q, &SearchOptions::k(5))?;

    // 12,000 x 1024 floats is 48 MiB: more than the instance may ever hold.
    let mut huge = Batch::new();
    for (i, v) in vectors(12_000, 1024, 1).enumerate() {
        huge.upsert("big", &format!("h{i}"), json!({}), Some(v));
    }
    match db.write(huge) {
        Err(Error::EngineTrap {
            collection, shard, ..
        }) => assert_eq!((collection.as_str(), shard), ("big", 0)),
        other => panic!("expected an engine trap, got {other:?}"),
    }
    assert_eq!(
        db.get("big", "h0")?,
        None,
        "a failed batch must write nothing"
    );
    assert_eq!(db.stats("big")?.objects, 300);
    assert_eq!(
        db.search("big", &q, &SearchOptions::k(5))?,
        before,
        "the rebuilt shard answers as before"
    );
    let mut small = Batch::new();
    small.upsert("big", "after", json!({}), vectors(1, 1024, 9).next());
    db.write(small)?;
    assert_eq!(db.stats("big")?.objects, 301);
    Ok(())
}

#[test]
fn a_call_past_its_deadline_is_interrupted_and_the_database_recovers() -> Result<()> {
    let mut config = DatabaseConfig::default();
    config.engine.apply_timeout = Duration::from_millis(50);
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), config)?;
    let mut s = CollectionSpec::new("slow", 64);
    s.metric = Metric::Dot;
    s.ef_construction = 2000;
    db.create_collection(s)?;
    let mut b = Batch::new();
    b.upsert("slow", "first", json!({}), vectors(1, 64, 0).next());
    db.write(b)?;
    // Tens of thousands of inserts at ef_construction 2000 take far longer than 50 ms.
    let mut slow = Batch::new();
    for (i, v) in vectors(30_000, 64, 3).enumerate() {
        slow.upsert("slow", &format!("s{i}"), json!({}), Some(v));
    }
    let err = db.write(slow).expect_err("deadline");
    assert!(matches!(err, Error::EngineTrap { .. }), "{err}");
    assert_eq!(db.stats("slow")?.objects, 1);
    assert_eq!(
        db.search(
            "slow",
            &vectors(1, 64, 0).next().unwrap_or_default(),
            &SearchOptions::k(1)
        )?[0]
            .id,
        "first"
    );
    Ok(())
}

#[test]
fn a_data_directory_of_a_newer_format_is_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    Database::open(dir.path(), DatabaseConfig::default())?.close()?;
    {
        let db = redb::Database::open(dir.path().join(vektagraf::store::DB_FILE))?;
        let txn = db.begin_write()?;
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))?
            .insert("format_version", 99)?;
        txn.commit()?;
    }
    match Database::open(dir.path(), DatabaseConfig::default()) {
        Err(e @ Error::Format { .. }) => assert!(
            e.to_string()
                .contains("storage format 99 by a newer Vektagraf"),
            "{e}"
        ),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer format must be refused"),
    }
    let garbage = tempfile::tempdir()?;
    std::fs::write(
        garbage.path().join(vektagraf::store::DB_FILE),
        b"not a database at all",
    )?;
    assert!(matches!(
        Database::open(garbage.path(), DatabaseConfig::default()),
        Err(Error::Format { .. })
    ));
    Ok(())
}

#[test]
fn a_damaged_engine_component_is_refused_at_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = &vektagraf::runtime::DEFAULT_ENGINE[..1000];
    match Database::open_with_engine(dir.path(), DatabaseConfig::default(), bytes) {
        Err(e) => assert!(
            e.to_string().contains("compiling the engine component"),
            "{e}"
        ),
        Ok(_) => panic!("a truncated component must be refused"),
    }
    Ok(())
}

#[test]
fn a_snapshot_file_of_many_chunks_restores_and_a_damaged_one_falls_back_to_a_rebuild() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let dim = 384;
    let queries: Vec<Vec<f32>> = vectors(5, dim, 7_000).collect();
    // The vectors repeat (97 distinct ones): exact answers break ties by id, the graph's do
    // not, so a rebuilt index (another graph) is compared by exact search.
    let answers = |db: &Database, exact: bool| -> Result<Vec<Vec<String>>> {
        let mut opts = SearchOptions::k(5);
        opts.exact = exact;
        queries
            .iter()
            .map(|q| {
                let hits = db.search("big", q, &opts)?;
                Ok(hits.into_iter().map(|h| h.id).collect())
            })
            .collect()
    };
    let before = {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        let mut spec = CollectionSpec::new("big", dim as u32);
        spec.metric = Metric::Euclidean;
        db.create_collection(spec)?;
        let mut batch = Batch::new();
        for (i, v) in vectors(6_000, dim, 0).enumerate() {
            batch.upsert("big", &format!("v{i}"), json!({"i": i}), Some(v));
        }
        db.write(batch)?;
        // Deleted slots keep their vectors in the snapshot (they still route searches): 1,400
        // of them (under the rebuild threshold) make a file of several 1 MiB reads.
        let mut batch = Batch::new();
        for i in (0..6_000).step_by(4).take(1_400) {
            batch.delete("big", &format!("v{i}"));
        }
        db.write(batch)?;
        let before = (answers(&db, false)?, answers(&db, true)?);
        db.close()?;
        before
    };
    let file = {
        let files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join("snapshots"))?
            .map(|e| Ok(e?.path()))
            .collect::<Result<_>>()?;
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    };
    let size = std::fs::metadata(&file)?.len();
    assert!(
        size > 2 << 20,
        "expected a multi-chunk snapshot, got {size} bytes"
    );
    {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        let report = &db.startup()[0].1[0];
        assert!(
            report.restored_snapshot && report.rebuilt == 0,
            "{report:?}"
        );
        assert_eq!((answers(&db, false)?, answers(&db, true)?), before);
        // Nothing changed: closing writes no new snapshot, the file stays.
        db.close()?;
    }
    let good = std::fs::read(&file)?;
    for what in ["a flipped byte", "a truncated file", "a missing file"] {
        let mut bytes = good.clone();
        match what {
            // One byte in the middle of the second MiB.
            "a flipped byte" => bytes[(3 << 19) + 17] ^= 0x40,
            "a truncated file" => bytes.truncate(bytes.len() - 5),
            _ => bytes.clear(),
        }
        if bytes.is_empty() {
            std::fs::remove_file(&file)?;
        } else {
            std::fs::write(&file, &bytes)?;
        }
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        let report = &db.startup()[0].1[0];
        assert!(
            !report.restored_snapshot && report.rebuilt == 4_600,
            "{what} must be rebuilt from storage: {report:?}"
        );
        assert_eq!(answers(&db, true)?, before.1, "{what}");
        // Dropped without a checkpoint, so the next round meets the damaged file again.
        drop(db);
        std::fs::write(&file, &good)?;
    }
    Ok(())
}
