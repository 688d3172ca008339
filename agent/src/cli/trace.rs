//! `bindwatch trace`: live events, with the holder of every failed bind,
//! through the event loop with a sink that prints.

use std::io::{BufWriter, Stdout, Write};
use std::time::Duration;

use bindwatch::error::{Error, Result};
use bindwatch::event_loop::correlate::{Correlator, CorrelatorStats};
use bindwatch::event_loop::{Sink, pump};
use bindwatch::platform::{
    DEFAULT_RING_BUFFER_BYTES, ProbeConfig, ProbeMode, Probes, RingReader, Shutdown,
};
use bindwatch_core::event::{Event, Proto};
use bindwatch_core::holders::Diagnosis;
use bindwatch_core::trace::{self, AcceptSummary, Filter, LossReport};
use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only events on this port (asked for or bound).
    #[arg(long)]
    port: Option<u16>,
    /// Only events of this process id.
    #[arg(long)]
    pid: Option<u32>,
    /// Only failed calls.
    #[arg(long)]
    errors_only: bool,
    /// Only this protocol: tcp or udp.
    #[arg(long, value_parser = parse_proto)]
    proto: Option<Proto>,
    #[command(flatten)]
    probe: ProbeArgs,
}

pub fn parse_proto(s: &str) -> Result<Proto, String> {
    Proto::parse(s).ok_or_else(|| format!("unknown protocol {s:?}: use tcp or udp"))
}

#[derive(ClapArgs)]
pub struct ProbeArgs {
    /// Size of the kernel ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_parser = parse_ring_size)]
    ring_buffer_bytes: u32,
    /// Which kernel hooks carry binds and listens: auto (the first the
    /// kernel loads of fexit, tracepoint and tracepoint_entry), tracepoint
    /// (exit tracepoints, else tracepoint_entry), tracepoint_entry, fexit.
    #[arg(long, default_value = "auto", value_parser = parse_probe_mode)]
    probes: ProbeMode,
    /// Seconds between reconciliations of the holder table with the
    /// kernel's socket tables (0: never).
    #[arg(long, default_value_t = 30)]
    reconcile_every: u64,
}

pub fn parse_probe_mode(s: &str) -> Result<ProbeMode, String> {
    ProbeMode::parse(s).ok_or_else(|| format!("unknown probe mode {s:?}: use {}", ProbeMode::NAMES))
}

pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    super::init_logging("warn");
    let opts = TraceOptions {
        filter: Filter {
            port: a.port,
            pid: a.pid,
            errors_only: a.errors_only,
            proto: a.proto,
        },
        json: a.json,
        probe: bindwatch::platform::ProbeConfig {
            ring_buffer_bytes: a.probe.ring_buffer_bytes,
            mode: a.probe.probes,
        },
        reconcile_every: std::time::Duration::from_secs(a.probe.reconcile_every),
    };
    super::runtime()?.block_on(trace(opts))?;
    Ok(())
}

struct TraceOptions {
    filter: Filter,
    json: bool,
    probe: ProbeConfig,
    /// Zero: never.
    reconcile_every: Duration,
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
                "bindwatch: WARNING {} events lost so far (ring buffer full: {}, pending map full: {}, programs skipped by the kernel: {}), {} malformed; \
                 a full ring: raise --ring-buffer-bytes",
                lost,
                r.lost_ringbuf_full,
                r.lost_pending_map_full,
                r.lost_program_skipped,
                r.malformed
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

async fn trace(opts: TraceOptions) -> Result<()> {
    let mut shutdown = Shutdown::install()?;
    let (mut probes, ring) = Probes::load(&opts.probe)?;
    let mut reader = RingReader::new(ring).map_err(|e| Error::io("polling the ring buffer", e))?;
    let mut correlator = Correlator::start(opts.reconcile_every, &mut probes);
    let containers = bindwatch::containers::SharedDirectory::default();
    let _containers_watch = bindwatch::platform::watch_containers(
        bindwatch::containers::ContainersConfig::default(),
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
        [
            probes
                .fallback()
                .map(|why| format!(", fexit refused: {why}")),
            probes
                .exits_refused()
                .map(|why| format!(", exit-only tracepoints refused: {why}")),
            probes
                .storage_refused()
                .map(|why| format!(", socket storage refused: {why}")),
        ]
        .into_iter()
        .flatten()
        .collect::<String>(),
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
