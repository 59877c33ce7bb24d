//! The WASI a plugin sees. Plugins are built for wasm32-wasip2, so Rust's std imports WASI
//! interfaces; all of WASI 0.2 is linked, restricted to nothing the plugin could use to reach
//! outside its call:
//!
//! - no preopened directories (no filesystem), no environment variables, no arguments;
//! - no network: TCP, UDP and name lookup are off and no socket address is allowed;
//! - stdin is empty; stdout and stderr are captured, the first [`CAPTURE_BYTES`] of each, and
//!   logged after the call (stderr also ends up in a trap's reason: a panic's message);
//! - clocks frozen at the Unix epoch (wall) and at 0 (monotonic) unless the `clock` grant;
//! - random numbers from a fixed seed, the same sequence on every call, unless the `random`
//!   grant (resolvers never have grants: every node must compute the same answer);
//! - a sleep (`monotonic-clock.subscribe-*`) ends at the call's deadline at the latest: the
//!   epoch cannot interrupt the host while it waits, so an unbounded sleep would otherwise hold
//!   the thread past the deadline (or forever).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::call::CallState;
use crate::plugins::Grants;

/// How much of stdout and of stderr is kept per call; the rest is counted and dropped.
pub(super) const CAPTURE_BYTES: usize = 4096;

/// The seed of the generator behind `wasi:random` without the `random` grant.
const SEED: u64 = 0x7665_6b74_6167_7261; // "vektagra"

/// The largest `get-random-bytes` answer (WASI's default is 64 MiB, allocated by the host).
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Links WASI 0.2 (synchronous) with the monotonic clock's sleeps bounded by the call's
/// deadline.
pub(super) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // The same functions under the same (versioned) name: replaces WASI's own definitions.
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// What one call's WASI context is made of.
pub(super) struct CallWasi {
    pub ctx: WasiCtx,
    pub clock: CallClock,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// The WASI context of one call with `grants`.
pub(super) fn context(grants: Grants) -> CallWasi {
    let clock = CallClock {
        start: Instant::now(),
        frozen: !grants.clock,
    };
    let (stdout, stderr) = (Capture::default(), Capture::default());
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(MAX_RANDOM_BYTES)
        .monotonic_clock(clock);
    if !grants.clock {
        b.wall_clock(FrozenWallClock);
    }
    if !grants.random {
        b.secure_random(rand::rngs::StdRng::seed_from_u64(SEED))
            .insecure_random(rand::rngs::StdRng::seed_from_u64(SEED ^ 1))
            .insecure_random_seed(u128::from(SEED));
    }
    CallWasi {
        ctx: b.build(),
        clock,
        stdout,
        stderr,
    }
}

/// The wall clock without the `clock` grant: always the Unix epoch.
struct FrozenWallClock;

impl HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// The monotonic clock of one call: nanoseconds since the call started, or always 0 without
/// the `clock` grant. The sleeps below read the same clock as the plugin.
#[derive(Debug, Clone, Copy)]
pub(super) struct CallClock {
    start: Instant,
    frozen: bool,
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        if self.frozen {
            0
        } else {
            u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }
    }
}

/// A sleep that ends at `until` (`None`: at once).
struct Sleep(Option<tokio::time::Instant>);

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        if let Some(until) = self.0 {
            tokio::time::sleep_until(until).await;
        }
    }
}

impl CallState {
    /// A pollable ready after `wanted`, or at the call's deadline if that comes first.
    fn sleep(&mut self, wanted: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let d = wanted.min(left);
        let until = (!d.is_zero()).then(|| tokio::time::Instant::now() + d);
        let sleep = self.table.push(Sleep(until))?;
        wasmtime_wasi::p2::subscribe(&mut self.table, sleep)
    }
}

impl monotonic_clock::Host for CallState {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.now())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(self.clock.resolution())
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.clock.now();
        self.sleep(Duration::from_nanos(when.saturating_sub(now)))
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.sleep(Duration::from_nanos(duration))
    }
}

/// Captured stdout or stderr: the first [`CAPTURE_BYTES`], and how many bytes were dropped.
/// Writes always succeed (a plugin that prints a lot is not failed for it).
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn append(&self, data: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = CAPTURE_BYTES.saturating_sub(c.bytes.len());
        let keep = data.len().min(room);
        c.bytes.extend_from_slice(&data[..keep]);
        c.dropped += (data.len() - keep) as u64;
    }

    /// What was written, as text (lossy), with a note of what was dropped; empty if nothing.
    pub fn text(&self) -> String {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = String::from_utf8_lossy(&c.bytes).trim_end().to_owned();
        if c.dropped > 0 {
            s.push_str(&format!(" [{} more bytes dropped]", c.dropped));
        }
        s
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_the_first_bytes() {
        let c = Capture::default();
        c.append(b"hello\n");
        assert_eq!(c.text(), "hello");
        c.append(&vec![b'x'; CAPTURE_BYTES]);
        assert!(
            c.text().ends_with(" [6 more bytes dropped]"),
            "{}",
            c.text()
        );
    }

    #[test]
    fn frozen_and_running_clocks() {
        let frozen = CallClock {
            start: Instant::now(),
            frozen: true,
        };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(frozen.now(), 0);
        let running = CallClock {
            frozen: false,
            ..frozen
        };
        assert!(running.now() >= 2_000_000);
        assert_eq!(FrozenWallClock.now(), Duration::ZERO);
    }
}
