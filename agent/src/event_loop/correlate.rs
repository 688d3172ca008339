//! The holder table kept current on the event loop: seeded from a kernel
//! snapshot, updated per event, reconciled in the background, and asked
//! for a diagnosis when a bind fails.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::{ConflictRecord, RECENT_CONFLICTS, Request};
use std::net::IpAddr;

use bindwatch_common::{AF_INET, AF_INET6, BoundSock, IPPROTO_TCP, IPPROTO_UDP, bound};

use crate::platform::{KernelView, Probes};
use bindwatch_core::conflict::SockState;
use bindwatch_core::event::{Event, Proto};
use bindwatch_core::holders::Holder;
use bindwatch_core::holders::{
    Diagnosis, DriftReport, HolderTable, HostFacts, Snapshot, TableStats, diagnose_failed_bind,
};
use bindwatch_core::owner::http_sys::HttpSysState;

type NatRules = std::collections::HashMap<u64, Vec<bindwatch_core::owner::NatRule>>;

/// Pre-existing sockets the release hook is told of (its map holds 131072).
const BOUND_SEED_MAX: usize = 65_536;

fn bound_sock(h: &Holder) -> BoundSock {
    let mut addr = [0u8; 16];
    let family = match h.addr {
        IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            AF_INET
        }
        IpAddr::V6(a) => {
            addr = a.octets();
            AF_INET6
        }
    };
    BoundSock {
        addr,
        port: h.port,
        family,
        protocol: if h.proto == Proto::Udp {
            IPPROTO_UDP
        } else {
            IPPROTO_TCP
        },
        // Listening before the probes loaded: no sock_ops callback was armed
        // on it, so its release carries the stop (`seed_bound` clears this
        // when the state tracepoint reports stops instead).
        flags: if h.state == SockState::Listen {
            bound::REPORTS_STOP
        } else {
            0
        },
        _pad: [0; 3],
    }
}

/// Processes whose /proc details are read per batch of events.
const PROCESS_READS_PER_BATCH: usize = 64;
/// Latency samples kept for percentiles (a ring; older ones fall out).
const LATENCY_SAMPLES: usize = 65_536;

/// Diagnosis latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Default)]
struct Latencies {
    ring: Vec<u32>,
    next: usize,
    count: u64,
}

impl Latencies {
    fn record(&mut self, d: Duration) {
        let ns = d.as_nanos().min(u32::MAX as u128) as u32;
        if self.ring.len() < LATENCY_SAMPLES {
            self.ring.push(ns);
        } else {
            self.ring[self.next] = ns;
            self.next = (self.next + 1) % LATENCY_SAMPLES;
        }
        self.count += 1;
    }

    fn summary(&self) -> LatencySummary {
        if self.ring.is_empty() {
            return LatencySummary::default();
        }
        let mut v = self.ring.clone();
        v.sort_unstable();
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        LatencySummary {
            count: self.count,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: *v.last().unwrap() as f64 / 1000.0,
        }
    }
}

pub struct Correlator {
    pub table: HolderTable,
    facts: KernelView,
    /// Table lookup: from the failed bind's event to its conflict.
    fast: Latencies,
    /// Including the slow path (kernel query, owner walk) when taken.
    full: Latencies,
    /// From the bind syscall's entry (the probe's stamp) to the conflict
    /// ready: what an operator waits, ring buffer and batching included.
    from_syscall: Latencies,
    pending: Option<tokio::task::JoinHandle<(KernelView, Snapshot, NatRules)>>,
    /// The reconciliation's own view of the kernel, built on its first run
    /// (off the event loop) and kept between runs.
    reconciler: Option<KernelView>,
    last_reconcile: Instant,
    pub reconcile_every: Duration,
    recent: VecDeque<ConflictRecord>,
    /// The container runtimes' latest directory, for the owners behind
    /// holders (None: the table keeps the one it has).
    containers: Option<crate::containers::SharedDirectory>,
    /// The reader's directory the table's was last made from.
    last_containers: Option<std::sync::Arc<bindwatch_core::owner::Directory>>,
    /// Each namespace's NAT rules, read at start and at each
    /// reconciliation (off the loop).
    nat: NatRules,
    /// The start-up reading of the NAT rules, until a tick applies it.
    nat_pending: Option<tokio::task::JoinHandle<NatRules>>,
}

