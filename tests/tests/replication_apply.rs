//! Remote entries applied between embedded databases directly (no network): each policy's
//! winner and siblings, a link that arrives before its end, a link racing with a delete, writes
//! into a dropped collection, tombstone collection, and equal digests after exchanging logs.

use anyhow::{ensure, Context, Result};
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, ConflictPolicy, Direction, Metric, NodeKey};
use vektagraf::replication::version::Clock;
use vektagraf::{Database, DatabaseConfig};

fn open() -> Result<(tempfile::TempDir, Database)> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    Ok((dir, db))
}

fn spec(policy: ConflictPolicy) -> CollectionSpec {
    CollectionSpec {
        metric: Metric::Euclidean,
        conflict: policy,
        ..CollectionSpec::new("c", 2)
    }
}

/// Sends `to` every entry of `from`'s log it lacks (every origin), as a peer would.
fn sync(from: &Database, to: &Database) -> Result<()> {
    let have = to.applied_clock();
    let mut entries = Vec::new();
    for (origin, last) in from.applied_clock() {
        let next = have.get(&origin).copied().unwrap_or(0) + 1;
        if next <= last && origin != to.node_id() {
            entries.extend(from.log_range(origin, next, last)?);
        }
    }
    let applied = to.apply_remote(entries);
    ensure!(applied.error.is_none(), "apply failed: {:?}", applied.error);
    Ok(())
}

fn put(db: &Database, id: &str, v: i64) -> Result<vektagraf::model::Receipt> {
    let mut b = Batch::new();
    b.upsert("c", id, json!({"v": v}), Some(vec![v as f32, 0.0]));
    Ok(db.write(b)?)
}

fn value(db: &Database, id: &str) -> Result<Option<i64>> {
    Ok(db.get("c", id)?.and_then(|o| o.properties["v"].as_i64()))
}

/// Two nodes write `x` without seeing each other, then exchange logs.
fn race(policy: ConflictPolicy) -> Result<(Database, Database, Vec<tempfile::TempDir>, i64)> {
    let (da, a) = open()?;
    let (db_, b) = open()?;
    a.create_collection(spec(policy))?;
    sync(&a, &b)?;
    let ra = put(&a, "x", 1)?;
    let rb = put(&b, "x", 2)?;
    sync(&a, &b)?;
    sync(&b, &a)?;
    let later = if (rb.hlc, rb.origin) > (ra.hlc, ra.origin) {
        2
    } else {
        1
    };
    Ok((a, b, vec![da, db_], later))
}

#[test]
fn each_policy_decides_a_race_the_same_way_on_both_nodes() -> Result<()> {
    for policy in [
        ConflictPolicy::LastWriteWins,
        ConflictPolicy::FirstWriteWins,
        ConflictPolicy::VectorClock,
        ConflictPolicy::Manual,
    ] {
        let (a, b, _dirs, later) = race(policy)?;
        let expected = if policy == ConflictPolicy::FirstWriteWins {
            3 - later
        } else {
            later
        };
        assert_eq!(value(&a, "x")?, Some(expected), "{policy}");
        assert_eq!(value(&b, "x")?, Some(expected), "{policy}");
        let (da, db_) = (a.digest("c")?, b.digest("c")?);
        assert_eq!(da, db_, "{policy}");
        // Last-write-wins keeps only its winner; the others keep the loser as a sibling.
        let kept = if policy == ConflictPolicy::LastWriteWins {
            0
        } else {
            1
        };
        assert_eq!(da.versions, kept, "{policy}");
        let (conflicts, _) = a.conflict_counts();
        assert!(
            conflicts.iter().any(|(p, n)| *p == policy && *n > 0),
            "{policy}: {conflicts:?}"
        );
        // The vector index holds the visible version on both.
        for db in [&a, &b] {
            let hit = db.search(
                "c",
                &[expected as f32, 0.0],
                &vektagraf::model::SearchOptions::k(1),
            )?;
            assert_eq!(hit.first().map(|h| h.id.as_str()), Some("x"));
            assert!(hit[0].score.abs() < 1e-6, "{policy}: {hit:?}");
        }
        // A write that has seen both replaces them, everywhere.
        put(&b, "x", 7)?;
        sync(&b, &a)?;
        assert_eq!(value(&a, "x")?, Some(7));
        assert_eq!(a.digest("c")?, b.digest("c")?);
        assert_eq!(a.digest("c")?.versions, 0, "{policy}: siblings resolved");
    }
    Ok(())
}

