//! The holder table: every bound TCP and UDP socket on the host, in every
//! network namespace, with the processes that hold it.
//!
//! Built from a kernel snapshot (the platform code supplies it), kept current
//! from probe events, and reconciled against fresh snapshots; each
//! correction is counted as drift. Pure: no I/O. Failed binds are diagnosed
//! against it in [`diagnose`] without touching /proc.

mod by_cookie;
pub mod check;
pub mod diagnose;
pub mod ephemeral;
pub mod ip_helper;
pub mod process;
pub mod query;
pub mod rules;
pub mod strategy;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use check::{AnsweredBy, BindRequest, CheckAnswer, check};
pub use diagnose::{Blame, Diagnosis, DiagnosisKind, HostFacts, NoFacts, diagnose};
pub use ephemeral::EphemeralPorts;
pub use process::ProcessInfo;
pub use query::WhoQuery;
pub use strategy::diagnose_failed_bind;

use crate::conflict::{SockSpec, SockState};
use crate::event::{Event, EventKind, Proto, endpoint};
use crate::owner::Directory;

/// Most sockets the table follows (about 300 bytes each). Past it, new
/// sockets are counted in `TableStats::full` and left to the kernel
/// fallback of the diagnosis.
pub const TABLE_CAPACITY: usize = 262_144;
/// Most processes whose details are cached.
pub const PROCESS_CAPACITY: usize = 65_536;
/// Most ports whose last holder is remembered after it let go.
pub const DEPARTED_CAPACITY: usize = 16_384;

/// (network namespace cookie, protocol, port).
pub type PortKey = (u64, Proto, u16);

/// Where the table first learned of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A probe event: the bind itself was seen.
    Event,
    /// A kernel snapshot (start-up, reconciliation, or the diagnosis's
    /// fallback query).
    Snapshot,
}

/// One socket holding a port.
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    pub cookie: u64,
    pub netns: u64,
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    pub state: SockState,
    /// None when unknown: the probes cannot read IPV6_V6ONLY.
    pub v6only: Option<bool>,
    pub reuseaddr: Option<bool>,
    pub reuseport: Option<bool>,
    pub bound_ifindex: Option<u32>,
    /// The socket's owner uid (what SO_REUSEPORT compares).
    pub uid: u32,
    /// The pids holding it; most sockets have one (a pre-forking server's
    /// workers share one), so up to four are kept inline: no allocation per
    /// holder.
    pub owners: Owners,
    /// Whether `owners` came from the socket-to-process map (all sharers),
    /// or only from the event (the process that bound it).
    pub owners_verified: bool,
    pub since_ns: u64,
    pub source: Source,
    /// The peer of a connection, when the host's tables say. Boxed: most
    /// holders are listeners, and the table keeps 100k of them.
    pub remote: Option<Box<(IpAddr, u16)>>,
}

/// A holder's pids (see [`Holder::owners`]).
pub type Owners = smallvec::SmallVec<[u32; 4]>;

impl Holder {
    /// The holder as the conflict rules see it, with unknown options taken
    /// as the kernel's defaults (off).
    pub fn spec(&self) -> SockSpec {
        SockSpec {
            netns: Some(self.netns),
            proto: self.proto,
            addr: self.addr,
            port: self.port,
            v6only: self.v6only.unwrap_or(false),
            reuseaddr: self.reuseaddr.unwrap_or(false),
            reuseport: self.reuseport.unwrap_or(false),
            uid: self.uid,
            bound_ifindex: self.bound_ifindex,
            state: self.state,
        }
    }

    /// A socket as its event shows it, owned by the event's process;
    /// options the event does not carry are unknown.
    fn from_event(ev: &Event, cookie: u64, netns: u64, state: SockState) -> Self {
        Self {
            cookie,
            netns,
            proto: ev.proto,
            addr: ev.addr,
            port: ev.effective_port(),
            state,
            v6only: ev.addr.is_ipv4().then_some(false),
            reuseaddr: None,
            reuseport: None,
            bound_ifindex: None,
            uid: ev.uid,
            owners: smallvec::smallvec![ev.pid],
            owners_verified: false,
            since_ns: ev.time_ns,
            source: Source::Event,
            remote: None,
        }
    }

    fn key(&self) -> PortKey {
        (self.netns, self.proto, self.port)
    }
}

