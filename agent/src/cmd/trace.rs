//! `bindwatch trace`: the live event stream.

use std::io::{BufWriter, Stdout, Write};
use std::time::Duration;

use super::correlate::{Correlator, CorrelatorStats};
use super::{Shutdown, Sink, pump};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::holders::Diagnosis;
use crate::platform::{ProbeConfig, Probes, RingReader};
use crate::trace::{self, AcceptSummary, Filter, LossReport};

pub struct TraceOptions {
    pub filter: Filter,
    pub json: bool,
    pub probe: ProbeConfig,
    /// Zero: never.
    pub reconcile_every: Duration,
}

struct TraceSink {
    out: BufWriter<Stdout>,
    filter: Filter,
    json: bool,
}

impl Sink for TraceSink {
    fn event(&mut self, ev: &Event, d: Option<&Diagnosis>) -> std::io::Result<()> {
        if !self.filter.matches(ev) {
            return Ok(());
        }
        if self.json {
            trace::write_json_line(
                &mut self.out,
                &trace::EventLine {
                    event: ev,
                    diagnosis: d,
                },
            )
        } else {
            writeln!(self.out, "{}", trace::table_row(ev))?;
            if let Some(d) = d {
                for line in trace::diagnosis_lines(d) {
                    writeln!(self.out, "{line}")?;
                }
            }
            Ok(())
        }
    }

    fn holders(&mut self, stats: &CorrelatorStats, last: bool) -> std::io::Result<()> {
        if self.json {
            #[derive(serde::Serialize)]
            struct Line<'a> {
                kind: &'static str,
                #[serde(flatten)]
                stats: &'a CorrelatorStats,
            }
            return trace::write_json_line(
                &mut self.out,
                &Line {
                    kind: "holders",
                    stats,
                },
            );
        }
        if last {
            let l = &stats.diagnosis_latency;
            eprintln!(
                "bindwatch: holder table: {} sockets, {} drift corrections; {} failed binds diagnosed, p50 {:.0} us, p99 {:.0} us",
                stats.table.tracked,
                stats.table.drift(),
                l.count,
                l.p50_us,
                l.p99_us
            );
        }
        Ok(())
    }

    fn accepts(&mut self, summaries: &[AcceptSummary]) -> std::io::Result<()> {
        for a in summaries
            .iter()
            .filter(|a| self.filter.matches_accepts(a.port))
        {
            if self.json {
                trace::write_json_line(&mut self.out, a)?;
            } else {
                writeln!(self.out, "{}", trace::accepts_row(a))?;
            }
        }
        Ok(())
    }

    fn loss(&mut self, r: &LossReport, last: bool) -> std::io::Result<()> {
        if self.json {
            return trace::write_json_line(&mut self.out, r);
        }
        let lost = r.lost_events();
        if last {
            eprintln!(
                "bindwatch: stopped; {} events read, {} lost, {} malformed",
                r.events, lost, r.malformed
            );
        } else {
            eprintln!(
                "bindwatch: WARNING {} events lost so far (ring buffer full: {}, pending map full: {}), {} malformed; \
                 raise --ring-buffer-bytes",
                lost, r.lost_ringbuf_full, r.lost_pending_map_full, r.malformed
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub async fn trace(opts: TraceOptions) -> Result<()> {
    let mut shutdown = Shutdown::install()?;
    let (mut probes, ring) = Probes::load(&opts.probe)?;
    let mut reader = RingReader::new(ring).map_err(|e| Error::io("polling the ring buffer", e))?;
    let mut correlator = Correlator::start(opts.reconcile_every, &mut probes);
    let containers = crate::containers::SharedDirectory::default();
    let _containers_watch = crate::platform::watch_containers(
        crate::containers::ContainersConfig::default(),
        containers.clone(),
    );
    correlator.follow_containers(containers);
    for h in probes.hooks().iter().filter(|h| !h.attached) {
        eprintln!(
            "bindwatch: hook {} not attached: {}",
            h.hook,
            h.error.as_deref().unwrap_or("")
        );
    }
    eprintln!(
        "bindwatch: tracing; hooks {}/{} attached ({} probes, TCP lifecycle from {}{}); ring buffer {} bytes; {} sockets held; Ctrl-C to stop",
        probes.attached_count(),
        probes.hooks().len(),
        probes.probe_set(),
        probes.lifecycle(),
        probes
            .fallback()
            .map(|why| format!(", fexit refused: {why}"))
            .unwrap_or_default(),
        opts.probe.ring_buffer_bytes,
        correlator.table.len()
    );
    let mut sink = TraceSink {
        out: BufWriter::new(std::io::stdout()),
        filter: opts.filter,
        json: opts.json,
    };
    if !opts.json {
        writeln!(sink.out, "{}", trace::HEADER).map_err(|e| Error::io("writing", e))?;
        sink.flush().map_err(|e| Error::io("writing", e))?;
    }
    pump(
        &mut probes,
        &mut reader,
        &mut sink,
        Duration::from_secs(1),
        &mut shutdown,
        &mut correlator,
        None,
    )
    .await
}
