//! The embedded API end to end: bad input is refused with a clear error and writes nothing;
//! data, edges and answers survive a reopen; deletes cascade to edges.

use anyhow::Result;
use serde_json::json;
use vektagraf::model::{
    Batch, CollectionSpec, Direction, IndexKind, Metric, NodeKey, SearchOptions, TraverseOptions,
};
use vektagraf::{Database, DatabaseConfig, Error};

fn spec(name: &str, metric: Metric) -> CollectionSpec {
    let mut s = CollectionSpec::new(name, 3);
    s.metric = metric;
    s
}

fn seed(db: &Database) -> Result<()> {
    db.create_collection(spec("c", Metric::Cosine))?;
    let mut b = Batch::new();
    b.upsert("c", "a", json!({"n": 1}), Some(vec![1.0, 0.0, 0.0]))
        .upsert("c", "b", json!({"n": 2}), Some(vec![0.9, 0.1, 0.0]))
        .upsert("c", "z", json!({"n": 3}), Some(vec![0.0, 0.0, 1.0]))
        .link(
            NodeKey::new("c", "a"),
            "likes",
            NodeKey::new("c", "b"),
            json!({"w": 1}),
        )
        .link(
            NodeKey::new("c", "b"),
            "likes",
            NodeKey::new("c", "z"),
            json!({}),
        );
    db.write(b)?;
    Ok(())
}

fn err_text(r: vektagraf::Result<impl std::fmt::Debug>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_refused_by_name_and_writes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    seed(&db)?;
    let before = db.stats("c")?;
    let one = |id: &str, v: Vec<f32>| {
        let mut b = Batch::new();
        b.upsert("c", "ok-first", json!({}), Some(vec![0.5, 0.5, 0.0]))
            .upsert("c", id, json!({}), Some(v));
        b
    };
    assert!(err_text(db.write(one("short", vec![1.0, 2.0])))
        .contains("vector has 2 dimensions, collection `c` expects 3"));
    assert!(err_text(db.write(one("nan", vec![1.0, f32::NAN, 0.0]))).contains("component 1 is NaN"));
    assert!(
        err_text(db.write(one("inf", vec![f32::INFINITY, 0.0, 0.0])))
            .contains("only finite numbers")
    );
    assert!(err_text(db.write(one("zero", vec![0.0, 0.0, 0.0])))
        .contains("zero vector has no direction"));
    let mut b = Batch::new();
    b.upsert("nope", "x", json!({}), None);
    assert!(matches!(db.write(b), Err(Error::UnknownCollection(c)) if c == "nope"));
    let mut b = Batch::new();
    b.upsert("c", "p", json!([1, 2]), None);
    assert!(err_text(db.write(b)).contains("properties must be a JSON object"));
    let mut b = Batch::new();
    b.upsert("c", "ok-first", json!({}), None).link(
        NodeKey::new("c", "a"),
        "likes",
        NodeKey::new("c", "ghost"),
        json!({}),
    );
    assert!(err_text(db.write(b)).contains("object `ghost` does not exist in collection `c`"));
    // None of the refused batches left anything behind, not even their valid first write.
    assert_eq!(db.get("c", "ok-first")?, None);
    assert_eq!(db.stats("c")?.objects, before.objects);
    assert_eq!(
        db.edges(&NodeKey::new("c", "a"), None, Direction::Out)?
            .len(),
        1
    );

    // A collection created twice: same spec is fine, other parameters are refused.
    assert!(!db.create_collection(spec("c", Metric::Cosine))?);
    assert!(matches!(
        db.create_collection(spec("c", Metric::Dot)),
        Err(Error::CollectionConflict { .. })
    ));
    let mut bad = spec("bad name!", Metric::Dot);
    assert!(err_text(db.create_collection(bad.clone())).contains("name must be"));
    bad.name = "fine".into();
    bad.index = IndexKind::Hora;
    assert!(err_text(db.create_collection(bad.clone()))
        .contains("hora index cannot search by inner product"));
    bad.index = IndexKind::Hnsw;
    bad.dimension = 0;
    assert!(err_text(db.create_collection(bad)).contains("dimension 0"));

    // Bad queries name what is wrong.
    assert!(err_text(db.search("c", &[1.0, 0.0], &SearchOptions::k(1))).contains("needs rows of 3"));
    let f = SearchOptions {
        k: 1,
        ef: None,
        filter: Some(json!({"n": {"$gtt": 1}})),
        ..Default::default()
    };
    assert!(
        err_text(db.search("c", &[1.0, 0.0, 0.0], &f)).contains("unknown operator `$gtt` on `n`")
    );
    assert!(matches!(
        db.search("nope", &[1.0], &SearchOptions::k(1)),
        Err(Error::UnknownCollection(_))
    ));
    db.close()?;
    Ok(())
}

