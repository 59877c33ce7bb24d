//! Real nodes on loopback, driven through the client crate: every operation over QUIC, auth,
//! metrics, graceful shutdown.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde_json::json;
use vektagraf::model::{
    Batch, CollectionSpec, Direction, Metric, NodeKey, Role, SearchOptions, TraverseOptions,
};
use vektagraf_client::ClientError;
use vektagraf_proto::ErrorCode;
use vektagraf_tests::node::{http_get, Cluster};

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        metric: Metric::Euclidean,
        ..CollectionSpec::new(name, 3)
    }
}

/// Ten objects on a line (x = i), each linked to the next.
fn line_batch(collection: &str) -> Batch {
    let mut b = Batch::new();
    for i in 0..10 {
        b.upsert(
            collection,
            &format!("p{i}"),
            json!({"i": i, "even": i % 2 == 0}),
            Some(vec![i as f32, 0.0, 0.0]),
        );
    }
    for i in 0..9 {
        b.link(
            NodeKey::new(collection, format!("p{i}")),
            "next",
            NodeKey::new(collection, format!("p{}", i + 1)),
            json!({"w": i}),
        );
    }
    b
}

fn server_code(e: &ClientError) -> Option<ErrorCode> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_over_quic_matches_the_embedded_answers() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let client = cluster.client(&[node.quic_addr()]).await?;

    let pong = client.ping().await?;
    assert_eq!(pong.node_id, node.database().node_id());
    assert!(client.create_collection(spec("c")).await?);
    assert!(
        !client.create_collection(spec("c")).await?,
        "same spec again is a no-op"
    );
    let e = client
        .create_collection(CollectionSpec::new("c", 4))
        .await
        .expect_err("other spec");
    assert_eq!(server_code(&e), Some(ErrorCode::Conflict), "{e}");
    assert_eq!(client.list_collections().await?, vec![spec("c")]);

    let receipt = client.write(line_batch("c"), Some("k1".into())).await?;
    // The same idempotency key again: the first receipt, nothing written twice.
    assert_eq!(
        client.write(line_batch("c"), Some("k1".into())).await?,
        receipt
    );
    assert_eq!(receipt.origin, node.database().node_id());

    let got = client.get("c", vec!["p3".into(), "nope".into()]).await?;
    assert_eq!(got.len(), 2);
    let p3 = got[0].as_ref().context("p3")?;
    assert_eq!(p3.properties, json!({"i": 3, "even": false}));
    assert_eq!(p3.vector.as_deref(), Some(&[3.0f32, 0.0, 0.0][..]));
    assert!(got[1].is_none());

    // Batch search with a filter and ef, compared with the embedded database behind the node.
    let opts = SearchOptions {
        k: 3,
        ef: Some(32),
        filter: Some(json!({"even": true})),
        ..Default::default()
    };
    let rows = vec![2.2, 0.0, 0.0, 8.9, 0.0, 0.0];
    let remote = client.search("c", rows.clone(), opts.clone()).await?;
    let local = node.database().search_batch("c", &rows, &opts)?;
    assert_eq!(remote, local);
    let ids: Vec<&str> = remote[0].iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["p2", "p4", "p0"]);

    let even = client.filter("c", json!({"even": true}), 100).await?;
    assert_eq!(even, ["p0", "p2", "p4", "p6", "p8"]);
    let steps = client
        .traverse(
            NodeKey::new("c", "p0"),
            TraverseOptions {
                depth: 3,
                ..TraverseOptions::default()
            },
        )
        .await?;
    let reached: Vec<&str> = steps.iter().map(|s| s.node.id.as_str()).collect();
    assert_eq!(reached, ["p0", "p1", "p2", "p3"]);
    let e = client
        .traverse(NodeKey::new("c", "nope"), TraverseOptions::default())
        .await
        .expect_err("missing start");
    assert_eq!(server_code(&e), Some(ErrorCode::NotFound), "{e}");
    assert!(
        e.to_string()
            .contains("object `nope` does not exist in collection `c`"),
        "{e}"
    );
    let hybrid = client
        .hybrid(
            "c",
            vec![5.1, 0.0, 0.0],
            SearchOptions::k(2),
            TraverseOptions::default(),
        )
        .await?;
    assert_eq!(hybrid[0].hit.id, "p5");
    assert_eq!(hybrid[0].neighbours[0].node.id, "p6");
    let edges = client
        .edges(NodeKey::new("c", "p4"), Some("next".into()), Direction::In)
        .await?;
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].from.id, "p3");
    assert_eq!(edges[0].properties, json!({"w": 3}));

    let stats = client.stats(Some("c".into())).await?;
    assert_eq!((stats[0].objects, stats[0].vectors), (10, 10));
    client.checkpoint().await?;

    // Errors a client can act on: unknown collection, a wrong vector length.
    let e = client
        .search("zz", vec![1.0, 2.0, 3.0], SearchOptions::k(1))
        .await
        .expect_err("unknown");
    assert_eq!(server_code(&e), Some(ErrorCode::NotFound), "{e}");
    let e = client
        .search("c", vec![1.0, 2.0], SearchOptions::k(1))
        .await
        .expect_err("length");
    assert_eq!(server_code(&e), Some(ErrorCode::BadRequest), "{e}");
    let mut bad = Batch::new();
    bad.upsert("c", "nan", json!({}), Some(vec![f32::NAN, 0.0, 0.0]));
    let e = client.write(bad, None).await.expect_err("NaN");
    assert_eq!(server_code(&e), Some(ErrorCode::BadRequest), "{e}");
    assert_eq!(
        client.stats(Some("c".into())).await?[0].objects,
        10,
        "nothing written"
    );

    // Tokens over the protocol.
    let t = client.token_create("reader", Role::Read).await?;
    assert!(client.token_list().await?.iter().any(|i| i.id == t.info.id));
    assert!(client.token_revoke(t.info.id.clone()).await?);
    client.close().await;
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_and_roles_are_refused_and_change_nothing() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;
    admin.create_collection(spec("c")).await?;
    let reader_token = admin.token_create("ro", Role::Read).await?.token;
    let writer_token = admin.token_create("rw", Role::Write).await?.token;

    let with = |token: &str| {
        let mut c = cluster.client_config(&[node.quic_addr()], Default::default())?;
        c.token = token.to_owned();
        anyhow::Ok(c)
    };
    let reader = vektagraf_client::Client::connect(with(&reader_token)?).await?;
    let e = reader
        .write(line_batch("c"), None)
        .await
        .expect_err("reader writes");
    assert_eq!(server_code(&e), Some(ErrorCode::Forbidden));
    assert!(
        e.to_string()
            .contains("the token's role `read` may not write (needs `write`)"),
        "{e}"
    );
    assert!(reader.stats(None).await.is_ok(), "a reader reads");
    let writer = vektagraf_client::Client::connect(with(&writer_token)?).await?;
    let e = writer
        .token_list()
        .await
        .expect_err("writer manages tokens");
    assert_eq!(server_code(&e), Some(ErrorCode::Forbidden));
    writer.write(line_batch("c"), None).await?;

    for (token, text) in [
        ("", "this request needs an API token"),
        ("hunter2", "the API token is malformed"),
        (
            "vg_000000000000_000000000000000000000000000000000000000000000000",
            "the API token is not valid on this node",
        ),
    ] {
        let c = vektagraf_client::Client::connect(with(token)?).await?;
        let e = c.stats(None).await.expect_err("bad token");
        assert_eq!(server_code(&e), Some(ErrorCode::Unauthenticated), "{token}");
        assert!(e.to_string().contains(text), "{e}");
        assert!(c.ping().await.is_ok(), "ping needs no token");
    }
    // Revocation applies to the next request.
    let id = reader_token.split('_').nth(1).context("id")?.to_owned();
    assert!(admin.token_revoke(id).await?);
    let e = reader.stats(None).await.expect_err("revoked");
    assert_eq!(server_code(&e), Some(ErrorCode::Unauthenticated));
    assert_eq!(
        admin.stats(Some("c".into())).await?[0].objects,
        10,
        "only the writer wrote"
    );
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_parse_as_prometheus_text() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let client = cluster.client(&[node.quic_addr()]).await?;
    client.create_collection(spec("c")).await?;
    client.write(line_batch("c"), None).await?;
    for _ in 0..5 {
        client
            .search("c", vec![1.0, 0.0, 0.0], SearchOptions::k(2))
            .await?;
    }
    let _ = client
        .search("missing", vec![1.0, 0.0, 0.0], SearchOptions::k(2))
        .await;

    assert_eq!(http_get(node.http_addr(), "/health").await?.0, 200);
    let (status, body) = http_get(node.http_addr(), "/ready").await?;
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
    let (status, text) = http_get(node.http_addr(), "/metrics").await?;
    assert_eq!(status, 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
    let find = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    let gauge = |name: &str, labels: &[(&str, &str)]| match find(name, labels).map(|s| &s.value) {
        Some(prometheus_parse::Value::Gauge(v)) | Some(prometheus_parse::Value::Untyped(v)) => {
            Some(*v)
        }
        Some(prometheus_parse::Value::Counter(v)) => Some(*v),
        _ => None,
    };
    assert!(gauge("vektagraf_active_connections", &[]) >= Some(1.0));
    assert_eq!(
        gauge("vektagraf_collection_objects", &[("collection", "c")]),
        Some(10.0)
    );
    assert_eq!(
        gauge("vektagraf_collection_vectors", &[("collection", "c")]),
        Some(10.0)
    );
    assert!(gauge("vektagraf_storage_bytes", &[]) > Some(0.0));
    assert_eq!(gauge("vektagraf_engine_traps_total", &[]), Some(0.0));
    assert_eq!(
        gauge(
            "vektagraf_request_errors_total",
            &[("operation", "search"), ("kind", "not_found")]
        ),
        Some(1.0)
    );
    let buckets = |name: &str, labels: &[(&str, &str)]| -> Vec<(f64, f64)> {
        match find(name, labels).map(|s| &s.value) {
            Some(prometheus_parse::Value::Histogram(h)) => {
                h.iter().map(|b| (b.less_than, b.count)).collect()
            }
            _ => Vec::new(),
        }
    };
    let q = buckets(
        "vektagraf_query_duration_seconds",
        &[("operation", "search")],
    );
    let bounds: Vec<f64> = q.iter().map(|b| b.0).filter(|b| b.is_finite()).collect();
    assert_eq!(bounds, [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
    assert_eq!(q.last().map(|b| b.1), Some(6.0), "5 searches + 1 refused");
    let v = buckets("vektagraf_vector_search_duration_seconds", &[]);
    let bounds: Vec<f64> = v.iter().map(|b| b.0).filter(|b| b.is_finite()).collect();
    assert_eq!(bounds, [0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0]);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_no_acknowledged_write() -> Result<()> {
    let cluster = Cluster::new().await?;
    let config = cluster.config("a");
    let dir = config.data_dir.clone();
    let node = cluster.start(config).await?;
    let client = cluster.client(&[node.quic_addr()]).await?;
    client.create_collection(spec("c")).await?;
    // Four writers keep writing while the node is asked to stop.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let id = format!("w{w}-{i}");
                let mut b = Batch::new();
                b.upsert(
                    "c",
                    &id,
                    json!({"w": w}),
                    Some(vec![w as f32, i as f32, 1.0]),
                );
                match client.write(b, None).await {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    node.shutdown().await?;
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await?);
    }
    assert!(
        acked.len() > 10,
        "writers got going ({} acknowledged)",
        acked.len()
    );
    let db = vektagraf::Database::open(&dir, vektagraf::DatabaseConfig::default())?;
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !matches!(db.get("c", id), Ok(Some(_))))
        .collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    db.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_node_down_and_the_breaker_closes_when_it_returns() -> Result<()> {
    let cluster = Cluster::new().await?;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(cluster.start(cluster.config(name)).await?);
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.quic_addr()).collect();
    let client = cluster.client(&addrs).await?;
    for a in &addrs {
        let one = cluster.client(&[*a]).await?;
        one.create_collection(spec("c")).await?;
        one.write(line_batch("c"), None).await?;
        one.close().await;
    }
    // Round-robin over three healthy nodes: 30 reads, 10 each.
    for _ in 0..30 {
        client.get("c", vec!["p1".into()]).await?;
    }
    let per_node: HashMap<String, u64> = client
        .endpoint_states()
        .into_iter()
        .map(|s| (s.addr, s.requests))
        .collect();
    assert!(
        per_node.values().all(|n| (10..=11).contains(n)),
        "{per_node:?}"
    );

    // Stop node b; every read still succeeds, and b's breaker opens.
    let b_config = {
        let mut c = cluster.config("b");
        c.quic_listen = addrs[1];
        c
    };
    let b = nodes.remove(1);
    b.shutdown().await?;
    for _ in 0..20 {
        let got = client.get("c", vec!["p2".into()]).await?;
        assert!(got[0].is_some());
    }
    let b_addr = addrs[1].to_string();
    let state = |client: &vektagraf_client::Client| {
        client
            .endpoint_states()
            .into_iter()
            .find(|s| s.addr == b_addr)
            .map(|s| (s.healthy, s.breaker))
    };
    let (healthy, breaker) = state(&client).context("b")?;
    assert!(!healthy, "health checks mark b down");
    assert_eq!(breaker, vektagraf_client::BreakerState::Open);

    // b comes back on the same port: health checks see it, a trial request closes the breaker.
    let b = cluster.start(b_config).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        client.get("c", vec!["p3".into()]).await?;
        if state(&client).map(|s| s.1) == Some(vektagraf_client::BreakerState::Closed) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "breaker did not close: {:?}",
            state(&client)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    client.close().await;
    b.shutdown().await?;
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_deadline_stops_the_engine_and_refuses_late_writes() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;
    let dim = 64;
    admin
        .create_collection(CollectionSpec::new("big", dim as u32))
        .await?;
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let rows: Vec<f32> = (0..4000 * dim).map(|_| next()).collect();
    for (c, chunk) in rows.chunks(1000 * dim).enumerate() {
        let mut b = Batch::new();
        for (i, v) in chunk.chunks(dim).enumerate() {
            b.upsert("big", &format!("{c}-{i}"), json!({}), Some(v.to_vec()));
        }
        admin.write(b, None).await?;
    }
    // A client with a 30 ms budget asks for 4000 searches at ef 400: far more than 30 ms.
    let mut config = cluster.client_config(&[node.quic_addr()], Default::default())?;
    config.request_timeout = std::time::Duration::from_millis(30);
    config.retry.max_attempts = 1;
    let hurried = vektagraf_client::Client::connect(config).await?;
    let opts = SearchOptions {
        k: 10,
        ef: Some(400),
        filter: None,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let e = hurried
        .search("big", rows.clone(), opts.clone())
        .await
        .expect_err("too slow");
    assert!(
        matches!(e, ClientError::Timeout { .. })
            || server_code(&e) == Some(ErrorCode::DeadlineExceeded),
        "{e}"
    );
    // The node gave up too: the engine was stopped at the deadline (a trap and a rebuild, or a
    // refusal before the call), and the shard answers normally afterwards.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, text) = http_get(node.http_addr(), "/metrics").await?;
        if text.contains(
            "vektagraf_request_errors_total{operation=\"search\",kind=\"deadline_exceeded\"} 1",
        ) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never reported the deadline:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let hits = admin
        .search("big", rows[..dim].to_vec(), SearchOptions::k(1))
        .await?;
    assert_eq!(hits[0][0].id, "0-0");

    // Embedded: a write whose deadline has passed is refused and writes nothing; reads too.
    let db = node.database();
    let mut b = Batch::new();
    b.upsert("big", "late", json!({}), Some(rows[..dim].to_vec()));
    let past = Some(std::time::Instant::now());
    let e = db.write_before(b, past).expect_err("late write");
    assert!(matches!(e, vektagraf::Error::DeadlineExceeded(_)), "{e}");
    assert!(db.get("big", "late")?.is_none());
    let e = db
        .until(past)
        .search("big", &rows[..dim], &SearchOptions::k(1))
        .expect_err("late read");
    assert!(e.to_string().starts_with("deadline exceeded"), "{e}");
    node.shutdown().await?;
    Ok(())
}
