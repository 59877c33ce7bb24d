//! The plugin operations' surface on a real node (QUIC through the client crate, and HTTP):
//! roles, unknown plugins, refused and oversized uploads, the empty list. These need no
//! working plugin; calls of real components are tested with the sandbox (plugins.rs).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use vektagraf::model::Role;
use vektagraf_client::{Client, ClientError};
use vektagraf_proto::ErrorCode;
use vektagraf_tests::node::{http_json, Cluster};

fn code(r: Result<impl std::fmt::Debug, ClientError>) -> (Option<ErrorCode>, String) {
    match r {
        Ok(v) => (None, format!("succeeded: {v:?}")),
        Err(e) => (e.code(), e.to_string()),
    }
}

/// `method path` with a raw body over HTTP/1.1 (the body is written while the answer is read,
/// so a node that answers before reading it all does not stall us); the status, the
/// `Content-Type` and the body.
async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, String, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = tokio::net::TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = s.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(t) = token {
        head.push_str(&format!("api-key: {t}\r\n"));
    }
    head.push_str("\r\n");
    // Our side stays open until the answer is in (the node takes a half-close for a client
    // that left).
    let write = async {
        // The node may close before taking all of it: that is its answer, read below.
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
    };
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut raw));
    let ((), read) = tokio::join!(write, read);
    read.context("HTTP response timed out")??;
    drop(wr);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no HTTP header end in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let body = raw[end + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    anyhow::ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer: {head}"
    );
    Ok((status, content_type, body))
}

fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["status"]["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

async fn client_with(cluster: &Cluster, addr: SocketAddr, token: &str) -> Result<Client> {
    let mut c = cluster.client_config(&[addr], Default::default())?;
    c.token = token.to_owned();
    Ok(Client::connect(c).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_operations_need_their_roles_over_quic_and_http() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;
    let reader_token = admin.token_create("ro", Role::Read).await?.token;
    let writer_token = admin.token_create("rw", Role::Write).await?.token;
    let reader = client_with(&cluster, node.quic_addr(), &reader_token).await?;
    let writer = client_with(&cluster, node.quic_addr(), &writer_token).await?;

    // Managing plugins is for admins, whatever the bytes.
    for c in [&reader, &writer] {
        let (c_code, text) = code(c.plugin_upload("p", b"\0asm".to_vec(), &[]).await);
        assert_eq!(c_code, Some(ErrorCode::Forbidden), "{text}");
        assert!(
            text.contains("may not manage plugins (needs `admin`)"),
            "{text}"
        );
        for (r, what) in [
            (code(c.plugin_enable("p", false).await), "disable"),
            (code(c.plugin_rollback("p", 1).await), "rollback"),
            (code(c.plugin_delete("p").await), "delete"),
        ] {
            assert_eq!(r.0, Some(ErrorCode::Forbidden), "{what}: {}", r.1);
        }
        // Listing is for readers.
        assert_eq!(c.plugins().await?, vec![]);
    }
    // Without a token, nothing.
    let anonymous = client_with(&cluster, node.quic_addr(), "").await?;
    let (c_code, text) = code(anonymous.plugins().await);
    assert_eq!(c_code, Some(ErrorCode::Unauthenticated), "{text}");
    let (c_code, text) = code(anonymous.plugin_call("p", b"x".to_vec()).await);
    assert_eq!(c_code, Some(ErrorCode::Unauthenticated), "{text}");

    // The same over HTTP.
    let http = node.http_addr();
    for token in [&reader_token, &writer_token] {
        let (status, _, body) = http_bytes(
            http,
            "POST",
            "/plugins/p?grant=write",
            Some(token),
            "application/wasm",
            b"\0asm".to_vec(),
        )
        .await?;
        assert_eq!(status, 403, "{}", error_text(&body));
        assert!(
            error_text(&body).contains("needs `admin`"),
            "{}",
            error_text(&body)
        );
        for path in [
            "/plugins/p/enable",
            "/plugins/p/disable",
            "/plugins/p/rollback/1",
        ] {
            let (status, v) = http_json(http, "POST", path, Some(token), &Value::Null).await?;
            assert_eq!(status, 403, "{path}: {v}");
        }
        let (status, v) =
            http_json(http, "DELETE", "/plugins/p", Some(token), &Value::Null).await?;
        assert_eq!(status, 403, "{v}");
        let (status, v) = http_json(http, "GET", "/plugins", Some(token), &Value::Null).await?;
        assert_eq!((status, &v["result"]), (200, &json!([])), "{v}");
    }
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/p",
        None,
        "application/wasm",
        b"\0asm".to_vec(),
    )
    .await?;
    assert_eq!(status, 401, "{}", error_text(&body));
    let (status, v) = http_json(http, "GET", "/plugins", None, &Value::Null).await?;
    assert_eq!(status, 401, "{v}");

    assert_eq!(admin.plugins().await?, vec![], "nothing was uploaded");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugins_are_not_found_and_the_list_starts_empty() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;
    assert_eq!(admin.plugins().await?, vec![]);

    for (r, what) in [
        (code(admin.plugin("nope").await), "show"),
        (
            code(admin.plugin_call("nope", b"{}".to_vec()).await),
            "call",
        ),
        (code(admin.plugin_enable("nope", true).await), "enable"),
        (code(admin.plugin_enable("nope", false).await), "disable"),
        (code(admin.plugin_rollback("nope", 1).await), "rollback"),
        (code(admin.plugin_delete("nope").await), "delete"),
    ] {
        assert_eq!(r.0, Some(ErrorCode::NotFound), "{what}: {}", r.1);
        assert!(r.1.contains("there is no plugin `nope`"), "{what}: {}", r.1);
    }

    let http = node.http_addr();
    let token = Some(cluster.admin_token.as_str());
    let (status, v) = http_json(http, "GET", "/plugins", token, &Value::Null).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], json!([]));
    assert_eq!(v["status"], json!("ok"));
    for (method, path) in [
        ("GET", "/plugins/nope"),
        ("POST", "/plugins/nope/enable"),
        ("POST", "/plugins/nope/disable"),
        ("POST", "/plugins/nope/rollback/1"),
        ("DELETE", "/plugins/nope"),
    ] {
        let (status, v) = http_json(http, method, path, token, &Value::Null).await?;
        assert_eq!(status, 404, "{method} {path}: {v}");
        let text = v["status"]["error"].as_str().unwrap_or("");
        assert!(
            text.contains("there is no plugin `nope`"),
            "{method} {path}: {v}"
        );
    }
    let (status, content_type, body) = http_bytes(
        http,
        "POST",
        "/plugins/nope/call",
        token,
        "application/octet-stream",
        b"input".to_vec(),
    )
    .await?;
    assert_eq!(status, 404, "{}", error_text(&body));
    assert_eq!(
        content_type, "application/json",
        "errors are in the envelope"
    );
    // A version that is not a number is a bad request, not a missing route.
    let (status, v) = http_json(
        http,
        "POST",
        "/plugins/nope/rollback/latest",
        token,
        &Value::Null,
    )
    .await?;
    assert_eq!(status, 400, "{v}");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_uploads_say_why_and_store_nothing() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;

    // Not a component at all.
    let (c_code, text) = code(
        admin
            .plugin_upload("junk", b"this is not WebAssembly".to_vec(), &[])
            .await,
    );
    assert_eq!(c_code, Some(ErrorCode::BadRequest), "{text}");
    assert!(text.contains("the component was refused"), "{text}");
    // An unknown grant, a bad name: refused before the bytes are looked at.
    let (c_code, text) = code(
        admin
            .plugin_upload("junk", b"\0asm".to_vec(), &["write", "network"])
            .await,
    );
    assert_eq!(c_code, Some(ErrorCode::BadRequest), "{text}");
    assert!(text.contains("unknown grant `network`"), "{text}");
    let (c_code, text) = code(
        admin
            .plugin_upload("Bad Name", b"\0asm".to_vec(), &[])
            .await,
    );
    assert_eq!(c_code, Some(ErrorCode::BadRequest), "{text}");
    assert!(text.contains("plugin name `Bad Name`"), "{text}");

    let http = node.http_addr();
    let token = Some(cluster.admin_token.as_str());
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/junk?grant=clock&grant=random",
        token,
        "application/wasm",
        b"this is not WebAssembly".to_vec(),
    )
    .await?;
    assert_eq!(status, 400, "{}", error_text(&body));
    assert!(
        error_text(&body).contains("the component was refused"),
        "{}",
        error_text(&body)
    );
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/junk?grant=write,teleport",
        token,
        "application/wasm",
        b"\0asm".to_vec(),
    )
    .await?;
    assert_eq!(status, 400, "{}", error_text(&body));
    assert!(
        error_text(&body).contains("unknown grant `teleport`"),
        "{}",
        error_text(&body)
    );
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/junk?grants=write",
        token,
        "application/wasm",
        b"\0asm".to_vec(),
    )
    .await?;
    assert_eq!(status, 400, "{}", error_text(&body));
    assert!(
        error_text(&body).contains("unknown query parameter `grants`"),
        "{}",
        error_text(&body)
    );

    assert_eq!(admin.plugins().await?, vec![], "nothing was stored");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_are_refused_with_the_limit_they_broke() -> Result<()> {
    let cluster = Cluster::new().await?;
    let mut config = cluster.config("a");
    config.database.plugins.max_component_bytes = 1 << 20;
    config.limits.max_frame_bytes = 2 << 20;
    let node = cluster.start(config).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;

    // Within the frame, over the component limit.
    let big = vec![0u8; (1 << 20) + 1];
    let (c_code, text) = code(admin.plugin_upload("big", big.clone(), &[]).await);
    assert_eq!(c_code, Some(ErrorCode::TooLarge), "{text}");
    assert!(text.contains("plugins.max_component_mib"), "{text}");

    let http = node.http_addr();
    let token = Some(cluster.admin_token.as_str());
    let (status, _, body) =
        http_bytes(http, "POST", "/plugins/big", token, "application/wasm", big).await?;
    assert_eq!(status, 413, "{}", error_text(&body));
    assert!(
        error_text(&body).contains("plugins.max_component_mib"),
        "{}",
        error_text(&body)
    );
    // Over the frame limit: refused before the component is looked at.
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/big",
        token,
        "application/wasm",
        vec![0u8; (2 << 20) + 1],
    )
    .await?;
    assert_eq!(status, 413, "{}", error_text(&body));
    assert!(
        error_text(&body).contains("node.max_frame_bytes"),
        "{}",
        error_text(&body)
    );
    // A caller who may not upload is refused before the body is read.
    let reader_token = admin.token_create("ro", Role::Read).await?.token;
    let (status, _, body) = http_bytes(
        http,
        "POST",
        "/plugins/big",
        Some(&reader_token),
        "application/wasm",
        vec![0u8; 4 << 20],
    )
    .await?;
    assert_eq!(status, 403, "{}", error_text(&body));

    assert_eq!(admin.plugins().await?, vec![]);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_metrics_are_on_the_metrics_page() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    // The database counts calls (they run embedded too); the node shows its figures.
    let m = node.database().plugin_metrics();
    m.call("echo", Duration::from_millis(2));
    m.call("echo", Duration::from_millis(3));
    m.error("echo", "fuel");
    let (status, text) = vektagraf_tests::node::http_get(node.http_addr(), "/metrics").await?;
    assert_eq!(status, 200);
    for line in [
        "# TYPE vektagraf_plugin_calls counter",
        "vektagraf_plugin_calls_total{plugin=\"echo\"} 2",
        "vektagraf_plugin_errors_total{plugin=\"echo\",kind=\"fuel\"} 1",
        "vektagraf_plugin_call_duration_seconds_count{plugin=\"echo\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}: {text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_plugins_over_quic_and_http_and_a_write_grant_needs_the_write_role() -> Result<()> {
    let cluster = Cluster::new().await?;
    let node = cluster.start(cluster.config("a")).await?;
    let admin = cluster.client(&[node.quic_addr()]).await?;
    let reader_token = admin.token_create("ro", Role::Read).await?.token;
    let writer_token = admin.token_create("rw", Role::Write).await?.token;
    let reader = client_with(&cluster, node.quic_addr(), &reader_token).await?;
    let writer = client_with(&cluster, node.quic_addr(), &writer_token).await?;
    let echo = vektagraf_tests::plugins::bytes("echo")?;
    let info = admin.plugin_upload("echo", echo, &[]).await?;
    assert_eq!((info.active, info.enabled), (1, true));
    assert_eq!(info.versions[0].world, "plugin");
    assert_eq!(reader.plugin_call("echo", b"hi".to_vec()).await?, b"hi");

    // A plugin with the write grant writes, so calling it needs the write role.
    admin
        .create_collection(vektagraf::model::CollectionSpec::new("items", 3))
        .await?;
    let wasm = vektagraf_tests::plugins::bytes("hostile-write")?;
    let info = admin.plugin_upload("writer", wasm, &["write"]).await?;
    assert_eq!(info.versions[0].grants, ["write"]);
    let (c, text) = code(reader.plugin_call("writer", b"items".to_vec()).await);
    assert_eq!(c, Some(ErrorCode::Forbidden), "{text}");
    assert!(text.contains("write"), "{text}");
    assert_eq!(writer.plugin_call("writer", b"items".to_vec()).await?, b"1");
    let got = admin.get("items", vec!["hostile-write".to_owned()]).await?;
    assert!(got[0].is_some(), "the plugin's write is stored");

    // A trap is the caller's error (422 over HTTP), and the node keeps answering.
    let spin = vektagraf_tests::plugins::bytes("hostile-loop")?;
    admin.plugin_upload("spin", spin, &[]).await?;
    let (c, text) = code(reader.plugin_call("spin", Vec::new()).await);
    assert_eq!(c, Some(ErrorCode::PluginFailed), "{text}");
    let (status, _, body) = http_bytes(
        node.http_addr(),
        "POST",
        "/plugins/spin/call",
        Some(&reader_token),
        "application/octet-stream",
        Vec::new(),
    )
    .await?;
    assert_eq!(status, 422, "{}", error_text(&body));
    let (status, _, body) = http_bytes(
        node.http_addr(),
        "POST",
        "/plugins/echo/call",
        Some(&reader_token),
        "application/octet-stream",
        b"over http".to_vec(),
    )
    .await?;
    assert_eq!((status, body.as_slice()), (200, b"over http".as_slice()));
    node.shutdown().await?;
    Ok(())
}
