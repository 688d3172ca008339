//! `bindwatch run`: the daemon. The event loop keeps the holder table,
//! counts metrics in aggregate, evaluates watched ports and hands alerts to
//! the delivery task; the HTTP server answers /metrics, health and the API.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api::ApiState;
use crate::config::Config;
use crate::control::Request;
use crate::deliver::Deliverer;
use crate::event_loop::correlate::Correlator;
use crate::event_loop::log_budget::{FAILED_BIND_LINES_PER_SECOND, LineBudget};
use crate::event_loop::{Sink, pump};
use crate::platform::Shutdown;
use bindwatch_core::alerts::{Alert, AlertEngine, Watch};

/// The longest the daemon waits at shutdown for queued alert
/// notifications to be sent.
const SHUTDOWN_DELIVERY: Duration = Duration::from_secs(2);
use crate::error::{Error, Result};
use crate::metrics::{Aggregate, Listening, Metrics, SharedMetrics};
use crate::platform::{HookIncident, HookStatus, ProbeConfig, Probes, RingReader};
use crate::store::{BindAggregator, StoreSender};
use bindwatch_core::event::{Event, EventKind, Proto};
use bindwatch_core::holders::Diagnosis;
use bindwatch_core::timeline::{Plan, Record, alert_record, plan};
use bindwatch_core::trace::{AcceptSummary, LossReport};

pub struct RunOptions {
    pub config: Config,
    /// The file it came from, re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
}

/// The daemon's state on the event loop: what it does with each event and
/// each batch (the `Sink`), apart from reading the probes.
pub struct Daemon {
    metrics: SharedMetrics,
    store: Option<StoreSender>,
    unsent_resolved: Vec<Alert>,
    export: Option<crate::export::JsonlExport>,
    binds: BindAggregator,
    last_loss: (u64, u64),
    agg: Aggregate,
    alerts: AlertEngine,
    deliver: Deliverer,
    config: Config,
    own_netns: Option<u64>,
    generator: String,
    failed_bind_lines: LineBudget,
}

impl Daemon {
    /// Ends the daemon but for its alert delivery: the store's sender,
    /// the export and the rest go when this returns.
    fn into_deliverer(self) -> Deliverer {
        let Daemon { deliver, .. } = self;
        deliver
    }
}

fn watch_series(cfg: &Config) -> Vec<(String, Proto, u16)> {
    cfg.watch
        .iter()
        .map(|w| (w.display_name(), w.proto.proto(), w.port))
        .collect()
}

fn resolve_watches(cfg: &Config, own: Option<u64>) -> Vec<Watch> {
    cfg.watch
        .iter()
        .map(|w| {
            let netns = match &w.netns {
                None => own,
                Some(p) => match crate::platform::cookie_of_path(p) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(watch = %w.display_name(), netns = %p.display(), error = %e,
                            "watched namespace not found yet; retrying every second");
                        None
                    }
                },
            };
            Watch::new(w.clone(), netns)
        })
        .collect()
}

impl Daemon {
    /// Starts the alert delivery task (call inside a tokio runtime) and
    /// opens the JSON-lines export when configured. `own_netns` is where
    /// watches without a namespace look.
    pub fn new(
        cfg: Config,
        metrics: SharedMetrics,
        store: Option<StoreSender>,
        own_netns: Option<u64>,
    ) -> Self {
        let generator = format!("http://{}/api/v1/conflicts", cfg.http.listen);
        let deliver = {
            let m = metrics.lock();
            Deliverer::start(&cfg.alerts, &m, generator.clone())
        };
        Self {
            alerts: AlertEngine::new(resolve_watches(&cfg, own_netns), &cfg.alerts),
            metrics,
            store,
            unsent_resolved: Vec::new(),
            export: match &cfg.export.events_jsonl {
                None => None,
                Some(p) => {
                    match crate::export::JsonlExport::open(p, cfg.export.max_bytes, cfg.export.keep)
                    {
                        Ok(x) => Some(x),
                        Err(e) => {
                            tracing::error!(path = %p, error = %e, "cannot open the JSON-lines export; continuing without it");
                            None
                        }
                    }
                }
            },
            binds: BindAggregator::default(),
            last_loss: (0, 0),
            agg: Aggregate::default(),
            deliver,
            config: cfg,
            own_netns,
            generator,
            failed_bind_lines: LineBudget::new(FAILED_BIND_LINES_PER_SECOND),
        }
    }