#[test]
fn data_edges_and_answers_survive_reopen_from_snapshot_and_from_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let q = [1.0, 0.05, 0.0];
    let first = {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        seed(&db)?;
        let hits = db.search("c", &q, &SearchOptions::k(3))?;
        db.close()?; // writes snapshots
        hits
    };
    {
        // With wasmtime's own engine memories (4 KiB pages) instead of ours: the same answers.
        let mut small_pages = DatabaseConfig::default();
        small_pages.engine.huge_pages = false;
        let db = Database::open(dir.path(), small_pages)?;
        let report = &db.startup()[0].1[0];
        assert!(
            report.restored_snapshot && report.rebuilt == 0,
            "{report:?}"
        );
        assert_eq!(db.search("c", &q, &SearchOptions::k(3))?, first);
        // Writes after the snapshot, then a drop without close: the next open replays them.
        let mut b = Batch::new();
        b.upsert("c", "a2", json!({"n": 9}), Some(vec![1.0, 0.06, 0.0]))
            .delete("c", "b");
        db.write(b)?;
    }
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let report = &db.startup()[0].1[0];
    assert!(
        report.restored_snapshot && report.replayed == 2,
        "{report:?}"
    );
    let ids: Vec<String> = db
        .search("c", &q, &SearchOptions::k(3))?
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, vec!["a2", "a", "z"]);
    // Deleting `b` removed both of its edges, in both directions.
    assert!(db
        .edges(&NodeKey::new("c", "a"), None, Direction::Out)?
        .is_empty());
    assert!(db
        .edges(&NodeKey::new("c", "z"), None, Direction::In)?
        .is_empty());
    let o = db.get("c", "a")?.expect("a is stored");
    assert_eq!(o.properties, json!({"n": 1}));
    assert_eq!(o.vector, Some(vec![1.0, 0.0, 0.0]));
    Ok(())
}

#[test]
fn traversal_filters_and_hybrid_answer_from_stored_edges() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    seed(&db)?;
    let steps = db.traverse(
        &NodeKey::new("c", "a"),
        &TraverseOptions {
            depth: 2,
            ..Default::default()
        },
    )?;
    let ids: Vec<(&str, u32)> = steps
        .iter()
        .map(|s| (s.node.id.as_str(), s.depth))
        .collect();
    assert_eq!(ids, vec![("a", 0), ("b", 1), ("z", 2)]);
    let back = db.traverse(
        &NodeKey::new("c", "z"),
        &TraverseOptions {
            direction: Direction::In,
            depth: 5,
            ..Default::default()
        },
    )?;
    assert_eq!(
        back.iter().map(|s| s.node.id.as_str()).collect::<Vec<_>>(),
        vec!["z", "b", "a"]
    );
    assert_eq!(
        db.filter("c", &json!({"n": {"$gte": 2}}), 10)?,
        vec!["b", "z"]
    );
    let f = SearchOptions {
        k: 2,
        ef: None,
        filter: Some(json!({"n": {"$ne": 1}})),
        ..Default::default()
    };
    let ids: Vec<String> = db
        .search("c", &[1.0, 0.0, 0.0], &f)?
        .into_iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(ids, vec!["b", "z"]);
    let h = db.hybrid(
        "c",
        &[1.0, 0.0, 0.0],
        &SearchOptions::k(1),
        &TraverseOptions::default(),
    )?;
    assert_eq!(h[0].hit.id, "a");
    assert_eq!(
        h[0].neighbours
            .iter()
            .map(|s| s.node.id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    Ok(())
}

#[test]
fn hora_collections_answer_and_rebuild_from_storage_on_open() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let q = [1.0, 0.0, 0.1];
    let first = {
        let db = Database::open(dir.path(), DatabaseConfig::default())?;
        let mut s = spec("h", Metric::Euclidean);
        s.index = IndexKind::Hora;
        db.create_collection(s)?;
        let mut b = Batch::new();
        for i in 0..200 {
            let x = i as f32 / 200.0;
            b.upsert(
                "h",
                &format!("p{i}"),
                json!({}),
                Some(vec![x, 1.0 - x, (i % 7) as f32]),
            );
        }
        b.delete("h", "p199");
        db.write(b)?;
        let hits = db.search("h", &q, &SearchOptions::k(5))?;
        assert!(hits.iter().all(|h| h.id != "p199"));
        db.close()?;
        hits
    };
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let report = &db.startup()[0].1[0];
    assert!(
        !report.restored_snapshot && report.rebuilt == 199,
        "{report:?}"
    );
    assert_eq!(db.search("h", &q, &SearchOptions::k(5))?, first);
    Ok(())
}

