//! Successful binds that never listen, counted instead of recorded.

use std::collections::HashMap;

use bindwatch_core::timeline::{Detail, Record};

/// Counts successful binds that never listened, per minute, command and
/// protocol, so a flood of ephemeral binds costs a row a minute.
#[derive(Default)]
pub struct BindAggregator {
    minute: u64,
    counts: HashMap<(String, String), u64>,
}

impl BindAggregator {
    /// Adds one bind; returns the previous minute's records when the minute
    /// turned.
    pub fn add(&mut self, time_ns: u64, comm: &str, proto: &str) -> Vec<Record> {
        let m = time_ns / 60_000_000_000;
        let out = if m != self.minute {
            self.flush()
        } else {
            Vec::new()
        };
        self.minute = m;
        *self
            .counts
            .entry((comm.to_owned(), proto.to_owned()))
            .or_default() += 1;
        out
    }

    pub fn flush(&mut self) -> Vec<Record> {
        let t = self.minute * 60_000_000_000;
        self.counts
            .drain()
            .map(|((comm, proto), n)| Record {
                time_ns: t,
                kind: "binds_aggregated".into(),
                proto: Some(proto.clone()),
                comm: Some(comm.clone()),
                summary: format!(
                    "{n} successful {proto} binds by {comm} that never listened, in this minute"
                ),
                detail: Detail::of(&serde_json::json!({ "count": n })),
                ..Record::default()
            })
            .collect()
    }
}