    fn send(&mut self, alerts: Vec<Alert>) {
        let now = bindwatch_core::clock::now_unix_ns();
        // Resolutions that found the queue full before go first.
        let mut pending = std::mem::take(&mut self.unsent_resolved);
        for a in alerts {
            self.record(alert_record(&a, now));
            pending.push(a);
        }
        let mut dropped = 0;
        for a in pending {
            if let Err(a) = self.deliver.send(a) {
                dropped += 1;
                if a.firing() {
                    self.alerts.not_sent(&a);
                } else if self.unsent_resolved.len() < MAX_UNSENT_RESOLVED {
                    self.unsent_resolved.push(a);
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "alert queue full; notifications offered again next tick (counted)"
            );
        }
    }

    /// Hands the records gathered since the last call to the writer.
    fn flush_records(&mut self) {
        if let Some(s) = &mut self.store {
            s.flush();
        }
    }

    fn record(&mut self, r: Record) {
        if let Some(s) = &mut self.store {
            s.send(r);
        }
    }

    fn agent_record(&mut self, kind: &str, summary: String, detail: serde_json::Value) -> u64 {
        let detail = bindwatch_core::timeline::Detail::of(&detail);
        let time_ns = bindwatch_core::clock::now_unix_ns();
        self.record(Record {
            time_ns,
            kind: kind.into(),
            summary,
            detail,
            ..Record::default()
        });
        time_ns
    }

    /// Ports an outbound connection could take before their service binds
    /// them: logged (the first 20) and exported as a gauge.
    fn report_ephemeral(&self, c: &mut Correlator) {
        let watched: Vec<(u64, Proto, u16)> = self
            .alerts
            .watches
            .iter()
            .filter_map(|w| Some((w.netns?, w.cfg.proto.proto(), w.cfg.port)))
            .collect();
        let risks = c.ephemeral_risks(&watched);
        for (proto, port, warning) in risks.iter().take(20) {
            tracing::warn!(%proto, port, "{warning}");
        }
        if risks.len() > 20 {
            tracing::warn!(
                more = risks.len() - 20,
                "more ports inside the ephemeral range (bindwatch_port_in_ephemeral_range)"
            );
        }
        let ports: Vec<(Proto, u16)> = risks.iter().map(|(p, q, _)| (*p, *q)).collect();
        self.metrics.lock().set_ephemeral_risks(&ports);
    }

    fn evaluate(&mut self, c: &mut Correlator) {
        let pids = self.alerts.incomplete_owners(&c.table);
        if !pids.is_empty() {
            c.complete_processes(&pids);
        }
        let out = self
            .alerts
            .evaluate(&c.table, bindwatch_core::clock::now_unix_ns());
        self.send(out);
    }

    fn reload(&mut self, cfg: Config, c: &mut Correlator) {
        if cfg.http != self.config.http || cfg.probes != self.config.probes {
            tracing::warn!("http and probes settings take effect at the next restart");
        }
        let watches = resolve_watches(&cfg, self.own_netns);
        let resolved =
            self.alerts
                .reconfigure(watches, &cfg.alerts, bindwatch_core::clock::now_unix_ns());
        self.send(resolved);
        if cfg.alerts != self.config.alerts {
            let m = self.metrics.lock();
            self.deliver = Deliverer::start(&cfg.alerts, &m, self.generator.clone());
        }
        {
            let mut m = self.metrics.lock();
            m.set_watched(cfg.watch.iter().map(|w| w.port));
            m.init_watches(&watch_series(&cfg));
        }
        c.reconcile_every = Duration::from_secs(cfg.holders.reconcile_every_secs);
        if cfg.redact != self.config.redact {
            // Checked when the file was parsed. Details already read keep
            // the old masking until the process is read again.
            if let Ok(r) = cfg.redact.redactor() {
                crate::redact::set_active(r);
            }
        }
        self.config = cfg;
        tracing::info!(
            watches = self.alerts.watches.len(),
            "configuration reloaded"
        );
        self.report_ephemeral(c);
        self.evaluate(c);
    }
}

impl Sink for Daemon {
    fn event(&mut self, ev: &Event, d: Option<&Diagnosis>) -> std::io::Result<()> {
        self.agg.event(ev, d);
        if let Some(x) = &mut self.export {
            x.write(ev, d);
        }
        if let Some(store) = &mut self.store {
            match plan(ev) {
                Plan::Record if store.has_room() => store.send_event(ev, d),
                Plan::Record => store.dropped_one(),
                Plan::Aggregate => {
                    for r in self.binds.add(ev.time_ns, &ev.comm, ev.proto.as_str()) {
                        store.send(r);
                    }
                }
                Plan::Skip => {}
            }
        }
        if ev.failed() && self.failed_bind_lines.take() {
            let holder = d.and_then(|d| d.holders.first());
            tracing::warn!(
                pid = ev.pid,
                comm = %ev.comm,
                kind = ev.kind.as_str(),
                proto = ev.proto.as_str(),
                endpoint = %ev.endpoint(),
                error = %ev.result_str(),
                holder = holder.map(|b| b.holder.owner_label()),
                owner = holder
                    .and_then(|b| b.holder.owner.as_ref())
                    .map(|o| o.who()),
                binding_for = d.and_then(|d| d.requester.as_ref()).map(|o| o.who()),
                reason = holder.map(|b| b.reason.code()),
                diagnosis = d.map(|d| d.summary.as_str()),
                hint = d.and_then(|d| d.hint.as_deref()),
                "bind failed"
            );
        }
        if ev.failed() {
            for w in self.alerts.watches.iter().filter(|w| w.covers(ev)) {
                self.agg.watched_failure(&w.name, ev.proto, ev.port);
            }
            if let (EventKind::Bind, Some(d)) = (ev.kind, d) {
                let out = self
                    .alerts
                    .on_failed_bind(ev, d, bindwatch_core::clock::now_unix_ns());
                self.send(out);
            }
        }
        Ok(())
    }

