//! A `manual` collection's siblings over the HTTP API of a real node on loopback: two versions
//! written concurrently (on the node and on an embedded database standing for another region,
//! exchanging log entries as peers do) are read with `GET .../points/{id}/versions` in the form
//! `vektagraf versions --json` prints, resolved with `POST .../points/{id}/resolve`, and every
//! bad request is a Qdrant-style error with its status that changes nothing.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use vektagraf::model::{Batch, CollectionSpec, ConflictPolicy, Metric, Role};
use vektagraf::{Database, DatabaseConfig};
use vektagraf_tests::node::{http_json, Cluster};

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

fn put(db: &Database, id: &str, v: i64) -> Result<()> {
    let mut b = Batch::new();
    b.upsert("m", id, json!({"v": v}), Some(vec![v as f32, 0.0]));
    db.write(b)?;
    Ok(())
}

fn error_of(v: &Value) -> &str {
    v["status"]["error"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_siblings_are_read_and_resolved_over_http() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let a = node.database().clone();
    let addr = node.http_addr();
    let admin = Some(cluster.admin_token.as_str());
    let reader = a.tokens().create("reader", Role::Read)?.token;
    let writer = a.tokens().create("writer", Role::Write)?.token;
    let http = |method: &'static str, path: String, token: Option<&str>, body: Value| {
        let token = token.map(str::to_owned);
        async move { http_json(addr, method, &path, token.as_deref(), &body).await }
    };
    let versions = |token: Option<&str>| {
        http(
            "GET",
            "/collections/m/points/1/versions".into(),
            token,
            Value::Null,
        )
    };
    let resolve = |token: Option<&str>, body: Value| {
        http(
            "POST",
            "/collections/m/points/1/resolve?wait=true".into(),
            token,
            body,
        )
    };

    a.create_collection(CollectionSpec {
        metric: Metric::Euclidean,
        conflict: ConflictPolicy::Manual,
        ..CollectionSpec::new("m", 2)
    })?;
    // Another region: an embedded database that has the collection from the node's log.
    let dir = tempfile::tempdir()?;
    let b = Database::open(dir.path(), DatabaseConfig::default())?;
    sync(&a, &b)?;

    // No version yet: an empty list and an empty context.
    let (s, v) = versions(admin).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["result"], json!({"id": 1, "context": "", "versions": []}));

    // Point 1 written on both sides before either has seen the other's write.
    let (s, v) = http(
        "PUT",
        "/collections/m/points?wait=true".into(),
        admin,
        json!({"points": [{"id": 1, "vector": [1, 0], "payload": {"v": 1}}]}),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    put(&b, "1", 2)?;
    sync(&a, &b)?;
    sync(&b, &a)?;

    // Both siblings, exactly as the CLI's `--json` (the serialised `ObjectVersions`) shows them.
    let (s, v) = versions(Some(&reader)).await?;
    assert_eq!(s, 200, "{v}");
    let read = &v["result"];
    let embedded = serde_json::to_value(a.versions("m", "1")?)?;
    assert_eq!(read["id"], 1);
    assert_eq!(read["context"], embedded["context"]);
    assert_eq!(read["versions"], embedded["versions"], "{read}");
    let list = read["versions"].as_array().context("versions")?;
    assert_eq!(list.len(), 2, "{read}");
    let mut values: Vec<i64> = list
        .iter()
        .filter_map(|x| x["properties"]["v"].as_i64())
        .collect();
    values.sort_unstable();
    assert_eq!(values, [1, 2]);
    assert_eq!(list.iter().filter(|x| x["visible"] == true).count(), 1);
    for x in list {
        let n = x["properties"]["v"].as_f64().unwrap_or(-1.0);
        assert_eq!(x["vector"], json!([n, 0.0]), "{x}");
    }
    let context = read["context"].as_str().context("context")?.to_owned();
    assert_eq!(context.split(',').count(), 2, "{context}");

    // Bad requests: the right status, a reason, nothing changed.
    let (s, v) = http(
        "GET",
        "/collections/nope/points/1/versions".into(),
        admin,
        Value::Null,
    )
    .await?;
    assert_eq!(s, 404, "{v}");
    assert!(
        error_of(&v).contains("Collection `nope` doesn't exist"),
        "{v}"
    );
    let (s, v) = http(
        "POST",
        "/collections/nope/points/1/resolve".into(),
        admin,
        json!({"context": context, "payload": {}}),
    )
    .await?;
    assert_eq!(s, 404, "{v}");
    assert!(
        error_of(&v).contains("Collection `nope` doesn't exist"),
        "{v}"
    );
    let (s, v) = http(
        "PUT",
        "/collections/plain".into(),
        admin,
        json!({"vectors": {"size": 2, "distance": "Euclid"}}),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    let (s, v) = http(
        "POST",
        "/collections/plain/points/1/resolve".into(),
        admin,
        json!({"context": "", "payload": {"v": 3}}),
    )
    .await?;
    assert_eq!(s, 400, "{v}");
    assert!(
        error_of(&v).contains("conflict policy last-write-wins") && error_of(&v).contains("manual"),
        "{v}"
    );
    let bad: [(Value, &str); 7] = [
        (
            json!({"context": "nope", "payload": {"v": 3}}),
            "is not origin:seq",
        ),
        (
            json!({"context": context, "payload": {"v": 3}, "vector": [3, 0, 0]}),
            "Vector dimension error: expected dim: 2, got 3",
        ),
        (
            json!({"context": context, "vector": [3, 0]}),
            "takes `payload`",
        ),
        (
            json!({"context": context, "payload": [3]}),
            "is not a JSON object",
        ),
        (
            json!({"context": context, "delete": true, "payload": {"v": 3}}),
            "takes no `payload`",
        ),
        (json!({"payload": {"v": 3}}), "`context` must be"),
        (
            json!({"context": context, "payload": {}, "filter": {}}),
            "unknown field `filter`",
        ),
    ];
    for (body, reason) in bad {
        let (s, v) = resolve(admin, body.clone()).await?;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(error_of(&v).contains(reason), "{body}: {v}");
    }
    // Roles: reading versions needs `read`, resolving `write`.
    let (s, v) = resolve(Some(&reader), json!({"context": context, "delete": true})).await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = resolve(None, json!({"context": context, "delete": true})).await?;
    assert_eq!(s, 401, "{v}");
    let (s, v) = versions(None).await?;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        serde_json::to_value(a.versions("m", "1")?)?["versions"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "a refused request changed nothing"
    );

    // Resolved with the context read: one version remains, on the node and, once it has the
    // entry, in the other region.
    let (s, v) = resolve(
        Some(&writer),
        json!({"context": context, "payload": {"v": 3}, "vector": [3, 0]}),
    )
    .await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["status"], "completed");
    assert!(v["result"]["operation_id"].as_u64() > Some(0), "{v}");
    let (s, v) = versions(admin).await?;
    assert_eq!(s, 200, "{v}");
    let list = v["result"]["versions"].as_array().context("versions")?;
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["visible"], true);
    assert_eq!(list[0]["properties"], json!({"v": 3}));
    assert_eq!(list[0]["vector"], json!([3.0, 0.0]));
    let (s, v) = http("GET", "/collections/m/points/1".into(), admin, Value::Null).await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["payload"], json!({"v": 3}));
    sync(&a, &b)?;
    assert_eq!(b.versions("m", "1")?.versions.len(), 1);
    assert_eq!(a.digest("m")?, b.digest("m")?);

    // A write the read did not see survives the resolve as a sibling: the other region writes
    // before the next resolve reaches it.
    let (_, v) = versions(admin).await?;
    let context = v["result"]["context"]
        .as_str()
        .context("context")?
        .to_owned();
    put(&b, "1", 4)?;
    let (s, v) = resolve(admin, json!({"context": context, "delete": true})).await?;
    assert_eq!(s, 200, "{v}");
    sync(&b, &a)?;
    sync(&a, &b)?;
    let (_, v) = versions(admin).await?;
    let list = v["result"]["versions"].as_array().context("versions")?;
    assert_eq!(list.len(), 2, "the delete and the later write: {v}");
    assert!(list.iter().any(|x| x["properties"].is_null()), "{v}");
    assert!(
        list.iter().any(|x| x["properties"] == json!({"v": 4})),
        "{v}"
    );

    // Resolved to a delete: only a tombstone is left and the point is gone.
    let context = v["result"]["context"]
        .as_str()
        .context("context")?
        .to_owned();
    let (s, v) = resolve(admin, json!({"context": context, "delete": true})).await?;
    assert_eq!(s, 200, "{v}");
    let (_, v) = versions(admin).await?;
    let list = v["result"]["versions"].as_array().context("versions")?;
    assert_eq!(list.len(), 1, "{v}");
    assert!(list[0]["properties"].is_null(), "{v}");
    let (s, v) = http("GET", "/collections/m/points/1".into(), admin, Value::Null).await?;
    assert_eq!(s, 404, "{v}");
    sync(&a, &b)?;
    assert_eq!(a.digest("m")?, b.digest("m")?);

    b.close()?;
    drop(a);
    node.shutdown().await?;
    Ok(())
}
