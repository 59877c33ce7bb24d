//! The client against fake nodes: small QUIC servers inside the test that speak the protocol
//! (vektagraf-proto) with a certificate from a CA made here by rcgen. They answer `ping`,
//! `get` (each object's properties and receipt carry the answering node's port) and `write`,
//! and misbehave on request: `get` on collection `slow` never answers in time, on
//! `fail-<port>` the node of that port answers "unavailable"; writes to collection
//! `unavailable` or `forbidden` are refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use vektagraf_client::proto::frame::{parse_header, HEADER_LEN};
use vektagraf_client::proto::model::{Batch, Object, Receipt};
use vektagraf_client::proto::{encode_response, ErrorCode, ErrorReply, Op, Reply, Request};
use vektagraf_client::{
    BreakerConfig, BreakerState, Client, ClientConfig, ClientError, Endpoint, EndpointState,
    RetryConfig, Strategy,
};

// ---------------------------------------------------------------------------------------
// The fake node.

/// A CA and a node certificate it signed (SANs localhost, 127.0.0.1, ::1).
struct Pki {
    ca_pem: String,
    server: quinn::ServerConfig,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake vektagraf CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let node_key = rcgen::KeyPair::generate().expect("node key");
    let node_params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .expect("node params");
    let node_cert = node_params
        .signed_by(&node_key, &issuer)
        .expect("node certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(node_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der())),
        )
        .expect("server TLS config");
    tls.alpn_protocols = vec![vektagraf_client::proto::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).expect("QUIC server config");
    Pki {
        ca_pem: ca_cert.pem(),
        server: quinn::ServerConfig::with_crypto(Arc::new(crypto)),
    }
}

#[derive(Default)]
struct Counters {
    pings: AtomicU64,
    gets: AtomicU64,
    writes: AtomicU64,
    /// `timeout_ms` of the last `get`.
    get_timeout_ms: AtomicU64,
    /// Requests whose token was not the expected one (pings: empty; others: the client's).
    bad_tokens: AtomicU64,
}

