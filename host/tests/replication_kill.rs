//! Three `vektagraf serve` processes replicating over loopback, set up the way a user does it
//! (`vektagraf certs`, a `[replication]` section per node): concurrent writes on every node,
//! one node killed with SIGKILL in the middle of the stream and restarted; once the writers
//! stop, every acknowledged write is on every node and the digests are equal.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, Metric};
use vektagraf_client::{Client, ClientConfig, Endpoint};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vektagraf"));
    for v in ["VEKTAGRAF_REMOTE", "VEKTAGRAF_TOKEN", "VEKTAGRAF_CA"] {
        c.env_remove(v);
    }
    c
}

fn run(args: &[&str], dir: &Path) -> Result<()> {
    let out = bin().args(args).current_dir(dir).output()?;
    if !out.status.success() {
        bail!(
            "vektagraf {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A loopback port nothing listens on now (for TCP or UDP).
fn port(udp: bool) -> Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

struct NodeFiles {
    name: String,
    dir: PathBuf,
    quic: SocketAddr,
    http: u16,
}

/// A node process, killed when dropped (also when the test fails).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn setup(root: &Path, names: &[&str]) -> Result<Vec<NodeFiles>> {
    run(&["certs", "init", "ca"], root)?;
    let mut nodes = Vec::new();
    let mut repl = Vec::new();
    for n in names {
        run(&["certs", "node", n, "--ca", "ca", "--out", n], root)?;
        nodes.push(NodeFiles {
            name: n.to_string(),
            dir: root.join(n),
            quic: SocketAddr::from(([127, 0, 0, 1], port(true)?)),
            http: port(false)?,
        });
        repl.push(port(true)?);
    }
    let ca = root.join("ca/ca.pem");
    for (i, n) in nodes.iter().enumerate() {
        let d = n.dir.display();
        let mut toml = format!(
            "[node]\ndata_dir = \"{d}\"\nquic_listen = \"{}\"\nhttp_listen = \"127.0.0.1:{}\"\n\
             [node.tls]\ncert = \"{d}/node.pem\"\nkey = \"{d}/node.key\"\n\
             [replication]\nnode_id = \"{}\"\nlisten = \"127.0.0.1:{}\"\n\
             [replication.tls]\nca = \"{}\"\ncert = \"{d}/node.pem\"\nkey = \"{d}/node.key\"\n",
            n.quic,
            n.http,
            n.name,
            repl[i],
            ca.display()
        );
        for (j, p) in nodes.iter().enumerate() {
            if i != j {
                toml.push_str(&format!(
                    "[[replication.peers]]\nid = \"{}\"\naddress = \"127.0.0.1:{}\"\n",
                    p.name, repl[j]
                ));
            }
        }
        std::fs::write(n.dir.join("node.toml"), toml)?;
    }
    Ok(nodes)
}

fn start(n: &NodeFiles) -> Result<Proc> {
    let log = std::fs::File::create(n.dir.join("node.log"))?;
    let child = bin()
        .arg("serve")
        .arg("--config")
        .arg(n.dir.join("node.toml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let proc = Proc(child);
    let until = Instant::now() + Duration::from_secs(120);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", n.http)).is_ok()
            && n.dir.join("admin.token").exists()
        {
            return Ok(proc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "node {} did not start: {}",
        n.name,
        std::fs::read_to_string(n.dir.join("node.log")).unwrap_or_default()
    )
}

async fn client(n: &NodeFiles, ca: &Path) -> Result<Client> {
    let mut c = ClientConfig::new(
        vec![Endpoint::new(n.quic.to_string())],
        vektagraf_client::read_ca_file(ca)?,
    );
    c.token = std::fs::read_to_string(n.dir.join("admin.token"))?
        .trim()
        .to_owned();
    c.request_timeout = Duration::from_secs(20);
    c.connect_timeout = Duration::from_secs(2);
    Ok(Client::connect(c).await?)
}

/// Writes `count` objects `<prefix>-<i>` one batch each, and the contested key `same`; returns
/// the ids acknowledged. Stops quietly at the first failure (the node was killed).
async fn writer(c: Client, prefix: String, count: usize) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    for i in 0..count {
        let id = format!("{prefix}-{i}");
        let mut b = Batch::new();
        b.upsert("c", &id, json!({"i": i}), Some(vec![i as f32, 1.0, 0.0]))
            .upsert(
                "c",
                "same",
                json!({"by": prefix}),
                Some(vec![0.0, 0.0, 1.0]),
            );
        match c.write(b, None).await {
            Ok(_) => {
                acked.insert(id);
            }
            Err(_) => break,
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_restarts_and_no_acknowledged_write_is_lost() -> Result<()> {
    let root = tempfile::tempdir()?;
    let nodes = setup(root.path(), &["a", "b", "c"])?;
    let ca = root.path().join("ca/ca.pem");
    let mut procs: Vec<Option<Proc>> = nodes
        .iter()
        .map(|n| start(n).map(Some))
        .collect::<Result<_>>()?;
    let clients = [
        client(&nodes[0], &ca).await?,
        client(&nodes[1], &ca).await?,
        client(&nodes[2], &ca).await?,
    ];
    clients[0]
        .create_collection(CollectionSpec {
            metric: Metric::Euclidean,
            ..CollectionSpec::new("c", 3)
        })
        .await?;
    // Every node has the collection before the writers start.
    for c in &clients[1..] {
        let until = Instant::now() + Duration::from_secs(30);
        while !c.list_collections().await?.iter().any(|s| s.name == "c") {
            anyhow::ensure!(Instant::now() < until, "the collection did not replicate");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let a = tokio::spawn(writer(clients[0].clone(), "a".into(), 300));
    let b = tokio::spawn(writer(clients[1].clone(), "b".into(), 300));
    let c = tokio::spawn(writer(clients[2].clone(), "c".into(), 100_000));
    // Kill c with SIGKILL in the middle of the stream, then bring it back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if let Some(mut p) = procs[2].take() {
        p.0.kill()?;
        p.0.wait()?;
    }
    let acked_c = c.await?;
    anyhow::ensure!(!acked_c.is_empty(), "c took no write before it was killed");
    procs[2] = Some(start(&nodes[2])?);
    let acked: BTreeSet<String> = a
        .await?
        .into_iter()
        .chain(b.await?)
        .chain(acked_c)
        .collect();

    // Converged: equal digests everywhere, within a bound.
    let fresh = [
        client(&nodes[0], &ca).await?,
        client(&nodes[1], &ca).await?,
        client(&nodes[2], &ca).await?,
    ];
    let until = Instant::now() + Duration::from_secs(60);
    let digests = loop {
        let mut d = Vec::new();
        for c in &fresh {
            d.push(c.digest("c").await?.digest);
        }
        if d.iter().all(|x| x == &d[0]) {
            break d;
        }
        anyhow::ensure!(Instant::now() < until, "no convergence within 60 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(digests[0].len(), 32);
    // Every acknowledged write is on every node.
    let ids: Vec<String> = acked.iter().cloned().collect();
    for (n, c) in nodes.iter().zip(&fresh) {
        let got = c.get("c", ids.clone()).await?;
        let missing: Vec<&String> = ids
            .iter()
            .zip(&got)
            .filter(|(_, o)| o.is_none())
            .map(|(id, _)| id)
            .collect();
        assert!(missing.is_empty(), "node {} lacks {missing:?}", n.name);
    }
    let status = fresh[2].cluster_status().await?;
    let peers = status
        .status
        .as_ref()
        .and_then(|s| s["peers"].as_array().cloned())
        .context("c's cluster status")?;
    assert_eq!(peers.len(), 2, "{:?}", status.status);
    drop(procs);
    Ok(())
}
