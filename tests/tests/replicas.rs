//! Read replicas (`engine.read_replicas`): several engine instances per shard with the same
//! state. Searches from many threads at once answer exactly as one instance does, every
//! committed write is on every replica, and a reopen brings all replicas back.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, Metric, SearchOptions};
use vektagraf::{Database, DatabaseConfig};

fn config(replicas: usize) -> DatabaseConfig {
    DatabaseConfig {
        read_replicas: replicas,
        ..DatabaseConfig::default()
    }
}

fn vector(i: usize) -> Vec<f32> {
    let x = i as f32;
    vec![
        (x * 0.37).sin(),
        (x * 0.11).cos(),
        (x * 0.05).sin() + 1.5,
        x / 300.0,
    ]
}

fn fill(db: &Database) -> Result<()> {
    let mut spec = CollectionSpec::new("c", 4);
    spec.metric = Metric::Euclidean;
    spec.shards = 2;
    db.create_collection(spec)?;
    for chunk in (0..300).collect::<Vec<_>>().chunks(50) {
        let mut b = Batch::new();
        for &i in chunk {
            b.upsert(
                "c",
                &format!("o{i}"),
                json!({"i": i, "odd": i % 2 == 1}),
                Some(vector(i)),
            );
        }
        db.write(b)?;
    }
    Ok(())
}

fn answers(db: &Database) -> Result<Vec<Vec<String>>> {
    let opts = SearchOptions {
        k: 5,
        ef: Some(64),
        filter: Some(json!({"odd": true})),
        ..Default::default()
    };
    (0..40)
        .map(|q| {
            Ok(db
                .search("c", &vector(q * 7 + 3), &opts)?
                .into_iter()
                .map(|h| h.id)
                .collect())
        })
        .collect()
}

#[test]
fn replicas_answer_as_one_instance_does_under_concurrent_reads_and_writes() -> Result<()> {
    let one_dir = tempfile::tempdir()?;
    let three_dir = tempfile::tempdir()?;
    let one = Database::open(one_dir.path(), config(1))?;
    let three = Database::open(three_dir.path(), config(3))?;
    fill(&one)?;
    fill(&three)?;
    let expected = answers(&one)?;
    // Four readers hammer the replicas while a writer deletes and re-adds objects that no
    // query can see (ids outside the filter's answers), so every read must stay as expected.
    let writing = AtomicBool::new(true);
    std::thread::scope(|s| -> Result<()> {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<usize> {
                    let mut rounds = 0;
                    while writing.load(Ordering::Relaxed) || rounds < 3 {
                        assert_eq!(answers(&three)?, expected);
                        rounds += 1;
                    }
                    Ok(rounds)
                })
            })
            .collect();
        for round in 0..20 {
            let mut b = Batch::new();
            let id = format!("e{round}");
            b.upsert("c", &id, json!({"odd": false}), Some(vector(round)));
            three.write(b)?;
            let mut b = Batch::new();
            b.delete("c", &id);
            three.write(b)?;
        }
        writing.store(false, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().map_err(|_| anyhow::anyhow!("reader panicked"))?? >= 3);
        }
        Ok(())
    })?;
    // A committed write is on every replica: reads from several threads at once (so busy
    // replicas send them to the others) all see a new nearest object at once.
    let mut b = Batch::new();
    b.upsert("c", "new", json!({"odd": true}), Some(vec![9.0; 4]));
    three.write(b)?;
    std::thread::scope(|s| -> Result<()> {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    for _ in 0..50 {
                        let hits = three.search("c", &[9.0; 4], &SearchOptions::k(1))?;
                        assert_eq!(hits[0].id, "new");
                    }
                    Ok(())
                })
            })
            .collect();
        for r in readers {
            r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
        }
        Ok(())
    })?;
    let mut b = Batch::new();
    b.delete("c", "new");
    three.write(b)?;
    assert_eq!(answers(&three)?, expected);
    assert_eq!(three.stats("c")?.objects, 300);

    // Reopened (snapshot restored into every replica), the answers are the same.
    three.close()?;
    let three = Database::open(three_dir.path(), config(3))?;
    assert!(three.broken_shards().is_empty());
    assert_eq!(answers(&three)?, expected);
    three.close()?;
    one.close()?;
    Ok(())
}
