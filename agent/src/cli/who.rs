//! `bindwatch who`: who holds a port now, and what they block: the
//! daemon's table when one runs, else a snapshot of the host's socket
//! tables taken for the query.

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
    let query: bindwatch_core::holders::WhoQuery = a.target.parse()?;
    let from_daemon = a.daemon.ask("who", |client| async {
        let got = client.who(&query).await;
        (client, got)
    })?;
    let answer = match from_daemon {
        Some(a) => a,
        None => bindwatch::platform::who_standalone(query, &a.daemon.containers()?),
    };
    let text = if a.daemon.json {
        serde_json::to_string_pretty(&answer)? + "\n"
    } else {
        bindwatch_core::who::render(&answer)
    };
    super::print_out(&text)?;
    Ok(())
}