impl Correlator {
    /// Builds the table from the kernel. Call after the probes are attached,
    /// so nothing that happens during the snapshot is missed.
    pub fn start(reconcile_every: Duration, probes: &mut Probes) -> Self {
        let mut c = Self::empty(reconcile_every);
        c.table.snapshot_begins();
        c.facts.record_descriptors();
        let snap = c.facts.snapshot();
        let n = snap.holders.len();
        let ns = snap.netns.len();
        let bound: Vec<(u64, BoundSock)> = snap
            .holders
            .iter()
            .filter(|h| matches!(h.state, SockState::Listen | SockState::Bound))
            .take(BOUND_SEED_MAX)
            .map(|h| (h.cookie, bound_sock(h)))
            .collect();
        // The descriptors noted by the snapshot: freed after this.
        match probes.seed_bound(&bound, &c.facts.take_descriptors()) {
            Ok(k) => tracing::debug!(sockets = k, "release hook told of pre-existing sockets"),
            Err(e) => tracing::warn!(error = %e, "cannot seed the release hook's socket map"),
        }
        c.table.seed(snap);
        // One `nft` per namespace: read off the loop, applied at a tick.
        c.nat_pending = Some(tokio::task::spawn_blocking(|| {
            KernelView::for_reconciliation().nat_rules_everywhere()
        }));
        drop(bound);
        crate::platform::release_free_memory();
        tracing::info!(sockets = n, namespaces = ns, "holder table built");
        c
    }

    /// An empty table over the host's kernel view, fed by events only: the
    /// loop without the probes or the start-up snapshot (the pipeline
    /// benchmark drives the daemon's loop through it).
    pub fn empty(reconcile_every: Duration) -> Self {
        Self {
            table: HolderTable::new(),
            facts: KernelView::new(),
            fast: Latencies::default(),
            full: Latencies::default(),
            from_syscall: Latencies::default(),
            pending: None,
            reconciler: None,
            last_reconcile: Instant::now(),
            reconcile_every,
            recent: VecDeque::new(),
            containers: None,
            last_containers: None,
            nat: Default::default(),
            nat_pending: None,
        }
    }

    /// Names owners from this directory from now on (kept current by the
    /// platform's runtime reader).
    pub fn follow_containers(&mut self, shared: crate::containers::SharedDirectory) {
        self.containers = Some(shared);
        self.sync_containers();
    }

    /// Takes the reader's latest directory, if it changed: one pointer
    /// compare, no waiting on any runtime.
    fn sync_containers(&mut self) {
        if let Some(shared) = &self.containers {
            let d = shared.get();
            if self
                .last_containers
                .as_ref()
                .is_none_or(|last| !std::sync::Arc::ptr_eq(&d, last))
            {
                self.last_containers = Some(d);
                self.rebuild_directory();
            }
        }
    }

    /// The table's directory: the runtimes' containers with the NAT rules
    /// this correlator read.
    fn rebuild_directory(&mut self) {
        let mut d = self.last_containers.as_deref().cloned().unwrap_or_default();
        d.nat = self.nat.clone();
        d.home_netns = self.facts.namespaces.own;
        self.table.set_directory(std::sync::Arc::new(d));
    }

    /// Applies one event; for a failed bind, returns its diagnosis (the
    /// strategy is the core's: `holders::diagnose_failed_bind`).
    pub fn on_event(&mut self, ev: &Event) -> Option<Diagnosis> {
        let t0 = Instant::now();
        self.table.apply(ev);
        if !ev.failed() {
            return None;
        }
        self.sync_containers();
        let (fast, from_syscall) = (&mut self.fast, &mut self.from_syscall);
        let d = diagnose_failed_bind(&mut self.table, ev, &mut self.facts, || {
            fast.record(t0.elapsed());
            from_syscall.record(Duration::from_nanos(
                bindwatch_core::clock::now_unix_ns().saturating_sub(ev.time_ns),
            ));
        })?;
        self.full.record(t0.elapsed());
        if self.recent.len() >= RECENT_CONFLICTS {
            self.recent.pop_front();
        }
        self.recent.push_back(ConflictRecord {
            event: ev.clone(),
            diagnosis: d.clone(),
        });
        Some(d)
    }

    /// Answers an API request from the table (between batches).
    pub fn answer(&mut self, req: Request) {
        self.sync_containers();
        match req {
            Request::Holders(q, reply) => {
                let holders = q.run(&self.table);
                let notes = bindwatch_core::who::ephemeral_notes(&holders, &mut self.facts);
                let _ = reply.send((holders, notes));
            }
            Request::Check(q, reply) => {
                // A request without a namespace is judged in the daemon's.
                let me = std::process::id();
                let _ = reply.send(bindwatch_core::holders::check(
                    &self.table,
                    &q,
                    me,
                    &mut self.facts,
                ));
            }
            Request::Conflicts { limit, port, reply } => {
                let v: Vec<ConflictRecord> = self
                    .recent
                    .iter()
                    .rev()
                    .filter(|c| port.is_none_or(|p| c.event.port == p))
                    .take(limit)
                    .cloned()
                    .collect();
                let _ = reply.send(v);
            }
            // Configuration is the daemon's, not the table's.
            Request::Reload(_) => {}
        }
    }

