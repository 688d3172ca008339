//! The `bindwatch` command line: parsing and dispatch to one file per verb
//! (`cli/`). Errors become `anyhow` only in the binary.

use clap::{Parser, Subcommand};

mod cli;

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
    Run(cli::run::Args),
    /// Print bind, listen and release events live, as they happen; failed
    /// binds come with their holder, the reason and a fix.
    Trace(cli::trace::Args),
    /// Who holds a port now, and what they block: `who 80`, `who 53/udp`,
    /// `who 10.0.0.6:80`.
    Who(cli::who::Args),
    /// Would this bind succeed now? `check :80`, `check 10.0.0.6:80
    /// --reuseport --user www-data`. Exit 0: yes; 1: no (who blocks it, why,
    /// what to change); 2: bad input.
    Check(cli::check::Args),
    /// The forensic timeline, read from the state directory (works with the
    /// daemon stopped): `timeline --port 80 --since 2h`.
    Timeline(cli::timeline::Args),
    /// Load the probes, attach every hook, say which this kernel allows
    /// (and why not), then detach and exit: 1 when any hook was refused.
    Probes {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Which probe set to try: auto (the first the kernel loads of
        /// fexit, tracepoint and tracepoint_entry), tracepoint (exit
        /// tracepoints, else tracepoint_entry), tracepoint_entry, fexit.
        #[arg(long, default_value = "auto", value_parser = cli::trace::parse_probe_mode)]
        probes: bindwatch::platform::ProbeMode,
    },
    /// Check a configuration file and print the result.
    CheckConfig {
        /// The TOML file.
        file: std::path::PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Check(a) => return cli::check::exec(a),
        Command::Run(a) => cli::run::exec(a),
        Command::Trace(a) => cli::trace::exec(a),
        Command::Who(a) => cli::who::exec(a),
        Command::Timeline(a) => cli::timeline::exec(a),
        Command::Probes { json, probes } => cli::probes::exec(json, probes),
        Command::CheckConfig { file } => cli::check_config::exec(file),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bindwatch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
