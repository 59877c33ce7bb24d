//! State rather than log between real nodes on loopback: once every peer has the log and the
//! index snapshots cover it, it is trimmed, and a node added later bootstraps from a state
//! snapshot and then follows the log; divergence the log cannot explain (rows lost on one
//! node) is found by anti-entropy and repaired from the peer.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, ConflictPolicy, Metric, NodeKey, SearchOptions};
use vektagraf::server::Node;
use vektagraf::store::Store;
use vektagraf::Database;
use vektagraf_tests::mesh::{converged, Mesh};

const CONVERGE: Duration = Duration::from_secs(30);

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        metric: Metric::Euclidean,
        conflict: ConflictPolicy::VectorClock,
        ..CollectionSpec::new(name, 3)
    }
}

fn load(db: &Database, collection: &str, from: usize, to: usize) -> Result<()> {
    let mut batch = Batch::new();
    for n in from..to {
        batch.upsert(
            collection,
            &format!("o{n}"),
            json!({"n": n}),
            Some(vec![n as f32, 1.0, 0.0]),
        );
    }
    db.write(batch)?;
    Ok(())
}

/// Waits until `check` holds, polling.
async fn until(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + within;
    while !check() {
        if Instant::now() > end {
            anyhow::bail!("{what} did not happen within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn nearest(db: &Database, collection: &str, q: [f32; 3]) -> Result<Vec<String>> {
    let opts = SearchOptions {
        k: 5,
        ..SearchOptions::default()
    };
    Ok(db
        .search(collection, &q, &opts)?
        .into_iter()
        .map(|h| h.id)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_after_the_log_was_trimmed_bootstraps_from_a_snapshot() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mesh = Mesh::new(&["a", "b", "c"], None).await?;
    // a and b do not know c yet.
    let start = |name: &str, peers: &[&str]| {
        let config = mesh.config_with_peers(name, "last-write-wins", peers);
        async { mesh.start_config(config?).await }
    };
    let a = start("a", &["a", "b"]).await?;
    let b = start("b", &["a", "b"]).await?;
    a.database().create_collection(spec("j"))?;
    for chunk in 0..10 {
        load(a.database(), "j", chunk * 50, chunk * 50 + 50)?;
    }
    converged(&[a.database(), b.database()], "j", CONVERGE).await?;
    let mut del = Batch::new();
    del.delete("j", "o7");
    b.database().write(del)?;
    converged(&[a.database(), b.database()], "j", CONVERGE).await?;
    let entries = a.database().log_len()?;
    // Index snapshots cover the log; then every peer having it, it goes.
    a.database().checkpoint()?;
    b.database().checkpoint()?;
    until("trimming both logs", CONVERGE, || {
        [&a, &b]
            .iter()
            .all(|n| n.database().log_len().is_ok_and(|n| n == 0))
    })
    .await?;
    let trimmed = a.replication_status().context("status")?.log_trimmed;
    assert_eq!(trimmed, entries, "a trimmed its whole log");

    // The operator adds c: a and b restart knowing it; c starts empty.
    a.shutdown().await?;
    b.shutdown().await?;
    let a = start("a", &["a", "b", "c"]).await?;
    let b = start("b", &["a", "b", "c"]).await?;
    let c = start("c", &["a", "b", "c"]).await?;
    converged(&[a.database(), b.database(), c.database()], "j", CONVERGE).await?;
    // (The status is refreshed every 100 ms.)
    until("c reporting the snapshot it merged", CONVERGE, || {
        c.replication_status()
            .is_some_and(|s| s.snapshots_received >= 1)
    })
    .await?;
    let stats = c.database().stats("j")?;
    assert_eq!(stats.objects, 499);
    assert_eq!(stats.spec.conflict, ConflictPolicy::VectorClock);
    assert!(c.database().get("j", "o7")?.is_none());
    assert_eq!(
        nearest(c.database(), "j", [100.0, 1.0, 0.0])?,
        nearest(a.database(), "j", [100.0, 1.0, 0.0])?
    );

    // After the snapshot the log flows again, both ways.
    load(a.database(), "j", 1000, 1010)?;
    let mut from_c = Batch::new();
    from_c.upsert("j", "from-c", json!({"c": true}), Some(vec![0.5, 0.5, 0.5]));
    c.database().write(from_c)?;
    converged(&[a.database(), b.database(), c.database()], "j", CONVERGE).await?;
    assert_eq!(c.database().stats("j")?.objects, 510);
    assert!(a.database().get("j", "from-c")?.is_some());

    // c restarts on what it merged (its log starts after the snapshot) and answers the same.
    let expected = nearest(a.database(), "j", [1005.0, 1.0, 0.0])?;
    c.shutdown().await?;
    let c = start("c", &["a", "b", "c"]).await?;
    assert_eq!(nearest(c.database(), "j", [1005.0, 1.0, 0.0])?, expected);
    assert_eq!(c.database().stats("j")?.objects, 510);
    for n in [a, b, c] {
        n.shutdown().await?;
    }
    Ok(())
}

/// Removes an object's rows from a stopped node's storage, logging nothing: divergence the
/// log cannot explain.
fn lose_object(mesh: &Mesh, node: &str, collection: &str, id: &str) -> Result<()> {
    let store = Store::open(&mesh.cluster.config(node).data_dir)?;
    let mut txn = store.begin_write()?;
    txn.put_object_versions(&NodeKey::new(collection, id), None, &[])?;
    txn.commit()?;
    Ok(())
}

async fn restart(mesh: &Mesh, node: Node, name: &str, lose: &[&str]) -> Result<Node> {
    node.shutdown().await?;
    for id in lose {
        lose_object(mesh, name, "r", id)?;
    }
    mesh.start(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_entropy_finds_and_repairs_rows_lost_on_either_side() -> Result<()> {
    let mesh = Mesh::new(&["a", "b"], None).await?;
    let a = mesh.start("a").await?;
    let b = mesh.start("b").await?;
    a.database().create_collection(spec("r"))?;
    load(a.database(), "r", 0, 300)?;
    let before = converged(&[a.database(), b.database()], "r", CONVERGE).await?;
    // b loses o5 and a loses o250, behind the log's back.
    let b = restart(&mesh, b, "b", &["o5"]).await?;
    let a = restart(&mesh, a, "a", &["o250"]).await?;
    assert!(b.database().get("r", "o5")?.is_none());
    assert!(a.database().get("r", "o250")?.is_none());
    let after = converged(&[a.database(), b.database()], "r", CONVERGE).await?;
    assert_eq!(
        after, before,
        "the repaired state is the state before the loss"
    );
    assert_eq!(
        b.database().get("r", "o5")?.map(|o| o.properties),
        Some(json!({"n": 5}))
    );
    assert!(a.database().get("r", "o250")?.is_some());
    let repaired = |n: &Node| n.replication_status().map_or(0, |s| s.repaired_versions);
    until("each side reporting the rows it merged", CONVERGE, || {
        repaired(&a) >= 1 && repaired(&b) >= 1
    })
    .await?;
    // The engines took the repaired objects too.
    assert_eq!(nearest(b.database(), "r", [5.0, 1.0, 0.0])?[0], "o5");
    assert_eq!(nearest(a.database(), "r", [250.0, 1.0, 0.0])?[0], "o250");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}
