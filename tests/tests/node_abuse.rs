//! Bad input and abuse against a real node: malformed, truncated, oversized and slow frames,
//! unknown versions, clients that vanish, too many connections and streams. Each gets a clear
//! error or a closed stream; the node keeps serving and stores nothing half-written.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, Metric, SearchOptions};
use vektagraf_proto::frame::frame;
use vektagraf_proto::{ErrorCode, Op, Request};
use vektagraf_tests::node::{raw_connect, raw_request, Cluster};

fn search_request(token: &str) -> Vec<u8> {
    Request {
        timeout_ms: 0,
        token: token.to_owned(),
        op: Op::Search {
            collection: "c".into(),
            options: SearchOptions::k(2),
            vectors: vec![1.0, 2.0, 3.0],
        },
    }
    .encode()
}

async fn expect_error(
    conn: &quinn::Connection,
    bytes: &[u8],
    finish: bool,
    code: ErrorCode,
    text: &str,
) -> Result<()> {
    match raw_request(conn, bytes, finish).await? {
        Err(e) => {
            assert_eq!(e.code, code, "{e}");
            assert!(
                e.message.contains(text),
                "`{}` does not contain `{text}`",
                e.message
            );
        }
        Ok(r) => panic!("expected {code:?}, got {r:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_slow_and_vanishing_requests_are_contained() -> Result<()> {
    let cluster = Cluster::new().await?;
    let mut config = cluster.config("a");
    config.limits.max_frame_bytes = 4096;
    config.limits.read_timeout = Duration::from_millis(300);
    let node = cluster.start(config).await?;
    let client = cluster.client(&[node.quic_addr()]).await?;
    client
        .create_collection(CollectionSpec {
            metric: Metric::Euclidean,
            ..CollectionSpec::new("c", 3)
        })
        .await?;
    let mut b = Batch::new();
    b.upsert("c", "a", json!({}), Some(vec![1.0, 2.0, 3.0]));
    client.write(b, None).await?;
    let token = cluster.admin_token.clone();
    let (_ep, conn) = raw_connect(node.quic_addr(), &cluster.ca).await?;

    // Sanity: a well-formed raw request works.
    assert!(raw_request(&conn, &search_request(&token), true)
        .await?
        .is_ok());
    // Oversized: refused from its header, before the body is read.
    let mut big = (5000u32).to_le_bytes().to_vec();
    big.push(1);
    expect_error(
        &conn,
        &big,
        true,
        ErrorCode::TooLarge,
        "frame of 5000 bytes is larger than the limit of 4096 bytes",
    )
    .await?;
    // Unknown version, empty frame, truncated header and body, garbage body.
    expect_error(
        &conn,
        &[1, 0, 0, 0, 9],
        true,
        ErrorCode::UnsupportedVersion,
        "protocol version 9 is not supported",
    )
    .await?;
    expect_error(
        &conn,
        &[0, 0, 0, 0, 1],
        true,
        ErrorCode::BadRequest,
        "empty frame",
    )
    .await?;
    expect_error(
        &conn,
        &[7, 0, 0],
        true,
        ErrorCode::BadRequest,
        "truncated frame: the stream ended after 3 byte(s)",
    )
    .await?;
    let good = search_request(&token);
    expect_error(
        &conn,
        &good[..good.len() - 4],
        true,
        ErrorCode::BadRequest,
        "truncated frame: the header announced",
    )
    .await?;
    let garbage = frame(|out| out.extend_from_slice(&[0xff; 40]));
    expect_error(
        &conn,
        &garbage,
        true,
        ErrorCode::BadRequest,
        "malformed request",
    )
    .await?;
    let mut unknown_op = frame(|out| {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(200);
    });
    expect_error(
        &conn,
        &unknown_op,
        true,
        ErrorCode::BadRequest,
        "unknown Op tag 200",
    )
    .await?;
    unknown_op.truncate(0);
    // A slow client that never finishes its frame is cut off at read_timeout.
    expect_error(
        &conn,
        &good[..8],
        false,
        ErrorCode::BadRequest,
        "did not arrive within 300 ms",
    )
    .await?;

    // Mutated valid requests: every one gets an answer, none takes the node down.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut m = good.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = 5 + (state as usize) % (m.len() - 5);
            m[i] ^= (state >> 32) as u8 | 1;
        }
        // Either an answer or a refusal, never silence or a crash.
        let _ = raw_request(&conn, &m, true).await?;
    }

    // A client that vanishes mid-request: the node keeps serving others.
    {
        let (ep, gone) = raw_connect(node.quic_addr(), &cluster.ca).await?;
        let (mut send, _recv) = gone.open_bi().await?;
        send.write_all(&good[..10]).await?;
        gone.close(0u32.into(), b"bye");
        ep.wait_idle().await;
    }
    assert!(raw_request(&conn, &search_request(&token), true)
        .await?
        .is_ok());
    let stats = client.stats(Some("c".into())).await?;
    assert_eq!(stats[0].objects, 1, "nothing was written by any of it");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_stream_limits_hold() -> Result<()> {
    let cluster = Cluster::new().await?;
    let mut config = cluster.config("a");
    config.limits.max_connections = 2;
    config.limits.max_streams_per_connection = 2;
    config.limits.read_timeout = Duration::from_millis(500);
    let node = cluster.start(config).await?;
    let ping = Request {
        timeout_ms: 0,
        token: String::new(),
        op: Op::Ping {},
    }
    .encode();
    let (_e1, c1) = raw_connect(node.quic_addr(), &cluster.ca).await?;
    let (_e2, c2) = raw_connect(node.quic_addr(), &cluster.ca).await?;
    assert!(raw_request(&c1, &ping, true).await?.is_ok());
    assert!(raw_request(&c2, &ping, true).await?.is_ok());
    // A third connection is closed at once with a reason.
    let (_e3, c3) = raw_connect(node.quic_addr(), &cluster.ca).await?;
    match tokio::time::timeout(Duration::from_secs(5), c3.closed()).await? {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, vektagraf::server::CLOSE_TOO_MANY.into());
            let reason = String::from_utf8_lossy(&close.reason);
            assert!(
                reason.contains("node at its connection limit (2 connections)"),
                "{reason}"
            );
        }
        other => panic!("expected an application close, got {other}"),
    }
    // Two streams held open by a client that never finishes its frames: a third cannot open
    // until the node answers one of them (at read_timeout).
    let (mut s1, mut r1) = c1.open_bi().await?;
    let (mut s2, _r2) = c1.open_bi().await?;
    s1.write_all(&ping[..3]).await?;
    s2.write_all(&ping[..3]).await?;
    let third = tokio::time::timeout(Duration::from_millis(150), c1.open_bi()).await;
    assert!(
        third.is_err(),
        "a third stream opened beyond the limit of 2"
    );
    let answer = tokio::time::timeout(Duration::from_secs(5), r1.read_to_end(1 << 20)).await??;
    assert!(
        !answer.is_empty(),
        "the held stream was answered at read_timeout"
    );
    // The node stopped reading it; once the client lets go of its side (as a client does on
    // an answer), the slot is free and a new stream gets through. A client that holds on
    // only blocks its own connection.
    drop((s1, r1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(1), raw_request(&c1, &ping, true)).await
        {
            assert!(r.is_ok());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stream got through after the limit freed"
        );
    }
    node.shutdown().await?;
    Ok(())
}