#[test]
fn a_link_can_arrive_before_its_end_and_shows_once_both_exist() -> Result<()> {
    let (_d1, a) = open()?;
    let (_d2, b) = open()?;
    let (_d3, c) = open()?;
    a.create_collection(spec(ConflictPolicy::LastWriteWins))?;
    sync(&a, &b)?;
    sync(&a, &c)?;
    put(&a, "p", 1)?;
    sync(&a, &b)?;
    // b links to q, which it creates; c gets b's entries before a's object p... and before q.
    let mut batch = Batch::new();
    batch
        .upsert("c", "q", json!({"v": 2}), Some(vec![2.0, 0.0]))
        .link(
            NodeKey::new("c", "p"),
            "to",
            NodeKey::new("c", "q"),
            json!({}),
        );
    b.write(batch)?;
    // c applies b's entry (link p->q) without a's upsert of p: stored, but p is missing.
    let have = c.applied_clock();
    let next = have.get(&b.node_id()).copied().unwrap_or(0) + 1;
    let last = b.applied_clock()[&b.node_id()];
    let applied = c.apply_remote(b.log_range(b.node_id(), next, last)?);
    ensure!(applied.error.is_none(), "{:?}", applied.error);
    assert!(c
        .edges(&NodeKey::new("c", "q"), None, Direction::In)?
        .is_empty());
    sync(&a, &c)?;
    assert_eq!(
        c.edges(&NodeKey::new("c", "q"), None, Direction::In)?.len(),
        1
    );
    assert_eq!(c.digest("c")?, b.digest("c")?);
    Ok(())
}

#[test]
fn a_delete_unlinks_what_it_saw_and_a_racing_link_stays_hidden() -> Result<()> {
    let (_d1, a) = open()?;
    let (_d2, b) = open()?;
    a.create_collection(spec(ConflictPolicy::LastWriteWins))?;
    put(&a, "p", 1)?;
    put(&a, "q", 2)?;
    put(&a, "r", 3)?;
    let mut link = Batch::new();
    link.link(
        NodeKey::new("c", "p"),
        "to",
        NodeKey::new("c", "q"),
        json!({}),
    );
    a.write(link)?;
    sync(&a, &b)?;
    // a deletes q; b, not having seen it, links r -> q.
    let mut del = Batch::new();
    del.delete("c", "q");
    a.write(del)?;
    let mut race = Batch::new();
    race.link(
        NodeKey::new("c", "r"),
        "to",
        NodeKey::new("c", "q"),
        json!({}),
    );
    b.write(race)?;
    sync(&a, &b)?;
    sync(&b, &a)?;
    for db in [&a, &b] {
        assert!(db.get("c", "q")?.is_none());
        assert!(db
            .edges(&NodeKey::new("c", "p"), None, Direction::Out)?
            .is_empty());
        assert!(db
            .edges(&NodeKey::new("c", "r"), None, Direction::Out)?
            .is_empty());
    }
    assert_eq!(a.digest("c")?, b.digest("c")?);
    // q comes back: the racing link, never unlinked, shows again.
    put(&a, "q", 4)?;
    sync(&a, &b)?;
    assert_eq!(
        b.edges(&NodeKey::new("c", "r"), None, Direction::Out)?
            .len(),
        1
    );
    // ... and the unlinked p -> q does not.
    assert!(b
        .edges(&NodeKey::new("c", "p"), None, Direction::Out)?
        .is_empty());
    Ok(())
}

