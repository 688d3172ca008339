//! The writer thread: records from the event loop over a bounded
//! channel, committed in batches, with retention enforced between them.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use rusqlite::{CachedStatement, Connection};

use super::{
    BATCH_INTERVAL, BATCH_MAX, Checkpointer, PRUNE_EVERY, Retention, StoreError, WRITE_QUEUE,
    open_rw, prune,
};
use bindwatch_core::event::Event;
use bindwatch_core::holders::Diagnosis;
use bindwatch_core::timeline::{Record, record};

/// The batch's capacity kept between commits: a quiet host's batches fit,
/// a busy one's grow (amortised) and give the rest back after the commit.
const BATCH_KEPT: usize = 256;

/// Event boxes the loop keeps for reuse once the writer hands them back.
/// Few: the pool only ever grows, to the largest hand-over seen, and the
/// gain is in freeing on the loop's thread more than in reusing.
pub(crate) const SPARE_KEPT: usize = 256;

/// Writes records in one transaction: all of them or none.
pub fn write_batch(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        // One statement for the batch (a cached one per record cost a
        // lookup of its text each time).
        let mut st = insert_statement(&tx)?;
        for r in batch {
            insert_with(&mut st, r)?;
        }
    }
    tx.commit()
}

fn insert_statement<'c>(
    tx: &'c rusqlite::Transaction<'_>,
) -> rusqlite::Result<CachedStatement<'c>> {
    tx.prepare_cached(
        "INSERT INTO records (time_ns, kind, port, proto, addr, pid, comm, netns, error,
                              holder_pid, holder_comm, reason, summary, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
}

#[cfg(test)]
pub(super) fn insert(tx: &rusqlite::Transaction<'_>, r: &Record) -> rusqlite::Result<()> {
    insert_with(&mut insert_statement(tx)?, r)
}

