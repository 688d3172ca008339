//! `bindwatch trace`: live events, with the holder of every failed bind.

use clap::Args as ClapArgs;

use bindwatch::event::Proto;
use bindwatch::platform::{DEFAULT_RING_BUFFER_BYTES, ProbeMode};
use bindwatch::trace::Filter;

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
    /// Which kernel hooks carry binds and listens: auto (fexit where the
    /// kernel loads it, else tracepoints), tracepoint, fexit.
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
    let opts = bindwatch::cmd::trace::TraceOptions {
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
    super::runtime()?.block_on(bindwatch::cmd::trace::trace(opts))?;
    Ok(())
}
