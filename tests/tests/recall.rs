//! Recall of the engine, through the Wasm component, against exact search computed here.

use anyhow::Result;
use vektagraf::model::SearchOptions;
use vektagraf::DatabaseConfig;
use vektagraf_tests::{exact_top_k, load_into, load_sample, temp_db, DIM};

fn recall(shards: u32) -> Result<f64> {
    let sample = load_sample(10_000, 200)?;
    let (_dir, db) = temp_db(DatabaseConfig::default())?;
    load_into(&db, "pkgs", &sample, shards)?;
    let answers = db.search_batch("pkgs", &sample.queries, &SearchOptions::k(10))?;
    let mut hits = 0;
    for (q, got) in sample.queries.chunks_exact(DIM).zip(&answers) {
        let want: Vec<&str> = exact_top_k(&sample.base, q, 10, |_| true)
            .into_iter()
            .map(|i| sample.meta[i].0.as_str())
            .collect();
        assert_eq!(got.len(), 10);
        hits += got.iter().filter(|h| want.contains(&h.id.as_str())).count();
    }
    Ok(hits as f64 / (answers.len() * 10) as f64)
}

#[test]
fn recall_at_10_on_10k_real_vectors_is_at_least_0_95() -> Result<()> {
    let r = recall(1)?;
    assert!(r >= 0.95, "recall@10 {r}");
    Ok(())
}

#[test]
fn sharded_collection_merges_to_the_same_quality() -> Result<()> {
    let r = recall(3)?;
    assert!(r >= 0.95, "recall@10 with 3 shards {r}");
    Ok(())
}