/// A holder as reported: socket, options and owning processes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolderView {
    pub proto: Proto,
    pub endpoint: String,
    pub addr: IpAddr,
    pub port: u16,
    pub state: SockState,
    pub netns: u64,
    pub cookie: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v6only: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuseaddr: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuseport: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_ifindex: Option<u32>,
    pub uid: u32,
    pub owners: Vec<ProcessInfo>,
    pub owners_verified: bool,
    /// Unix ns: when it was bound (source `event`) or first seen (`snapshot`).
    pub since_ns: u64,
    pub source: Source,
    /// The peer of a connection (`ADDR:PORT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// What binds this socket blocks, in words.
    pub blocks: Vec<String>,
    /// Whom the socket is really for, when its process stands for someone
    /// else (a container's published port) or runs in a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::owner::Owner>,
    /// A NAT rule that sends this listener's traffic elsewhere: it is
    /// bound, and receives nothing the rule takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadowed: Option<crate::owner::Shadow>,
    /// Windows: whom http.sys holds this socket for (IIS sites, app pools,
    /// the processes that registered its URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_sys: Option<crate::owner::http_sys::HttpSysView>,
}

impl HolderView {
    /// `nginx (pid 812, www-data, nginx.service)`, or the socket alone when
    /// no process holds it (TIME_WAIT).
    pub fn owner_label(&self) -> String {
        let processes = self.processes_label();
        match &self.owner {
            Some(o) => o.label_with(&processes),
            None => processes,
        }
    }

    /// The processes alone, without the owner they stand for.
    pub fn processes_label(&self) -> String {
        match self.owners.as_slice() {
            [] if self.state == SockState::TimeWait => "no process (TIME_WAIT)".to_owned(),
            [] => "an unknown process".to_owned(),
            [one] => one.label(),
            [first, rest @ ..] => format!(
                "{} and {} other process{}",
                first.label(),
                rest.len(),
                if rest.len() == 1 { "" } else { "es" }
            ),
        }
    }
}

/// What a holder blocks: the addresses a bind of its port cannot take,
/// under the platform's rules.
pub fn blocks(h: &Holder) -> Vec<String> {
    match crate::conflict::RuleSet::NATIVE {
        crate::conflict::RuleSet::Linux => blocks_linux(h),
        crate::conflict::RuleSet::Windows => blocks_windows(h),
    }
}

/// Under Windows's sharing rules (see `conflict::winsock`); the holder's
/// options are not known there, so the conditions are spelled out.
pub fn blocks_windows(h: &Holder) -> Vec<String> {
    let p = h.port;
    let ep = endpoint(h.addr, p);
    let (family, any) = if h.addr.is_ipv4() {
        ("IPv4", "0.0.0.0")
    } else {
        ("IPv6", "[::]")
    };
    if h.proto == Proto::Tcp && h.owners.contains(&crate::etw::httpsys::SYSTEM_PID) {
        return vec![format!(
            "{ep} for every other server: http.sys (add iplisten entries to leave other \
             addresses free)"
        )];
    }
    if h.addr.is_unspecified() {
        vec![
            format!("{ep} unless both sockets set SO_REUSEADDR"),
            format!(
                "every other {family} address on {} port {p} for other accounts (WSAEACCES), and \
                 for everyone if it set SO_EXCLUSIVEADDRUSE",
                h.proto
            ),
        ]
    } else {
        vec![
            format!("{ep} unless both sockets set SO_REUSEADDR"),
            format!("{any}:{p} (the wildcard) only for a socket asking SO_EXCLUSIVEADDRUSE"),
        ]
    }
}

fn blocks_linux(h: &Holder) -> Vec<String> {
    let p = h.port;
    let proto = h.proto;
    let mut v = Vec::new();
    let reuse = match (h.reuseport, h.reuseaddr) {
        (Some(true), _) => format!(
            " (shared with SO_REUSEPORT sockets of uid {} that set it too)",
            h.uid
        ),
        (_, Some(true)) if proto == Proto::Udp => {
            " (shared with sockets that set SO_REUSEADDR)".to_owned()
        }
        _ => String::new(),
    };
    match h.addr {
        IpAddr::V4(a) if a.is_unspecified() => {
            v.push(format!("every IPv4 address on {proto} port {p}{reuse}"));
            v.push(format!("[::]:{p} unless IPV6_V6ONLY is set"));
        }
        IpAddr::V6(a) if a.is_unspecified() => {
            v.push(format!("every IPv6 address on {proto} port {p}{reuse}"));
            if h.v6only != Some(true) {
                let unsure = if h.v6only.is_none() {
                    " (unless it set IPV6_V6ONLY)"
                } else {
                    ""
                };
                v.push(format!("every IPv4 address on {proto} port {p}{unsure}"));
            }
        }
        a => {
            v.push(format!("{}{reuse}", endpoint(a, p)));
            let any = if a.is_ipv4() { "0.0.0.0" } else { "[::]" };
            v.push(format!("{any}:{p} (the wildcard)"));
            if a.is_ipv4() {
                v.push(format!("[::]:{p} unless IPV6_V6ONLY is set"));
            }
        }
    }
    if let Some(i) = h.bound_ifindex {
        v.push(format!(
            "only on interface {i} and for sockets not bound to another"
        ));
    }
    v
}

