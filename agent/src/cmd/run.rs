//! `bindwatch run`: the daemon. For now it follows every event and logs
//! failed binds and losses as structured records; metrics, the holder table
//! and the timeline build on this loop.

use std::time::Duration;

use super::correlate::Correlator;
use super::{Shutdown, Sink, pump};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::holders::Diagnosis;
use crate::linux::{ProbeConfig, Probes, RingReader};
use crate::trace::{AcceptSummary, LossReport};

pub struct RunOptions {
    pub probe: ProbeConfig,
    /// Where the HTTP API listens.
    pub listen: std::net::SocketAddr,
    /// Zero: never.
    pub reconcile_every: Duration,
}

struct LogSink;

impl Sink for LogSink {
    fn event(&mut self, ev: &Event, d: Option<&Diagnosis>) -> std::io::Result<()> {
        if ev.failed() {
            let holder = d.and_then(|d| d.holders.first());
            tracing::warn!(
                pid = ev.pid,
                comm = %ev.comm,
                kind = ev.kind.as_str(),
                proto = ev.proto.as_str(),
                endpoint = %ev.endpoint(),
                error = %ev.result_str(),
                holder = holder.map(|b| b.holder.owner_label()),
                reason = holder.map(|b| b.reason.code()),
                diagnosis = d.map(|d| d.summary.as_str()),
                hint = d.and_then(|d| d.hint.as_deref()),
                "bind failed"
            );
        }
        Ok(())
    }

    fn accepts(&mut self, _: &[AcceptSummary]) -> std::io::Result<()> {
        Ok(())
    }

    fn loss(&mut self, r: &LossReport, last: bool) -> std::io::Result<()> {
        let lost = r.lost_events();
        if last {
            tracing::info!(events = r.events, lost, malformed = r.malformed, "stopped");
        } else {
            tracing::warn!(
                events = r.events,
                lost,
                malformed = r.malformed,
                "kernel events lost"
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let mut shutdown = Shutdown::install()?;
    let (probes, ring) = Probes::load(&opts.probe)?;
    for h in probes.hooks() {
        tracing::info!(
            hook = h.hook,
            attached = h.attached,
            error = h.error.as_deref(),
            "probe hook"
        );
    }
    tracing::info!(
        attached = probes.attached_count(),
        hooks = probes.hooks().len(),
        cgroup = %probes.cgroup_root().display(),
        "bindwatch running"
    );
    let mut reader = RingReader::new(ring).map_err(|e| Error::io("polling the ring buffer", e))?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {}", opts.listen), e))?;
    let (tx, mut requests) = tokio::sync::mpsc::channel(crate::api::REQUEST_QUEUE);
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = crate::api::router(crate::api::ApiState {
        requests: tx,
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(listen = %opts.listen, "HTTP API listening");
    let mut correlator = Correlator::start(opts.reconcile_every);
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    pump(
        &probes,
        &mut reader,
        &mut LogSink,
        Duration::from_secs(1),
        &mut shutdown,
        &mut correlator,
        Some(&mut requests),
    )
    .await
}
