//! Reading the timeline back: the steps the CLI (`bindwatch timeline`,
//! with the daemon stopped) and the API (`/api/v1/timeline`, `/ui`) share,
//! from a filter to records, or to who held a port at a moment.

use std::path::Path;

use rusqlite::{Connection, params_from_iter};

use super::StoreError;
use super::schema::{open_ro, sq};
use bindwatch_core::timeline::{AtAnswer, Detail, Record, TimelineFilter, holders_at};

/// The records `f` selects, from the database at `db` opened read-only.
pub fn read(db: &Path, f: &TimelineFilter) -> Result<Vec<Record>, StoreError> {
    let conn = open_ro(db)?;
    query(&conn, f).map_err(sq(db))
}

/// Who held `port` at `at_ns`, with their intervals and the failures
/// around it, rebuilt from the database at `db` opened read-only.
pub fn read_at(
    db: &Path,
    port: u16,
    proto: Option<&str>,
    at_ns: u64,
) -> Result<AtAnswer, StoreError> {
    let conn = open_ro(db)?;
    let records = query_at(&conn, port, proto, at_ns).map_err(sq(db))?;
    Ok(holders_at(&records, port, at_ns))
}

/// Records matching `f`, oldest first (the last `limit` of them).
pub fn query(conn: &Connection, f: &TimelineFilter) -> rusqlite::Result<Vec<Record>> {
    let (sql, args) = select(f);
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(args), |r| {
        let detail: String = r.get(13)?;
        Ok(Record {
            time_ns: r.get::<_, i64>(0)? as u64,
            kind: r.get(1)?,
            port: r.get(2)?,
            proto: r.get(3)?,
            addr: r.get(4)?,
            pid: r.get(5)?,
            comm: r.get(6)?,
            netns: r.get::<_, Option<i64>>(7)?.map(|n| n as u64),
            error: r.get(8)?,
            holder_pid: r.get(9)?,
            holder_comm: r.get(10)?,
            reason: r.get(11)?,
            summary: r.get(12)?,
            detail: Detail::from_text(detail),
        })
    })?;
    let mut v: Vec<Record> = rows.collect::<rusqlite::Result<_>>()?;
    v.reverse();
    Ok(v)
}

pub(super) fn select(f: &TimelineFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from(
        "SELECT time_ns, kind, port, proto, addr, pid, comm, netns, error, holder_pid,
                holder_comm, reason, summary, detail FROM records WHERE 1=1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    use rusqlite::types::Value as V;
    if let Some(p) = f.port {
        sql.push_str(" AND port = ?");
        args.push(V::Integer(p as i64));
    }
    if let Some(p) = &f.proto {
        sql.push_str(" AND proto = ?");
        args.push(V::Text(p.clone()));
    }
    if let Some(p) = f.pid {
        sql.push_str(" AND (pid = ? OR holder_pid = ?)");
        args.push(V::Integer(p as i64));
        args.push(V::Integer(p as i64));
    }
    if let Some(c) = &f.comm {
        sql.push_str(" AND (comm = ? OR holder_comm = ?)");
        args.push(V::Text(c.clone()));
        args.push(V::Text(c.clone()));
    }
    if let Some(s) = f.since_ns {
        sql.push_str(" AND time_ns >= ?");
        args.push(V::Integer(s as i64));
    }
    if let Some(u) = f.until_ns {
        sql.push_str(" AND time_ns <= ?");
        args.push(V::Integer(u as i64));
    }
    if !f.kinds.is_empty() {
        sql.push_str(" AND kind IN (");
        sql.push_str(&vec!["?"; f.kinds.len()].join(","));
        sql.push(')');
        args.extend(f.kinds.iter().map(|k| V::Text(k.clone())));
    }
    let limit = if f.limit == 0 { 10_000 } else { f.limit };
    sql.push_str(&format!(" ORDER BY time_ns DESC, id DESC LIMIT {limit}"));
    (sql, args)
}

/// The records `timeline --at` rebuilds holder intervals from (see
/// `timeline::holders_at`): the port's lifecycle records, bindwatch's
/// starts and stops, and the port's failures around the moment; oldest
/// first, a start before the sockets it found.
pub fn query_at(
    conn: &Connection,
    port: u16,
    proto: Option<&str>,
    at_ns: u64,
) -> rusqlite::Result<Vec<Record>> {
    let kinds = |k: &[&str]| k.iter().map(|s| s.to_string()).collect();
    let agent = query(
        conn,
        &TimelineFilter {
            kinds: kinds(bindwatch_core::timeline::AGENT_KINDS),
            limit: AT_LIMIT,
            ..TimelineFilter::default()
        },
    )?;
    let lifecycle = query(
        conn,
        &TimelineFilter {
            port: Some(port),
            proto: proto.map(str::to_owned),
            kinds: kinds(bindwatch_core::timeline::LIFECYCLE_KINDS),
            limit: AT_LIMIT,
            ..TimelineFilter::default()
        },
    )?;
    let around = bindwatch_core::timeline::FAILURES_AROUND_NS;
    let failures = query(
        conn,
        &TimelineFilter {
            port: Some(port),
            proto: proto.map(str::to_owned),
            kinds: kinds(&["bind_failed"]),
            since_ns: Some(at_ns.saturating_sub(around)),
            until_ns: Some(at_ns.saturating_add(around)),
            limit: 1000,
            ..TimelineFilter::default()
        },
    )?;
    let mut all: Vec<Record> = agent.into_iter().chain(lifecycle).chain(failures).collect();
    // Stable: at equal times a start stays before the sockets it found.
    all.sort_by_key(|r| r.time_ns);
    Ok(all)
}

/// Most records of each kind group `query_at` reads (the latest); an
/// interval whose start lies beyond them begins "before" its first record.
pub const AT_LIMIT: usize = 100_000;