/// A process as http.sys's owner resolver reads it.
pub(crate) fn registrant(p: &ProcessInfo) -> crate::owner::http_sys::Registrant {
    crate::owner::http_sys::Registrant {
        pid: p.pid,
        comm: p.comm.clone(),
        cmdline: p.cmdline.clone(),
        services: p.unit.clone(),
    }
}

/// A holder as reported, with its owners' details.
fn view_of(h: &Holder, owners: &[Arc<ProcessInfo>], dir: &Directory) -> HolderView {
    let owner = owners
        .iter()
        .find_map(|p| crate::owner::resolve(dir, p.candidate(), h.proto, h.port));
    HolderView {
        proto: h.proto,
        endpoint: endpoint(h.addr, h.port),
        addr: h.addr,
        port: h.port,
        state: h.state,
        netns: h.netns,
        cookie: h.cookie,
        v6only: h.v6only,
        reuseaddr: h.reuseaddr,
        reuseport: h.reuseport,
        bound_ifindex: h.bound_ifindex,
        uid: h.uid,
        owners: owners.iter().map(|p| (**p).clone()).collect(),
        owners_verified: h.owners_verified,
        since_ns: h.since_ns,
        source: h.source,
        remote: h.remote.as_deref().map(|&(a, p)| endpoint(a, p)),
        blocks: blocks(h),
        // A container's own published port is redirected to it by its
        // runtime's rule: that is the owner already named, not a shadow.
        shadowed: matches!(h.state, SockState::Listen | SockState::Bound)
            .then(|| dir.shadow(h.netns, h.proto, h.addr, h.port))
            .flatten()
            .filter(|s| {
                let Some(o) = &owner else {
                    return true;
                };
                let same_container = matches!(
                    (&o.container, &s.container),
                    (Some(a), Some(b)) if a.id == b.id
                );
                // docker-proxy beside its own DNAT rule, even when the
                // runtime could not name the container.
                let same_target = o.mapping.as_ref().and_then(|m| m.container_ip).is_some()
                    && o.mapping.as_ref().and_then(|m| m.container_ip) == s.rule.to_addr;
                !same_container && !same_target
            }),
        owner,
        http_sys: None,
    }
}

/// A released socket, kept as it was: its view is rendered only when
/// someone asks for the port's last holder, not on every release.
#[derive(Clone, Debug)]
struct Gone {
    holder: Holder,
    owners: Vec<Arc<ProcessInfo>>,
    gone_ns: u64,
}

/// The last holder of a port, kept after it let go.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Departed {
    pub holder: HolderView,
    pub gone_ns: u64,
}

/// Counters of what the table did, and of the drift reconciliation found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub tracked: u64,
    pub inserted: u64,
    pub removed: u64,
    /// Events that could not be keyed (no socket or namespace cookie).
    pub untracked: u64,
    /// Sockets not followed because the table was full.
    pub full: u64,
    /// Reconciliation: sockets the kernel had and the table did not.
    pub drift_missing: u64,
    /// Reconciliation: sockets the table had and the kernel did not.
    pub drift_stale: u64,
    /// Reconciliation: sockets whose state or options differed.
    pub drift_changed: u64,
}

impl TableStats {
    pub fn drift(&self) -> u64 {
        self.drift_missing + self.drift_stale + self.drift_changed
    }
}

/// One reconciliation's corrections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    pub missing: u64,
    pub stale: u64,
    pub changed: u64,
    /// A few examples, for the log.
    pub examples: Vec<String>,
}

/// A kernel snapshot of sockets, with owners resolved.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Unix ns when the dump began; events after it win over it.
    pub taken_ns: u64,
    pub holders: Vec<Holder>,
    pub processes: Vec<ProcessInfo>,
    /// Namespaces the snapshot covered; table entries in others are left alone.
    pub netns: HashSet<u64>,
    /// Sockets the snapshot saw that are not holders, by protocol, local
    /// port and owner (Windows: connections, whose local address is not
    /// the one their bind named): a holder matching one is still there.
    pub others: HashSet<(Proto, u16, u32)>,
}