    fn accepts(&mut self, summaries: &[AcceptSummary]) -> std::io::Result<()> {
        for a in summaries {
            self.agg.accepts(a.port, a.delta);
        }
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

    fn batch_done(&mut self, c: &mut Correlator) {
        if let Some(x) = &mut self.export {
            x.flush();
        }
        self.metrics.lock().fold(&mut self.agg);
        self.evaluate(c);
        self.flush_records();
    }

    fn tick(&mut self, c: &mut Correlator, loss: &LossReport) {
        let unlogged = self.failed_bind_lines.take_suppressed();
        if unlogged > 0 {
            tracing::warn!(
                unlogged,
                per_second = FAILED_BIND_LINES_PER_SECOND,
                "failed binds past the log's rate not logged; still counted (bindwatch_bind_failures_total) and recorded in the timeline"
            );
        }
        let lost = (loss.lost_events(), loss.malformed);
        if lost != self.last_loss {
            self.agent_record(
                "events_lost",
                format!("{} kernel events lost so far, {} malformed", lost.0, lost.1),
                serde_json::to_value(loss).unwrap_or_default(),
            );
            self.last_loss = lost;
        }
        // Watched namespaces that did not exist at start-up (warned about
        // once, when the configuration was loaded).
        for w in self.alerts.watches.iter_mut().filter(|w| w.netns.is_none()) {
            if let Some(p) = &w.cfg.netns {
                w.netns = crate::platform::cookie_of_path(p).ok();
            }
        }
        self.evaluate(c);
        let listening: Vec<Listening> = c
            .table
            .iter()
            .filter(|h| {
                h.proto == Proto::Udp || h.state == bindwatch_core::conflict::SockState::Listen
            })
            .map(|h| Listening {
                proto: h.proto,
                port: h.port,
            })
            .collect();
        let status = self.alerts.status(&c.table);
        let stats = c.table.stats();
        let mut m = self.metrics.lock();
        m.fold(&mut self.agg);
        m.set_table(&listening, &status);
        m.set_lost(
            &[
                ("ringbuf_full", loss.lost_ringbuf_full),
                ("pending_map_full", loss.lost_pending_map_full),
                ("accept_map_full", loss.lost_accept_map_full),
                ("program_skipped", loss.lost_program_skipped),
            ],
            loss.malformed,
        );
        m.set_unjoined(loss.releases_unjoined, loss.join_full);
        match &self.store {
            Some(s) => {
                m.set_timeline_dropped(s.dropped());
                let h = s.health();
                m.set_timeline_health(!h.is_failing(), h.errors());
            }
            None => m.set_timeline_health(false, 0),
        }
        m.set_drift(
            stats.drift_missing,
            stats.drift_stale,
            stats.drift_changed,
            stats.tracked,
        );
        drop(m);
        self.flush_records();
    }

    fn hooks_changed(&mut self, incidents: &[HookIncident], hooks: &[HookStatus]) {
        crate::event_loop::log_hook_incidents(incidents);
        for i in incidents {
            let summary = match &i.reattached {
                Ok(()) => format!(
                    "hook {} was {} behind bindwatch's back; attached again",
                    i.hook, i.what
                ),
                Err(e) => format!(
                    "hook {} was {} behind bindwatch's back; attaching it again failed: {e}",
                    i.hook, i.what
                ),
            };
            self.agent_record(
                "probe_status",
                summary,
                serde_json::json!({"hook": i.hook, "found": i.what, "reattached": i.reattached.is_ok()}),
            );
        }
        let m = self.metrics.lock();
        m.set_hooks(
            &hooks
                .iter()
                .map(|h| (h.hook, h.attached))
                .collect::<Vec<_>>(),
        );
        for i in incidents {
            m.agent
                .probe_reattach
                .with_label_values(&[i.hook, if i.reattached.is_ok() { "ok" } else { "failed" }])
                .inc();
        }
    }

    fn request(&mut self, req: Request, c: &mut Correlator) {
        match req {
            Request::Reload(cfg) => self.reload(*cfg, c),
            other => c.answer(other),
        }
    }
}

/// Resolved notifications kept for another try when the queue was full.
const MAX_UNSENT_RESOLVED: usize = 1024;

/// The daemon, from start to stop: each step below is one function.
pub async fn run(opts: RunOptions) -> Result<()> {
    let cfg = opts.config;
    let mut shutdown = Shutdown::install()?;
    // Files bindwatch creates (timeline, exports) are its own: the timeline
    // names users and command lines.
    crate::platform::files::private_from_now();
    let (mut probes, mut reader) = load_probes(&cfg)?;
    let metrics = start_metrics(&cfg, &probes);
    let (tx, mut requests) = tokio::sync::mpsc::channel(crate::control::REQUEST_QUEUE);
    let timeline = open_timeline(&cfg);
    let ready = serve_api(&cfg, &probes, &metrics, &timeline, tx.clone()).await?;
    if let Some(path) = opts.config_path {
        follow_reloads(path, &metrics, tx)?;
    }
    if let Ok(r) = cfg.redact.redactor() {
        crate::redact::set_active(r);
    }
    let mut correlator = Correlator::start(
        Duration::from_secs(cfg.holders.reconcile_every_secs),
        &mut probes,
    );
    let containers = crate::containers::SharedDirectory::default();
    let _containers_watch =
        crate::platform::watch_containers(cfg.containers.clone(), containers.clone());
    correlator.follow_containers(containers);
    let mut daemon = Daemon::new(cfg, metrics, timeline.store, correlator.own_netns());
    record_start(&mut daemon, &probes, &mut correlator);
    // Probes attached, listener bound, files open: from here on only what
    // reading the kernel's sockets and /proc needs (README, Security).
    match crate::platform::drop_to_runtime() {
        Ok(kept) => tracing::info!(kept = ?kept, "capabilities dropped"),
        Err(e) => tracing::warn!(error = %e, "cannot drop capabilities; keeping them"),
    }
    ready.store(true, Ordering::Relaxed);
    let r = pump(
        &mut probes,
        &mut reader,
        &mut daemon,
        Duration::from_secs(1),
        &mut shutdown,
        &mut correlator,
        Some(&mut requests),
    )
    .await;
    stop(daemon, timeline.writer).await;
    r
}

/// Loads and attaches the probes, saying which hooks the kernel took.
fn load_probes(cfg: &Config) -> Result<(Probes, RingReader)> {
    let (probes, ring) = Probes::load(&ProbeConfig {
        ring_buffer_bytes: cfg.probes.ring_buffer_bytes,
        mode: cfg.probes.mode,
    })?;
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
        probes = probes.probe_set(),
        tcp_lifecycle = probes.lifecycle(),
        sock_ops_refused = probes.sock_ops_refused(),
        bound_store = probes.bound_store(),
        storage_refused = probes.storage_refused(),
        fallback_reason = probes.fallback(),
        exits_refused = probes.exits_refused(),
        source = %probes.source_name(),
        "bindwatch running"
    );
    let reader = RingReader::new(ring).map_err(|e| Error::io("polling the ring buffer", e))?;
    Ok((probes, reader))
}

/// The registry, with every watch's series and the probes' state in it
/// before the first scrape.
fn start_metrics(cfg: &Config, probes: &Probes) -> SharedMetrics {
    let metrics = SharedMetrics::new(Metrics::new(&cfg.metrics, cfg.watch.iter().map(|w| w.port)));
    let m = metrics.lock();
    m.init_watches(&watch_series(cfg));
    m.set_probe_set(probes.probe_set(), probes.lifecycle());
    m.set_hooks(
        &probes
            .hooks()
            .iter()
            .map(|h| (h.hook, h.attached))
            .collect::<Vec<_>>(),
    );
    drop(m);
    metrics
}

/// The timeline's writer, or why there is none (the daemon runs on
/// without it; `/healthz` says so).
struct Timeline {
    db: PathBuf,
    store: Option<StoreSender>,
    writer: Option<std::thread::JoinHandle<()>>,
    error: Option<Arc<str>>,
}

fn open_timeline(cfg: &Config) -> Timeline {
    let db = cfg.state_dir.join(crate::store::DB_FILE);
    match crate::store::spawn_writer(
        db.clone(),
        cfg.timeline.retention(),
        crate::platform::release_free_memory,
    ) {
        Ok((s, h)) => Timeline {
            db,
            store: Some(s),
            writer: Some(h),
            error: None,
        },
        Err(e) => {
            tracing::error!(error = %e, "no timeline: events will not be recorded");
            Timeline {
                db,
                store: None,
                writer: None,
                error: Some(Arc::<str>::from(e.to_string())),
            }
        }
    }
}

/// Binds the API's listener and serves it; the flag it returns turns
/// `/readyz` ready.
async fn serve_api(
    cfg: &Config,
    probes: &Probes,
    metrics: &SharedMetrics,
    timeline: &Timeline,
    requests: tokio::sync::mpsc::Sender<Request>,
) -> Result<Arc<AtomicBool>> {
    let token: Option<Arc<str>> = match &cfg.http.token_file {
        Some(path) => Some(crate::secret::read_secret(path)?.into()),
        None => None,
    };
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => Some(crate::serve::tls_config(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| Error::io(format!("listening on {}", cfg.http.listen), e))?;
    let ready = Arc::new(AtomicBool::new(false));
    let app = crate::api::router(ApiState {
        requests,
        ready: ready.clone(),
        metrics: Some(metrics.clone()),
        timeline_db: timeline.store.as_ref().map(|_| timeline.db.clone()),
        timeline_health: timeline.store.as_ref().map(|s| s.health()),
        timeline_error: timeline.error.clone(),
        probes: probes.probe_set(),
        tcp_lifecycle: probes.lifecycle(),
        token,
    });
    let https = tls.is_some();
    tokio::spawn(crate::serve::serve(listener, app, tls));
    tracing::info!(listen = %cfg.http.listen, https, token = cfg.http.token_file.is_some(), "HTTP API listening");
    Ok(ready)
}

/// On the platform's reload signal (SIGHUP; none on Windows, where a
/// changed file takes effect at the service's restart), re-reads the file:
/// a bad one is refused and the running one stays.
fn follow_reloads(
    path: PathBuf,
    metrics: &SharedMetrics,
    tx: tokio::sync::mpsc::Sender<Request>,
) -> Result<()> {
    let mut reload = crate::platform::Reload::install()?;
    let reloads = metrics.lock().agent.config_reloads.clone();
    tokio::spawn(async move {
        loop {
            reload.recv().await;
            match Config::load(&path) {
                Ok(c) => {
                    reloads.with_label_values(&["ok"]).inc();
                    let _ = tx.send(Request::Reload(Box::new(c))).await;
                }
                Err(e) => {
                    reloads.with_label_values(&["rejected"]).inc();
                    tracing::error!(error = %e, "configuration rejected; the running one stays");
                }
            }
        }
    });
    Ok(())
}

/// The timeline's `agent_start`, what held a port at this start, the hooks
/// refused, and the watches' first evaluation.
fn record_start(daemon: &mut Daemon, probes: &Probes, correlator: &mut Correlator) {
    let started_ns = bindwatch_core::clock::now_unix_ns();
    let (held, left_out) = bindwatch_core::timeline::held_records(&correlator.table, started_ns);
    let started = daemon.agent_record(
        "agent_start",
        format!(
            "bindwatch {} started; hooks {}/{} attached ({} probes, TCP lifecycle from {}); {} sockets held, {} holding a port{}",
            env!("CARGO_PKG_VERSION"),
            probes.attached_count(),
            probes.hooks().len(),
            probes.probe_set(),
            probes.lifecycle(),
            correlator.table.len(),
            held.len() + left_out,
            if left_out > 0 {
                format!(
                    " ({left_out} past the first {} not listed)",
                    bindwatch_core::timeline::MAX_HELD_RECORDS
                )
            } else {
                String::new()
            }
        ),
        serde_json::to_value(probes.hooks()).unwrap_or_default(),
    );
    // What held a port at this start, stamped with the start's time: how a
    // holder's interval continues across a restart (`timeline --at`).
    for mut r in held {
        r.time_ns = started;
        daemon.record(r);
    }
    for h in probes.hooks().iter().filter(|h| !h.attached) {
        daemon.agent_record(
            "probe_status",
            format!(
                "hook {} not attached: {}",
                h.hook,
                h.error.as_deref().unwrap_or("")
            ),
            serde_json::to_value(h).unwrap_or_default(),
        );
    }
    daemon.report_ephemeral(correlator);
    daemon.evaluate(correlator);
    daemon.flush_records();
}

/// The timeline's `agent_stop`; then the delivery task sends what is
/// queued (bounded), and the writer commits what it holds once the
/// store's sender goes with the daemon.
async fn stop(mut daemon: Daemon, writer: Option<std::thread::JoinHandle<()>>) {
    for rec in daemon.binds.flush() {
        daemon.record(rec);
    }
    daemon.agent_record(
        "agent_stop",
        "bindwatch stopped".into(),
        serde_json::Value::Null,
    );
    let deliver = daemon.into_deliverer();
    if !deliver.finish(SHUTDOWN_DELIVERY).await {
        tracing::warn!(
            within_ms = SHUTDOWN_DELIVERY.as_millis() as u64,
            "alert notifications still queued at shutdown were not all sent"
        );
    }
    if let Some(w) = writer {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
}
