//! The event loop: events read from the platform's ring, decoded, applied
//! to the holder table (the correlator), a failed bind diagnosed, and each
//! handed to a [`Sink`] (the daemon's, or `trace`'s); between batches, the
//! ticks (hooks checked, the table reconciled, accept and loss counters
//! polled) and the surfaces' requests. One loop for every command.

pub mod correlate;
pub mod log_budget;

mod accepts;

use std::time::Duration;

pub use accepts::AcceptDeltas;

use crate::error::{Error, Result};
use crate::platform::{HookIncident, HookStatus, LostCounts, Probes, RingReader, Shutdown};
use bindwatch_core::clock::Clock;
use bindwatch_core::decode::Decoder;
use bindwatch_core::event::Event;
use bindwatch_core::holders::Diagnosis;
use bindwatch_core::trace::{AcceptSummary, LossReport};
use correlate::{Correlator, CorrelatorStats};

/// Where the event loop delivers what it reads.
pub trait Sink {
    /// One event; a failed bind comes with its diagnosis.
    fn event(&mut self, ev: &Event, diagnosis: Option<&Diagnosis>) -> std::io::Result<()>;
    fn accepts(&mut self, summaries: &[AcceptSummary]) -> std::io::Result<()>;
    /// Called when a loss counter moved, and once at the end (`last`).
    fn loss(&mut self, report: &LossReport, last: bool) -> std::io::Result<()>;
    /// The holder table's counters and diagnosis latency: when the table
    /// was reconciled, and once at the end (`last`).
    fn holders(&mut self, _stats: &CorrelatorStats, _last: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()>;
    /// After each batch of events, with the table up to date.
    fn batch_done(&mut self, _c: &mut Correlator) {}
    /// Once per tick, with the current loss counters.
    fn tick(&mut self, _c: &mut Correlator, _loss: &LossReport) {}
    /// Cgroup hooks found detached or replaced, and re-attached (or not);
    /// `hooks` is every hook's status after.
    fn hooks_changed(&mut self, incidents: &[HookIncident], _hooks: &[HookStatus]) {
        log_hook_incidents(incidents);
    }
    /// An API request; the table answers unless the sink handles it.
    fn request(&mut self, req: crate::control::Request, c: &mut Correlator) {
        c.answer(req)
    }
}

fn loss_report(lost: LostCounts, decoder: &Decoder) -> LossReport {
    let s = decoder.stats();
    LossReport {
        kind: "loss",
        time_ns: bindwatch_core::clock::now_unix_ns(),
        events: s.decoded,
        lost_ringbuf_full: lost.ringbuf_full,
        lost_pending_map_full: lost.pending_map_full,
        lost_accept_map_full: lost.accept_map_full,
        lost_program_skipped: lost.program_skipped,
        malformed: s.rejected() + lost.undecodable,
        releases_unjoined: s.releases_unjoined,
        join_full: s.join_full,
    }
}

pub fn log_hook_incidents(incidents: &[HookIncident]) {
    for i in incidents {
        tracing::warn!(hook = i.hook, found = i.what, reattached = ?i.reattached, "probe hook was not running");
    }
}

/// Every this many ticks, the cgroup hooks are checked (and re-attached).
const HOOK_CHECK_TICKS: u64 = 2;

/// A batch at least this large means the host is busy binding.
const BUSY_BATCH: usize = 32;
/// How long a busy loop lets events gather before reading again: bounds the
/// added diagnosis latency under load (none when quiet); at the highest
/// rate measured (see BENCHMARKS.md) it is far below the ring's capacity.
const COALESCE: Duration = Duration::from_millis(2);

/// What the loop does with one batch of decoded events, in order: each
/// event through the table (and its diagnosis, for a failed bind) to the
/// sink, then the batch's /proc reads, the sink's per-batch work (metrics
/// fold, alert evaluation) and its flush. Public so that the pipeline
/// benchmark runs the daemon's own step.
pub fn batch_step(
    batch: &mut Vec<Event>,
    correlator: &mut Correlator,
    sink: &mut impl Sink,
) -> std::io::Result<()> {
    for ev in batch.drain(..) {
        let d = correlator.on_event(&ev);
        sink.event(&ev, d.as_ref())?;
    }
    correlator.after_batch();
    sink.batch_done(correlator);
    sink.flush()
}

/// Reads events until SIGINT or SIGTERM (or the sink's reader goes away),
/// polling accept and loss counters every `tick`. Drains what the ring still
/// holds before returning, so nothing read by the kernel is left unreported.
pub async fn pump(
    probes: &mut Probes,
    reader: &mut RingReader,
    sink: &mut impl Sink,
    tick: Duration,
    shutdown: &mut Shutdown,
    correlator: &mut Correlator,
    mut requests: Option<&mut tokio::sync::mpsc::Receiver<crate::control::Request>>,
) -> Result<()> {
    let mut decoder = Decoder::new(Clock::new());
    let mut accepts = AcceptDeltas::default();
    let mut last_lost = LostCounts::default();
    let mut last_malformed = 0;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Event> = Vec::with_capacity(1024);
    let mut ticks: u64 = 0;

    let io_result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                r = reader.read_batch(|bytes| decoder.decode_into(bytes, &mut batch)) => {
                    let n = r?;
                    batch_step(&mut batch, correlator, sink)?;
                    if n >= BUSY_BATCH {
                        // Under load, let the ring fill for a moment: one
                        // wake-up per batch instead of one per event, which
                        // the kernel would otherwise pay on the traced task.
                        tokio::time::sleep(COALESCE).await;
                    }
                }
                _ = interval.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(HOOK_CHECK_TICKS) {
                        let incidents = probes.check_hooks();
                        if !incidents.is_empty() {
                            sink.hooks_changed(&incidents, probes.hooks());
                        }
                    }
                    if correlator.tick().await.is_some() {
                        sink.holders(&correlator.stats(), false)?;
                    }
                    sink.accepts(&accepts.poll(probes))?;
                    let lost = probes.lost().unwrap_or_default();
                    sink.tick(correlator, &loss_report(lost, &decoder));
                    let malformed = decoder.stats().rejected();
                    if lost != last_lost || malformed != last_malformed {
                        sink.loss(&loss_report(lost, &decoder), false)?;
                        last_lost = lost;
                        last_malformed = malformed;
                    }
                    sink.flush()?;
                }
                Some(req) = async {
                    match requests.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => sink.request(req, correlator),
                _ = shutdown.recv() => break,
            }
        }
        reader.drain(|bytes| decoder.decode_into(bytes, &mut batch));
        batch_step(&mut batch, correlator, sink)?;
        sink.accepts(&accepts.poll(probes))?;
        sink.holders(&correlator.stats(), true)?;
        sink.loss(
            &loss_report(probes.lost().unwrap_or_default(), &decoder),
            true,
        )?;
        sink.flush()
    }
    .await;
    match io_result {
        // The reader of our output went away (`trace | head`): a normal end.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::io("writing events", e)),
        Ok(()) => Ok(()),
    }
}
