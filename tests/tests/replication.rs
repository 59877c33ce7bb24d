//! Active-active replication between real nodes on loopback: concurrent writes on every node,
//! the same keys included, converge to the same state (equal digests, equal search answers),
//! conflicts decided by the collection's policy; a restarted node catches up; peers with the
//! wrong credentials are refused.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::model::{
    Batch, CollectionSpec, ConflictPolicy, Direction, Metric, NodeKey, SearchOptions,
};
use vektagraf::Database;
use vektagraf_tests::mesh::{converged, Mesh};
use vektagraf_tests::proxy::Faults;

const CONVERGE: Duration = Duration::from_secs(30);

fn spec(name: &str, policy: ConflictPolicy) -> CollectionSpec {
    CollectionSpec {
        metric: Metric::Euclidean,
        conflict: policy,
        ..CollectionSpec::new(name, 3)
    }
}

/// Waits until `name` exists on `db`.
async fn has_collection(db: &Database, name: &str) -> Result<()> {
    for _ in 0..600 {
        if db.collection_spec(name).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("collection `{name}` never arrived")
}

fn write_on(db: &Database, b: Batch) -> Result<vektagraf::model::Receipt> {
    Ok(db.write(b)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_take_concurrent_writes_and_converge() -> Result<()> {
    // Every node dials through a proxy, so the test can cut them apart and make writes truly
    // concurrent (none has seen the others).
    let mesh = Mesh::new(&["a", "b", "c"], Some(Faults::none())).await?;
    let nodes = [
        mesh.start("a").await?,
        mesh.start("b").await?,
        mesh.start("c").await?,
    ];
    let dbs: Vec<&Database> = nodes.iter().map(|n| n.database().as_ref()).collect();
    for (policy, name) in [
        (ConflictPolicy::LastWriteWins, "lww"),
        (ConflictPolicy::FirstWriteWins, "fww"),
    ] {
        dbs[0].create_collection(spec(name, policy))?;
        for d in &dbs[1..] {
            has_collection(d, name).await?;
        }
        // Every node writes its own objects and the same contested key, cut off from the rest.
        for p in mesh.proxies.values() {
            p.cut(true);
        }
        let mut receipts = Vec::new();
        for (i, d) in dbs.iter().enumerate() {
            let mut b = Batch::new();
            for k in 0..20 {
                b.upsert(
                    name,
                    &format!("n{i}-{k}"),
                    json!({"node": i, "k": k}),
                    Some(vec![i as f32, k as f32, 0.0]),
                );
            }
            b.upsert(
                name,
                "same",
                json!({"by": i}),
                Some(vec![9.0, 9.0, i as f32]),
            );
            receipts.push(write_on(d, b)?);
        }
        for p in mesh.proxies.values() {
            p.cut(false);
        }
        // Edges across nodes' objects, and one racing with the delete of its end.
        converged(&dbs, name, CONVERGE).await?;
        let mut link = Batch::new();
        link.link(
            NodeKey::new(name, "n0-1"),
            "next",
            NodeKey::new(name, "n1-1"),
            json!({"w": 1}),
        );
        write_on(dbs[0], link)?;
        let mut del = Batch::new();
        del.delete(name, "n2-5");
        write_on(dbs[2], del)?;
        let mut race = Batch::new();
        race.link(
            NodeKey::new(name, "n2-5"),
            "next",
            NodeKey::new(name, "n0-2"),
            json!({}),
        );
        // `b` may or may not have seen the delete yet: either way the outcome is the same
        // everywhere.
        let _ = dbs[1].write(race);

        let digest = converged(&dbs, name, CONVERGE).await?;
        assert_eq!(digest.len(), 32);
        // The contested key: the policy's winner among the three concurrent writes.
        let winner = match policy {
            ConflictPolicy::FirstWriteWins => receipts.iter().min_by_key(|r| (r.hlc, r.origin)),
            _ => receipts.iter().max_by_key(|r| (r.hlc, r.origin)),
        }
        .context("receipts")?;
        let by = receipts
            .iter()
            .position(|r| r == winner)
            .context("winner")?;
        for d in &dbs {
            let same = d.get(name, "same")?.context("the contested object")?;
            assert_eq!(same.properties["by"], json!(by), "{policy}");
            assert_eq!(
                d.get(name, "n0-3")?.map(|o| o.properties["k"].clone()),
                Some(json!(3))
            );
            assert!(d.get(name, "n2-5")?.is_none(), "deleted everywhere");
            let edges = d.edges(&NodeKey::new(name, "n0-1"), Some("next"), Direction::Out)?;
            assert_eq!(edges.len(), 1, "the edge replicated");
            // Whatever the race did, no edge shows from the deleted object.
            let dangling = d.edges(&NodeKey::new(name, "n2-5"), None, Direction::Both)?;
            assert!(dangling.is_empty(), "{dangling:?}");
        }
        // The same search gives the same answer everywhere.
        let answers: Vec<Vec<String>> = dbs
            .iter()
            .map(|d| -> Result<Vec<String>> {
                Ok(d.search(name, &[1.0, 3.0, 0.0], &SearchOptions::k(10))?
                    .into_iter()
                    .map(|h| h.id)
                    .collect())
            })
            .collect::<Result<_>>()?;
        assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
        assert_eq!(answers[0].len(), 10);
    }
    // Every link comes up (a's first dial to c may have met c not yet started: it is given
    // up after the handshake timeout and tried again).
    let mut status = nodes[0].replication_status().context("a replicates")?;
    for _ in 0..100 {
        if status.peers.iter().all(|p| p.connected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = nodes[0].replication_status().context("a replicates")?;
    }
    assert_eq!(status.peers.len(), 2);
    assert!(status.peers.iter().all(|p| p.connected), "{status:?}");
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_node_catches_up() -> Result<()> {
    let mesh = Mesh::new(&["a", "b"], None).await?;
    let a = mesh.start("a").await?;
    let b = mesh.start("b").await?;
    a.database()
        .create_collection(spec("c", ConflictPolicy::LastWriteWins))?;
    has_collection(b.database(), "c").await?;
    b.shutdown().await?;
    for i in 0..50 {
        let mut batch = Batch::new();
        batch.upsert(
            "c",
            &format!("o{i}"),
            json!({"i": i}),
            Some(vec![i as f32, 0.0, 0.0]),
        );
        a.database().write(batch)?;
    }
    let b = mesh.start("b").await?;
    let started = std::time::Instant::now();
    let digest = converged(&[a.database(), b.database()], "c", CONVERGE).await?;
    assert_eq!(
        b.database().get("c", "o49")?.map(|o| o.properties),
        Some(json!({"i": 49}))
    );
    assert!(!digest.is_empty());
    eprintln!("caught up in {:?}", started.elapsed());
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_with_the_wrong_credentials_are_refused() -> Result<()> {
    use vektagraf::replication::tls::{create_ca, create_node_cert, server_name, PeerTls};
    let mesh = Mesh::new(&["a", "c"], None).await?;
    // c's certificate comes from another CA (and c trusts only that one).
    let root = mesh.cluster.root.path();
    create_ca(&root.join("other-ca"))?;
    create_node_cert(&root.join("other-ca"), "c", &[], &root.join("rogue-c"))?;
    let mut rogue = mesh.config("c", "last-write-wins")?;
    if let Some(r) = rogue.replication.as_mut() {
        r.tls.ca = root.join("other-ca/ca.pem");
        r.tls.cert = root.join("rogue-c/node.pem");
        r.tls.key = root.join("rogue-c/node.key");
    }
    let a = mesh.start("a").await?;
    let c = mesh.cluster.start(rogue).await?;
    a.database()
        .create_collection(spec("x", ConflictPolicy::LastWriteWins))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        c.database().collection_spec("x").is_err(),
        "nothing crossed"
    );
    let status = a.replication_status().context("status")?;
    assert!(!status.peers[0].connected, "{status:?}");
    let refused =
        |n: &vektagraf::server::Node| n.replication_status().map_or(0, |s| s.refused_peers);
    assert!(refused(&a) + refused(&c) > 0, "the refusal is counted");
    c.shutdown().await?;

    // A peer with a good certificate for `c` that claims to be `b` in its handshake.
    let tls = PeerTls::load(
        &root.join("cluster-ca/ca.pem"),
        &root.join("cert-c/node.pem"),
        &root.join("cert-c/node.key"),
    )?;
    let mut endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
    endpoint.set_default_client_config(tls.client.clone());
    let addr = a.replication_addr().context("a's replication address")?;
    let before = refused(&a);
    let conn = endpoint.connect(addr, &server_name("a"))?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    // The handshake frame: u32 LE length, then postcard { protocol: 1, node: "b", origin: 7 }.
    let body = [1u8, 1, b'b', 7];
    send.write_all(&(body.len() as u32).to_le_bytes()).await?;
    send.write_all(&body).await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20)).await?;
    assert!(answer.is_err(), "the connection is closed: {answer:?}");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while refused(&a) == before {
        anyhow::ensure!(
            std::time::Instant::now() < until,
            "the refusal was not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_of_seconds_with_writes_on_both_sides_heals_and_converges() -> Result<()> {
    // A lossy, duplicating, reordering WAN between the two, then a cut of several seconds.
    let wan = Faults::none()
        .with_delay(Duration::from_millis(5))
        .with_jitter(Duration::from_millis(5))
        .with_loss(0.02)
        .with_duplicate(0.01)
        .with_reorder(0.05)
        .with_seed(7);
    let mesh = Mesh::new(&["a", "b"], Some(wan)).await?;
    let a = mesh.start("a").await?;
    let b = mesh.start("b").await?;
    let (da, db) = (a.database().as_ref(), b.database().as_ref());
    da.create_collection(spec("p", ConflictPolicy::LastWriteWins))?;
    has_collection(db, "p").await?;
    let write = |d: &Database, side: &str, i: usize| -> Result<()> {
        let mut batch = Batch::new();
        batch
            .upsert(
                "p",
                &format!("{side}{i}"),
                json!({"i": i}),
                Some(vec![i as f32, 0.0, 1.0]),
            )
            .upsert(
                "p",
                &format!("both{}", i % 10),
                json!({"by": side}),
                Some(vec![0.0, 1.0, 0.0]),
            );
        d.write(batch)?;
        Ok(())
    };
    for i in 0..20 {
        write(da, "a", i)?;
        write(db, "b", i)?;
    }
    for p in mesh.proxies.values() {
        p.cut(true);
    }
    let cut = std::time::Instant::now();
    let mut i = 20;
    while cut.elapsed() < Duration::from_secs(4) {
        write(da, "a", i)?;
        write(db, "b", i)?;
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        da.get("p", &format!("b{}", i - 1))?.is_none(),
        "the cut held"
    );
    for p in mesh.proxies.values() {
        p.cut(false);
    }
    converged(&[da, db], "p", CONVERGE).await?;
    for side in ["a", "b"] {
        for n in 0..i {
            for d in [da, db] {
                assert!(
                    d.get("p", &format!("{side}{n}"))?.is_some(),
                    "{side}{n} lost"
                );
            }
        }
    }
    for k in 0..10 {
        assert_eq!(
            da.get("p", &format!("both{k}"))?.map(|o| o.properties),
            db.get("p", &format!("both{k}"))?.map(|o| o.properties)
        );
    }
    let stats = mesh.proxies.values().map(|p| p.stats()).collect::<Vec<_>>();
    assert!(stats.iter().any(|s| s.dropped > 0), "{stats:?}");
    a.shutdown().await?;
    b.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_empty_node_joins_a_loaded_cluster_and_catches_up() -> Result<()> {
    let mesh = Mesh::new(&["a", "b", "c"], None).await?;
    let a = mesh.start("a").await?;
    let b = mesh.start("b").await?;
    a.database()
        .create_collection(spec("j", ConflictPolicy::VectorClock))?;
    for chunk in 0..10 {
        let mut batch = Batch::new();
        for i in 0..50 {
            let n = chunk * 50 + i;
            batch.upsert(
                "j",
                &format!("o{n}"),
                json!({"n": n}),
                Some(vec![n as f32, 1.0, 0.0]),
            );
        }
        a.database().write(batch)?;
    }
    // b deletes one after it has everything (so the delete has seen the object).
    converged(&[a.database(), b.database()], "j", CONVERGE).await?;
    let mut del = Batch::new();
    del.delete("j", "o7");
    b.database().write(del)?;
    converged(&[a.database(), b.database()], "j", CONVERGE).await?;
    // c has never run: it starts empty and gets everything, from both origins.
    let c = mesh.start("c").await?;
    converged(&[a.database(), b.database(), c.database()], "j", CONVERGE).await?;
    let stats = c.database().stats("j")?;
    assert_eq!(stats.objects, 499);
    assert_eq!(stats.spec.conflict, ConflictPolicy::VectorClock);
    assert!(c.database().get("j", "o7")?.is_none());
    for n in [a, b, c] {
        n.shutdown().await?;
    }
    Ok(())
}
