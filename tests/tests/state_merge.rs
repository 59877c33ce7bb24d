//! A node's state exported and merged into another embedded database (what a bootstrap
//! snapshot and an anti-entropy repair do over the network), and log trimming: the merged
//! database equals the exporter (digest, answers, edges, tombstones), merging again changes
//! nothing, it reopens on what it merged, a damaged row is refused with nothing changed, and
//! trimming keeps what an index snapshot does not cover.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::db::StateJob;
use vektagraf::model::{
    Batch, CollectionSpec, ConflictPolicy, Direction, Metric, NodeKey, SearchOptions,
};
use vektagraf::store::records::{LogNode, SiblingValue, StoredSibling};
use vektagraf::store::{RowKey, StateRow};
use vektagraf::{Database, DatabaseConfig};

fn open(dir: &std::path::Path) -> Result<Database> {
    Ok(Database::open(dir, DatabaseConfig::default())?)
}

fn loaded(dir: &std::path::Path) -> Result<Database> {
    let db = open(dir)?;
    db.create_collection(CollectionSpec {
        metric: Metric::Euclidean,
        conflict: ConflictPolicy::VectorClock,
        ..CollectionSpec::new("c", 3)
    })?;
    let mut b = Batch::new();
    for n in 0..300 {
        b.upsert(
            "c",
            &format!("o{n}"),
            json!({"n": n}),
            Some(vec![n as f32, 1.0, 0.0]),
        );
    }
    db.write(b)?;
    let mut b = Batch::new();
    for n in 0..50 {
        b.link(
            NodeKey::new("c", format!("o{n}")),
            "next",
            NodeKey::new("c", format!("o{}", n + 1)),
            json!({"w": n}),
        );
    }
    db.write(b)?;
    let mut b = Batch::new();
    b.delete("c", "o3").delete("c", "o200");
    db.write(b)?;
    Ok(db)
}

/// Everything `from` holds, merged into `to`, as a snapshot's parts would be.
fn merge_all(from: &Database, to: &Database) -> Result<u64> {
    let mut export = from.export_state(None)?;
    let header = export.header.clone();
    to.merge_state(StateJob::Begin(header.clone()))?;
    let mut versions = 0;
    while let Some(rows) = export.next_chunk(16 << 10)? {
        versions += to.merge_state(StateJob::Rows(rows))?;
    }
    to.merge_state(StateJob::End {
        clock: header.clock,
        collected: header.collected,
    })?;
    Ok(versions)
}

fn answers(db: &Database) -> Result<Vec<String>> {
    Ok(db
        .search("c", &[4.0, 1.0, 0.0], &SearchOptions::k(10))?
        .into_iter()
        .map(|h| h.id)
        .collect())
}

#[test]
fn merged_state_equals_the_exporters_and_survives_a_reopen() -> Result<()> {
    let (da, db_) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = loaded(da.path())?;
    let b = open(db_.path())?;
    let versions = merge_all(&a, &b)?;
    // 298 live objects, 2 tombstones, 50 edges (two of them to or from a deleted object).
    assert_eq!(versions, 300 + 50);
    let want = a.digest("c")?;
    assert_eq!(b.digest("c")?, want);
    assert_eq!(answers(&b)?, answers(&a)?);
    assert!(b.get("c", "o3")?.is_none());
    let edges = b.edges(&NodeKey::new("c", "o10"), Some("next"), Direction::Out)?;
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].properties, json!({"w": 10}));
    // b's log moved on to a's clock without holding a's entries.
    let a_clock = a.applied_clock();
    for (origin, seq) in &a_clock {
        assert_eq!(b.applied_clock().get(origin), Some(seq));
    }
    assert_eq!(b.log_len()?, 0);
    assert_eq!(b.log_horizon()?.0, a_clock);

    // Merging the same state again changes nothing.
    merge_all(&a, &b)?;
    assert_eq!(b.digest("c")?, want);

    // b reopens on what it merged (its index snapshot, taken at the end of the merge).
    let expected = answers(&b)?;
    b.close()?;
    let b = open(db_.path())?;
    assert_eq!(b.digest("c")?, want);
    assert_eq!(answers(&b)?, expected);
    assert_eq!(b.stats("c")?.objects, 298);
    Ok(())
}

#[test]
fn a_damaged_row_is_refused_and_changes_nothing() -> Result<()> {
    let (da, db_) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = loaded(da.path())?;
    let b = open(db_.path())?;
    merge_all(&a, &b)?;
    let before = b.digest("c")?;
    let node = LogNode {
        collection: "c".into(),
        id: "o1".into(),
    };
    let bad = StateRow {
        key: RowKey::Object(node),
        versions: vec![StoredSibling {
            hlc: u64::MAX >> 1,
            origin: 99,
            seq: 1,
            seen: Default::default(),
            value: SiblingValue::Edge {
                properties: "{}".into(),
            },
        }],
    };
    let err = b
        .merge_state(StateJob::Rows(vec![bad]))
        .err()
        .context("a damaged row was merged")?;
    assert!(err.to_string().contains("mixes an object key"), "{err}");
    assert_eq!(b.digest("c")?, before);
    Ok(())
}

#[test]
fn trimming_keeps_what_no_index_snapshot_covers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = loaded(dir.path())?;
    let entries = a.log_len()?;
    // As on a node with peers: a checkpoint leaves the log to `trim_log`.
    a.note_replication()?;
    a.checkpoint()?;
    assert_eq!(a.log_len()?, entries);
    // Once an index snapshot covers it (and no peer needs it), the whole log may go.
    assert_eq!(a.trim_log(None, Duration::ZERO)?, entries);
    assert_eq!(a.log_len()?, 0);
    // Entries after the snapshot are what a restart replays over it: they stay.
    let mut b = Batch::new();
    b.upsert("c", "late", json!({}), Some(vec![7.0, 7.0, 7.0]));
    a.write(b)?;
    assert_eq!(a.trim_log(None, Duration::ZERO)?, 0);
    assert_eq!(a.log_len()?, 1);
    // A retention window keeps young entries even once a snapshot covers them.
    a.checkpoint()?;
    assert_eq!(a.trim_log(None, Duration::from_secs(3600))?, 0);
    assert_eq!(a.trim_log(None, Duration::ZERO)?, 1);
    // And the database reopens on a snapshot and an empty log.
    let digest = a.digest("c")?;
    a.close()?;
    let a = open(dir.path())?;
    assert_eq!(a.digest("c")?, digest);
    assert!(a.get("c", "late")?.is_some());
    Ok(())
}
