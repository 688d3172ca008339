//! Opening the database: soundness check, permissions, migrations.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::{SCHEMA_VERSION, StoreError};

/// The page size of a new database file.
pub(super) const PAGE_SIZE: i64 = 8192;

pub(super) const MIGRATIONS: &[&str] = &[
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
    // 2: no query used the pid and command indexes (a query by pid or
    // command also matches the holder's, `pid = ? OR holder_pid = ?`, which
    // neither index can serve, so SQLite walks the time index), and each
    // row's insert into them, at a random place in each, was most of a
    // record's write cost.
    "DROP INDEX records_pid_time;
     DROP INDEX records_comm_time;",
    // 3: one index, on time then port, in place of a time index and a
    // port-then-time one. Records arrive in time order, so every insert
    // lands at the index's end; a port-first index took each insert to
    // that port's place, a page of its own for each port in a batch (a
    // storm's batch of 5,200 records spans 2,100 ports), and was four
    // fifths of a record's write cost. A port's records are found by
    // walking the time range in this index, the port read from the index
    // entry, so no row is read to be turned away.
    "DROP INDEX records_port_time;
     DROP INDEX records_time;
     CREATE INDEX records_time_port ON records(time_ns, port);",
];

pub(super) fn sq(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
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
        crate::platform::files::private_dir(&mut builder);
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
    // The check read the whole file through the page cache, on the
    // caller's thread (the writer's runs on another): given back, it is
    // refilled where the writer needs it.
    conn.execute_batch("PRAGMA shrink_memory;")
        .map_err(sq(path))?;
    // For a new file only (a WAL database keeps the size it was made
    // with): twice SQLite's default, so fewer pages are split, logged and
    // checkpointed a record (the writer's row in BENCHMARKS.md, section
    // 3); 16 KiB gained little more and doubles what a quiet host's
    // one-record commit writes.
    conn.pragma_update(None, "page_size", PAGE_SIZE)
        .map_err(sq(path))?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(sq(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sq(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sq(path))?;
    // In KiB: half SQLite's default. It stays resident for the whole run
    // (BENCHMARKS.md, footprint), and the writer's row gave up little for
    // it (the runs are in the commit that set it).
    conn.pragma_update(None, "cache_size", -1000)
        .map_err(sq(path))?;
    // The checkpoints run on their own thread (`Checkpointer`); this is
    // the writer's backstop should that thread fall behind, in pages of
    // the file's own size.
    let page: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .map_err(sq(path))?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::WAL_BACKSTOP_BYTES as i64 / page.max(512),
    )
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
fn restrict(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        crate::platform::files::make_private(std::path::Path::new(&p));
    }
}

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
    open_existing(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
        Duration::from_secs(5),
    )
}

/// Opens a database that already exists (no creation, no migration), with
/// `flags` and waiting up to `busy` for a lock held elsewhere.
pub fn open_existing(
    path: &Path,
    flags: OpenFlags,
    busy: Duration,
) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sq(path))?;
    conn.busy_timeout(busy).map_err(sq(path))?;
    Ok(conn)
}
