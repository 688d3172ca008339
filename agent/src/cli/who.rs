//! `bindwatch who`: who holds a port now, and what they block.

use clap::Args as ClapArgs;

use super::daemon_args::DaemonArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// PORT, PORT/PROTO, ADDR:PORT or [ADDR6]:PORT, optionally /tcp or /udp.
    target: String,
    #[command(flatten)]
    daemon: DaemonArgs,
}

pub fn exec(a: Args) -> anyhow::Result<()> {
    super::init_logging("error");
    let query: bindwatch::holders::WhoQuery = a.target.parse()?;
    let from_daemon = a.daemon.ask("who", |client| async {
        let got = bindwatch::cmd::who::from_daemon(&client, &query).await;
        (client, got)
    })?;
    let answer = match from_daemon {
        Some(a) => a,
        None => bindwatch::cmd::who::standalone(query, &a.daemon.containers()?),
    };
    let text = if a.daemon.json {
        serde_json::to_string_pretty(&answer)? + "\n"
    } else {
        bindwatch::who::render(&answer)
    };
    super::print_out(&text)?;
    Ok(())
}