struct FakeNode {
    addr: SocketAddr,
    endpoint: quinn::Endpoint,
    accept: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl FakeNode {
    async fn start(pki: &Pki) -> FakeNode {
        Self::start_at(pki, SocketAddr::from(([127, 0, 0, 1], 0)), Arc::default()).await
    }

    /// Binds `addr` (retrying for a while: a stopped node's socket may linger a moment).
    async fn start_at(pki: &Pki, addr: SocketAddr, counters: Arc<Counters>) -> FakeNode {
        let deadline = Instant::now() + Duration::from_secs(5);
        let endpoint = loop {
            match quinn::Endpoint::server(pki.server.clone(), addr) {
                Ok(endpoint) => break endpoint,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("binding {addr}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        let addr = endpoint.local_addr().expect("bound address");
        let accept = tokio::spawn(serve(endpoint.clone(), addr.port(), counters.clone()));
        FakeNode {
            addr,
            endpoint,
            accept,
            counters,
        }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every connection and the socket.
    async fn stop(self) -> (SocketAddr, Arc<Counters>) {
        self.endpoint.close(0u32.into(), b"node stopped");
        self.accept.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        (self.addr, self.counters)
    }
}

async fn serve(endpoint: quinn::Endpoint, port: u16, counters: Arc<Counters>) {
    while let Some(incoming) = endpoint.accept().await {
        let counters = counters.clone();
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(answer(send, recv, port, counters.clone()));
            }
        });
    }
}

async fn answer(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    port: u16,
    counters: Arc<Counters>,
) {
    let mut header = [0u8; HEADER_LEN];
    if recv.read_exact(&mut header).await.is_err() {
        return;
    }
    let Ok(len) = parse_header(header, 1 << 20) else {
        return;
    };
    let mut body = vec![0u8; len];
    if recv.read_exact(&mut body).await.is_err() {
        return;
    }
    let Ok(request) = Request::decode(&body) else {
        return;
    };
    let expected_token = match request.op {
        Op::Ping {} => ["", TOKEN],
        _ => [TOKEN, TOKEN],
    };
    if !expected_token.contains(&request.token.as_str()) {
        counters.bad_tokens.fetch_add(1, Ordering::SeqCst);
    }
    let response = match request.op {
        Op::Ping {} => {
            counters.pings.fetch_add(1, Ordering::SeqCst);
            Ok(Reply::Pong {
                node_id: u64::from(port),
                version: "fake".into(),
                ready: true,
            })
        }
        Op::Get { collection, ids } => {
            counters.gets.fetch_add(1, Ordering::SeqCst);
            counters
                .get_timeout_ms
                .store(u64::from(request.timeout_ms), Ordering::SeqCst);
            if collection == "slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            if collection == format!("fail-{port}") {
                Err(ErrorReply::new(
                    ErrorCode::Unavailable,
                    "shard 0 is unavailable",
                ))
            } else {
                Ok(Reply::Objects {
                    objects: ids
                        .into_iter()
                        .map(|id| {
                            Some(Object {
                                id,
                                properties: json!({ "port": port }),
                                vector: None,
                                version: receipt(port),
                            })
                        })
                        .collect(),
                })
            }
        }
        Op::Write { batch, .. } => {
            counters.writes.fetch_add(1, Ordering::SeqCst);
            let collection = match batch.writes.first() {
                Some(vektagraf_client::proto::model::Write::Upsert { key, .. }) => {
                    key.collection.clone()
                }
                _ => String::new(),
            };
            match collection.as_str() {
                "unavailable" => Err(ErrorReply::new(
                    ErrorCode::Unavailable,
                    "the node is shutting down",
                )),
                "forbidden" => Err(ErrorReply::new(
                    ErrorCode::Forbidden,
                    "the token's role `read` may not write",
                )),
                _ => Ok(Reply::Written {
                    receipt: receipt(port),
                }),
            }
        }
        other => Err(ErrorReply::new(
            ErrorCode::BadRequest,
            format!("the fake node does not do `{}`", other.name()),
        )),
    };
    let _ = send.write_all(&encode_response(&response)).await;
    let _ = send.finish();
    // Let the answer leave before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
}

fn receipt(port: u16) -> Receipt {
    Receipt {
        origin: u64::from(port),
        seq: 1,
        hlc: 1,
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

const TOKEN: &str = "vg_test_secret";

fn config(pki: &Pki, nodes: &[&FakeNode]) -> ClientConfig {
    ClientConfig {
        endpoints: nodes
            .iter()
            .map(|n| Endpoint::new(format!("127.0.0.1:{}", n.port())))
            .collect(),
        ca_pem: pki.ca_pem.clone().into_bytes(),
        token: TOKEN.into(),
        strategy: Strategy::RoundRobin,
        pool_size: 2,
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(300),
        health_interval: Duration::from_millis(25),
        breaker: BreakerConfig {
            failure_threshold: 3,
            call_timeout: Duration::from_secs(2),
            reset_timeout: Duration::from_millis(300),
        },
        retry: RetryConfig {
            max_attempts: 3,
            base_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
        },
        ..ClientConfig::default()
    }
}

/// The port of the node that answered a one-id `get`.
async fn get_port(client: &Client, collection: &str, id: &str) -> Result<u16, ClientError> {
    let objects = client.get(collection, vec![id.to_string()]).await?;
    let object = objects
        .into_iter()
        .next()
        .flatten()
        .expect("the fake node echoes every id");
    assert_eq!(object.id, id);
    Ok(u16::try_from(object.version.origin).expect("a port"))
}

fn state_of(client: &Client, node: SocketAddr) -> EndpointState {
    let addr = format!("127.0.0.1:{}", node.port());
    client
        .endpoint_states()
        .into_iter()
        .find(|s| s.addr == addr)
        .expect("a configured endpoint")
}

/// Polls `condition` every 5 ms until it holds; panics after `limit`.
async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_over_three_nodes() {
    let pki = pki();
    let nodes = [
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
    ];
    let client = Client::connect(config(&pki, &[&nodes[0], &nodes[1], &nodes[2]]))
        .await
        .expect("client");
    let pong = client.ping().await.expect("ping");
    assert!(pong.ready);
    assert_eq!(pong.version, "fake");

    let mut answered = [0usize; 3];
    for i in 0..30 {
        let port = get_port(&client, "docs", &format!("id-{i}"))
            .await
            .expect("get");
        let node = nodes
            .iter()
            .position(|n| n.port() == port)
            .expect("one of ours");
        answered[node] += 1;
    }
    assert_eq!(answered, [10, 10, 10], "round-robin, one ping before");

    let states = client.endpoint_states();
    let requests: u64 = states.iter().map(|s| s.requests).sum();
    assert_eq!(requests, 31, "30 gets and one ping");
    for state in &states {
        assert!(state.healthy, "{state:?}");
        assert_eq!(state.breaker, BreakerState::Closed);
        assert_eq!(state.in_flight, 0);
        assert!(state.connections <= 2, "pool_size 2: {state:?}");
    }
    // One given node, without balancing.
    let b = format!("127.0.0.1:{}", nodes[1].port());
    match client.call_on(&b, Op::Ping {}).await.expect("ping b") {
        Reply::Pong { node_id, .. } => assert_eq!(node_id, u64::from(nodes[1].port())),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        client
            .call_on("127.0.0.1:1", Op::Ping {})
            .await
            .expect_err("not ours")
            .to_string(),
        "endpoint `127.0.0.1:1` is not one of this client's endpoints"
    );
    // Health pings measure every node's round-trip time.
    wait_until(
        "every node has a measured RTT",
        Duration::from_secs(5),
        || client.endpoint_states().iter().all(|s| s.rtt.is_some()),
    )
    .await;
    for node in &nodes {
        assert!(node.counters.pings.load(Ordering::SeqCst) >= 1);
        assert_eq!(node.counters.gets.load(Ordering::SeqCst), 10);
        assert_eq!(node.counters.get_timeout_ms.load(Ordering::SeqCst), 2000);
        assert_eq!(node.counters.bad_tokens.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_going_down_opens_its_breaker_and_coming_back_closes_it() {
    let pki = pki();
    let a = FakeNode::start(&pki).await;
    let b = FakeNode::start(&pki).await;
    let c = FakeNode::start(&pki).await;
    let client = Client::connect(config(&pki, &[&a, &b, &c]))
        .await
        .expect("client");
    for i in 0..6 {
        get_port(&client, "docs", &format!("warm-{i}"))
            .await
            .expect("all up");
    }
    let c_port = c.port();

    // C goes down: reads keep succeeding on A and B, and C's breaker opens.
    let (c_addr, c_counters) = c.stop().await;
    let started = Instant::now();
    let mut reads = 0;
    while state_of(&client, c_addr).breaker != BreakerState::Open {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "C's breaker did not open: {:?}",
            client.endpoint_states()
        );
        let port = get_port(&client, "docs", &format!("down-{reads}"))
            .await
            .expect("reads fail over to the nodes that are up");
        assert_ne!(port, c_port);
        reads += 1;
    }
    assert!(!state_of(&client, c_addr).healthy);
    // C is skipped now: no read waits for its connect timeout.
    for i in 0..9 {
        let t = Instant::now();
        let port = get_port(&client, "docs", &format!("skip-{i}"))
            .await
            .expect("read");
        assert_ne!(port, c_port);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "a read took {:?}",
            t.elapsed()
        );
    }

    // C comes back on the same port: health checks see it, the breaker goes half-open
    // (and stays so, since no request is sent)...
    let c = FakeNode::start_at(&pki, c_addr, c_counters).await;
    assert_eq!(c.port(), c_port);
    wait_until(
        "C is healthy and its breaker half-open",
        Duration::from_secs(10),
        || {
            let s = state_of(&client, c_addr);
            s.healthy && s.breaker == BreakerState::HalfOpen
        },
    )
    .await;
    // ...and the first request it gets (its trial) closes it.
    let gets_before = c.counters.gets.load(Ordering::SeqCst);
    let mut c_answered = 0;
    for i in 0..6 {
        if get_port(&client, "docs", &format!("back-{i}"))
            .await
            .expect("read")
            == c_port
        {
            c_answered += 1;
        }
    }
    assert!(c_answered >= 1, "C answered none of 6 round-robin reads");
    assert_eq!(state_of(&client, c_addr).breaker, BreakerState::Closed);
    assert!(c.counters.gets.load(Ordering::SeqCst) > gets_before);
    drop(client);
    for node in [a, b, c] {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_only_when_safe() {
    let pki = pki();
    let nodes = [
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
    ];
    let mut config = config(&pki, &[&nodes[0], &nodes[1], &nodes[2]]);
    config.breaker.failure_threshold = 100; // this test is about retries, not breakers
    let client = Client::connect(config).await.expect("client");
    let writes = || -> u64 {
        nodes
            .iter()
            .map(|n| n.counters.writes.load(Ordering::SeqCst))
            .sum()
    };
    let batch = |collection: &str| {
        let mut batch = Batch::new();
        batch.upsert(collection, "x", json!({}), None);
        batch
    };

    // A refusal another node would repeat: not retried, and the message names the node.
    let e = client
        .write(batch("forbidden"), Some("k1".into()))
        .await
        .expect_err("forbidden");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let endpoint = e.endpoint().expect("a node").to_string();
    assert_eq!(
        e.to_string(),
        format!("node {endpoint}: the token's role `read` may not write")
    );
    assert_eq!(writes(), 1);

    // Retryable, but not idempotent (no idempotency key) and certainly sent: not retried.
    let e = client
        .write(batch("unavailable"), None)
        .await
        .expect_err("unavailable");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    assert_eq!(writes(), 2);

    // Retryable and idempotent: tried on each of the 3 nodes once (max_attempts 3).
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| n.counters.writes.load(Ordering::SeqCst))
        .collect();
    let e = client
        .write(batch("unavailable"), Some("k2".into()))
        .await
        .expect_err("unavailable everywhere");
    assert_eq!(e.code(), Some(ErrorCode::Unavailable));
    for (node, before) in nodes.iter().zip(before) {
        assert_eq!(
            node.counters.writes.load(Ordering::SeqCst),
            before + 1,
            "each node tried once"
        );
    }

    // A node that fails a read: the read succeeds on another one, every time.
    let failing = nodes[0].port();
    for i in 0..6 {
        let port = get_port(&client, &format!("fail-{failing}"), &format!("r{i}"))
            .await
            .expect("failed over");
        assert_ne!(port, failing);
    }
    // Writes that work return the receipt of the node that committed them.
    let receipt = client.write(batch("docs"), None).await.expect("write");
    assert!(nodes.iter().any(|n| u64::from(n.port()) == receipt.origin));
    // An operation the node refuses as a bad request.
    let e = client.checkpoint().await.expect_err("bad request");
    assert_eq!(e.code(), Some(ErrorCode::BadRequest));
    assert!(client
        .endpoint_states()
        .iter()
        .all(|s| s.breaker == BreakerState::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_the_node_is_told_the_timeout() {
    let pki = pki();
    let node = FakeNode::start(&pki).await;
    let mut config = config(&pki, &[&node]);
    config.request_timeout = Duration::from_millis(200);
    config.breaker.failure_threshold = 10;
    let client = Client::connect(config).await.expect("client");
    let started = Instant::now();
    let e = client
        .get("slow", vec!["a".into()])
        .await
        .expect_err("too slow");
    assert_eq!(
        e,
        ClientError::Timeout {
            endpoint: format!("127.0.0.1:{}", node.port()),
            after: Duration::from_millis(200)
        }
    );
    assert_eq!(
        e.to_string(),
        format!("node 127.0.0.1:{}: no answer within 200ms", node.port())
    );
    assert_eq!(
        node.counters.gets.load(Ordering::SeqCst),
        3,
        "a read is retried (on the only node) up to max_attempts"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(node.counters.get_timeout_ms.load(Ordering::SeqCst), 200);
    // Three timeouts in a row open the breaker at a threshold of 3.
    let mut config = self::config(&pki, &[&node]);
    config.request_timeout = Duration::from_millis(200);
    config.health_interval = Duration::ZERO;
    let client = Client::connect(config).await.expect("client");
    let e = client
        .get("slow", vec!["a".into()])
        .await
        .expect_err("too slow");
    assert_eq!(client.endpoint_states()[0].breaker, BreakerState::Open);
    assert_eq!(
        e.to_string(),
        format!(
            "no node available: the only node is failing health checks or has an open \
             breaker; last error: node 127.0.0.1:{}: no answer within 200ms",
            node.port()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sends_a_key_to_one_node() {
    let pki = pki();
    let nodes = [
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
        FakeNode::start(&pki).await,
    ];
    let mut config = config(&pki, &[&nodes[0], &nodes[1], &nodes[2]]);
    config.strategy = Strategy::ConsistentHash;
    let client = Client::connect(config).await.expect("client");
    let mut seen = std::collections::HashSet::new();
    for key in 0..20 {
        let id = format!("object-{key}");
        let first = get_port(&client, "docs", &id).await.expect("get");
        for _ in 0..5 {
            assert_eq!(get_port(&client, "docs", &id).await.expect("get"), first);
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "20 keys all on one node: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_are_resumed_with_a_session_ticket() {
    let pki = pki();
    let node = FakeNode::start(&pki).await;
    let mut config = config(&pki, &[&node]);
    config.health_interval = Duration::ZERO;
    let client = Client::connect(config).await.expect("client");
    let addr = format!("127.0.0.1:{}", node.port());
    for _ in 0..2 {
        let full = client.handshake(&addr, false).await.expect("handshake");
        assert!(!full.resumed, "{full:?}");
    }
    let first = client.handshake(&addr, true).await.expect("handshake");
    let resumed = client.handshake(&addr, true).await.expect("handshake");
    assert!(
        resumed.resumed,
        "the second handshake with resumption should use the first one's ticket: {resumed:?}"
    );
    let full = client.handshake(&addr, false).await.expect("handshake");
    eprintln!(
        "handshake: full {:?}, first with resumption {:?} (resumed: {}), resumed {:?}",
        full.elapsed, first.elapsed, first.resumed, resumed.elapsed
    );
    // Any node, configured or not; a bad address is a configuration error.
    assert_eq!(
        client
            .handshake("localhost", true)
            .await
            .expect_err("no port")
            .to_string(),
        "endpoint `localhost`: expected host:port"
    );
    // The certificate is checked by name: "localhost" is in its SANs.
    let by_name = client
        .handshake(&format!("localhost:{}", node.port()), false)
        .await;
    if let Err(e) = &by_name {
        // localhost may resolve to ::1 first, where the node does not listen.
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused_and_a_dead_cluster_fails_fast_in_words() {
    let pki_a = pki();
    let pki_b = pki();
    let node = FakeNode::start(&pki_a).await;
    // A client that trusts another CA.
    let mut config = config(&pki_b, &[&node]);
    config.health_interval = Duration::ZERO;
    config.retry.max_attempts = 1;
    let client = Client::connect(config).await.expect("client");
    let e = client.ping().await.expect_err("untrusted certificate");
    assert!(
        matches!(&e, ClientError::Connect { reason, .. } if reason.contains("invalid peer certificate")),
        "{e}"
    );

    // Nodes that do not exist: connecting still works, calls fail within the timeouts.
    let mut config = ClientConfig {
        endpoints: vec![Endpoint::new("127.0.0.1:9"), Endpoint::new("127.0.0.1:10")],
        ..self::config(&pki_a, &[])
    };
    config.connect_timeout = Duration::from_millis(100);
    let client = Client::connect(config)
        .await
        .expect("no node needed to connect");
    wait_until("both nodes are marked down", Duration::from_secs(5), || {
        client.endpoint_states().iter().all(|s| !s.healthy)
    })
    .await;
    let started = Instant::now();
    let e = client.ping().await.expect_err("nobody there");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&e, ClientError::NoEndpoint(m) if m.starts_with("all 2 nodes are failing health checks or have open breakers; last error: node 127.0.0.1:")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_stop_with_the_last_clone() {
    let pki = pki();
    let node = FakeNode::start(&pki).await;
    let mut config = config(&pki, &[&node]);
    config.health_interval = Duration::from_millis(10);
    let client = Client::connect(config).await.expect("client");
    let pings = || node.counters.pings.load(Ordering::SeqCst);
    wait_until("three pings", Duration::from_secs(5), || pings() >= 3).await;
    let clone = client.clone();
    drop(client);
    let now = pings();
    wait_until(
        "pings go on while a clone lives",
        Duration::from_secs(5),
        || pings() >= now + 3,
    )
    .await;
    drop(clone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after_drop = pings();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        pings(),
        after_drop,
        "no pings after the last clone is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_and_weighted_work_over_quic() {
    let pki = pki();
    let a = FakeNode::start(&pki).await;
    let b = FakeNode::start(&pki).await;
    let mut config = config(&pki, &[&a, &b]);
    config.strategy = Strategy::Weighted;
    config.endpoints[0].weight = 3;
    let client = Client::connect(config).await.expect("client");
    let mut on_a = 0;
    for i in 0..40 {
        if get_port(&client, "docs", &format!("w{i}"))
            .await
            .expect("get")
            == a.port()
        {
            on_a += 1;
        }
    }
    assert_eq!(on_a, 30, "weights 3:1");

    // Least-connections: while A is stuck on a slow request, the others go to B.
    let mut config = self::config(&pki, &[&a, &b]);
    config.strategy = Strategy::LeastConnections;
    config.request_timeout = Duration::from_secs(3);
    config.retry.max_attempts = 1;
    let client = Client::connect(config).await.expect("client");
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.get("slow", vec!["s".into()]).await })
    };
    wait_until("one request in flight", Duration::from_secs(5), || {
        client.endpoint_states().iter().any(|s| s.in_flight == 1)
    })
    .await;
    let busy = client
        .endpoint_states()
        .into_iter()
        .find(|s| s.in_flight == 1)
        .expect("the busy node")
        .addr;
    for i in 0..6 {
        let port = get_port(&client, "docs", &format!("l{i}"))
            .await
            .expect("get");
        assert_ne!(format!("127.0.0.1:{port}"), busy);
    }
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_endpoints_in_brackets() {
    let pki = pki();
    let Ok(probe) = std::net::UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    drop(probe);
    let node = FakeNode::start_at(&pki, "[::1]:0".parse().expect("addr"), Arc::default()).await;
    let mut config = config(&pki, &[]);
    config.endpoints = vektagraf_client::parse_endpoints(&format!("quic://[::1]:{}", node.port()))
        .expect("endpoint");
    let client = Client::connect(config).await.expect("client");
    let pong = client.ping().await.expect("ping over IPv6");
    assert_eq!(pong.endpoint, format!("[::1]:{}", node.port()));
    assert_eq!(pong.node_id, u64::from(node.port()));
}
