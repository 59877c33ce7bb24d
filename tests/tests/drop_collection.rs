//! Dropping a collection through the embedded API: it takes its objects, every edge touching
//! them (also from other collections), its snapshots and its metadata, durably; a collection
//! created again under the same name (another dimension) holds only its own objects, after a
//! clean close (snapshot path) and after a crash (rebuild and log replay).

use anyhow::Result;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde_json::json;
use vektagraf::model::{
    Batch, CollectionSpec, Direction, Metric, NodeKey, SearchOptions, TraverseOptions,
};
use vektagraf::{Database, DatabaseConfig, Error};

fn spec(name: &str, dimension: u32, shards: u32) -> CollectionSpec {
    let mut s = CollectionSpec::new(name, dimension);
    s.metric = Metric::Euclidean;
    s.shards = shards;
    s
}

fn unknown<T: std::fmt::Debug>(r: vektagraf::Result<T>) -> bool {
    matches!(r, Err(Error::UnknownCollection(c)) if c == "c")
}

fn ids(db: &Database, collection: &str, q: &[f32]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = db
        .search(collection, q, &SearchOptions::k(100))?
        .into_iter()
        .map(|h| h.id)
        .collect();
    ids.sort();
    Ok(ids)
}

fn reached(db: &Database, from: &NodeKey) -> Result<Vec<String>> {
    let steps = db.traverse(
        from,
        &TraverseOptions {
            direction: Direction::Both,
            depth: 5,
            ..Default::default()
        },
    )?;
    let mut out: Vec<String> = steps
        .into_iter()
        .map(|s| format!("{}/{}", s.node.collection, s.node.id))
        .collect();
    out.sort();
    Ok(out)
}

/// Every row of the redb file that mentions collection `name` (keys of whole parts start
/// with it; name-keyed tables use it as is). Fails on a table this test does not know, so a
/// new table keyed by collection is not forgotten here.
fn rows_of(dir: &std::path::Path, name: &str) -> Result<Vec<String>> {
    const BYTES: [&str; 6] = [
        "objects",
        "edges_out",
        "index_snapshot_meta",
        "index_snapshot_chunks",
        "versions",
        "resolved",
    ];
    const NAMED: [&str; 2] = ["collections", "collection_meta"];
    // Plugins belong to the database, not to a collection.
    const OTHER: [&str; 7] = [
        "meta",
        "oplog",
        "applied",
        "tokens",
        "edges_in",
        "plugins",
        "plugin_blobs",
    ];
    let db = redb::Database::open(dir.join("vektagraf.redb"))?;
    let txn = db.begin_read()?;
    let mut prefix = (name.len() as u32).to_be_bytes().to_vec();
    prefix.extend_from_slice(name.as_bytes());
    let mut out = Vec::new();
    for t in txn.list_tables()? {
        let t = t.name().to_owned();
        assert!(
            BYTES.contains(&t.as_str())
                || NAMED.contains(&t.as_str())
                || OTHER.contains(&t.as_str()),
            "table `{t}` is new: say here whether it is keyed by collection"
        );
        if BYTES.contains(&t.as_str()) {
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&t);
            for row in txn.open_table(def)?.iter()? {
                if row?.0.value().starts_with(&prefix) {
                    out.push(t.clone());
                }
            }
        } else if NAMED.contains(&t.as_str()) {
            let def: TableDefinition<&str, &str> = TableDefinition::new(&t);
            if txn.open_table(def)?.get(name)?.is_some() {
                out.push(t.clone());
            }
        }
    }
    // Edges point both ways: any reverse entry naming the collection at either end.
    let edges_in: TableDefinition<&[u8], ()> = TableDefinition::new("edges_in");
    for row in txn.open_table(edges_in)?.iter()? {
        let row = row?;
        let key = row.0.value();
        let mentions = key.windows(prefix.len()).any(|w| w == prefix.as_slice());
        if mentions {
            out.push(format!("edges_in {key:?}"));
        }
    }
    Ok(out)
}

