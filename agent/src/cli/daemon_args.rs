//! The arguments `who` and `check` share: which daemon to ask, with what
//! configuration, or none.

use clap::Args as ClapArgs;

use bindwatch::client::{DaemonClient, NoAnswer};

#[derive(ClapArgs)]
pub struct DaemonArgs {
    /// The daemon to ask first (default: the http.listen of its
    /// configuration, else http://127.0.0.1:7685).
    #[arg(long)]
    daemon: Option<String>,
    /// The daemon's configuration, for its address, bearer token and
    /// certificate (default: /etc/bindwatch/bindwatch.toml when it exists).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Read the kernel's tables even when a daemon runs.
    #[arg(long)]
    standalone: bool,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

impl DaemonArgs {
    /// The container runtimes to read when answering from the kernel: the
    /// configuration's `[containers]` when --config names one, else the
    /// defaults (`$DOCKER_HOST`, /run/containerd).
    pub fn containers(&self) -> anyhow::Result<bindwatch::containers::ContainersConfig> {
        match &self.config {
            Some(p) => Ok(bindwatch::config::Config::load(p)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .containers),
            None => Ok(Default::default()),
        }
    }

    /// Asks the daemon with `ask` unless --standalone; None means: answer
    /// from the kernel. Why a daemon did not answer is said on stderr.
    pub fn ask<T, F>(
        &self,
        verb: &str,
        ask: impl FnOnce(DaemonClient) -> F,
    ) -> anyhow::Result<Option<T>>
    where
        F: std::future::Future<Output = (DaemonClient, Result<T, NoAnswer>)>,
    {
        if self.standalone {
            return Ok(None);
        }
        let client = DaemonClient::new(self.daemon.as_deref(), self.config.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (client, got) = super::runtime()?.block_on(ask(client));
        match got {
            Ok(v) => Ok(Some(v)),
            Err(why) => {
                if let Some(note) = client.fallback_note(&why) {
                    eprintln!("bindwatch {verb}: {note}");
                }
                Ok(None)
            }
        }
    }
}
