//! `bindwatch run`: the daemon (`bindwatch::daemon`), in the foreground or
//! under the platform's service manager.

use anyhow::Context as _;
use clap::Args as ClapArgs;

use super::trace::parse_ring_size;

#[derive(ClapArgs)]
pub struct Args {
    /// TOML configuration (watched ports, alert targets, limits); without
    /// it, the embedded defaults. SIGHUP re-reads it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Address of the HTTP API; overrides http.listen.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// State directory; overrides state_dir.
    #[arg(long)]
    state_dir: Option<std::path::PathBuf>,
    /// Overrides probes.ring_buffer_bytes.
    #[arg(long, value_parser = parse_ring_size)]
    ring_buffer_bytes: Option<u32>,
    /// Which kernel hooks carry binds and listens (auto, tracepoint,
    /// fexit); overrides probes.mode.
    #[arg(long, value_parser = super::trace::parse_probe_mode)]
    probes: Option<bindwatch::platform::ProbeMode>,
    /// Overrides holders.reconcile_every_secs.
    #[arg(long)]
    reconcile_every: Option<u64>,
    /// Every event as JSON lines to PATH (`-`: stdout); overrides
    /// export.events_jsonl.
    #[arg(long)]
    events_jsonl: Option<String>,
    /// Run under the Windows service control manager (the command line
    /// `sc.exe create` registers; see README). The log goes to
    /// STATE_DIR\\bindwatch.log.
    #[arg(long, hide = !bindwatch::platform::HAS_SERVICE_MANAGER)]
    service: bool,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    let service = a.service;
    if !service {
        super::init_logging("info");
    }
    let mut config = match &a.config {
        Some(p) => bindwatch::config::Config::load(p)?,
        None => bindwatch::config::Config::default(),
    };
    if let Some(l) = a.listen {
        config.http.listen = l;
    }
    if let Some(d) = a.state_dir {
        config.state_dir = d;
    }
    if let Some(r) = a.ring_buffer_bytes {
        config.probes.ring_buffer_bytes = r;
    }
    if let Some(m) = a.probes {
        config.probes.mode = m;
    }
    if let Some(r) = a.reconcile_every {
        config.holders.reconcile_every_secs = r;
    }
    if let Some(p) = a.events_jsonl {
        config.export.events_jsonl = Some(p);
    }
    let opts = bindwatch::daemon::RunOptions {
        config,
        config_path: a.config,
    };
    if service {
        return run_service(opts);
    }
    super::runtime()?.block_on(bindwatch::daemon::run(opts))?;
    Ok(())
}

/// The daemon under the service control manager: it calls back on its own
/// thread, where the runtime is built.
fn run_service(opts: bindwatch::daemon::RunOptions) -> anyhow::Result<()> {
    super::init_file_logging(&opts.config.state_dir)?;
    let opts = std::sync::Mutex::new(Some(opts));
    bindwatch::platform::run_as_service(move || {
        let Some(opts) = opts.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return 1;
        };
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "starting the async runtime");
                return 1;
            }
        };
        match rt.block_on(bindwatch::daemon::run(opts)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "bindwatch stopped");
                1
            }
        }
    })
    .context("starting as a service (run it with `sc.exe start bindwatch`, not by hand)")
}
