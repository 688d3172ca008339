//! Reading the timeline back: the filters the CLI and the API share.

use rusqlite::{Connection, params_from_iter};

use crate::timeline::{Detail, Record, TimelineFilter};

/// Records matching `f`, oldest first (the last `limit` of them).
pub fn query(conn: &Connection, f: &TimelineFilter) -> rusqlite::Result<Vec<Record>> {
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
