//! The forensic timeline: an embedded SQLite database in the state
//! directory. The event loop hands records to a writer thread over a
//! bounded channel (never waiting); the writer commits in batches (WAL, so
//! a crash loses at most the last batch and never corrupts the file) and
//! prunes by age and size between batches. Readers (`bindwatch timeline`,
//! the API) open the file on their own.
//!
//! What is recorded: every failed bind with its diagnosis; every listen
//! start and stop, and the release of a listening socket (holder changes
//! on listening ports); alerts firing and resolving; agent start and stop,
//! probe status, lost-event counts. Successful binds that never listen are
//! not recorded one by one: they are counted per minute, command and
//! protocol in `binds_aggregated` records.

mod aggregate;
mod checkpoint;
mod query;
mod retention;
mod schema;
mod writer;

use std::time::Duration;

pub use aggregate::BindAggregator;
pub use checkpoint::{Checkpointer, WAL_BACKSTOP_BYTES};
pub use query::{AT_LIMIT, query, query_at, read, read_at};
pub use retention::{Retention, prune, used_bytes};
pub use schema::{open_ro, open_rw};
pub use writer::{Entry, StoreSender, WriterHealth, spawn_writer, write_batch};

/// Version of the database schema; `migrate` brings older files up to it.
pub const SCHEMA_VERSION: i64 = 3;
/// The database file in the state directory.
pub const DB_FILE: &str = "timeline.db";
/// Records waiting for the writer; past it they are dropped (counted).
pub const WRITE_QUEUE: usize = 65_536;
/// The writer commits at least this often.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(250);
const BATCH_MAX: usize = 4096;
/// How often retention is enforced.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("timeline database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "timeline database {path} has schema version {found}, newer than this bindwatch ({SCHEMA_VERSION})"
    )]
    TooNew { path: String, found: i64 },
    #[error(
        "timeline database {path} is damaged ({detail}). bindwatch will not write over evidence: \
         it runs without a timeline. To go on: stop bindwatch, move the file aside with its -wal \
         and -shm companions (`mv {path} {path}.damaged`), salvage it with \
         `sqlite3 {path}.damaged .recover | sqlite3 recovered.db` if needed, and start again"
    )]
    Damaged { path: String, detail: String },
    #[error(
        "timeline database {path} is locked by another process (another bindwatch on the same \
         state directory, or a tool holding a write transaction): stop it, or give this daemon \
         its own --state-dir"
    )]
    Locked { path: String },
    #[error("creating {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
