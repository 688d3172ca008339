//! The `bindwatch` command line. Errors become `anyhow` only here.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use bindwatch::event::Proto;
use bindwatch::platform::DEFAULT_RING_BUFFER_BYTES;
use bindwatch::trace::Filter;

#[derive(Parser)]
#[command(
    name = "bindwatch",
    version,
    about = "Who holds my port, and what happened to it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: follow every bind, listen and release on the host.
    Run(RunArgs),
    /// Print bind, listen and release events live, as they happen; failed
    /// binds come with their holder, the reason and a fix.
    Trace(TraceArgs),
    /// Who holds a port now, and what they block: `who 80`, `who 53/udp`,
    /// `who 10.0.0.6:80`.
    Who(WhoArgs),
    /// The forensic timeline, read from the state directory (works with the
    /// daemon stopped): `timeline --port 80 --since 2h`.
    Timeline(TimelineArgs),
    /// Load the probes, attach every hook, say which this kernel allows
    /// (and why not), then detach and exit: 1 when any hook was refused.
    Probes {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and print the result.
    CheckConfig {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

#[derive(Args)]
struct TimelineArgs {
    /// The daemon's state directory.
    #[arg(long, default_value = bindwatch::config::DEFAULT_STATE_DIR)]
    state_dir: std::path::PathBuf,
    #[arg(long)]
    port: Option<String>,
    #[arg(long)]
    proto: Option<String>,
    #[arg(long)]
    pid: Option<String>,
    /// Command name (of the process, or of the holder it ran into).
    #[arg(long)]
    comm: Option<String>,
    /// A duration ago (90s, 15m, 2h, 7d), RFC 3339, or YYYY-MM-DD HH:MM[:SS].
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Record kinds, comma-separated (bind_failed, listen, listen_stop,
    /// release, bind, binds_aggregated, alert_firing, alert_resolved,
    /// agent_start, agent_stop, probe_status, events_lost).
    #[arg(long)]
    kind: Option<String>,
    /// At most this many records (the latest).
    #[arg(long)]
    limit: Option<String>,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the picture: one self-contained HTML file.
    #[arg(long)]
    html: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct WhoArgs {
    /// PORT, PORT/PROTO, ADDR:PORT or [ADDR6]:PORT, optionally /tcp or /udp.
    target: String,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// The daemon to ask first.
    #[arg(long, default_value_t = format!("http://{}", bindwatch::api::DEFAULT_LISTEN))]
    daemon: String,
    /// Read the kernel's tables even when a daemon runs.
    #[arg(long)]
    standalone: bool,
}

#[derive(Args)]
struct ProbeArgs {
    /// Size of the kernel ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_parser = parse_ring_size)]
    ring_buffer_bytes: u32,
    /// Seconds between reconciliations of the holder table with the
    /// kernel's socket tables (0: never).
    #[arg(long, default_value_t = 30)]
    reconcile_every: u64,
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[derive(Args)]
struct RunArgs {
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
    #[cfg(windows)]
    #[arg(long)]
    service: bool,
}

#[derive(Args)]
struct TraceArgs {
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

fn parse_proto(s: &str) -> Result<Proto, String> {
    Proto::parse(s).ok_or_else(|| format!("unknown protocol {s:?}: use tcp or udp"))
}

/// A service has no console: its log goes to a file in the state directory.
#[cfg(windows)]
fn init_file_logging(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("bindwatch.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BINDWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .log_internal_errors(false)
        .init();
    Ok(())
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BINDWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // When the log cannot be written (its disk full), the subscriber's
        // own report goes through eprintln!, which panics: the daemon must
        // outlive its log.
        .log_internal_errors(false)
        .init();
}

/// Writes to standard output; a reader that went away (`| head`) ends the
/// command quietly instead of the panic `print!` would raise.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if stdout_gone(&e) => Ok(()),
        r => Ok(r.context("writing to standard output")?),
    }
}

fn stdout_gone(e: &std::io::Error) -> bool {
    // Windows reports a closed pipe as ERROR_NO_DATA (232, BrokenPipe) or
    // ERROR_PIPE_NOT_CONNECTED (233).
    e.kind() == std::io::ErrorKind::BrokenPipe || (cfg!(windows) && e.raw_os_error() == Some(233))
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bindwatch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run(a) => {
            #[cfg(windows)]
            let service = a.service;
            #[cfg(not(windows))]
            let service = false;
            if !service {
                init_logging("info");
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
            if let Some(r) = a.reconcile_every {
                config.holders.reconcile_every_secs = r;
            }
            if let Some(p) = a.events_jsonl {
                config.export.events_jsonl = Some(p);
            }
            let opts = bindwatch::cmd::run::RunOptions {
                config,
                config_path: a.config,
            };
            #[cfg(windows)]
            if service {
                return run_service(opts);
            }
            rt.block_on(bindwatch::cmd::run::run(opts))?;
        }
        Command::Timeline(a) => {
            let mut params = std::collections::HashMap::new();
            for (k, v) in [
                ("port", a.port),
                ("proto", a.proto),
                ("pid", a.pid),
                ("comm", a.comm),
                ("since", a.since),
                ("until", a.until),
                ("kind", a.kind),
                ("limit", a.limit),
            ] {
                if let Some(v) = v {
                    params.insert(k.to_owned(), v);
                }
            }
            let filter =
                bindwatch::timeline::filter_from_params(&params, bindwatch::clock::now_unix_ns())
                    .map_err(|(p, e)| anyhow::anyhow!("--{p}: {e}"))?;
            let db = a.state_dir.join(bindwatch::store::DB_FILE);
            if !db.exists() {
                anyhow::bail!(
                    "no timeline at {} (has `bindwatch run` used this state directory? see --state-dir)",
                    db.display()
                );
            }
            let conn = bindwatch::store::open_ro(&db)?;
            let records = bindwatch::store::query(&conn, &filter)
                .with_context(|| format!("reading {}", db.display()))?;
            if let Some(path) = &a.html {
                let from = filter
                    .since_ns
                    .or(records.first().map(|r| r.time_ns))
                    .unwrap_or(0);
                // Without --until, the window ends a little after the last
                // record rather than now (the daemon may have stopped long ago).
                let last = records.last().map(|r| r.time_ns).unwrap_or(from);
                let to = filter
                    .until_ns
                    .unwrap_or(last + ((last - from.min(last)) / 20).max(1_000_000_000));
                let title = match filter.port {
                    Some(p) => format!("bindwatch timeline: port {p}"),
                    None => "bindwatch timeline".to_owned(),
                };
                std::fs::write(
                    path,
                    bindwatch::report::render_html(&title, &records, from, to, None),
                )
                .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("bindwatch: wrote {}", path.display());
                return Ok(());
            }
            let written = (|| -> std::io::Result<()> {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                use std::io::Write as _;
                if a.json {
                    for r in &records {
                        bindwatch::trace::write_json_line(&mut out, r)?;
                    }
                } else {
                    writeln!(out, "{}", bindwatch::timeline::HEADER)?;
                    for r in &records {
                        writeln!(out, "{}", bindwatch::timeline::row(r))?;
                    }
                }
                out.flush()
            })();
            match written {
                Err(e) if stdout_gone(&e) => {}
                r => r.context("writing to standard output")?,
            }
        }
        Command::CheckConfig { file } => {
            let c = bindwatch::config::Config::load(&file)?;
            print_out(&format!(
                "{}: ok ({} watched port{}, {} alert target{})\n",
                file.display(),
                c.watch.len(),
                if c.watch.len() == 1 { "" } else { "s" },
                c.alerts.alertmanager.len() + c.alerts.webhook.len(),
                if c.alerts.alertmanager.len() + c.alerts.webhook.len() == 1 {
                    ""
                } else {
                    "s"
                }
            ))?;
        }
        Command::Trace(a) => {
            init_logging("warn");
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
                },
                reconcile_every: std::time::Duration::from_secs(a.probe.reconcile_every),
            };
            rt.block_on(bindwatch::cmd::trace::trace(opts))?;
        }
        Command::Probes { json } => {
            init_logging("error");
            let report = bindwatch::cmd::probes::report(&Default::default())?;
            let text = if json {
                serde_json::to_string(&report)? + "\n"
            } else {
                report.render()
            };
            print_out(&text)?;
            if !report.all_attached() {
                anyhow::bail!(
                    "{} of {} hooks refused by kernel {}",
                    report.hooks.len() - report.attached(),
                    report.hooks.len(),
                    report.kernel
                );
            }
        }
        Command::Who(a) => {
            init_logging("error");
            let query: bindwatch::holders::WhoQuery = a.target.parse()?;
            let from_daemon = if a.standalone {
                None
            } else {
                rt.block_on(bindwatch::cmd::who::from_daemon(&a.daemon, &query))
            };
            let answer = from_daemon.unwrap_or_else(|| bindwatch::cmd::who::standalone(query));
            let text = if a.json {
                serde_json::to_string_pretty(&answer)? + "\n"
            } else {
                bindwatch::who::render(&answer)
            };
            print_out(&text)?;
        }
    }
    Ok(())
}

/// The daemon under the service control manager: it calls back on its own
/// thread, where the runtime is built.
#[cfg(windows)]
fn run_service(opts: bindwatch::cmd::run::RunOptions) -> anyhow::Result<()> {
    init_file_logging(&opts.config.state_dir)?;
    let opts = std::sync::Mutex::new(Some(opts));
    bindwatch::windows::service::run_as_service(move || {
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
        match rt.block_on(bindwatch::cmd::run::run(opts)) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format_args!("{e:#}"), "bindwatch stopped");
                1
            }
        }
    })
    .context("starting as a service (run it with `sc.exe start bindwatch`, not by hand)")
}
