//! Prometheus metrics. The event loop counts into a plain [`Aggregate`]
//! (no atomics, no locks per event) and folds it into the registry after
//! each batch; gauges are set from the holder table once per second.
//!
//! Cardinality: a `port` label carries the port number only for watched
//! ports and ports below 1024, at most `max_port_series` distinct values;
//! every other port is `port="other"`. (port, holder) pairs on failure
//! series are bounded by `max_holder_series`, past which `holder="other"`.

use std::collections::{HashMap, HashSet};

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use bindwatch_core::alerts::WatchedStatus;
use bindwatch_core::event::{Event, EventKind, Proto};
use bindwatch_core::holders::Diagnosis;
use serde::Deserialize;

pub const OTHER: &str = "other";

/// Decides which ports get their own label value.
#[derive(Clone, Debug, Default)]
pub struct PortLabels {
    watched: HashSet<u16>,
    given: HashSet<u16>,
    max: usize,
}

impl PortLabels {
    pub fn new(watched: impl IntoIterator<Item = u16>, max: usize) -> Self {
        Self {
            watched: watched.into_iter().collect(),
            given: HashSet::new(),
            max,
        }
    }

    pub fn label(&mut self, port: u16) -> String {
        if !(self.watched.contains(&port) || port < 1024) {
            return OTHER.to_owned();
        }
        if self.given.contains(&port) || self.given.len() < self.max {
            self.given.insert(port);
            port.to_string()
        } else {
            OTHER.to_owned()
        }
    }
}

/// Counts gathered by the event loop between folds.
#[derive(Default)]
pub struct Aggregate {
    events: HashMap<&'static str, u64>,
    attempts: HashMap<Proto, u64>,
    failures: HashMap<(Proto, &'static str), u64>,
    /// (proto, port, holder) → failed binds on that port.
    by_port: HashMap<(Proto, u16, String), u64>,
    accepts: HashMap<u16, u64>,
    watched_failures: HashMap<(String, Proto, u16), u64>,
}

impl Aggregate {
    pub fn event(&mut self, ev: &Event, d: Option<&Diagnosis>) {
        *self.events.entry(ev.kind.as_str()).or_default() += 1;
        if ev.kind != EventKind::Bind {
            return;
        }
        *self.attempts.entry(ev.proto).or_default() += 1;
        if ev.failed() {
            *self
                .failures
                .entry((ev.proto, ev.error.unwrap_or("other")))
                .or_default() += 1;
            let holder = d
                .and_then(|d| d.holders.first())
                .and_then(|b| b.holder.owners.first())
                .map(|o| o.comm.clone())
                .unwrap_or_else(|| "none".to_owned());
            *self.by_port.entry((ev.proto, ev.port, holder)).or_default() += 1;
        }
    }

    /// A failed bind on a watched port.
    pub fn watched_failure(&mut self, watch: &str, proto: Proto, port: u16) {
        *self
            .watched_failures
            .entry((watch.to_owned(), proto, port))
            .or_default() += 1;
    }

    pub fn accepts(&mut self, port: u16, delta: u64) {
        *self.accepts.entry(port).or_default() += delta;
    }
}

/// The metrics as the event loop and the HTTP server share them: one
/// lock, taken once per batch or scrape, never per event.
#[derive(Clone)]
pub struct SharedMetrics(std::sync::Arc<std::sync::Mutex<Metrics>>);

impl SharedMetrics {
    pub fn new(m: Metrics) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(m)))
    }

    /// The metrics, locked. A panic while another holder had them leaves
    /// them as they were (counters are never half-updated in a way that
    /// matters more than losing the daemon's metrics would).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Metrics> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the kernel reported: events, binds and their failures, listeners,
/// accepts, losses.
pub struct KernelSeries {
    pub events: IntCounterVec,
    pub attempts: IntCounterVec,
    pub failures: IntCounterVec,
    pub failures_by_port: IntCounterVec,
    pub listening: IntGaugeVec,
    pub accepts: IntCounterVec,
    pub lost: IntCounterVec,
    pub malformed: prometheus::IntCounter,
    pub releases_unjoined: prometheus::IntCounter,
    pub join_full: prometheus::IntCounter,
}

