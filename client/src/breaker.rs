//! The circuit breaker of one endpoint, a pure state machine: every method takes the current
//! time, so tests drive it without sleeping.
//!
//! - **Closed**: requests flow; `failure_threshold` consecutive failures open it.
//! - **Open**: the endpoint is skipped; after `reset_timeout` it becomes half-open.
//! - **Half-open**: one trial request is let through; success closes the breaker, failure
//!   opens it again (for another `reset_timeout`).
//!
//! A success in any state closes the breaker (the endpoint evidently works); a failure while
//! open restarts the open period.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// What a breaker lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    /// Consecutive failures while closed.
    failures: u32,
    /// When it (last) opened; `None` while closed.
    opened_at: Option<Instant>,
    /// A half-open trial request is in flight.
    trial: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            failures: 0,
            opened_at: None,
            trial: false,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now` (open turns half-open once `reset_timeout` has passed).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if now.saturating_duration_since(at) >= self.config.reset_timeout => {
                BreakerState::HalfOpen
            }
            Some(_) => BreakerState::Open,
        }
    }

    /// Whether a request may be sent now: closed, or half-open with no trial in flight.
    pub fn allows(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => !self.trial,
            BreakerState::Open => false,
        }
    }

    /// A request is being sent; returns whether it is the half-open trial (then pass that to
    /// [`Breaker::abandon`] if it ends without an outcome).
    pub fn on_attempt(&mut self, now: Instant) -> bool {
        if self.state(now) == BreakerState::HalfOpen && !self.trial {
            self.trial = true;
            return true;
        }
        false
    }

    /// A request (or a call that counts as one) succeeded: closed.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opened_at = None;
        self.trial = false;
    }

    /// A request failed (or took longer than `call_timeout`).
    pub fn on_failure(&mut self, now: Instant) {
        self.trial = false;
        match self.opened_at {
            Some(_) => self.opened_at = Some(now),
            None => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.config.failure_threshold {
                    self.failures = 0;
                    self.opened_at = Some(now);
                }
            }
        }
    }

    /// Records a finished call: a failure if `failed` or slower than `call_timeout`.
    pub fn record(&mut self, failed: bool, elapsed: Duration, now: Instant) {
        if failed || elapsed > self.config.call_timeout {
            self.on_failure(now);
        } else {
            self.on_success();
        }
    }

    /// The trial request ended without an outcome (cancelled): let another one through.
    pub fn abandon(&mut self) {
        self.trial = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            call_timeout: Duration::from_secs(1),
            reset_timeout: Duration::from_secs(5),
        })
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.allows(t0));
        // A success resets the count.
        b.on_success();
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        b.on_failure(t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allows(t0));
        assert!(!b.allows(t0 + 4 * S));
    }

    #[test]
    fn half_open_after_reset_timeout_lets_one_trial_through() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let t5 = t0 + 5 * S;
        assert_eq!(b.state(t0 + 4 * S), BreakerState::Open);
        assert_eq!(b.state(t5), BreakerState::HalfOpen);
        assert!(b.allows(t5));
        assert!(b.on_attempt(t5), "the first attempt is the trial");
        assert!(!b.allows(t5), "only one trial at a time");
        assert!(!b.on_attempt(t5));
        // Success closes.
        b.on_success();
        assert_eq!(b.state(t5), BreakerState::Closed);
        assert!(b.allows(t5));
        // And the failure count starts over.
        b.on_failure(t5);
        b.on_failure(t5);
        assert_eq!(b.state(t5), BreakerState::Closed);
    }

    #[test]
    fn failed_trial_reopens_for_another_reset_timeout() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let t6 = t0 + 6 * S;
        assert!(b.on_attempt(t6));
        b.on_failure(t6);
        assert_eq!(b.state(t6), BreakerState::Open);
        assert_eq!(b.state(t6 + 4 * S), BreakerState::Open);
        assert_eq!(b.state(t6 + 5 * S), BreakerState::HalfOpen);
        assert!(b.allows(t6 + 5 * S));
    }

    #[test]
    fn failures_while_open_restart_the_open_period() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0);
        }
        b.on_failure(t0 + 3 * S); // e.g. a failed health ping
        assert_eq!(b.state(t0 + 5 * S), BreakerState::Open);
        assert_eq!(b.state(t0 + 8 * S), BreakerState::HalfOpen);
    }

    #[test]
    fn abandoned_trial_frees_the_slot() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.on_failure(t0);
        }
        let t5 = t0 + 5 * S;
        assert!(b.on_attempt(t5));
        assert!(!b.allows(t5));
        b.abandon();
        assert!(b.allows(t5));
        assert_eq!(b.state(t5), BreakerState::HalfOpen);
    }

    #[test]
    fn slow_calls_count_as_failures() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(false, Duration::from_millis(1500), t0);
        }
        assert_eq!(b.state(t0), BreakerState::Open);
        let mut b = breaker();
        for _ in 0..10 {
            b.record(false, Duration::from_millis(999), t0);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn states_print_in_words() {
        assert_eq!(BreakerState::HalfOpen.to_string(), "half-open");
        assert_eq!(BreakerState::Open.to_string(), "open");
        assert_eq!(BreakerState::Closed.to_string(), "closed");
    }
}
