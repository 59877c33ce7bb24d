//! Replicating nodes on loopback: a cluster CA, a certificate per node, replication ports
//! reserved up front (peers must know each other's addresses before they start), optionally a
//! fault-injecting proxy in front of each node's replication port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edge_config::{NodeConfig, PeerConfig, ReplicationConfig, ReplicationTls};
use vektagraf::replication::tls::{create_ca, create_node_cert};
use vektagraf::server::Node;
use vektagraf::Database;

use crate::node::Cluster;
use crate::proxy::{Faults, UdpProxy};

/// A free UDP port on loopback (bound, read, released: the OS does not hand it out again at
/// once, so another test does not take it in between).
pub fn reserve_port() -> Result<SocketAddr> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

pub struct Mesh {
    pub cluster: Cluster,
    pub names: Vec<String>,
    /// Each node's replication listener.
    pub listen: BTreeMap<String, SocketAddr>,
    /// With proxies: what the others dial to reach a node (the proxy in front of it).
    pub proxies: BTreeMap<String, UdpProxy>,
}

impl Mesh {
    /// Nodes named `names`, each dialling the others directly (`faults: None`) or through a
    /// proxy in front of each node.
    pub async fn new(names: &[&str], faults: Option<Faults>) -> Result<Mesh> {
        let cluster = Cluster::new().await?;
        let ca_dir = cluster.root.path().join("cluster-ca");
        create_ca(&ca_dir)?;
        let mut listen = BTreeMap::new();
        let mut proxies = BTreeMap::new();
        for n in names {
            create_node_cert(
                &ca_dir,
                n,
                &[],
                &cluster.root.path().join(format!("cert-{n}")),
            )?;
            let addr = reserve_port()?;
            listen.insert(n.to_string(), addr);
            if let Some(f) = &faults {
                proxies.insert(n.to_string(), UdpProxy::start(addr, f.clone())?);
            }
        }
        Ok(Mesh {
            cluster,
            names: names.iter().map(|s| s.to_string()).collect(),
            listen,
            proxies,
        })
    }

    /// The address the others dial to reach `name`.
    pub fn dial_addr(&self, name: &str) -> Option<SocketAddr> {
        match self.proxies.get(name) {
            Some(p) => Some(p.local_addr()),
            None => self.listen.get(name).copied(),
        }
    }

    pub fn config(&self, name: &str, policy: &str) -> Result<NodeConfig> {
        let all: Vec<&str> = self.names.iter().map(String::as_str).collect();
        self.config_with_peers(name, policy, &all)
    }

    /// A node that knows only `peers` of the mesh (as before an operator adds a node).
    pub fn config_with_peers(
        &self,
        name: &str,
        policy: &str,
        peers: &[&str],
    ) -> Result<NodeConfig> {
        let mut c = self.cluster.config(name);
        let certs = self.cluster.root.path().join(format!("cert-{name}"));
        let peers = peers
            .iter()
            .filter(|n| **n != name)
            .map(|n| -> Result<PeerConfig> {
                Ok(PeerConfig {
                    id: n.to_string(),
                    address: self.dial_addr(n).context("peer address")?.to_string(),
                    region: format!("region-{n}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        c.replication = Some(ReplicationConfig {
            node_id: name.to_owned(),
            region: format!("region-{name}"),
            listen: *self.listen.get(name).context("listen address")?,
            peers,
            default_conflict: policy.to_owned(),
            max_clock_skew: Duration::from_secs(60),
            log_retention: Duration::ZERO,
            // Often, so a test sees a repair within seconds.
            anti_entropy: Duration::from_secs(1),
            window: 4096,
            batch: 256,
            tls: ReplicationTls {
                ca: self.cluster.root.path().join("cluster-ca/ca.pem"),
                cert: certs.join("node.pem"),
                key: certs.join("node.key"),
            },
        });
        Ok(c)
    }

    pub async fn start(&self, name: &str) -> Result<Node> {
        self.start_config(self.config(name, "last-write-wins")?)
            .await
    }

    /// Starts a node; a node restarted at once may find its replication port still held by
    /// its previous endpoint's closing connections (QUIC drains them for a few round-trip
    /// timeouts), so binding is retried for a while.
    pub async fn start_config(&self, config: NodeConfig) -> Result<Node> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            match self.cluster.start(config.clone()).await {
                Err(e) if e.to_string().contains("in use") && Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }
}

/// Waits until every database reports the same digest for `collection` (and it exists
/// everywhere); returns the digest. Fails after `within`, naming what differed.
pub async fn converged(dbs: &[&Database], collection: &str, within: Duration) -> Result<String> {
    let until = Instant::now() + within;
    loop {
        let digests: Vec<Option<String>> = dbs
            .iter()
            .map(|d| d.digest(collection).ok().map(|d| d.hex()))
            .collect();
        if let Some(Some(first)) = digests.first() {
            if digests.iter().all(|d| d.as_ref() == Some(first)) {
                return Ok(first.clone());
            }
        }
        if Instant::now() > until {
            anyhow::bail!(
                "no convergence of `{collection}` within {within:?}: digests {digests:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
