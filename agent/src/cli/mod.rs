//! The command line's verbs, one file each: each has its arguments
//! (`Args`) and `exec`, which turns them into a call on the library.
//! Errors become `anyhow` only here. What the verbs share: logging set-up,
//! writing to standard output, and the runtime.

use anyhow::Context as _;

pub mod check;
pub mod check_config;
pub mod daemon_args;
pub mod probes;
pub mod run;
pub mod timeline;
pub mod trace;
pub mod who;

/// A runtime on the calling thread, for the verbs that wait on I/O.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A service has no console: its log goes to a file in the state directory.
pub fn init_file_logging(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("bindwatch.log");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let filter = log_filter("info");
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .log_internal_errors(false)
        .init();
    Ok(())
}

/// `BINDWATCH_LOG`, else `default`. The default keeps aya's loader to its
/// errors: it warns at every start that it has no type for the probes'
/// socket storage map, which it creates all the same (a failure to create
/// it is the agent's own error).
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("BINDWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},aya::bpf=error")))
}

pub fn init_logging(default: &str) {
    let filter = log_filter(default);
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
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if stdout_gone(&e) => Ok(()),
        r => Ok(r.context("writing to standard output")?),
    }
}

pub fn stdout_gone(e: &std::io::Error) -> bool {
    bindwatch::platform::pipe_closed(e)
}
