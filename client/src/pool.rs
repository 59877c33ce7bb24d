//! QUIC connections: one client `quinn::Endpoint` per address family (bound on first use),
//! and per node a pool of up to `pool_size` connections, opened lazily, used in turn, and
//! replaced on next use once closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, IdleTimeout, TransportConfig};

use crate::config::split_addr;
use crate::error::ClientError;
use crate::lock;
use crate::tls::Tls;

/// Idle connections are kept alive with a QUIC ping this often...
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// ...and a connection that hears nothing for this long is dead (a crashed node is noticed
/// this fast even without requests).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Quic {
    v4: Mutex<Option<quinn::Endpoint>>,
    v6: Mutex<Option<quinn::Endpoint>>,
    /// Resumption on: pooled connections.
    pooled: quinn::ClientConfig,
    /// Resumption off: measured full handshakes.
    fresh: quinn::ClientConfig,
    pub(crate) tls: Tls,
}

impl Quic {
    pub(crate) fn new(tls: Tls) -> Result<Self, ClientError> {
        let mut transport = TransportConfig::default();
        transport.keep_alive_interval(Some(KEEP_ALIVE));
        transport.max_idle_timeout(Some(
            IdleTimeout::try_from(IDLE_TIMEOUT)
                .map_err(|e| ClientError::Config(format!("QUIC idle timeout: {e}")))?,
        ));
        let transport = Arc::new(transport);
        let quic_config = |tls: &Arc<rustls::ClientConfig>| {
            let crypto = QuicClientConfig::try_from(tls.clone())
                .map_err(|e| ClientError::Config(format!("TLS for QUIC: {e}")))?;
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            config.transport_config(transport.clone());
            Ok::<_, ClientError>(config)
        };
        Ok(Self {
            v4: Mutex::new(None),
            v6: Mutex::new(None),
            pooled: quic_config(&tls.config)?,
            fresh: quic_config(&tls.fresh)?,
            tls,
        })
    }

    /// Closes every connection (telling the nodes at once, rather than leaving them to time
    /// out) and waits briefly for the close to be sent.
    pub(crate) async fn close(&self) {
        let endpoints: Vec<quinn::Endpoint> = [&self.v4, &self.v6]
            .into_iter()
            .filter_map(|slot| lock(slot).clone())
            .collect();
        for e in &endpoints {
            e.close(quinn::VarInt::from_u32(0), b"client closed");
        }
        for e in endpoints {
            let _ = tokio::time::timeout(Duration::from_millis(500), e.wait_idle()).await;
        }
    }

    /// The client endpoint for `addr`'s family, bound to `0.0.0.0:0` or `[::]:0` on first use.
    fn endpoint_for(&self, addr: &SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let (slot, bind): (&Mutex<Option<quinn::Endpoint>>, SocketAddr) = match addr {
            SocketAddr::V4(_) => (&self.v4, SocketAddr::from(([0u8; 4], 0))),
            SocketAddr::V6(_) => (&self.v6, SocketAddr::from(([0u16; 8], 0))),
        };
        let mut slot = lock(slot);
        if let Some(endpoint) = slot.as_ref() {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(bind)?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Opens a new connection to `addr` (`host:port`; the host is the TLS server name).
    /// `resume`: offer a stored session ticket, and store the new ones.
    pub(crate) async fn connect(&self, addr: &str, resume: bool) -> Result<Connection, String> {
        let (host, _) = split_addr(addr)?;
        let mut last = format!("`{addr}` resolves to no address");
        let resolved = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("cannot resolve `{addr}`: {e}"))?;
        for socket_addr in resolved {
            let endpoint = match self.endpoint_for(&socket_addr) {
                Ok(endpoint) => endpoint,
                Err(e) => {
                    last = format!("cannot open a UDP socket for {socket_addr}: {e}");
                    continue;
                }
            };
            let config = if resume { &self.pooled } else { &self.fresh };
            let connecting = endpoint
                .connect_with(config.clone(), socket_addr, host)
                .map_err(|e| e.to_string())?;
            return connecting.await.map_err(|e| e.to_string());
        }
        Err(last)
    }
}

/// Up to `size` connections to one node.
pub(crate) struct Pool {
    slots: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            slots: (0..size.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next connection in turn, opened (or replaced, if it closed) now. Callers bound
    /// this with the connect timeout. A task that finds its slot being connected waits for
    /// that connection rather than opening another.
    pub(crate) async fn get(&self, quic: &Quic, addr: &str) -> Result<Connection, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[n].lock().await;
        if let Some(conn) = slot.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
            tracing::debug!(node = addr, "replacing a closed connection");
        }
        *slot = None;
        let conn = quic.connect(addr, true).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Open connections (a slot being connected right now does not count).
    pub(crate) fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| c.close_reason().is_none()))
                    .unwrap_or(false)
            })
            .count()
    }
}
