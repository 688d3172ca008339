//! Accept counts: the probes keep cumulative per-port counters; the loop
//! reports what each tick added.

use std::collections::HashMap;

use crate::platform::Probes;
use bindwatch_core::trace::AcceptSummary;

/// Turns the probes' cumulative accept counters into per-interval deltas.
#[derive(Default)]
pub struct AcceptDeltas {
    last: HashMap<(u8, u16), u64>,
}

impl AcceptDeltas {
    pub fn poll(&mut self, probes: &Probes) -> Vec<AcceptSummary> {
        let now = bindwatch_core::clock::now_unix_ns();
        let Ok(current) = probes.accepts() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (&(family, port), &total) in &current {
            let prev = self.last.get(&(family, port)).copied().unwrap_or(0);
            if total > prev {
                out.push(AcceptSummary {
                    kind: "accepts",
                    time_ns: now,
                    family: if family == bindwatch_common::AF_INET6 {
                        "ipv6"
                    } else {
                        "ipv4"
                    },
                    port,
                    delta: total - prev,
                    total,
                });
            }
        }
        out.sort_by_key(|a| (a.port, a.family));
        self.last = current;
        out
    }
}
