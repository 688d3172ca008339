//! What the surfaces may ask of the event loop. The loop owns the holder
//! table and the recent conflicts and answers these between batches, so
//! neither needs a lock; the API only sends them and waits for the reply
//! (or answers 503 when the queue is full).

use serde::Serialize;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::event::Event;
use crate::holders::{BindRequest, CheckAnswer, Diagnosis, HolderView, WhoQuery};

/// Requests waiting for the event loop; past it, the API answers 503.
pub const REQUEST_QUEUE: usize = 64;
/// Most recent failed binds the loop keeps for `/api/v1/conflicts`.
pub const RECENT_CONFLICTS: usize = 1000;

/// A failed bind and what bindwatch made of it.
#[derive(Clone, Debug, Serialize)]
pub struct ConflictRecord {
    pub event: Event,
    pub diagnosis: Diagnosis,
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