#[test]
fn a_full_commit_queue_refuses_server_writes_at_once_and_writes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DatabaseConfig {
        commit_queue: 1,
        ..DatabaseConfig::default()
    };
    let db = Database::open(dir.path(), config)?;
    let mut spec = CollectionSpec::new("c", 64);
    spec.metric = Metric::Euclidean;
    db.create_collection(spec)?;
    // A batch large enough to keep the committer busy for a while (HNSW inserts), then a
    // small one that waits in the one-slot queue: a third finds the queue full.
    let mut big = Batch::new();
    for i in 0..60_000u32 {
        let v: Vec<f32> = (0..64u32).map(|d| ((i * 31 + d * 7) % 97) as f32).collect();
        big.upsert("c", &format!("b{i}"), json!({}), Some(v));
    }
    let small = |id: &str| {
        let mut b = Batch::new();
        b.upsert("c", id, json!({}), Some(vec![1.0; 64]));
        b
    };
    std::thread::scope(|s| -> Result<()> {
        let first = s.spawn(|| db.write(big));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = s.spawn(|| db.write(small("queued")));
        std::thread::sleep(std::time::Duration::from_millis(100));
        let e = db
            .write_before(small("refused"), None)
            .expect_err("queue full");
        assert!(matches!(e, Error::Overloaded(1)), "{e}");
        assert!(e.to_string().contains("the node is busy"), "{e}");
        first
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        second
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        Ok(())
    })?;
    assert!(db.get("c", "queued")?.is_some());
    assert!(
        db.get("c", "refused")?.is_none(),
        "a refused write wrote nothing"
    );
    db.close()?;
    Ok(())
}

#[test]
fn filters_merge_shards_in_id_order_and_exact_search_is_exact() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    let mut s = spec("s", Metric::Euclidean);
    s.shards = 4;
    db.create_collection(s)?;
    let mut ids: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    ids.extend(["007", "a", "b10", "b9"].map(String::from));
    let mut b = Batch::new();
    for (i, id) in ids.iter().enumerate() {
        let x = i as f32;
        let tags = if i % 3 == 0 {
            json!(["x", "y"])
        } else {
            json!([])
        };
        b.upsert(
            "s",
            id,
            json!({"tags": tags, "at": format!("2024-01-{:02}", i % 28 + 1)}),
            Some(vec![x, (x * 0.7).sin(), 1.0]),
        );
    }
    db.write(b)?;
    // Numbers by value first, then the rest by bytes, across the four shards.
    let all = db.filter("s", &json!({}), 1000)?;
    assert_eq!(
        &all[..12],
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
    );
    assert_eq!(&all[39..], ["39", "007", "a", "b10", "b9"]);
    assert_eq!(db.filter("s", &json!({}), 3)?, ["0", "1", "2"]);
    assert_eq!(
        db.filter("s", &json!({"tags": "y", "$id": {"$gte": "30"}}), 10)?,
        ["30", "33", "36", "39", "b10"]
    );
    assert_eq!(
        db.filter(
            "s",
            &json!({"at": {"$gte": {"$date": "2024-01-27T00:00:00+00:00"}}}),
            10
        )?,
        ["26", "27"]
    );
    assert_eq!(
        db.filter(
            "s",
            &json!({"tags": {"$isEmpty": false}, "$id": {"$lt": "7"}}),
            10
        )?,
        ["0", "3", "6"]
    );
    let q = [17.2, 0.3, 1.0];
    let exact = SearchOptions {
        k: 5,
        ef: Some(5),
        exact: true,
        ..Default::default()
    };
    let hits: Vec<String> = db
        .search("s", &q, &exact)?
        .into_iter()
        .map(|h| h.id)
        .collect();
    let mut want: Vec<(f32, &String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let x = i as f32;
            let v = [x, (x * 0.7).sin(), 1.0];
            (v.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum(), id)
        })
        .collect();
    want.sort_by(|a, b| a.0.total_cmp(&b.0));
    let want: Vec<String> = want.iter().take(5).map(|w| w.1.clone()).collect();
    assert_eq!(hits, want);
    Ok(())
}