fn insert_with(st: &mut CachedStatement<'_>, r: &Record) -> rusqlite::Result<()> {
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

/// What the writer receives: a record, or an event whose record the
/// writer builds, so the event loop only clones the event.
pub enum Entry {
    Ready(Box<Record>),
    Event(Box<EventEntry>),
}

/// An event to record, with its diagnosis. Built into its record on the
/// writer thread, then handed back to the loop: its memory is freed (or
/// reused) on the thread that allocated it. Freed on the writer, glibc
/// sends each free to the loop's arena under that arena's lock, and in a
/// storm the two threads spent much of their time waiting on each other
/// there.
pub struct EventEntry {
    pub ev: Event,
    /// Boxed: a diagnosis inline is many times an event's size, and most
    /// events recorded have none; the spare boxes the loop keeps would
    /// otherwise each hold that room.
    pub diagnosis: Option<Box<Diagnosis>>,
}

/// The enqueueing side, owned by the event loop. Entries gather here and
/// go to the writer as one message per [`Self::flush`] (the loop flushes
/// after each batch and each tick): one wake-up of the writer per batch,
/// not one per record.
pub struct StoreSender {
    tx: Sender<Vec<Entry>>,
    gathered: Vec<Entry>,
    /// Event boxes the writer is done with, and those kept for reuse: the
    /// boxes themselves go round (an `Entry` stays two words), so the loop
    /// neither allocates nor frees one a record in a storm.
    #[allow(clippy::vec_box, reason = "the boxes are what is reused")]
    returned: Receiver<Vec<Box<EventEntry>>>,
    #[allow(clippy::vec_box, reason = "the boxes are what is reused")]
    spare: Vec<Box<EventEntry>>,
    /// Entries sent and not yet taken by the writer: the queue's bound.
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    health: Arc<WriterHealth>,
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
    /// Never waits: past the queue's bound the record is dropped (counted).
    pub fn send(&mut self, r: Record) {
        self.gathered.push(Entry::Ready(Box::new(r)));
    }

    /// Like [`Self::send`], the event's record built on the writer thread.
    pub fn send_event(&mut self, ev: &Event, diagnosis: Option<&Diagnosis>) {
        let entry = EventEntry {
            ev: ev.clone(),
            diagnosis: diagnosis.map(|d| Box::new(d.clone())),
        };
        let b = match self.spare.pop() {
            Some(mut b) => {
                *b = entry;
                b
            }
            None => Box::new(entry),
        };
        self.gathered.push(Entry::Event(b));
    }

    /// Whether one more entry fits the queue now. When it does not, the
    /// caller counts it dropped ([`Self::dropped_one`]) instead of
    /// building it: in a storm past the writer's rate most records are
    /// dropped, and each one cloned only to be freed at the next flush
    /// cost the loop more than the records it kept.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Relaxed) + self.gathered.len() < WRITE_QUEUE
    }

    /// Event boxes waiting for reuse.
    #[cfg(test)]
    pub(crate) fn spare(&self) -> usize {
        self.spare.len()
    }

    /// Counts one record dropped before it was built (the queue was full).
    pub fn dropped_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Hands what gathered to the writer; what the queue has no room for
    /// is dropped, the newest first, and counted.
    pub fn flush(&mut self) {
        for boxes in self.returned.try_iter() {
            for mut b in boxes {
                if self.spare.len() < SPARE_KEPT {
                    // A diagnosis can be large; a box waiting for reuse
                    // keeps only its event.
                    b.diagnosis = None;
                    self.spare.push(b);
                }
            }
        }
        if self.gathered.is_empty() {
            return;
        }
        let room = WRITE_QUEUE.saturating_sub(self.queued.load(Ordering::Relaxed));
        if self.gathered.len() > room {
            let excess = self.gathered.len() - room;
            self.gathered.truncate(room);
            self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        }
        let n = self.gathered.len();
        if n == 0 {
            return;
        }
        // The next batch is likely this one's size, unless this one was a
        // burst, whose capacity is not kept.
        let batch = std::mem::replace(&mut self.gathered, Vec::with_capacity(n.min(BATCH_MAX)));
        self.queued.fetch_add(n, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            // The writer is gone (it ended on an error at start-up).
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.dropped.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn health(&self) -> Arc<WriterHealth> {
        self.health.clone()
    }

    /// A counter of the records dropped, to read from elsewhere.
    pub fn dropped_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for StoreSender {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Starts the writer thread on `path`. The thread ends when every sender is
/// dropped, after committing what it holds.
/// `after_prune` runs on the writer thread after each pruning pass (the
/// daemon gives freed heap back to the system there).
pub fn spawn_writer(
    path: PathBuf,
    ret: Retention,
    after_prune: fn(),
) -> Result<(StoreSender, std::thread::JoinHandle<()>), StoreError> {
    let mut conn = open_rw(&path)?;
    // Without it the writer checkpoints in its own commits (the backstop).
    let checkpointer = Checkpointer::start(&path)
        .inspect_err(
            |e| tracing::warn!(error = %e, "timeline checkpoints stay on the writer's thread"),
        )
        .ok();
    let (tx, rx) = mpsc::channel::<Vec<Entry>>();
    // Unbounded, but never holding more boxes than the queue let through.
    let (give_back, returned) = mpsc::channel::<Vec<Box<EventEntry>>>();
    let dropped = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicUsize::new(0));
    let health = Arc::new(WriterHealth::default());
    let (writer_dropped, writer_health, writer_queued) =
        (dropped.clone(), health.clone(), queued.clone());
    let handle = std::thread::Builder::new()
        .name("timeline-writer".into())
        .spawn(move || {
            let mut batch: Vec<Record> = Vec::with_capacity(BATCH_KEPT);
            let mut last_prune = Instant::now();
            let mut open = true;
            while open {
                let deadline = Instant::now() + BATCH_INTERVAL;
                while batch.len() < BATCH_MAX {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(entries) => {
                            writer_queued.fetch_sub(entries.len(), Ordering::Relaxed);
                            let mut done = Vec::new();
                            for e in entries {
                                match e {
                                    Entry::Ready(r) => batch.push(*r),
                                    Entry::Event(b) => {
                                        batch.extend(record(&b.ev, b.diagnosis.as_deref()));
                                        done.push(b);
                                    }
                                }
                            }
                            // The loop gone (shutting down): they are freed here.
                            if !done.is_empty() {
                                let _ = give_back.send(done);
                            }
                        }
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
                            if let Some(c) = &checkpointer {
                                c.nudge();
                            }
                            batch.clear();
                            // A burst (the start-up snapshot's records, a
                            // failure storm) grows the batch past BATCH_MAX;
                            // keeping that capacity (records are 256 bytes)
                            // would hold megabytes for the rest of the run.
                            batch.shrink_to(BATCH_KEPT);
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
                                writer_dropped.fetch_add(excess as u64, Ordering::Relaxed);
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
                    match prune(&conn, ret, bindwatch_core::clock::now_unix_ns()) {
                        Ok(0) => {}
                        Ok(n) => {
                            if let Some(c) = &checkpointer {
                                c.nudge();
                            }
                            tracing::info!(records = n, "timeline pruned")
                        }
                        Err(e) => tracing::warn!(error = %e, "timeline pruning failed"),
                    }
                    // Busy periods leave this thread's allocator arena at
                    // their peak (records, batches, SQLite's scratch).
                    after_prune();
                }
            }
            drop(checkpointer);
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        })
        .map_err(|source| StoreError::Io {
            path: "timeline writer thread".into(),
            source,
        })?;
    Ok((
        StoreSender {
            tx,
            gathered: Vec::new(),
            returned,
            spare: Vec::new(),
            queued,
            dropped,
            health,
        },
        handle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_queues_bound_a_flush_drops_the_excess_and_counts_it() {
        // A writer that takes nothing: the queue only fills.
        let (tx, rx) = mpsc::channel();
        let (_give_back, returned) = mpsc::channel();
        let mut s = StoreSender {
            tx,
            gathered: Vec::new(),
            returned,
            spare: Vec::new(),
            queued: Arc::new(AtomicUsize::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            health: Arc::new(WriterHealth::default()),
        };
        assert!(s.has_room());
        for _ in 0..WRITE_QUEUE + 10 {
            s.send(Record::default());
        }
        assert_eq!(s.dropped(), 0, "nothing is dropped before the flush");
        assert!(!s.has_room(), "gathered entries count against the bound");
        s.flush();
        assert_eq!(s.dropped(), 10);
        // Full, as the writer took nothing: the loop counts a record
        // dropped without building it.
        assert!(!s.has_room(), "a full queue has no room");
        s.dropped_one();
        assert_eq!(s.dropped(), 11);
        s.queued.fetch_sub(1, Ordering::Relaxed);
        assert!(s.has_room(), "one taken by the writer makes room for one");
        s.queued.fetch_add(1, Ordering::Relaxed);
        s.send(Record::default());
        s.flush();
        assert_eq!(s.dropped(), 12);
        let sent: usize = rx.try_iter().map(|b| b.len()).sum();
        assert_eq!(sent, WRITE_QUEUE);
        // The writer gone: what is handed over is counted, not lost silently.
        drop(rx);
        s.queued.store(0, Ordering::Relaxed);
        s.send(Record::default());
        s.flush();
        assert_eq!(s.dropped(), 13);
    }
}
