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

/// Deletes what is older than the age limit, then the oldest records
/// until the size limit holds; returns how many rows went. Works in small
/// transactions so the writer's next batch never waits long.
pub fn prune(conn: &Connection, ret: Retention, now_ns: u64) -> rusqlite::Result<u64> {
    let mut gone = 0u64;
    let cutoff = now_ns.saturating_sub(ret.max_age.as_nanos() as u64) as i64;
    loop {
        let n = conn.execute(
            "DELETE FROM records WHERE id IN
               (SELECT id FROM records WHERE time_ns < ?1 ORDER BY id LIMIT 5000)",
            [cutoff],
        )?;
        gone += n as u64;
        if n < 5000 {
            break;
        }
    }
    while used_bytes(conn)? > ret.max_bytes {
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM records", [], |r| r.get(0))?;
        if total == 0 {
            break;
        }
        let chunk = (total / 10).clamp(1, 5000);
        gone += conn.execute(
            "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?1)",
            [chunk],
        )? as u64;
    }
    if gone > 0 {
        conn.execute_batch("PRAGMA incremental_vacuum;")?;
    }
    Ok(gone)
}