/// The watched ports: failures, holders, up, shadowed; and the ports an
/// outbound connection can take.
pub struct WatchSeries {
    pub watched_failures: IntCounterVec,
    pub holder_info: IntGaugeVec,
    pub watched_up: IntGaugeVec,
    pub watched_shadowed: IntGaugeVec,
    pub ephemeral_risk: IntGaugeVec,
}

/// The agent itself: the holder table, the probes, configuration reloads.
pub struct AgentSeries {
    pub drift: IntCounterVec,
    pub table_sockets: IntGauge,
    pub probe_attached: IntGaugeVec,
    pub probe_set: IntGaugeVec,
    pub tcp_lifecycle: IntGaugeVec,
    pub probe_reattach: IntCounterVec,
    pub config_reloads: IntCounterVec,
}

/// Alert notifications: delivered, failed, dropped.
pub struct DeliverySeries {
    pub alert_deliveries: IntCounterVec,
    pub alert_dropped: prometheus::IntCounter,
}

/// The timeline's writer: dropped records, failed commits, up.
pub struct TimelineSeries {
    pub timeline_dropped: prometheus::IntCounter,
    pub timeline_errors: prometheus::IntCounter,
    pub timeline_up: prometheus::IntGauge,
}

pub struct Metrics {
    pub registry: Registry,
    pub kernel: KernelSeries,
    pub watches: WatchSeries,
    pub agent: AgentSeries,
    pub delivery: DeliverySeries,
    pub timeline: TimelineSeries,
    ports: PortLabels,
    holder_pairs: HashSet<(String, String)>,
    max_holder_series: usize,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// Registers one unlabelled metric (an `IntCounter` or `IntGauge`).
fn single<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone())).expect("unique metric");
    m
}

fn plain_counter(r: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    single(
        r,
        prometheus::IntCounter::new(name, help).expect("valid metric"),
    )
}

