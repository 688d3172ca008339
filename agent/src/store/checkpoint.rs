//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint
//! runs inside the commit that crosses its threshold, on the writer's
//! thread: a profile of the writer at a storm's rate found a large share
//! of its time copying WAL frames into the database file and syncing it
//! (the figures are in the commit that added this module). Here a second
//! connection copies them (`PASSIVE`: it never waits for the writer, nor
//! the writer for it) after each batch, and the writer's next transaction
//! starts the WAL over from its beginning once all of it is copied. The
//! writer keeps an automatic checkpoint at [`WAL_BACKSTOP_BYTES`], which
//! bounds the WAL should this thread fall behind or stop.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::schema::open_existing;

/// The WAL's size past which the writer checkpoints in its own commit
/// (set in pages of the file's size: 2048 of 8 KiB).
pub const WAL_BACKSTOP_BYTES: u64 = 16 << 20;

/// The checkpointing thread; stopped and joined when dropped.
pub struct Checkpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    completed: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Opens a second connection to the database at `path` (already
    /// created by the writer's `open_rw`) and starts the thread.
    pub fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_existing(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE,
            Duration::from_secs(1),
        )?;
        // One pending wake-up is enough: a checkpoint copies every frame
        // committed before it starts.
        let (wake, rx) = mpsc::sync_channel::<()>(1);
        let completed = Arc::new(AtomicU64::new(0));
        let done = completed.clone();
        let thread = std::thread::Builder::new()
            .name("timeline-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                while rx.recv().is_ok() {
                    match checkpoint(&conn) {
                        Ok(()) => {
                            failing = false;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // The writer's backstop bounds the WAL meanwhile.
                            if !failing {
                                tracing::warn!(error = %e, "timeline checkpoint failed");
                            }
                            failing = true;
                        }
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                path: "timeline checkpoint thread".into(),
                source,
            })?;
        Ok(Self {
            wake: Some(wake),
            thread: Some(thread),
            completed,
        })
    }

    /// Asks for a checkpoint of what is committed; never waits.
    pub fn nudge(&self) {
        // Full: a checkpoint is already due. Gone: the thread ended, and the
        // writer's backstop checkpoints instead.
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }

    /// Checkpoints run to their end since the start.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One passive checkpoint: copies what no reader still needs, waits for
/// no one.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}
