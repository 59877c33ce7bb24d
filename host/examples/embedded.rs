//! Vektagraf embedded in a program: open a directory, create a collection, write objects and
//! edges, then query by vector, by filter and by graph.
//!
//! cargo run --release -p vektagraf --example embedded

use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, NodeKey, SearchOptions, TraverseOptions};
use vektagraf::{Database, DatabaseConfig};

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path(), DatabaseConfig::default())?;
    db.create_collection(CollectionSpec::new("cities", 3))?;

    let mut batch = Batch::new();
    batch
        .upsert(
            "cities",
            "lisbon",
            json!({"country": "PT", "pop": 545_000}),
            Some(vec![0.9, 0.1, 0.2]),
        )
        .upsert(
            "cities",
            "porto",
            json!({"country": "PT", "pop": 232_000}),
            Some(vec![0.85, 0.15, 0.25]),
        )
        .upsert(
            "cities",
            "oslo",
            json!({"country": "NO", "pop": 709_000}),
            Some(vec![0.1, 0.9, 0.3]),
        )
        .link(
            NodeKey::new("cities", "lisbon"),
            "train",
            NodeKey::new("cities", "porto"),
            json!({"hours": 3}),
        );
    let receipt = db.write(batch)?;
    println!(
        "committed as seq {} of node {:x}",
        receipt.seq, receipt.origin
    );

    for hit in db.search("cities", &[0.88, 0.12, 0.2], &SearchOptions::k(2))? {
        println!("near: {} ({:.3})", hit.id, hit.score);
    }
    let big = db.filter("cities", &json!({"pop": {"$gt": 500_000}}), 10)?;
    println!("over 500k: {big:?}");
    for step in db.traverse(
        &NodeKey::new("cities", "lisbon"),
        &TraverseOptions::default(),
    )? {
        println!("reachable: {} at depth {}", step.node.id, step.depth);
    }
    db.close()?;
    Ok(())
}
