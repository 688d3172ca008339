//! A per-second budget for a log line that can come at the kernel's rate
//! (each failed bind): past it, lines are counted instead of written, and
//! the count is logged once per second. A storm of failures must neither
//! flood the journal (which then drops lines of its own accord, silently)
//! nor slow the event loop; the metrics and the timeline keep every one.

use std::time::{Duration, Instant};

/// Failed-bind lines written per second; a crash-looping service's
/// retries stay well inside it.
pub const FAILED_BIND_LINES_PER_SECOND: u32 = 100;

pub struct LineBudget {
    per_second: u32,
    since: Instant,
    written: u32,
    suppressed: u64,
}

impl LineBudget {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            since: Instant::now(),
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether this line may be written; when not, it is counted.
    pub fn take(&mut self) -> bool {
        if self.since.elapsed() >= Duration::from_secs(1) {
            self.written = 0;
            self.since = Instant::now();
        }
        if self.written < self.per_second {
            self.written += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Lines counted instead of written since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_budget_lines_are_counted_and_the_count_is_handed_over_once() {
        let mut b = LineBudget::new(3);
        let taken = (0..10).filter(|_| b.take()).count();
        assert_eq!(taken, 3);
        assert_eq!(b.take_suppressed(), 7);
        assert_eq!(b.take_suppressed(), 0);
        // A new second, a new budget.
        b.since -= Duration::from_secs(1);
        assert!(b.take());
    }
}