#[test]
fn writes_into_a_dropped_collection_are_discarded_and_tombstones_collected() -> Result<()> {
    let (_d1, a) = open()?;
    let (_d2, b) = open()?;
    a.create_collection(spec(ConflictPolicy::LastWriteWins))?;
    sync(&a, &b)?;
    put(&b, "late", 1)?;
    a.drop_collection("c")?;
    sync(&b, &a)?;
    assert!(a.collection_spec("c").is_err());
    assert_eq!(
        a.conflict_counts().1,
        1,
        "the write into the dropped collection is counted"
    );
    sync(&a, &b)?;
    assert!(b.collection_spec("c").is_err(), "the drop replicated");

    // Tombstones: kept until the stable clock covers them.
    a.create_collection(spec(ConflictPolicy::LastWriteWins))?;
    put(&a, "t", 1)?;
    let mut del = Batch::new();
    del.delete("c", "t");
    let r = a.write(del)?;
    assert_eq!(a.versions("c", "t")?.versions.len(), 1, "a tombstone");
    // (The digest leaves a lone tombstone out: nodes collect them at their own pace.)
    assert_eq!(a.digest("c")?.versions, 0);
    let mut not_yet = Clock::default();
    not_yet.add(r.origin, r.seq - 1);
    assert_eq!(a.collect_tombstones(not_yet)?, 0);
    let mut stable = Clock::default();
    stable.add(r.origin, r.seq);
    assert_eq!(a.collect_tombstones(stable)?, 1);
    assert!(a.versions("c", "t")?.versions.is_empty(), "collected");
    let d = a.digest("c")?;
    assert_eq!((d.objects, d.versions), (0, 0));
    let spec = a.collection_spec("c").context("spec")?;
    assert_eq!(spec.conflict, ConflictPolicy::LastWriteWins);
    Ok(())
}

#[test]
fn manual_siblings_are_read_with_their_context_and_resolved_by_a_write_carrying_it() -> Result<()> {
    let (a, b, _dirs, _) = race(ConflictPolicy::Manual)?;
    let seen = a.versions("c", "x")?;
    assert_eq!(seen.versions.len(), 2, "{seen:?}");
    assert_eq!(seen.versions.iter().filter(|v| v.visible).count(), 1);
    assert_eq!(
        b.versions("c", "x")?,
        seen,
        "both nodes hold the same siblings"
    );
    // Meanwhile b writes again, concurrently with the resolve below (it has not seen it).
    let mut batch = Batch::new();
    batch.resolve(
        "c",
        "x",
        &seen.context,
        Some(json!({"v": 12})),
        Some(vec![12.0, 0.0]),
    );
    a.write(batch)?;
    put(&b, "x", 5)?;
    sync(&a, &b)?;
    sync(&b, &a)?;
    // The resolve replaced the two versions it had read; b's later write is not among them.
    let after = a.versions("c", "x")?;
    assert_eq!(after, b.versions("c", "x")?);
    let values: Vec<Option<i64>> = after
        .versions
        .iter()
        .map(|v| v.properties.as_ref().and_then(|p| p["v"].as_i64()))
        .collect();
    assert_eq!(values.len(), 2, "{after:?}");
    assert!(
        values.contains(&Some(12)) && values.contains(&Some(5)),
        "{values:?}"
    );
    // Resolving with the new context leaves one version everywhere; a delete resolves too.
    let mut batch = Batch::new();
    batch.resolve("c", "x", &after.context, None, None);
    b.write(batch)?;
    sync(&b, &a)?;
    assert!(a.get("c", "x")?.is_none());
    let gone = a.versions("c", "x")?;
    assert_eq!(gone.versions.len(), 1);
    assert!(gone.versions[0].properties.is_none(), "a tombstone");
    // A context that is not one is refused with a clear error, writing nothing.
    let mut bad = Batch::new();
    bad.resolve("c", "x", "zz", Some(json!({})), None);
    let err = a
        .write(bad)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is not origin:seq"), "{err}");
    assert_eq!(a.digest("c")?, b.digest("c")?);
    Ok(())
}