#[test]
fn drop_takes_objects_edges_snapshots_and_meta_durably() -> Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        db.create_collection(spec("c", 3, 2))?;
        db.create_collection(spec("d", 2, 1))?;
        let mut b = Batch::new();
        for (i, id) in ["a", "b", "z"].into_iter().enumerate() {
            b.upsert("c", id, json!({"i": i}), Some(vec![i as f32, 1.0, 0.0]));
        }
        b.upsert("d", "x", json!({}), Some(vec![1.0, 0.0]))
            .upsert("d", "y", json!({}), Some(vec![0.0, 1.0]))
            .link(
                NodeKey::new("c", "a"),
                "l",
                NodeKey::new("c", "b"),
                json!({}),
            )
            .link(
                NodeKey::new("c", "b"),
                "l",
                NodeKey::new("d", "x"),
                json!({}),
            )
            .link(
                NodeKey::new("d", "x"),
                "l",
                NodeKey::new("c", "a"),
                json!({}),
            )
            .link(
                NodeKey::new("d", "x"),
                "l",
                NodeKey::new("d", "y"),
                json!({}),
            );
        db.write(b)?;

        let meta = json!({"vectors": {"size": 3, "distance": "Euclid"}, "payload_schema": {}});
        db.set_collection_meta("c", &meta)?;
        assert_eq!(db.collection_meta("c")?, Some(meta));
        assert_eq!(db.collection_meta("d")?, None);
        assert!(matches!(
            db.set_collection_meta("c2", &json!({})),
            Err(Error::UnknownCollection(n)) if n == "c2"
        ));
        assert!(matches!(
            db.collection_meta("nope"),
            Err(Error::UnknownCollection(_))
        ));
        assert_eq!(
            reached(&db, &NodeKey::new("d", "y"))?,
            ["c/a", "c/b", "d/x", "d/y"]
        );
        db.close()?; // snapshots of both collections
    }
    let mut before = rows_of(dir.path(), "c")?;
    before.dedup();
    let before: Vec<&str> = before
        .iter()
        .map(|r| r.split(' ').next().unwrap_or(""))
        .collect();
    for table in [
        "collections",
        "collection_meta",
        "objects",
        "edges_out",
        "edges_in",
        "index_snapshot_meta",
    ] {
        assert!(before.contains(&table), "{table}: {before:?}");
    }
    // One snapshot file per shard (`c` has two), beside the database file.
    let files = |prefix: &str| -> Result<usize> {
        Ok(std::fs::read_dir(dir.path().join("snapshots"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .count())
    };
    assert_eq!((files("c-")?, files("d-")?), (2, 1));
    {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        assert!(db.drop_collection("c")?);
        let names: Vec<String> = db.collections().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["d"]);
        assert!(unknown(db.stats("c")));
        assert!(unknown(db.get("c", "a")));
        assert!(unknown(db.search(
            "c",
            &[0.0, 1.0, 0.0],
            &SearchOptions::k(1)
        )));
        assert!(unknown(db.collection_meta("c")));
        assert!(unknown(db.set_collection_meta("c", &json!({}))));
        assert!(unknown(db.edges(
            &NodeKey::new("c", "a"),
            None,
            Direction::Both
        )));
        // The surviving collection no longer reaches the dropped objects.
        assert_eq!(reached(&db, &NodeKey::new("d", "y"))?, ["d/x", "d/y"]);
        let left = db.edges(&NodeKey::new("d", "x"), None, Direction::Both)?;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].to, NodeKey::new("d", "y"));
        assert_eq!(db.stats("d")?.objects, 2);
        // Writes naming it are refused and write nothing, also to the other collection.
        let mut b = Batch::new();
        b.upsert("d", "w", json!({}), Some(vec![1.0, 1.0])).upsert(
            "c",
            "a",
            json!({}),
            Some(vec![1.0, 1.0, 1.0]),
        );
        assert!(unknown(db.write(b)));
        let mut b = Batch::new();
        b.link(
            NodeKey::new("d", "x"),
            "l",
            NodeKey::new("c", "a"),
            json!({}),
        );
        assert!(unknown(db.write(b)));
        assert_eq!(db.get("d", "w")?, None);
        // Dropping what is not there is not an error.
        assert!(!db.drop_collection("c")?);
        assert!(!db.drop_collection("never")?);
        db.close()?;
    }
    assert_eq!(rows_of(dir.path(), "c")?, Vec::<String>::new());
    assert!(!rows_of(dir.path(), "d")?.is_empty());
    assert_eq!((files("c-")?, files("d-")?), (0, 1));

    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let names: Vec<&str> = db.startup().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["d"]);
    assert!(unknown(db.stats("c")));
    assert_eq!(reached(&db, &NodeKey::new("d", "x"))?, ["d/x", "d/y"]);
    assert_eq!(ids(&db, "d", &[0.0, 0.0])?, ["x", "y"]);
    db.close()?;
    Ok(())
}

