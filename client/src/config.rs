//! What a [`Client`](crate::Client) is told: endpoints, trust, strategy, pool, timeouts,
//! breaker and retry settings; the parsers the command line uses; the backoff formula.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::error::ClientError;

/// One node: `host:port` (an IPv6 address in brackets, e.g. `[::1]:7400`) and its weight for
/// the [`Strategy::Weighted`] strategy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: String,
    pub weight: u32,
}

impl Endpoint {
    /// An endpoint of weight 1.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            weight: 1,
        }
    }

    pub fn weighted(addr: impl Into<String>, weight: u32) -> Self {
        Self {
            addr: addr.into(),
            weight,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// How a request's node is chosen among the available ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Each node in turn.
    #[default]
    RoundRobin,
    /// The node with the fewest requests in flight from this client.
    LeastConnections,
    /// Smooth weighted round-robin (nginx's): weights 3 and 1 give exactly 3 picks to 1.
    Weighted,
    /// The same request key always goes to the same node while it is available (a hash ring
    /// with virtual nodes); requests without a key go round-robin.
    ConsistentHash,
    /// The node with the lowest measured round-trip time (health pings); unmeasured nodes last.
    Nearest,
}

const STRATEGIES: [(&str, Strategy); 5] = [
    ("round-robin", Strategy::RoundRobin),
    ("least-connections", Strategy::LeastConnections),
    ("weighted", Strategy::Weighted),
    ("consistent-hash", Strategy::ConsistentHash),
    ("nearest", Strategy::Nearest),
];

impl Strategy {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        STRATEGIES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("?", |(name, _)| name)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        STRATEGIES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, strategy)| *strategy)
            .ok_or_else(|| {
                let names: Vec<&str> = STRATEGIES.iter().map(|(name, _)| *name).collect();
                ClientError::Config(format!(
                    "unknown strategy `{s}` (expected one of: {})",
                    names.join(", ")
                ))
            })
    }
}

/// The circuit breaker of each endpoint (see [`Breaker`](crate::breaker::Breaker)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// A call slower than this counts as a failure (its answer is still returned).
    pub call_timeout: Duration,
    /// How long an open breaker stays open before it lets one trial request through.
    pub reset_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            call_timeout: Duration::from_secs(10),
            reset_timeout: Duration::from_secs(5),
        }
    }
}

/// Retries of failed requests on other endpoints, with exponential backoff and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first one included (1: never retry).
    pub max_attempts: u32,
    /// The pause before the first retry; it doubles with each further retry...
    pub base_backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryConfig {
    /// The pause before retry number `retry` (1 for the first retry). `jitter` in `[0, 1]`
    /// picks a point in `[ceiling / 2, ceiling]`, where `ceiling` is
    /// `base_backoff * 2^(retry - 1)` capped at `max_backoff` ("equal jitter": never less
    /// than half the exponential pause, so retries stay spread out, never more than the cap).
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let ceiling = self
            .base_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Everything a [`Client`](crate::Client) needs. Build it with struct syntax and
/// `..ClientConfig::default()`, or with [`ClientConfig::new`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The nodes (at least one).
    pub endpoints: Vec<Endpoint>,
    /// PEM text of the CA certificate(s) that signed the nodes' certificates
    /// ([`read_ca_file`] loads a file).
    pub ca_pem: Vec<u8>,
    /// The API token sent with every request (`vg_<id>_<secret>`; empty is enough for pings).
    pub token: String,
    pub strategy: Strategy,
    /// QUIC connections per endpoint, opened on first use and used in turn.
    pub pool_size: usize,
    /// How long a request waits for its answer once its stream is open; also sent to the
    /// node, which gives up at the same time. A call may take up to `retry.max_attempts`
    /// times this (plus connects and backoff) when it is retried.
    pub request_timeout: Duration,
    /// How long opening a connection (QUIC and TLS handshake) may take.
    pub connect_timeout: Duration,
    /// How often each endpoint is pinged; `Duration::ZERO` turns health checks off (for a
    /// one-shot command line call, say).
    pub health_interval: Duration,
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    /// The largest response frame accepted, in bytes.
    pub max_frame: u64,
}

/// Default for [`ClientConfig::max_frame`]: 256 MiB.
pub const DEFAULT_MAX_FRAME: u64 = 256 << 20;

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            ca_pem: Vec::new(),
            token: String::new(),
            strategy: Strategy::default(),
            pool_size: 2,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

impl ClientConfig {
    /// Defaults with these endpoints and CA.
    pub fn new(endpoints: Vec<Endpoint>, ca_pem: Vec<u8>) -> Self {
        Self {
            endpoints,
            ca_pem,
            ..Self::default()
        }
    }

