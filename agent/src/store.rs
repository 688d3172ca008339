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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, params_from_iter};
use serde::{Deserialize, Serialize};

/// Version of the database schema; `migrate` brings older files up to it.
pub const SCHEMA_VERSION: i64 = 1;
/// The database file in the state directory.
pub const DB_FILE: &str = "timeline.db";
/// Records waiting for the writer; past it they are dropped (counted).
pub const WRITE_QUEUE: usize = 65_536;
/// The writer commits at least this often.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(250);
const BATCH_MAX: usize = 4096;
/// How often retention is enforced.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A record's detail: JSON kept as text, serialized straight from the
/// event (no intermediate `Value` tree on the event loop).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Detail(Box<serde_json::value::RawValue>);

impl Detail {
    pub fn of<T: Serialize + ?Sized>(v: &T) -> Self {
        serde_json::value::to_raw_value(v)
            .map(Self)
            .unwrap_or_default()
    }

    fn from_text(s: String) -> Self {
        serde_json::value::RawValue::from_string(s)
            .map(Self)
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The detail as a JSON value, for reading.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).unwrap_or_default()
    }
}

impl Default for Detail {
    fn default() -> Self {
        Self(serde_json::value::RawValue::from_string("null".into()).expect("valid JSON"))
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// One row of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix ns.
    pub time_ns: u64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Everything else (the event, the diagnosis, the alert), as JSON.
    #[serde(default)]
    pub detail: Detail,
}

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

const MIGRATIONS: &[&str] = &[
    // 1: the records table and the indexes that serve time ranges by port,
    // pid and command.
    "CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        kind TEXT NOT NULL,
        port INTEGER, proto TEXT, addr TEXT, pid INTEGER, comm TEXT,
        netns INTEGER, error TEXT, holder_pid INTEGER, holder_comm TEXT,
        reason TEXT, summary TEXT NOT NULL, detail TEXT NOT NULL
     );
     CREATE INDEX records_time ON records(time_ns);
     CREATE INDEX records_port_time ON records(port, time_ns);
     CREATE INDEX records_pid_time ON records(pid, time_ns);
     CREATE INDEX records_comm_time ON records(comm, time_ns);",
];

fn sq(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| {
        let path = path.display().to_string();
        match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                StoreError::Damaged {
                    path,
                    detail: source.to_string(),
                }
            }
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path }
            }
            _ => StoreError::Sqlite { path, source },
        }
    }
}

/// `PRAGMA quick_check` at start-up: a damaged file is reported, never
/// written over.
fn check_sound(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let verdict: String = conn
        .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
        .map_err(sq(path))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Damaged {
            path: path.display().to_string(),
            detail: format!("quick_check: {verdict}"),
        })
    }
}

/// Opens (creating and migrating) the database for writing.
pub fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        // Private: the timeline names processes, users and command lines.
        // (On Windows the directory inherits ProgramData's ACL: readable by
        // administrators and SYSTEM.)
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|source| StoreError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let conn = Connection::open(path).map_err(sq(path))?;
    // A lock held elsewhere shows as busy on the first statement.
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sq(path))?;
    check_sound(&conn, path)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(sq(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sq(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sq(path))?;
    migrate(&conn, path)?;
    // Taking the write lock now makes a second writer fail here, at start,
    // with a clear message, rather than at its first batch.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(sq(path))?;
    restrict(path);
    Ok(conn)
}

/// The database and its companions readable by the owner only, whatever
/// the umask was when they were created.
#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
    }
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sq(path))?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: v,
        });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        let tx = conn.unchecked_transaction().map_err(sq(path))?;
        tx.execute_batch(m).map_err(sq(path))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(sq(path))?;
        tx.commit().map_err(sq(path))?;
    }
    Ok(())
}

/// Opens the database read-only (the daemon may be writing).
pub fn open_ro(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sq(path))?;
    Ok(conn)
}

/// Writes records in one transaction: all of them or none.
pub fn write_batch(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for r in batch {
        insert(&tx, r)?;
    }
    tx.commit()
}

fn insert(tx: &rusqlite::Transaction<'_>, r: &Record) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO records (time_ns, kind, port, proto, addr, pid, comm, netns, error,
                              holder_pid, holder_comm, reason, summary, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    st.execute(rusqlite::params![
        r.time_ns as i64,
        r.kind,
        r.port,
        r.proto,
        r.addr,
        r.pid,
        r.comm,
        r.netns.map(|n| n as i64),
        r.error,
        r.holder_pid,
        r.holder_comm,
        r.reason,
        r.summary,
        r.detail.as_str(),
    ])?;
    Ok(())
}

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

