//! Hybrid logical clock: 48 bits of wall-clock milliseconds, 16 bits of logical counter.
//! Pure: the caller passes the wall time, so tests control it.

/// Timestamps are `wall_ms << 16 | counter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

impl Hlc {
    /// Resumes after `last` (persisted), so timestamps never go back across restarts.
    pub fn resume(last: u64) -> Self {
        Self { last }
    }

    /// A timestamp greater than every one issued or observed before.
    pub fn now(&mut self, wall_ms: u64) -> u64 {
        let physical = wall_ms << 16;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Takes in a timestamp from another node: the clock moves past it, so whatever this node
    /// stamps next orders after what it has seen. A remote timestamp more than `max_skew_ms`
    /// ahead of this node's wall clock is refused (and the clock left alone): one node with a
    /// clock far in the future must not drag every other node's timestamps along.
    pub fn observe(
        &mut self,
        remote: u64,
        wall_ms: u64,
        max_skew_ms: u64,
    ) -> Result<u64, ClockSkew> {
        let ahead = Self::wall_ms(remote).saturating_sub(wall_ms);
        if ahead > max_skew_ms {
            return Err(ClockSkew {
                ahead_ms: ahead,
                bound_ms: max_skew_ms,
            });
        }
        self.last = (wall_ms << 16).max(self.last.max(remote) + 1);
        Ok(self.last)
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// The wall-clock milliseconds of a timestamp.
    pub fn wall_ms(ts: u64) -> u64 {
        ts >> 16
    }
}

/// A remote timestamp too far ahead of the local wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a remote clock is {ahead_ms} ms ahead of this node's, more than the {bound_ms} ms allowed"
)]
#[non_exhaustive]
pub struct ClockSkew {
    pub ahead_ms: u64,
    pub bound_ms: u64,
}

/// Milliseconds since the Unix epoch from the system clock.
pub fn system_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn timestamps_strictly_increase_whatever_the_wall_clock_does(walls in proptest::collection::vec(0u64..1 << 40, 1..200)) {
            let mut c = Hlc::default();
            let mut prev = 0;
            for w in walls {
                let t = c.now(w);
                prop_assert!(t > prev);
                prop_assert!(Hlc::wall_ms(t) >= w.min(Hlc::wall_ms(prev)));
                prev = t;
            }
        }
    }

    proptest! {
        #[test]
        fn observed_timestamps_are_passed_and_far_futures_refused(
            steps in proptest::collection::vec((0u64..1 << 30, 0u64..1 << 30, any::<bool>()), 1..200)
        ) {
            let skew = 5_000;
            let mut c = Hlc::default();
            let mut seen = 0;
            for (wall, remote_wall, local) in steps {
                let before = c.last();
                if local {
                    seen = seen.max(c.now(wall));
                    continue;
                }
                let remote = (remote_wall << 16) | 7;
                match c.observe(remote, wall, skew) {
                    Ok(t) => {
                        prop_assert!(remote_wall <= wall + skew);
                        prop_assert!(t > remote && t > before && t >= wall << 16);
                        prop_assert!(c.now(wall) > t);
                        seen = seen.max(c.last());
                    }
                    Err(e) => {
                        prop_assert!(remote_wall > wall + skew);
                        prop_assert_eq!(e.ahead_ms, remote_wall - wall);
                        prop_assert_eq!(c.last(), before, "a refused timestamp leaves the clock alone");
                    }
                }
            }
            prop_assert!(c.last() >= seen);
        }
    }

    #[test]
    fn resume_continues_after_the_persisted_value() {
        let mut c = Hlc::resume(100 << 16);
        assert_eq!(c.now(5), (100 << 16) + 1);
        assert_eq!(c.now(200), 200 << 16);
    }
}
