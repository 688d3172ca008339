//! `bindwatch who`: who holds a port now, and what they block.

use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
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

pub fn exec(a: Args) -> anyhow::Result<()> {
    super::init_logging("error");
    let query: bindwatch::holders::WhoQuery = a.target.parse()?;
    let from_daemon = if a.standalone {
        None
    } else {
        super::runtime()?.block_on(bindwatch::cmd::who::from_daemon(&a.daemon, &query))
    };
    let answer = from_daemon.unwrap_or_else(|| bindwatch::cmd::who::standalone(query));
    let text = if a.json {
        serde_json::to_string_pretty(&answer)? + "\n"
    } else {
        bindwatch::who::render(&answer)
    };
    super::print_out(&text)?;
    Ok(())
}