/// Brings a counter fed from a cumulative total (the kernel's, the
/// decoder's, the writer's) up to that total: a counter only this path
/// increments holds the last total it was given.
fn advance(c: &prometheus::IntCounter, total: u64) {
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

fn plain_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    single(r, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// A listening TCP or bound UDP socket, for the listening-sockets gauge.
pub struct Listening {
    pub proto: Proto,
    pub port: u16,
}

/// Most `bindwatch_port_in_ephemeral_range` series.
pub const MAX_EPHEMERAL_SERIES: usize = 100;

impl KernelSeries {
    fn register(r: &Registry) -> Self {
        Self {
            events: counter(
                r,
                "bindwatch_events_total",
                "Kernel events read, by kind.",
                &["kind"],
            ),
            attempts: counter(
                r,
                "bindwatch_bind_attempts_total",
                "bind() calls seen, by protocol.",
                &["proto"],
            ),
            failures: counter(
                r,
                "bindwatch_bind_failures_total",
                "Failed bind() calls, by protocol and errno name.",
                &["proto", "errno"],
            ),
            failures_by_port: counter(
                r,
                "bindwatch_bind_failures_by_port_total",
                "Failed bind() calls by port and the holder's command (watched and privileged ports; others are port=\"other\").",
                &["proto", "port", "holder"],
            ),
            listening: gauge(
                r,
                "bindwatch_listening_sockets",
                "Listening TCP and bound UDP sockets, by port (watched and privileged ports; others are port=\"other\").",
                &["proto", "port"],
            ),
            accepts: counter(
                r,
                "bindwatch_accepted_connections_total",
                "TCP connections completed on a listening port.",
                &["port"],
            ),
            lost: counter(
                r,
                "bindwatch_events_lost_total",
                "Kernel events that never reached the agent, by cause.",
                &["reason"],
            ),
            malformed: plain_counter(
                r,
                "bindwatch_events_malformed_total",
                "Ring-buffer records the decoder refused.",
            ),
            releases_unjoined: plain_counter(
                r,
                "bindwatch_releases_unjoined_total",
                "TCP socket releases dropped because the agent saw no bind or listen of the socket.",
            ),
            join_full: plain_counter(
                r,
                "bindwatch_join_full_total",
                "Binds the decoder's join of later events to them had no room for.",
            ),
        }
    }
}

impl WatchSeries {
    fn register(r: &Registry) -> Self {
        Self {
            watched_failures: counter(
                r,
                "bindwatch_watched_port_bind_failures_total",
                "Failed bind() calls on a watched port (every watch's series exists from the start, so increase() sees the first).",
                &["watch", "proto", "port"],
            ),
            holder_info: gauge(
                r,
                "bindwatch_holder_info",
                "1 for each process holding a watched port; container names the owner behind it \
             (a container or pod, through docker-proxy too), empty when none. Watched ports \
             only, so the container label stays bounded by the watches.",
                &[
                    "watch",
                    "proto",
                    "port",
                    "pid",
                    "command",
                    "unit",
                    "container",
                ],
            ),
            watched_up: gauge(
                r,
                "bindwatch_watched_port_up",
                "1 when a watched port is held by its expected owner, else 0.",
                &["watch", "proto", "port"],
            ),
            watched_shadowed: gauge(
                r,
                "bindwatch_watched_port_shadowed",
                "1 when a NAT rule sends a watched port's traffic elsewhere (read at start and at \
             each reconciliation), else 0.",
                &["watch", "proto", "port"],
            ),
            ephemeral_risk: gauge(
                r,
                "bindwatch_port_in_ephemeral_range",
                "1 for each watched or listening port inside its namespace's ip_local_port_range \
             and not reserved: an outbound connection can take it (checked at start and reload).",
                &["proto", "port"],
            ),
        }
    }
}

impl AgentSeries {
    fn register(r: &Registry) -> Self {
        Self {
            drift: counter(
                r,
                "bindwatch_holder_table_drift_corrections_total",
                "Corrections the reconciliation with the kernel made to the holder table.",
                &["kind"],
            ),
            table_sockets: plain_gauge(
                r,
                "bindwatch_holder_table_sockets",
                "Sockets in the holder table.",
            ),
            probe_attached: gauge(
                r,
                "bindwatch_probe_attached",
                "1 when the kernel hook is attached.",
                &["hook"],
            ),
            probe_set: gauge(
                r,
                "bindwatch_probe_set",
                "1 for the probe set in use: fexit (trampolines, no syscall tracepoint), tracepoint, or etw.",
                &["set"],
            ),
            tcp_lifecycle: gauge(
                r,
                "bindwatch_tcp_lifecycle",
                "1 for where listen addresses, listener stops and accept counts come from: sock_ops (callbacks on listeners and handshakes only), state_tracepoint (every TCP state change), or etw.",
                &["source"],
            ),
            probe_reattach: counter(
                r,
                "bindwatch_probe_reattach_total",
                "Cgroup hooks found detached or replaced behind bindwatch's back, by hook and whether attaching them again worked.",
                &["hook", "result"],
            ),
            config_reloads: counter(
                r,
                "bindwatch_config_reloads_total",
                "Configuration reloads (SIGHUP), by result.",
                &["result"],
            ),
        }
    }
}

impl DeliverySeries {
    fn register(r: &Registry) -> Self {
        Self {
            alert_deliveries: counter(
                r,
                "bindwatch_alert_deliveries_total",
                "Alert notifications delivered or failed (after retries), by target kind.",
                &["target", "result"],
            ),
            alert_dropped: plain_counter(
                r,
                "bindwatch_alert_notifications_dropped_total",
                "Alert notifications dropped because the delivery queue was full.",
            ),
        }
    }
}

impl TimelineSeries {
    fn register(r: &Registry) -> Self {
        Self {
            timeline_dropped: plain_counter(
                r,
                "bindwatch_timeline_records_dropped_total",
                "Timeline records dropped because the writer's queue was full.",
            ),
            timeline_errors: plain_counter(
                r,
                "bindwatch_timeline_write_errors_total",
                "Timeline commits that failed (disk full, read-only, I/O error); each is retried.",
            ),
            timeline_up: plain_gauge(
                r,
                "bindwatch_timeline_up",
                "1 while the timeline's last commit succeeded, 0 while writes fail or there is no timeline.",
            ),
        }
    }
}

impl Metrics {
    /// The ports at risk from outbound connections, replacing the last set
    /// (the first [`MAX_EPHEMERAL_SERIES`]).
    pub fn set_ephemeral_risks(&mut self, risks: &[(Proto, u16)]) {
        self.watches.ephemeral_risk.reset();
        for (proto, port) in risks.iter().take(MAX_EPHEMERAL_SERIES) {
            self.watches
                .ephemeral_risk
                .with_label_values(&[proto.as_str(), &port.to_string()])
                .set(1);
        }
    }

    pub fn new(cfg: &MetricsConfig, watched: impl IntoIterator<Item = u16>) -> Self {
        let r = Registry::new();
        let m = Self {
            kernel: KernelSeries::register(&r),
            watches: WatchSeries::register(&r),
            agent: AgentSeries::register(&r),
            delivery: DeliverySeries::register(&r),
            timeline: TimelineSeries::register(&r),
            ports: PortLabels::new(watched, cfg.max_port_series),
            holder_pairs: HashSet::new(),
            max_holder_series: cfg.max_holder_series,
            registry: r,
        };
        let build = gauge(
            &m.registry,
            "bindwatch_build_info",
            "Always 1; the version in a label.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// New watched ports after a reload (label values already given stay).
    pub fn set_watched(&mut self, watched: impl IntoIterator<Item = u16>) {
        self.ports.watched = watched.into_iter().collect();
    }

    /// Creates each watch's failure series at zero.
    pub fn init_watches(&self, watches: &[(String, Proto, u16)]) {
        for (w, proto, port) in watches {
            self.watches
                .watched_failures
                .with_label_values(&[w, proto.as_str(), &port.to_string()])
                .inc_by(0);
        }
    }

    /// Folds what the loop counted into the registry.
    pub fn fold(&mut self, a: &mut Aggregate) {
        for (kind, n) in a.events.drain() {
            self.kernel.events.with_label_values(&[kind]).inc_by(n);
        }
        for (proto, n) in a.attempts.drain() {
            self.kernel
                .attempts
                .with_label_values(&[proto.as_str()])
                .inc_by(n);
        }
        for ((proto, errno), n) in a.failures.drain() {
            self.kernel
                .failures
                .with_label_values(&[proto.as_str(), errno])
                .inc_by(n);
        }
        for ((proto, port, holder), n) in a.by_port.drain() {
            let port = self.ports.label(port);
            let pair = (port.clone(), holder.clone());
            let holder = if self.holder_pairs.contains(&pair)
                || self.holder_pairs.len() < self.max_holder_series
            {
                self.holder_pairs.insert(pair);
                holder
            } else {
                OTHER.to_owned()
            };
            self.kernel
                .failures_by_port
                .with_label_values(&[proto.as_str(), &port, &holder])
                .inc_by(n);
        }
        for ((w, proto, port), n) in a.watched_failures.drain() {
            self.watches
                .watched_failures
                .with_label_values(&[&w, proto.as_str(), &port.to_string()])
                .inc_by(n);
        }
        for (port, n) in a.accepts.drain() {
            let port = self.ports.label(port);
            self.kernel.accepts.with_label_values(&[&port]).inc_by(n);
        }
    }

    /// Cumulative loss counters: the registry gets their increase. Every
    /// cause's series exists from the start.
    pub fn set_lost(&self, counts: &[(&'static str, u64)], malformed: u64) {
        for (reason, total) in counts {
            advance(&self.kernel.lost.with_label_values(&[reason]), *total);
        }
        advance(&self.kernel.malformed, malformed);
    }

    /// The decoder's cumulative counts of what it could not join.
    pub fn set_unjoined(&self, releases: u64, join_full: u64) {
        advance(&self.kernel.releases_unjoined, releases);
        advance(&self.kernel.join_full, join_full);
    }

    /// The timeline writer's cumulative drop count.
    pub fn set_timeline_dropped(&self, total: u64) {
        advance(&self.timeline.timeline_dropped, total);
    }

    /// The timeline writer's state: up, and its cumulative failed commits.
    pub fn set_timeline_health(&self, up: bool, errors: u64) {
        self.timeline.timeline_up.set(up as i64);
        advance(&self.timeline.timeline_errors, errors);
    }

    pub fn set_drift(&self, missing: u64, stale: u64, changed: u64, sockets: u64) {
        for (kind, v) in [("missing", missing), ("stale", stale), ("changed", changed)] {
            advance(&self.agent.drift.with_label_values(&[kind]), v);
        }
        self.agent.table_sockets.set(sockets as i64);
    }

    pub fn set_probe_set(&self, set: &str, lifecycle: &str) {
        self.agent.probe_set.reset();
        self.agent.probe_set.with_label_values(&[set]).set(1);
        self.agent.tcp_lifecycle.reset();
        self.agent
            .tcp_lifecycle
            .with_label_values(&[lifecycle])
            .set(1);
    }

    pub fn set_hooks(&self, hooks: &[(&str, bool)]) {
        for (h, up) in hooks {
            self.agent
                .probe_attached
                .with_label_values(&[h])
                .set(*up as i64);
        }
    }

    /// Replaces the gauges drawn from the holder table.
    pub fn set_table(&mut self, listening: &[Listening], watched: &[WatchedStatus]) {
        self.kernel.listening.reset();
        let mut counts: HashMap<(Proto, String), i64> = HashMap::new();
        for l in listening {
            *counts
                .entry((l.proto, self.ports.label(l.port)))
                .or_default() += 1;
        }
        for ((proto, port), n) in counts {
            self.kernel
                .listening
                .with_label_values(&[proto.as_str(), &port])
                .set(n);
        }
        self.watches.holder_info.reset();
        self.watches.watched_up.reset();
        self.watches.watched_shadowed.reset();
        for w in watched {
            let port = w.port.to_string();
            self.watches
                .watched_up
                .with_label_values(&[&w.watch, w.proto.as_str(), &port])
                .set(w.ok as i64);
            self.watches
                .watched_shadowed
                .with_label_values(&[&w.watch, w.proto.as_str(), &port])
                .set(w.shadowed.is_some() as i64);
            for (pid, cmd, unit, container) in &w.holders {
                self.watches
                    .holder_info
                    .with_label_values(&[
                        &w.watch,
                        w.proto.as_str(),
                        &port,
                        &pid.to_string(),
                        cmd,
                        unit,
                        container,
                    ])
                    .set(1);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn default_port_series() -> usize {
    1024
}
fn default_holder_series() -> usize {
    4096
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most distinct `port` label values on per-port series (watched ports
    /// and ports below 1024 qualify; the rest, and any past the bound, are
    /// `port="other"`).
    #[serde(default = "default_port_series")]
    pub max_port_series: usize,
    /// Most distinct (port, holder) pairs on failure series; past it,
    /// `holder="other"`.
    #[serde(default = "default_holder_series")]
    pub max_holder_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_port_series: default_port_series(),
            max_holder_series: default_holder_series(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindwatch_common::{IPPROTO_TCP, kind};
    use bindwatch_core::testing;

    fn failed(port: u16) -> Event {
        testing::event(&testing::raw(kind::BIND, "0.0.0.0", port, IPPROTO_TCP, -98))
    }

    #[test]
    fn ten_thousand_failing_ports_stay_bounded() {
        let cfg = MetricsConfig {
            max_port_series: 1024,
            max_holder_series: 4096,
        };
        let mut m = Metrics::new(&cfg, [8080]);
        let mut a = Aggregate::default();
        for p in 1..=10_000u16 {
            a.event(&failed(p), None);
        }
        m.fold(&mut a);
        let text = m.encode();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("bindwatch_bind_failures_by_port_total{"))
            .collect();
        // Ports 1-1023 and the watched 8080, plus "other".
        assert_eq!(series.len(), 1023 + 1 + 1, "{}", series.len());
        assert!(text.contains(r#"port="8080""#));
        let other: u64 = series
            .iter()
            .find(|l| l.contains(r#"port="other""#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(other, 10_000 - 1024);
        assert!(
            text.contains(r#"bindwatch_bind_failures_total{errno="EADDRINUSE",proto="tcp"} 10000"#)
        );
    }

    #[test]
    fn cumulative_counts_are_exported_as_their_increase() {
        let m = Metrics::new(&MetricsConfig::default(), []);
        let read = |m: &Metrics, name: &str| -> u64 {
            let text = m.encode();
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        m.set_unjoined(0, 0);
        assert_eq!(read(&m, "bindwatch_releases_unjoined_total"), 0);
        // A labelled cause has its series before its first loss.
        m.set_lost(&[("ringbuf_full", 0)], 0);
        assert_eq!(
            read(&m, r#"bindwatch_events_lost_total{reason="ringbuf_full"}"#),
            0
        );
        m.set_lost(&[("ringbuf_full", 5)], 0);
        m.set_lost(&[("ringbuf_full", 8)], 0);
        assert_eq!(
            read(&m, r#"bindwatch_events_lost_total{reason="ringbuf_full"}"#),
            8
        );
        m.set_unjoined(7, 2);
        m.set_unjoined(9, 2);
        assert_eq!(read(&m, "bindwatch_releases_unjoined_total"), 9);
        assert_eq!(read(&m, "bindwatch_join_full_total"), 2);
    }
}