/// A node that has forgotten a tombstone writes the key again: the nodes still holding the
/// tombstone see the write as its successor (under first-write-wins a rival would lose to it).
#[test]
fn a_write_after_a_collected_tombstone_has_seen_it_everywhere() -> Result<()> {
    let (_d1, a) = open()?;
    let (_d2, b) = open()?;
    a.create_collection(spec(ConflictPolicy::FirstWriteWins))?;
    put(&a, "t", 1)?;
    sync(&a, &b)?;
    // b deletes it; a gets the tombstone, and later forgets it (b still holds it).
    let mut del = Batch::new();
    del.delete("c", "t");
    let r = b.write(del)?;
    sync(&b, &a)?;
    let mut stable = Clock::default();
    stable.add(r.origin, r.seq);
    assert_eq!(a.collect_tombstones(stable)?, 1);
    put(&a, "t", 2)?;
    sync(&a, &b)?;
    assert_eq!(value(&a, "t")?, Some(2));
    assert_eq!(
        value(&b, "t")?,
        Some(2),
        "b judged a's write the tombstone's successor"
    );
    assert_eq!(
        b.versions("c", "t")?.versions.len(),
        1,
        "the tombstone was replaced"
    );
    Ok(())
}

#[test]
fn a_collection_created_twice_with_other_dimensions_does_not_stall_replication() -> Result<()> {
    let (_d1, a) = open()?;
    let (_d2, b) = open()?;
    // Two regions create `c` at once: `a` with 2 dimensions, `b` with 3.
    a.create_collection(spec(ConflictPolicy::LastWriteWins))?;
    b.create_collection(CollectionSpec {
        metric: Metric::Euclidean,
        ..CollectionSpec::new("c", 3)
    })?;
    put(&a, "two", 1)?;
    let mut three = Batch::new();
    three.upsert("c", "three", json!({"v": 3}), Some(vec![3.0, 0.0, 0.0]));
    b.write(three)?;
    // Later writes of both, into a collection both agree on.
    for db in [&a, &b] {
        db.create_collection(CollectionSpec::new("d", 2))?;
    }
    let mut later = Batch::new();
    later.upsert("d", "after", json!({}), Some(vec![1.0, 0.0]));
    b.write(later)?;

    // Nothing refuses the other's entries: everything after the differing create arrives.
    sync(&a, &b)?;
    sync(&b, &a)?;
    assert_eq!(a.applied_clock(), b.applied_clock());
    assert!(a.get("d", "after")?.is_some(), "b's later write reached a");
    for db in [&a, &b] {
        // Every object is stored on both (the data converges); a vector the collection here
        // cannot take is kept but not indexed.
        assert!(db.get("c", "two")?.is_some());
        assert!(db.get("c", "three")?.is_some());
        assert_eq!(db.unindexed_vectors(), 1);
        let (conflicts, _) = db.conflict_counts();
        assert!(
            conflicts.iter().any(|(_, n)| *n > 0),
            "the differing create is a conflict"
        );
    }
    assert_eq!(a.digest("c")?, b.digest("c")?);
    let hits = a.search("c", &[1.0, 0.0], &vektagraf::model::SearchOptions::k(5))?;
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["two"],
        "a's index holds only the vector that fits its collection"
    );
    // A restart rebuilds or restores the same way.
    let a_dir = _d1.path().to_owned();
    drop(a);
    let a = Database::open(&a_dir, DatabaseConfig::default())?;
    let hits = a.search("c", &[1.0, 0.0], &vektagraf::model::SearchOptions::k(5))?;
    assert_eq!(hits.len(), 1);
    assert!(a.get("c", "three")?.is_some());
    Ok(())
}