    /// Watched ports and TCP listeners whose port the kernel may give to an
    /// outbound connection in their namespace (inside ip_local_port_range,
    /// not reserved), each with its warning. Read at start and on reload.
    pub fn ephemeral_risks(&mut self, watched: &[(u64, Proto, u16)]) -> Vec<(Proto, u16, String)> {
        let mut ports: std::collections::BTreeSet<(u64, Proto, u16)> =
            watched.iter().copied().collect();
        ports.extend(
            self.table
                .iter()
                .filter(|h| h.proto == Proto::Tcp && h.state == SockState::Listen)
                .map(|h| (h.netns, h.proto, h.port)),
        );
        let me = std::process::id();
        let mut out: Vec<(Proto, u16, String)> = Vec::new();
        for (ns, proto, port) in ports {
            // The host's view keeps each namespace's ranges (KernelView's
            // sysctl cache, netsh's answer on Windows).
            let eph = self.facts.ephemeral_ports(Some(ns), me, proto);
            if let Some(e) = eph.as_ref().filter(|e| e.hands_out(port))
                && !out.iter().any(|(p, q, _)| (*p, *q) == (proto, port))
            {
                out.push((proto, port, e.warning(proto.as_str(), port)));
            }
        }
        out
    }

    /// The agent's own network namespace.
    pub fn own_netns(&self) -> Option<u64> {
        self.facts.namespaces.own
    }

    /// Reads these processes' details now (the owners of watched ports,
    /// before their alerts are evaluated).
    pub fn complete_processes(&mut self, pids: &[u32]) {
        for &pid in pids {
            if let Some(info) = self.facts.process_info(pid) {
                self.table.set_process(info);
            }
        }
    }

    /// Reads /proc details of processes new to the table (after a batch,
    /// off the per-event path).
    pub fn after_batch(&mut self) {
        self.sync_containers();
        let registrants = self.facts.registrants();
        for pid in registrants
            .into_iter()
            .chain(self.table.take_incomplete(PROCESS_READS_PER_BATCH))
        {
            if let Some(info) = self.facts.process_info(pid) {
                self.table.set_process(info);
            }
        }
    }

    /// Starts a background snapshot when one is due; applies a finished one.
    pub async fn tick(&mut self) -> Option<DriftReport> {
        // Windows: http.sys's state and IIS's sites for the views of
        // http.sys's sockets (None elsewhere).
        let http = self.facts.http_sys().map(|http| HttpSysState {
            http,
            iis: self.facts.iis(),
        });
        self.table.set_http_sys(http);
        if let Some(h) = self.nat_pending.take_if(|h| h.is_finished()) {
            match h.await {
                Ok(nat) => {
                    self.nat = nat;
                    self.rebuild_directory();
                }
                Err(e) => tracing::warn!(error = %e, "reading the NAT rules failed"),
            }
        }
        if let Some(h) = &self.pending
            && h.is_finished()
        {
            let h = self.pending.take()?;
            match h.await {
                Ok((kv, snap, nat)) => {
                    self.reconciler = Some(kv);
                    self.nat = nat;
                    self.rebuild_directory();
                    let r = self.table.reconcile(snap);
                    crate::platform::release_free_memory();
                    self.last_reconcile = Instant::now();
                    if r.missing + r.stale + r.changed > 0 {
                        tracing::warn!(
                            missing = r.missing,
                            stale = r.stale,
                            changed = r.changed,
                            examples = ?r.examples,
                            "holder table corrected by reconciliation"
                        );
                    }
                    return Some(r);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation snapshot failed");
                }
            }
        }
        if self.pending.is_none()
            && !self.reconcile_every.is_zero()
            && self.last_reconcile.elapsed() >= self.reconcile_every
        {
            let kv = self.reconciler.take();
            self.table.snapshot_begins();
            self.pending = Some(tokio::task::spawn_blocking(move || {
                let mut kv = kv.unwrap_or_else(KernelView::for_reconciliation);
                let s = kv.snapshot();
                let nat = kv.nat_rules_everywhere();
                (kv, s, nat)
            }));
        }
        None
    }

    pub fn stats(&self) -> CorrelatorStats {
        CorrelatorStats {
            table: self.table.stats(),
            diagnosis_latency: self.fast.summary(),
            diagnosis_latency_with_slow_path: self.full.summary(),
            diagnosis_latency_from_syscall: self.from_syscall.summary(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct CorrelatorStats {
    pub table: TableStats,
    pub diagnosis_latency: LatencySummary,
    pub diagnosis_latency_with_slow_path: LatencySummary,
    pub diagnosis_latency_from_syscall: LatencySummary,
}
