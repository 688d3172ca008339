//! What the surfaces may ask of the event loop. The loop owns the holder
//! table and the recent conflicts and answers these between batches, so
//! neither needs a lock; the API only sends them and waits for the reply
//! (or answers 503 when the queue is full).

use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Config;
use bindwatch_core::event::Event;
use bindwatch_core::holders::{BindRequest, CheckAnswer, Diagnosis, HolderView, WhoQuery};

/// Requests waiting for the event loop; past it, the API answers 503.
pub const REQUEST_QUEUE: usize = 64;
/// Most recent failed binds the loop keeps for `/api/v1/conflicts`.
pub const RECENT_CONFLICTS: usize = 1000;

/// A failed bind and what bindwatch made of it; written in the one JSON
/// shape of an event with its diagnosis (`trace::EventLine`).
#[derive(Clone, Debug)]
pub struct ConflictRecord {
    pub event: Event,
    pub diagnosis: Diagnosis,
}

impl Serialize for ConflictRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        bindwatch_core::trace::EventLine {
            event: &self.event,
            diagnosis: Some(&self.diagnosis),
        }
        .serialize(s)
    }
}

pub enum Request {
    /// Who holds what the query names (`/api/v1/holders`, `bindwatch who`).
    /// With the warnings about their ports (`who::ephemeral_notes`).
    Holders(WhoQuery, oneshot::Sender<(Vec<HolderView>, Vec<String>)>),
    /// The most recent failed binds, newest last.
    Conflicts {
        limit: usize,
        port: Option<u16>,
        reply: oneshot::Sender<Vec<ConflictRecord>>,
    },
    /// Whether a bind would succeed now (`/api/v1/check`, `bindwatch check`).
    Check(BindRequest, oneshot::Sender<CheckAnswer>),
    /// A new configuration (SIGHUP), already checked.
    Reload(Box<Config>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindwatch_core::holders::{HolderTable, NoFacts, diagnose};
    use bindwatch_core::testing::{event, raw};

    /// The conflicts API, the trace line (and the JSON-lines export) and
    /// the timeline's detail write one shape for a failed bind.
    #[test]
    fn a_failed_bind_has_one_json_shape_everywhere() {
        let ev = event(&raw(
            bindwatch_common::kind::BIND,
            "127.0.0.1",
            80,
            bindwatch_common::IPPROTO_TCP,
            -98,
        ));
        let d = diagnose(&HolderTable::new(), &ev, &mut NoFacts).expect("EADDRINUSE is diagnosed");
        let conflict = serde_json::to_value(ConflictRecord {
            event: ev.clone(),
            diagnosis: d.clone(),
        })
        .unwrap();
        let line = serde_json::to_value(bindwatch_core::trace::EventLine {
            event: &ev,
            diagnosis: Some(&d),
        })
        .unwrap();
        let detail = bindwatch_core::timeline::record(&ev, Some(&d))
            .unwrap()
            .detail
            .value();
        assert_eq!(conflict, line);
        assert_eq!(detail, line);
        assert_eq!(line["port"], 80);
        assert_eq!(line["diagnosis"]["summary"], d.summary.as_str());
    }
}
