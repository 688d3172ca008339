//! Retention: the oldest records go first, by age and by size.

use std::time::Duration;

use rusqlite::Connection;

/// Retention limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: u64,
}

/// Bytes the records occupy (pages in use, not free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// The statements `prune` runs, each served by an index or the row ids
/// (see the test that reads their plans): pruning runs every second, and
/// a statement that walks the table costs more the larger it grows.
pub(super) const DELETE_OLDER: &str =
    "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE time_ns < ?1 LIMIT ?2)";
pub(super) const ID_SPAN: &str =
    "SELECT (SELECT MIN(id) FROM records), (SELECT MAX(id) FROM records)";
pub(super) const DELETE_BEFORE_ID: &str = "DELETE FROM records WHERE id < ?1";

/// Most rows one prune statement deletes: each runs in its own
/// transaction, which the writer's next batch waits for.
const STEP: usize = 5000;

/// Deletes what is older than the age limit, then the oldest records
/// until the size limit holds; returns how many rows went. Works in small
/// transactions so the writer's next batch never waits long.
pub fn prune(conn: &Connection, ret: Retention, now_ns: u64) -> rusqlite::Result<u64> {
    let mut gone = 0u64;
    let cutoff = now_ns.saturating_sub(ret.max_age.as_nanos() as u64) as i64;
    loop {
        // Without ORDER BY: SQLite walked the whole table in id order to
        // find the old ones; this takes them from the time index.
        let n = conn.execute(DELETE_OLDER, [cutoff, STEP as i64])?;
        gone += n as u64;
        if n < STEP {
            break;
        }
    }
    while used_bytes(conn)? > ret.max_bytes {
        // The span of ids stands for the row count (ids grow, the oldest
        // go first): COUNT(*) walked a whole index every pass. Two
        // subqueries: SQLite reads one end of the key for a lone MIN or
        // MAX, and scans the table for the pair.
        let (first, last): (Option<i64>, Option<i64>) =
            conn.query_row(ID_SPAN, [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (Some(first), Some(last)) = (first, last) else {
            break;
        };
        let chunk = ((last - first + 1) / 10).clamp(1, STEP as i64);
        gone += conn.execute(DELETE_BEFORE_ID, [first + chunk])? as u64;
    }
    if gone > 0 {
        conn.execute_batch("PRAGMA incremental_vacuum;")?;
    }
    Ok(gone)
}
