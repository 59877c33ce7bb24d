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

    pub fn last(&self) -> u64 {
        self.last
    }

    /// The wall-clock milliseconds of a timestamp.
    pub fn wall_ms(ts: u64) -> u64 {
        ts >> 16
    }
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

    #[test]
    fn resume_continues_after_the_persisted_value() {
        let mut c = Hlc::resume(100 << 16);
        assert_eq!(c.now(5), (100 << 16) + 1);
        assert_eq!(c.now(200), 200 << 16);
    }
}