#[derive(Default)]
pub struct HolderTable {
    socks: by_cookie::SocketsByCookie,
    /// Most ports have one socket (a few: reuseport groups, one per
    /// address); two cookies are kept inline, so a port costs no
    /// allocation of its own.
    by_port: HashMap<PortKey, smallvec::SmallVec<[u64; 2]>>,
    processes: HashMap<u32, Arc<ProcessInfo>>,
    /// Pids seen in events whose /proc details are still to be read.
    incomplete: VecDeque<u32>,
    departed: HashMap<PortKey, Gone>,
    departed_order: VecDeque<PortKey>,
    /// Cookies released since the last snapshot began: a snapshot that still
    /// lists them is older than the release.
    released_since_snapshot: HashSet<u64>,
    stats: TableStats,
    /// Whose rules judge a failed bind: the platform's unless a test says.
    pub rules: crate::conflict::RuleSet,
    /// The host's containers, for the owner behind each holder (empty
    /// until the platform reads its runtimes).
    directory: Arc<Directory>,
    /// Windows: http.sys's state and IIS's sites, for the owner behind
    /// http.sys's sockets (None elsewhere, and until the platform says).
    http_sys: Option<Arc<crate::owner::http_sys::HttpSysState>>,
}

impl HolderTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the container directory the views' owners come from.
    pub fn set_directory(&mut self, dir: Arc<Directory>) {
        self.directory = dir;
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn directory_arc(&self) -> Arc<Directory> {
        Arc::clone(&self.directory)
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            tracked: self.socks.len() as u64,
            ..self.stats
        }
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    pub fn get(&self, cookie: u64) -> Option<&Holder> {
        self.socks.get(&cookie)
    }

    pub fn process(&self, pid: u32) -> Option<&ProcessInfo> {
        self.processes.get(&pid).map(|p| &**p)
    }

    /// Sockets on one port of one namespace.
    pub fn on_port(&self, key: PortKey) -> impl Iterator<Item = &Holder> {
        self.by_port
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(|c| self.socks.get(c))
    }

    /// Every socket on `port`/`proto`, in any namespace.
    pub fn iter(&self) -> impl Iterator<Item = &Holder> {
        self.socks.values()
    }

    pub fn departed(&self, key: PortKey) -> Option<Departed> {
        self.departed.get(&key).map(|g| Departed {
            holder: view_of(&g.holder, &g.owners, &self.directory),
            gone_ns: g.gone_ns,
        })
    }

    fn owners_of(&self, h: &Holder) -> Vec<Arc<ProcessInfo>> {
        h.owners
            .iter()
            .map(|pid| {
                self.processes.get(pid).cloned().unwrap_or_else(|| {
                    Arc::new(ProcessInfo {
                        pid: *pid,
                        ..ProcessInfo::default()
                    })
                })
            })
            .collect()
    }

    pub fn view(&self, h: &Holder) -> HolderView {
        let mut v = view_of(h, &self.owners_of(h), &self.directory);
        v.http_sys = self.http_sys_view(h);
        v
    }

    /// Replaces http.sys's state the views of its sockets name.
    pub fn set_http_sys(&mut self, state: Option<crate::owner::http_sys::HttpSysState>) {
        self.http_sys = state.map(Arc::new);
    }

    /// Whom http.sys (pid 4, on TCP) holds `h` for.
    fn http_sys_view(&self, h: &Holder) -> Option<crate::owner::http_sys::HttpSysView> {
        let http = self.http_sys.as_deref()?;
        if h.proto != Proto::Tcp || !h.owners.contains(&crate::etw::httpsys::SYSTEM_PID) {
            return None;
        }
        let o = crate::owner::http_sys::resolve(Some(http), h.addr, h.port, |pid| {
            self.process(pid).map(registrant)
        });
        Some(o.view(h.addr, h.port))
    }

    /// Remembers what an event says of its process; /proc details follow
    /// later through [`Self::take_incomplete`] and [`Self::set_process`].
    fn note_process(&mut self, pid: u32, tid: u32, comm: &str, uid: u32) {
        let fresh = match self.processes.get(&pid) {
            // A new program in the same pid (exec, or pid reuse). Only the
            // main thread's name is the process's: another thread's event
            // carries that thread's own name (a JVM's, a tokio worker's),
            // which must not send the process back to /proc on every bind.
            Some(p) => tid == pid && p.comm != comm,
            None => true,
        };
        if fresh {
            if self.processes.len() >= PROCESS_CAPACITY {
                self.evict_processes();
            }
            self.processes
                .insert(pid, Arc::new(ProcessInfo::from_event(pid, comm, uid)));
            self.incomplete.push_back(pid);
        }
    }

    fn evict_processes(&mut self) {
        let used: HashSet<u32> = self
            .socks
            .values()
            .flat_map(|h| h.owners.iter().copied())
            .collect();
        self.processes.retain(|pid, _| used.contains(pid));
    }

    /// Pids whose details still need reading from /proc, at most `max`.
    pub fn take_incomplete(&mut self, max: usize) -> Vec<u32> {
        let n = self.incomplete.len().min(max);
        self.incomplete.drain(..n).collect()
    }

    pub fn set_process(&mut self, mut info: ProcessInfo) {
        info.complete = true;
        self.processes.insert(info.pid, Arc::new(info));
    }

    fn insert(&mut self, h: Holder) {
        if let Some(old) = self.socks.get(&h.cookie) {
            let old_key = old.key();
            if old_key != h.key() {
                self.unindex(h.cookie, old_key);
            } else {
                self.socks.insert(h);
                return;
            }
        } else if self.socks.len() >= TABLE_CAPACITY {
            self.stats.full += 1;
            return;
        }
        self.by_port.entry(h.key()).or_default().push(h.cookie);
        self.socks.insert(h);
        self.stats.inserted += 1;
    }

    fn unindex(&mut self, cookie: u64, key: PortKey) {
        if let Some(v) = self.by_port.get_mut(&key) {
            v.retain(|c| *c != cookie);
            if v.is_empty() {
                self.by_port.remove(&key);
            }
        }
    }

    fn remove(&mut self, cookie: u64, gone_ns: u64) -> Option<Holder> {
        let h = self.socks.remove(&cookie)?;
        self.unindex(cookie, h.key());
        self.stats.removed += 1;
        let key = h.key();
        let departed = Gone {
            owners: self.owners_of(&h),
            holder: h.clone(),
            gone_ns,
        };
        if self.departed.insert(key, departed).is_none() {
            self.departed_order.push_back(key);
            if self.departed_order.len() > DEPARTED_CAPACITY
                && let Some(old) = self.departed_order.pop_front()
            {
                self.departed.remove(&old);
            }
        }
        Some(h)
    }

    /// Brings the table up to date with one probe event.
    pub fn apply(&mut self, ev: &Event) {
        let (Some(cookie), Some(netns)) = (ev.sock_cookie, ev.netns_cookie) else {
            if !ev.failed() && ev.kind != EventKind::Release {
                self.stats.untracked += 1;
            }
            if let (EventKind::Release, Some(cookie)) = (ev.kind, ev.sock_cookie) {
                self.note_released(cookie);
                self.remove(cookie, ev.time_ns);
            }
            return;
        };
        match ev.kind {
            EventKind::Bind if ev.failed() => {}
            EventKind::Bind => {
                if ev.proto == Proto::Unknown {
                    self.stats.untracked += 1;
                    return;
                }
                self.note_process(ev.pid, ev.tid, &ev.comm, ev.uid);
                let mut h = Holder::from_event(ev, cookie, netns, SockState::Bound);
                if !ev.options.unread {
                    h.reuseaddr = Some(ev.options.reuseaddr);
                    h.reuseport = Some(ev.options.reuseport);
                }
                h.bound_ifindex = ev.options.bound_ifindex;
                self.insert(h);
            }
            EventKind::Listen => {
                if let Some(h) = self.socks.get_mut(&cookie) {
                    h.state = SockState::Listen;
                } else {
                    // Bound before bindwatch watched, or autobound by listen().
                    self.note_process(ev.pid, ev.tid, &ev.comm, ev.uid);
                    let mut h = Holder::from_event(ev, cookie, netns, SockState::Listen);
                    h.proto = Proto::Tcp;
                    self.insert(h);
                }
            }
            EventKind::ListenStop => {
                // An explicitly bound socket keeps its port until released.
                if let Some(h) = self.socks.get_mut(&cookie) {
                    h.state = SockState::Bound;
                }
            }
            EventKind::Release => {
                self.note_released(cookie);
                self.remove(cookie, ev.time_ns);
            }
        }
    }

    fn note_released(&mut self, cookie: u64) {
        // Bounded: without snapshots (reconciliation off) nobody clears it.
        if self.released_since_snapshot.len() >= TABLE_CAPACITY {
            self.released_since_snapshot.clear();
        }
        self.released_since_snapshot.insert(cookie);
    }

    /// Updates one socket from a fresh kernel reading: every owner (children
    /// forked since the bind share it), and the options the probes could not
    /// read.
    pub fn refresh_from_kernel(&mut self, k: &Holder, processes: Vec<ProcessInfo>) {
        for p in processes {
            self.set_process(p);
        }
        if let Some(h) = self.socks.get_mut(&k.cookie) {
            h.v6only = k.v6only.or(h.v6only);
            h.reuseaddr = k.reuseaddr.or(h.reuseaddr);
            h.reuseport = k.reuseport.or(h.reuseport);
            if !k.owners.is_empty() {
                h.owners = k.owners.clone();
                h.owners_verified = true;
            }
        }
    }

    /// Marks the start of a snapshot: releases from now on override it.
    pub fn snapshot_begins(&mut self) {
        self.released_since_snapshot.clear();
    }

    /// Loads a snapshot into an empty table (start-up).
    pub fn seed(&mut self, snap: Snapshot) {
        self.merge(snap, false);
    }

    /// Compares the table with a fresh snapshot and corrects it; every
    /// correction is counted as drift.
    pub fn reconcile(&mut self, snap: Snapshot) -> DriftReport {
        self.merge(snap, true)
    }

    fn merge(&mut self, snap: Snapshot, count: bool) -> DriftReport {
        let mut report = DriftReport::default();
        let example = |r: &mut DriftReport, s: String| {
            if r.examples.len() < 5 {
                r.examples.push(s);
            }
        };
        for p in snap.processes {
            self.set_process(p);
        }
        let in_kernel: HashSet<u64> = snap.holders.iter().map(|h| h.cookie).collect();
        for k in snap.holders {
            if self.released_since_snapshot.contains(&k.cookie) {
                continue;
            }
            match self.socks.get_mut(&k.cookie) {
                Some(t) => {
                    let changed = t.state != k.state
                        || t.addr != k.addr
                        || t.port != k.port
                        || (t.reuseaddr.is_some()
                            && k.reuseaddr.is_some()
                            && t.reuseaddr != k.reuseaddr)
                        || (t.reuseport.is_some()
                            && k.reuseport.is_some()
                            && t.reuseport != k.reuseport);
                    if changed && t.since_ns < snap.taken_ns {
                        report.changed += 1;
                        example(
                            &mut report,
                            format!(
                                "{} {} was {:?}, kernel says {:?}",
                                t.proto,
                                endpoint(t.addr, t.port),
                                t.state,
                                k.state
                            ),
                        );
                        t.state = k.state;
                        t.reuseaddr = k.reuseaddr.or(t.reuseaddr);
                        t.reuseport = k.reuseport.or(t.reuseport);
                    }
                    t.v6only = k.v6only.or(t.v6only);
                    t.reuseaddr = t.reuseaddr.or(k.reuseaddr);
                    t.reuseport = t.reuseport.or(k.reuseport);
                    t.bound_ifindex = t.bound_ifindex.or(k.bound_ifindex);
                    if !k.owners.is_empty() {
                        t.owners = k.owners;
                        t.owners_verified = true;
                    }
                }
                None => {
                    if count {
                        report.missing += 1;
                        example(
                            &mut report,
                            format!("{} {} was missing", k.proto, endpoint(k.addr, k.port)),
                        );
                    }
                    self.insert(k);
                }
            }
        }
        let stale: Vec<u64> = self
            .socks
            .values()
            .filter(|h| {
                snap.netns.contains(&h.netns)
                    && h.since_ns < snap.taken_ns
                    && !in_kernel.contains(&h.cookie)
                    && !h
                        .owners
                        .iter()
                        .any(|&pid| snap.others.contains(&(h.proto, h.port, pid)))
            })
            .map(|h| h.cookie)
            .collect();
        for c in stale {
            if let Some(h) = self.remove(c, snap.taken_ns) {
                report.stale += 1;
                example(
                    &mut report,
                    format!("{} {} was gone", h.proto, endpoint(h.addr, h.port)),
                );
            }
        }
        if count {
            self.stats.drift_missing += report.missing;
            self.stats.drift_stale += report.stale;
            self.stats.drift_changed += report.changed;
        }
        self.released_since_snapshot.clear();
        report
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod windows_stories;