/// The counts of a collection's startup reports: (snapshots restored, replayed, rebuilt).
fn startup(db: &Database, name: &str) -> (usize, u64, u64) {
    let reports = db
        .startup()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_slice())
        .unwrap_or_default();
    (
        reports.iter().filter(|r| r.restored_snapshot).count(),
        reports.iter().map(|r| r.replayed).sum(),
        reports.iter().map(|r| r.rebuilt).sum(),
    )
}

fn upserts(db: &Database, name: &str, dim: usize, ids: &[&str]) -> Result<()> {
    let mut b = Batch::new();
    for (i, id) in ids.iter().enumerate() {
        let mut v = vec![0.0; dim];
        v[i % dim] = 1.0 + i as f32;
        b.upsert(name, id, json!({"dim": dim}), Some(v));
    }
    db.write(b)?;
    Ok(())
}

/// create, writes, snapshot, drop, create again with another dimension, writes: every open
/// after that (crash or clean close, rebuild, snapshot or snapshot + replay) shows the new
/// collection with only its own objects.
#[test]
fn a_collection_created_again_after_a_drop_holds_only_its_own_objects() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let open = || Database::open(dir.path(), DatabaseConfig::default());
    {
        let db = open()?;
        db.create_collection(spec("c", 3, 2))?;
        db.create_collection(spec("keep", 2, 1))?;
        upserts(&db, "c", 3, &["a", "b", "p"])?;
        upserts(&db, "keep", 2, &["k"])?;
        db.checkpoint()?; // `c` has snapshots covering its first life
        upserts(&db, "c", 3, &["late"])?; // in the log after them
        upserts(&db, "keep", 2, &["k2"])?;
        assert!(db.drop_collection("c")?);
        assert!(db.create_collection(spec("c", 2, 2))?);
        upserts(&db, "c", 2, &["p", "q"])?;
        assert_eq!(ids(&db, "c", &[0.0, 0.0])?, ["p", "q"]);
        // Dropped without close: no new snapshots, as after a crash.
    }
    {
        let db = open()?;
        assert_eq!(db.collection_spec("c")?.dimension, 2);
        assert_eq!(startup(&db, "c"), (0, 0, 2), "rebuilt from objects");
        assert_eq!(ids(&db, "c", &[0.0, 0.0])?, ["p", "q"]);
        assert_eq!(db.stats("c")?.objects, 2);
        assert_eq!(db.get("c", "a")?, None);
        assert_eq!(
            db.get("c", "p")?.and_then(|o| o.vector),
            Some(vec![1.0, 0.0])
        );
        // The other collection restored its snapshot and replayed past the drop.
        assert_eq!(startup(&db, "keep"), (1, 1, 0));
        assert_eq!(ids(&db, "keep", &[0.0, 0.0])?, ["k", "k2"]);
        db.close()?; // snapshots of the new `c`
    }
    {
        let db = open()?;
        assert_eq!(startup(&db, "c"), (2, 0, 0), "restored the new snapshots");
        assert_eq!(ids(&db, "c", &[0.0, 0.0])?, ["p", "q"]);
        upserts(&db, "c", 2, &["r"])?;
        // Crash again: the next open restores and replays `r` alone.
    }
    {
        let db = open()?;
        assert_eq!(startup(&db, "c"), (2, 1, 0));
        assert_eq!(ids(&db, "c", &[0.0, 0.0])?, ["p", "q", "r"]);
        assert_eq!(db.stats("c")?.objects, 3);
        // A third life, without a snapshot of its own, after the second's snapshots.
        assert!(db.drop_collection("c")?);
        assert!(db.create_collection(spec("c", 4, 1))?);
        upserts(&db, "c", 4, &["s"])?;
    }
    let db = open()?;
    assert_eq!(startup(&db, "c"), (0, 0, 1));
    assert_eq!(ids(&db, "c", &[0.0; 4])?, ["s"]);
    assert_eq!(db.stats("c")?.objects, 1);
    db.close()?;
    Ok(())
}