    /// Checks what the types cannot: at least one endpoint, each well formed and listed
    /// once, weights, sizes and attempts at least 1. (The CA is checked when the client
    /// builds its TLS configuration.)
    pub fn validate(&self) -> Result<(), ClientError> {
        if self.endpoints.is_empty() {
            return Err(config(
                "no endpoints given (expected e.g. quic://127.0.0.1:7400)",
            ));
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            split_addr(&endpoint.addr)
                .map_err(|reason| config(format!("endpoint `{}`: {reason}", endpoint.addr)))?;
            if endpoint.weight == 0 {
                return Err(config(format!(
                    "endpoint `{}`: weight must be at least 1",
                    endpoint.addr
                )));
            }
            if self.endpoints[..i].iter().any(|e| e.addr == endpoint.addr) {
                return Err(config(format!(
                    "endpoint `{}` is listed twice",
                    endpoint.addr
                )));
            }
        }
        if self.pool_size == 0 {
            return Err(config("pool_size must be at least 1"));
        }
        if self.retry.max_attempts == 0 {
            return Err(config("retry.max_attempts must be at least 1"));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(config("breaker.failure_threshold must be at least 1"));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(config(
                "request_timeout and connect_timeout must be longer than zero",
            ));
        }
        if self.max_frame < 16 {
            return Err(config("max_frame must be at least 16 bytes"));
        }
        Ok(())
    }
}

fn config(message: impl Into<String>) -> ClientError {
    ClientError::Config(message.into())
}

/// Reads a CA certificate file (PEM) for [`ClientConfig::ca_pem`].
pub fn read_ca_file(path: impl AsRef<Path>) -> Result<Vec<u8>, ClientError> {
    let path = path.as_ref();
    std::fs::read(path)
        .map_err(|e| config(format!("cannot read CA file `{}`: {e}", path.display())))
}

/// Parses the command line's endpoint list: comma-separated `host:port`, each with an
/// optional `quic://` prefix and an optional `=WEIGHT` suffix (default 1), e.g.
/// `quic://a:7400=3,quic://b:7400,[::1]:7401`.
pub fn parse_endpoints(list: &str) -> Result<Vec<Endpoint>, ClientError> {
    if list.trim().is_empty() {
        return Err(config(
            "no endpoints given (expected e.g. quic://127.0.0.1:7400)",
        ));
    }
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for (i, item) in list.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            return Err(config(format!(
                "empty endpoint at position {} in `{list}`",
                i + 1
            )));
        }
        let endpoint = parse_endpoint(item)?;
        if endpoints.iter().any(|e| e.addr == endpoint.addr) {
            return Err(config(format!(
                "endpoint `{}` is listed twice",
                endpoint.addr
            )));
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

fn parse_endpoint(item: &str) -> Result<Endpoint, ClientError> {
    let rest = match item.split_once("://") {
        Some(("quic", rest)) => rest,
        Some((scheme, _)) => {
            return Err(config(format!(
                "endpoint `{item}`: unsupported scheme `{scheme}://` (only quic://)"
            )))
        }
        None => item,
    };
    let (addr, weight) = match rest.rsplit_once('=') {
        Some((addr, weight)) => {
            let weight = weight
                .parse::<u32>()
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| {
                    config(format!(
                        "endpoint `{item}`: weight `{weight}` is not a whole number from 1 to {}",
                        u32::MAX
                    ))
                })?;
            (addr, weight)
        }
        None => (rest, 1),
    };
    split_addr(addr).map_err(|reason| config(format!("endpoint `{item}`: {reason}")))?;
    Ok(Endpoint::weighted(addr, weight))
}

