//! Plugins across a three-node cluster: an upload runs on every node, changes (disable,
//! rollback) follow it, and a resolver plugin decides a real concurrent conflict the same way
//! on every node.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, ConflictPolicy, SearchOptions};
use vektagraf::plugins::Grants;
use vektagraf::Database;
use vektagraf_tests::mesh::{converged, Mesh};
use vektagraf_tests::plugins::bytes;
use vektagraf_tests::proxy::Faults;

const WITHIN: Duration = Duration::from_secs(30);

/// Waits until `check` holds on every database.
async fn everywhere(
    dbs: &[&Database],
    what: &str,
    check: impl Fn(&Database) -> bool,
) -> Result<()> {
    let until = Instant::now() + WITHIN;
    while !dbs.iter().all(|d| check(d)) {
        anyhow::ensure!(
            Instant::now() < until,
            "not everywhere within {WITHIN:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugins_replicate_and_a_resolver_decides_a_conflict_alike_everywhere() -> Result<()> {
    let mesh = Mesh::new(&["a", "b", "c"], Some(Faults::none())).await?;
    let nodes = [
        mesh.start("a").await?,
        mesh.start("b").await?,
        mesh.start("c").await?,
    ];
    let dbs: Vec<&Database> = nodes.iter().map(|n| n.database().as_ref()).collect();

    // An upload on one node runs on all three.
    let t = Instant::now();
    dbs[0].plugin_upload("echo", bytes("echo")?, Grants::default())?;
    everywhere(&dbs, "echo answers", |d| {
        d.plugin_call("echo", b"ping", None)
            .is_ok_and(|o| o == b"ping")
    })
    .await?;
    eprintln!("upload to ready on three nodes: {:?}", t.elapsed());

    // Later changes follow: a second version, then a rollback made on another node.
    dbs[1].plugin_upload("echo", bytes("knn")?, Grants::default())?;
    everywhere(&dbs, "echo v2", |d| {
        d.plugin("echo").is_ok_and(|p| p.active == 2)
    })
    .await?;
    dbs[2].plugin_rollback("echo", 1)?;
    everywhere(&dbs, "echo back at v1", |d| {
        d.plugin("echo")
            .is_ok_and(|p| p.active == 1 && p.versions.len() == 2)
            && d.plugin_call("echo", b"v1", None).is_ok_and(|o| o == b"v1")
    })
    .await?;
    dbs[0].plugin_enable("echo", false)?;
    everywhere(&dbs, "echo disabled", |d| {
        d.plugin("echo").is_ok_and(|p| !p.enabled)
    })
    .await?;

    // A resolver merges set-valued properties of concurrent writes.
    dbs[0].plugin_upload("union", bytes("union-resolver")?, Grants::default())?;
    everywhere(&dbs, "the resolver", |d| d.plugin("union").is_ok()).await?;
    let spec = CollectionSpec {
        conflict: ConflictPolicy::VectorClock,
        resolver: Some("union".into()),
        ..CollectionSpec::new("tags", 3)
    };
    dbs[0].create_collection(spec)?;
    everywhere(&dbs, "the collection", |d| {
        d.collection_spec("tags").is_ok()
    })
    .await?;
    for p in mesh.proxies.values() {
        p.cut(true);
    }
    for (i, d) in dbs.iter().enumerate() {
        let mut b = Batch::new();
        b.upsert(
            "tags",
            "pkg",
            json!({"tags": [format!("from-{i}"), "common"], "by": i}),
            Some(vec![1.0, i as f32, 0.0]),
        );
        d.write(b)?;
    }
    for p in mesh.proxies.values() {
        p.cut(false);
    }
    converged(&dbs, "tags", WITHIN).await?;
    let mut seen = Vec::new();
    for d in &dbs {
        let o = d.get("tags", "pkg")?.context("the contested object")?;
        assert_eq!(
            o.properties["tags"],
            json!(["common", "from-0", "from-1", "from-2"]),
            "the union of the three writes"
        );
        assert_eq!(
            d.versions("tags", "pkg")?.versions.len(),
            3,
            "the siblings stay"
        );
        let hit = d.search("tags", &[1.0, 1.0, 0.0], &SearchOptions::k(1))?;
        seen.push((o.properties.clone(), o.vector.clone(), hit[0].score));
    }
    assert!(seen.iter().all(|s| s == &seen[0]), "{seen:?}");
    assert!(dbs.iter().all(|d| d.plugin_metrics().calls("union") >= 1));
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