/// What the writer receives: a record, or the work of building one, done
/// on the writer thread so the event loop only clones the event.
pub enum Entry {
    Ready(Box<Record>),
    Build(Box<dyn FnOnce() -> Option<Record> + Send>),
}

/// The enqueueing side, owned by the event loop.
#[derive(Clone)]
pub struct StoreSender {
    tx: SyncSender<Entry>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
    health: std::sync::Arc<WriterHealth>,
}

/// Whether the writer's last commit worked, shared with health and metrics.
#[derive(Debug, Default)]
pub struct WriterHealth {
    failing: std::sync::atomic::AtomicBool,
    errors: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl WriterHealth {
    fn failed(&self, e: &rusqlite::Error) {
        use std::sync::atomic::Ordering::Relaxed;
        self.failing.store(true, Relaxed);
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn succeeded(&self) {
        self.failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// None while writes succeed; the last error while they fail.
    pub fn failure(&self) -> Option<String> {
        if self.is_failing() {
            Some(
                self.last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default(),
            )
        } else {
            None
        }
    }

    /// Failed commits since start.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl StoreSender {
    /// Never waits: a full queue drops the record (counted).
    pub fn send(&self, r: Record) {
        self.enqueue(Entry::Ready(Box::new(r)));
    }

    /// Like [`Self::send`], the record built on the writer thread.
    pub fn send_built(&self, build: impl FnOnce() -> Option<Record> + Send + 'static) {
        self.enqueue(Entry::Build(Box::new(build)));
    }

    fn enqueue(&self, e: Entry) {
        if self.tx.try_send(e).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn health(&self) -> std::sync::Arc<WriterHealth> {
        self.health.clone()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Starts the writer thread on `path`. The thread ends when every sender is
/// dropped, after committing what it holds.
pub fn spawn_writer(
    path: PathBuf,
    ret: Retention,
) -> Result<(StoreSender, std::thread::JoinHandle<()>), StoreError> {
    let mut conn = open_rw(&path)?;
    let (tx, rx) = mpsc::sync_channel::<Entry>(WRITE_QUEUE);
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let health = std::sync::Arc::new(WriterHealth::default());
    let (writer_dropped, writer_health) = (dropped.clone(), health.clone());
    let handle = std::thread::Builder::new()
        .name("timeline-writer".into())
        .spawn(move || {
            let mut batch: Vec<Record> = Vec::with_capacity(BATCH_MAX);
            let mut last_prune = Instant::now();
            let mut open = true;
            while open {
                let deadline = Instant::now() + BATCH_INTERVAL;
                while batch.len() < BATCH_MAX {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(Entry::Ready(r)) => batch.push(*r),
                        Ok(Entry::Build(f)) => batch.extend(f()),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
                if !batch.is_empty() {
                    match write_batch(&mut conn, &batch) {
                        Ok(()) => {
                            if writer_health.is_failing() {
                                tracing::info!(records = batch.len(), "timeline writes resumed");
                            }
                            writer_health.succeeded();
                            batch.clear();
                        }
                        Err(e) => {
                            // Disk full, read-only, I/O error: keep the batch
                            // and retry; past one queue's worth the oldest go
                            // (counted), so memory stays bounded.
                            if !writer_health.is_failing() {
                                tracing::error!(error = %e, records = batch.len(), "timeline write failed; retrying every 500 ms");
                            }
                            writer_health.failed(&e);
                            if batch.len() > WRITE_QUEUE {
                                let excess = batch.len() - WRITE_QUEUE;
                                batch.drain(..excess);
                                writer_dropped.fetch_add(excess as u64, std::sync::atomic::Ordering::Relaxed);
                            }
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                }
                // Every second: at a busy host's write rate the size limit
                // holds within a second's records, and each pass stays
                // short, so the queue does not back up behind it.
                if last_prune.elapsed() >= PRUNE_EVERY || !open {
                    last_prune = Instant::now();
                    match prune(&conn, ret, crate::clock::now_unix_ns()) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(records = n, "timeline pruned"),
                        Err(e) => tracing::warn!(error = %e, "timeline pruning failed"),
                    }
                    // Busy periods leave this thread's allocator arena at
                    // their peak (records, batches, SQLite's scratch).
                    #[cfg(target_os = "linux")]
                    crate::linux::memory::release_free_memory();
                }
            }
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        })
        .map_err(|source| StoreError::Io {
            path: "timeline writer thread".into(),
            source,
        })?;
    Ok((
        StoreSender {
            tx,
            dropped,
            health,
        },
        handle,
    ))
}

/// Which records to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineFilter {
    pub port: Option<u16>,
    pub proto: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub kinds: Vec<String>,
    pub limit: usize,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: u64, kind: &str, port: u16, comm: &str) -> Record {
        Record {
            time_ns: t,
            kind: kind.into(),
            port: Some(port),
            proto: Some("tcp".into()),
            comm: Some(comm.into()),
            pid: Some(t as u32),
            summary: format!("{kind} {port}"),
            ..Record::default()
        }
    }

    #[test]
    fn writes_in_batches_and_reads_back_by_filter() {
        let dir = std::env::temp_dir().join(format!("bw-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(DB_FILE);
        let (tx, h) = spawn_writer(
            path.clone(),
            Retention {
                max_age: Duration::from_secs(3600 * 24 * 365 * 100),
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        for i in 0..100u64 {
            tx.send(rec(
                i,
                if i % 2 == 0 { "listen" } else { "bind_failed" },
                80 + (i % 3) as u16,
                "nginx",
            ));
        }
        drop(tx);
        h.join().unwrap();
        let c = open_ro(&path).unwrap();
        let all = query(&c, &TimelineFilter::default()).unwrap();
        assert_eq!(all.len(), 100);
        assert!(all.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
        let f = TimelineFilter {
            port: Some(80),
            kinds: vec!["bind_failed".into()],
            since_ns: Some(10),
            until_ns: Some(60),
            ..Default::default()
        };
        let got = query(&c, &f).unwrap();
        assert!(!got.is_empty());
        assert!(got.iter().all(|r| r.port == Some(80)
            && r.kind == "bind_failed"
            && (10..=60).contains(&r.time_ns)));
        let v: i64 = c
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_by_age_and_size() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        {
            let tx = c.unchecked_transaction().unwrap();
            for i in 0..20_000u64 {
                let mut r = rec(i * 1_000_000_000, "bind_failed", 80, "x");
                r.summary = "y".repeat(200);
                insert(&tx, &r).unwrap();
            }
            tx.commit().unwrap();
        }
        let now = 20_000 * 1_000_000_000;
        // Age: keep the last hour.
        prune(
            &c,
            Retention {
                max_age: Duration::from_secs(3600),
                max_bytes: u64::MAX,
            },
            now,
        )
        .unwrap();
        let oldest: i64 = c
            .query_row("SELECT MIN(time_ns) FROM records", [], |r| r.get(0))
            .unwrap();
        assert!(oldest as u64 >= now - 3600 * 1_000_000_000);
        // Size: 256 KiB.
        prune(
            &c,
            Retention {
                max_age: Duration::from_secs(u32::MAX as u64),
                max_bytes: 256 << 10,
            },
            now,
        )
        .unwrap();
        assert!(used_bytes(&c).unwrap() <= 256 << 10);
        let newest: i64 = c
            .query_row("SELECT MAX(time_ns) FROM records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(newest as u64, 19_999 * 1_000_000_000, "the newest survive");
    }

    #[test]
    fn a_flood_through_the_writer_stays_within_the_size_limit() {
        let dir = std::env::temp_dir().join(format!("bw-flood-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(DB_FILE);
        let limit = 512 << 10;
        let (tx, h) = spawn_writer(
            path.clone(),
            Retention {
                max_age: Duration::from_secs(3600),
                max_bytes: limit,
            },
        )
        .unwrap();
        let now = crate::clock::now_unix_ns();
        for i in 0..60_000u64 {
            let mut r = rec(
                now - 7200 * 1_000_000_000 + i * 100_000_000,
                "bind_failed",
                80,
                "x",
            );
            r.summary = "z".repeat(100);
            tx.send(r);
        }
        assert_eq!(tx.dropped(), 0, "ingestion kept up");
        drop(tx);
        h.join().unwrap();
        let c = open_rw(&path).unwrap();
        assert!(used_bytes(&c).unwrap() <= limit);
        let oldest: i64 = c
            .query_row("SELECT MIN(time_ns) FROM records", [], |r| r.get(0))
            .unwrap();
        assert!(oldest as u64 >= now - 3600 * 1_000_000_000, "age limit");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ephemeral_binds_become_one_row_a_minute() {
        let mut a = BindAggregator::default();
        let min = 60_000_000_000u64;
        for i in 0..1000 {
            assert!(a.add(min * 5 + i, "curl", "tcp").is_empty());
        }
        let out = a.add(min * 6, "curl", "tcp");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detail.value()["count"], 1000);
        assert_eq!(out[0].time_ns, min * 5);
    }
    mod query_properties {
        use super::*;
        use proptest::prelude::*;

        fn arb_record() -> impl Strategy<Value = Record> {
            (
                0u64..50,
                prop::sample::select(vec!["bind_failed", "listen", "release"]),
                prop::option::of(prop::sample::select(vec![53u16, 80, 443])),
                prop::option::of(prop::sample::select(vec!["tcp", "udp"])),
                prop::option::of(1u32..4),
                prop::option::of(prop::sample::select(vec!["nginx", "socat"])),
                prop::option::of(1u32..4),
                prop::option::of(prop::sample::select(vec!["nginx", "socat"])),
            )
                .prop_map(|(t, kind, port, proto, pid, comm, hpid, hcomm)| Record {
                    time_ns: t,
                    kind: kind.into(),
                    port,
                    proto: proto.map(Into::into),
                    pid,
                    comm: comm.map(Into::into),
                    holder_pid: hpid,
                    holder_comm: hcomm.map(Into::into),
                    summary: kind.into(),
                    ..Record::default()
                })
        }

        fn arb_filter() -> impl Strategy<Value = TimelineFilter> {
            (
                prop::option::of(prop::sample::select(vec![53u16, 80, 443, 8080])),
                prop::option::of(prop::sample::select(vec!["tcp", "udp"])),
                prop::option::of(1u32..5),
                prop::option::of(prop::sample::select(vec!["nginx", "socat", "sshd"])),
                prop::option::of(0u64..50),
                prop::option::of(0u64..50),
                prop::sample::subsequence(vec!["bind_failed", "listen", "release"], 0..=3),
                0usize..40,
            )
                .prop_map(|(port, proto, pid, comm, since, until, kinds, limit)| {
                    TimelineFilter {
                        port,
                        proto: proto.map(Into::into),
                        pid,
                        comm: comm.map(Into::into),
                        since_ns: since,
                        until_ns: until,
                        kinds: kinds.into_iter().map(Into::into).collect(),
                        limit,
                    }
                })
        }

        /// What `query` must return, computed the plain way.
        fn reference(records: &[Record], f: &TimelineFilter) -> Vec<(u64, usize)> {
            let mut hits: Vec<(u64, usize)> = records
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    f.port.is_none_or(|p| r.port == Some(p))
                        && f.proto.as_ref().is_none_or(|p| r.proto.as_ref() == Some(p))
                        && f.pid
                            .is_none_or(|p| r.pid == Some(p) || r.holder_pid == Some(p))
                        && f.comm.as_ref().is_none_or(|c| {
                            r.comm.as_ref() == Some(c) || r.holder_comm.as_ref() == Some(c)
                        })
                        && f.since_ns.is_none_or(|s| r.time_ns >= s)
                        && f.until_ns.is_none_or(|u| r.time_ns <= u)
                        && (f.kinds.is_empty() || f.kinds.contains(&r.kind))
                })
                .map(|(i, r)| (r.time_ns, i))
                .collect();
            // The latest `limit` (0: the default), oldest first; ties in
            // time keep insertion order.
            hits.sort();
            let limit = if f.limit == 0 { 10_000 } else { f.limit };
            hits.split_off(hits.len().saturating_sub(limit))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn query_returns_exactly_the_matching_records_in_order(
                records in prop::collection::vec(arb_record(), 0..60),
                filters in prop::collection::vec(arb_filter(), 1..8),
            ) {
                let mut conn = Connection::open_in_memory().unwrap();
                for m in MIGRATIONS {
                    conn.execute_batch(m).unwrap();
                }
                // Each record's index in its summary, to compare identities.
                let tagged: Vec<Record> = records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| Record { summary: i.to_string(), ..r.clone() })
                    .collect();
                write_batch(&mut conn, &tagged).unwrap();
                for f in &filters {
                    let got: Vec<(u64, usize)> = query(&conn, f)
                        .unwrap()
                        .iter()
                        .map(|r| (r.time_ns, r.summary.parse().unwrap()))
                        .collect();
                    prop_assert_eq!(got, reference(&tagged, f), "filter {:?}", f);
                }
            }
        }
    }
}