/// Checks `host:port` and returns the host (without brackets) and the port, or what is wrong.
pub(crate) fn split_addr(addr: &str) -> Result<(&str, u16), String> {
    let bad = |what: &str| Err(what.to_string());
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((host, port)) => (host, port),
            None => return bad("expected [ipv6-address]:port"),
        }
    } else {
        match addr.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return bad("put an IPv6 address in brackets, e.g. [::1]:7400")
            }
            Some((host, port)) => (host, port),
            None => return bad("expected host:port"),
        }
    };
    if host.is_empty() {
        return bad("empty host");
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok((host, port)),
        _ => bad(&format!("port `{port}` is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(list: &str) -> String {
        match parse_endpoints(list) {
            Ok(e) => panic!("`{list}` parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_lists_with_and_without_scheme_and_weights() {
        let got =
            parse_endpoints("quic://a:7400, b:7401=3,quic://[::1]:7402=2").expect("a valid list");
        assert_eq!(
            got,
            vec![
                Endpoint::weighted("a:7400", 1),
                Endpoint::weighted("b:7401", 3),
                Endpoint::weighted("[::1]:7402", 2),
            ]
        );
        assert_eq!(
            parse_endpoints("127.0.0.1:7400").expect("one endpoint"),
            vec![Endpoint::new("127.0.0.1:7400")]
        );
    }

    #[test]
    fn endpoint_errors_say_what_is_wrong() {
        assert_eq!(
            err(""),
            "no endpoints given (expected e.g. quic://127.0.0.1:7400)"
        );
        assert_eq!(
            err("a:1,,b:2"),
            "empty endpoint at position 2 in `a:1,,b:2`"
        );
        assert_eq!(
            err("http://a:1"),
            "endpoint `http://a:1`: unsupported scheme `http://` (only quic://)"
        );
        assert_eq!(err("quic://a"), "endpoint `quic://a`: expected host:port");
        assert_eq!(
            err("a:x"),
            "endpoint `a:x`: port `x` is not a number from 1 to 65535"
        );
        assert_eq!(
            err("a:0"),
            "endpoint `a:0`: port `0` is not a number from 1 to 65535"
        );
        assert_eq!(
            err("a:70000"),
            "endpoint `a:70000`: port `70000` is not a number from 1 to 65535"
        );
        assert_eq!(err(":7400"), "endpoint `:7400`: empty host");
        assert_eq!(
            err("::1:7400"),
            "endpoint `::1:7400`: put an IPv6 address in brackets, e.g. [::1]:7400"
        );
        assert_eq!(
            err("[::1]7400"),
            "endpoint `[::1]7400`: expected [ipv6-address]:port"
        );
        assert_eq!(
            err("quic://a:1=0"),
            "endpoint `quic://a:1=0`: weight `0` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err("a:1=x"),
            "endpoint `a:1=x`: weight `x` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err("a:1=3:2"),
            "endpoint `a:1=3:2`: weight `3:2` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err("quic://a=2"),
            "endpoint `quic://a=2`: expected host:port"
        );
        assert_eq!(err("a:1,quic://a:1=2"), "endpoint `a:1` is listed twice");
    }

    #[test]
    fn strategies_parse_by_name_and_print_back() {
        for name in [
            "round-robin",
            "least-connections",
            "weighted",
            "consistent-hash",
            "nearest",
        ] {
            let s: Strategy = name.parse().expect("a known strategy");
            assert_eq!(s.to_string(), name);
        }
        assert_eq!(
            "random".parse::<Strategy>().map_err(|e| e.to_string()),
            Err("unknown strategy `random` (expected one of: round-robin, \
                 least-connections, weighted, consistent-hash, nearest)"
                .to_string())
        );
    }

    #[test]
    fn validate_catches_what_types_cannot() {
        let ok = ClientConfig::new(vec![Endpoint::new("a:1")], Vec::new());
        assert!(ok.validate().is_ok());
        let cases = [
            (
                ClientConfig::default(),
                "no endpoints given (expected e.g. quic://127.0.0.1:7400)",
            ),
            (
                ClientConfig::new(vec![Endpoint::weighted("a:1", 0)], Vec::new()),
                "endpoint `a:1`: weight must be at least 1",
            ),
            (
                ClientConfig::new(vec![Endpoint::new("a:1"), Endpoint::new("a:1")], Vec::new()),
                "endpoint `a:1` is listed twice",
            ),
            (
                ClientConfig::new(vec![Endpoint::new("a")], Vec::new()),
                "endpoint `a`: expected host:port",
            ),
            (
                ClientConfig {
                    pool_size: 0,
                    ..ok.clone()
                },
                "pool_size must be at least 1",
            ),
            (
                ClientConfig {
                    retry: RetryConfig {
                        max_attempts: 0,
                        ..RetryConfig::default()
                    },
                    ..ok.clone()
                },
                "retry.max_attempts must be at least 1",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(
                config.validate().map_err(|e| e.to_string()),
                Err(message.to_string())
            );
        }
    }

    #[test]
    fn missing_ca_file_is_named() {
        let e = read_ca_file("/nonexistent/ca.pem").expect_err("no such file");
        assert!(
            e.to_string()
                .starts_with("cannot read CA file `/nonexistent/ca.pem`: "),
            "{e}"
        );
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let retry = RetryConfig::default(); // 50 ms doubling, capped at 2 s
        let mut previous_ceiling = Duration::ZERO;
        for n in 1..=40 {
            let ceiling = (retry.base_backoff * 2u32.pow((n - 1).min(20))).min(retry.max_backoff);
            assert!(ceiling >= previous_ceiling);
            previous_ceiling = ceiling;
            assert_eq!(retry.backoff(n, 0.0), ceiling / 2, "retry {n}, no jitter");
            assert_eq!(retry.backoff(n, 1.0), ceiling, "retry {n}, full jitter");
            for j in 0..=20 {
                let d = retry.backoff(n, f64::from(j) / 20.0);
                assert!(d >= ceiling / 2 && d <= ceiling, "retry {n}: {d:?}");
                assert!(d <= retry.max_backoff);
            }
        }
        assert_eq!(retry.backoff(1, 1.0), Duration::from_millis(50));
        assert_eq!(retry.backoff(3, 1.0), Duration::from_millis(200));
        assert_eq!(retry.backoff(7, 0.0), Duration::from_secs(1));
        // Out-of-range jitter is clamped.
        assert_eq!(retry.backoff(1, 7.0), Duration::from_millis(50));
        assert_eq!(retry.backoff(1, -1.0), Duration::from_millis(25));
    }
}
