//! `bindwatch timeline`: the forensic record, read from the state
//! directory's database (works with the daemon stopped) through the same
//! steps as the API (`store::read`, `store::read_at`).

use anyhow::Context as _;
use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
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
    /// Who held --port at this moment, since and until when, and the
    /// failures around it (same forms as --since); with --html, the moment
    /// is marked in the picture.
    #[arg(long)]
    at: Option<String>,
    /// Record kinds, comma-separated (bind_failed, listen, listen_stop,
    /// release, bind, held, binds_aggregated, alert_firing, alert_resolved,
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

pub fn exec(a: Args) -> anyhow::Result<()> {
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
        bindwatch_core::timeline::filter_from_params(&params, bindwatch_core::clock::now_unix_ns())
            .map_err(|(p, e)| anyhow::anyhow!("--{p}: {e}"))?;
    let db = a.state_dir.join(bindwatch::store::DB_FILE);
    if !db.exists() {
        anyhow::bail!(
            "no timeline at {} (has `bindwatch run` used this state directory? see --state-dir)",
            db.display()
        );
    }
    let at_ns =
        a.at.as_deref()
            .map(|t| bindwatch_core::timeline::parse_time(t, bindwatch_core::clock::now_unix_ns()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
    if let (Some(at_ns), None) = (at_ns, &a.html) {
        let Some(port) = filter.port else {
            anyhow::bail!("--at needs --port");
        };
        let answer = bindwatch::store::read_at(&db, port, filter.proto.as_deref(), at_ns)?;
        let text = if a.json {
            serde_json::to_string_pretty(&answer)? + "\n"
        } else {
            answer.render()
        };
        return super::print_out(&text);
    }
    let records = bindwatch::store::read(&db, &filter)?;
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
            bindwatch::report::render_html(&title, &records, from, to, at_ns, None),
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
                bindwatch_core::trace::write_json_line(&mut out, r)?;
            }
        } else {
            writeln!(out, "{}", bindwatch_core::timeline::HEADER)?;
            for r in &records {
                writeln!(out, "{}", bindwatch_core::timeline::row(r))?;
            }
        }
        out.flush()
    })();
    match written {
        Err(e) if super::stdout_gone(&e) => {}
        r => r.context("writing to standard output")?,
    }
    Ok(())
}
