//! The kernel's view of who holds what, for the holder table: snapshots
//! over sock_diag and /proc, and the host facts a diagnosis may need.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::netns::{self, Namespaces};
use super::procscan::{self, SocketFd, Users};
use super::sockdiag::{self, DiagQuery, KernelSock, state};
use bindwatch_core::conflict::SockState;
use bindwatch_core::event::Proto;
use bindwatch_core::holders::{
    EphemeralPorts, Holder, HostFacts, Owners, ProcessInfo, Snapshot, Source,
};

/// How many full /proc descriptor walks the diagnosis's slow path may make
/// per second; past it, owners are reported as unverified.
pub const PROC_WALKS_PER_SECOND: u32 = 4;

pub struct KernelView {
    pub namespaces: Namespaces,
    users: Users,
    walk_budget: u32,
    budget_since: Instant,
    /// Whether snapshots read SO_REUSEADDR/SO_REUSEPORT from a duplicate
    /// of the owner's descriptor. While bindwatch holds that duplicate the
    /// socket outlives its owner's close, so a bind right after it fails:
    /// only the start-up snapshot does it (reconciliation keeps the flags
    /// the table has; the probes report them for sockets bound since).
    read_options: bool,
    /// While recording (the start-up snapshot), a descriptor of each
    /// listening or bound socket by cookie, through which the probes'
    /// socket storage is seeded.
    descriptors: Option<HashMap<u64, SocketFd>>,
    /// Per namespace: reading a sysctl of another namespace takes a thread
    /// that enters it, too slow for each failed bind of a storm.
    sysctls: SysctlCache,
}

/// How long a namespace's port sysctls are taken as read. Administrators
/// change them seldom; a change is seen within this.
const SYSCTL_TTL: Duration = Duration::from_secs(5);
/// Namespaces whose sysctls are kept (past it, the cache starts over).
const SYSCTL_NAMESPACES: usize = 4096;

#[derive(Default)]
struct SysctlCache {
    port_start: HashMap<u64, (Instant, Option<u16>)>,
    ephemeral: HashMap<u64, (Instant, Option<EphemeralPorts>)>,
}

/// The cached value when fresh, else `read`'s (kept).
fn cached<T: Clone>(
    map: &mut HashMap<u64, (Instant, T)>,
    netns: u64,
    read: impl FnOnce() -> T,
) -> T {
    if let Some((at, v)) = map.get(&netns)
        && at.elapsed() < SYSCTL_TTL
    {
        return v.clone();
    }
    if map.len() >= SYSCTL_NAMESPACES {
        map.clear();
    }
    let v = read();
    map.insert(netns, (Instant::now(), v.clone()));
    v
}

fn sock_state(k: &KernelSock) -> SockState {
    match (k.proto, k.state) {
        (Proto::Udp, _) => SockState::Bound,
        (_, state::LISTEN) => SockState::Listen,
        (_, state::TIME_WAIT) => SockState::TimeWait,
        (_, state::CLOSE | state::BOUND_INACTIVE) => SockState::Bound,
        _ => SockState::Established,
    }
}

/// Sockets with owners and process details, from one dump.
pub struct Resolved {
    pub holders: Vec<Holder>,
    pub processes: Vec<ProcessInfo>,
}

impl KernelView {
    pub fn new() -> Self {
        Self {
            namespaces: Namespaces::discover(),
            users: Users::default(),
            walk_budget: PROC_WALKS_PER_SECOND,
            budget_since: Instant::now(),
            read_options: true,
            descriptors: None,
            sysctls: SysctlCache::default(),
        }
    }

    /// http.sys's registering processes: Windows's (none here).
    pub fn registrants(&mut self) -> Vec<u32> {
        Vec::new()
    }

    /// A view for reconciliation: never duplicates descriptors.
    pub fn for_reconciliation() -> Self {
        Self {
            read_options: false,
            ..Self::new()
        }
    }

    /// Snapshots from now on note a descriptor of each listening or bound
    /// socket, until [`Self::take_descriptors`].
    pub fn record_descriptors(&mut self) {
        self.descriptors = Some(HashMap::new());
    }

    /// The descriptors noted since [`Self::record_descriptors`]; recording
    /// stops.
    pub fn take_descriptors(&mut self) -> HashMap<u64, SocketFd> {
        self.descriptors.take().unwrap_or_default()
    }

    fn take_walk(&mut self) -> bool {
        if self.budget_since.elapsed() >= Duration::from_secs(1) {
            self.budget_since = Instant::now();
            self.walk_budget = PROC_WALKS_PER_SECOND;
        }
        if self.walk_budget == 0 {
            return false;
        }
        self.walk_budget -= 1;
        true
    }

    pub fn process_info(&mut self, pid: u32) -> Option<ProcessInfo> {
        procscan::process_info(pid, &mut self.users)
    }

    /// Dumps `query` in each of `namespaces` (all when None), then resolves
    /// owners with one /proc walk when `owners` is set.
    pub fn resolve(
        &mut self,
        namespaces: Option<&[u64]>,
        queries: &[DiagQuery],
        owners: bool,
    ) -> Resolved {
        let now = bindwatch_core::clock::now_unix_ns();
        let mut socks: Vec<(u64, KernelSock)> = Vec::new();
        for ns in self.namespaces.iter_mut() {
            if namespaces.is_some_and(|w| !w.contains(&ns.cookie)) {
                continue;
            }
            for q in queries {
                match ns.diag.dump(*q) {
                    Ok(v) => socks.extend(v.into_iter().map(|k| (ns.cookie, k))),
                    Err(e) => {
                        tracing::warn!(netns = ns.cookie, error = %e, "sock_diag dump failed")
                    }
                }
            }
        }
        let fds: HashMap<u64, Vec<SocketFd>> = if owners {
            let wanted: HashSet<u64> = socks
                .iter()
                .map(|(_, k)| k.inode)
                .filter(|i| *i != 0)
                .collect();
            if wanted.is_empty() {
                HashMap::new()
            } else {
                procscan::socket_owners(Some(&wanted))
            }
        } else {
            HashMap::new()
        };
        let mut procs: HashMap<u32, ProcessInfo> = HashMap::new();
        let mut holders = Vec::with_capacity(socks.len());
        for (netns, k) in socks {
            let st = sock_state(&k);
            let owners = fds.get(&k.inode).cloned().unwrap_or_default();
            // Options the dump lacks, read from the holder's own descriptor;
            // only for sockets that hold a port for themselves.
            let flags = match st {
                SockState::Listen | SockState::Bound if self.read_options => {
                    owners.first().and_then(|o| procscan::reuse_flags(*o))
                }
                _ => None,
            };
            if let (SockState::Listen | SockState::Bound, Some(d), Some(o)) =
                (st, self.descriptors.as_mut(), owners.first())
            {
                d.insert(k.cookie, *o);
            }
            let mut pids: Owners = owners.iter().map(|o| o.pid).collect();
            pids.sort_unstable();
            pids.dedup();
            for pid in &pids {
                if !procs.contains_key(pid)
                    && let Some(p) = procscan::process_info(*pid, &mut self.users)
                {
                    procs.insert(*pid, p);
                }
            }
            holders.push(Holder {
                cookie: k.cookie,
                netns,
                proto: k.proto,
                addr: k.addr,
                port: k.port,
                state: st,
                v6only: if k.addr.is_ipv4() {
                    Some(false)
                } else {
                    k.v6only
                },
                reuseaddr: flags.map(|f| f.0),
                reuseport: flags.map(|f| f.1),
                bound_ifindex: (k.ifindex != 0).then_some(k.ifindex),
                uid: k.uid,
                // TIME_WAIT sockets have no file, so nobody to find.
                owners_verified: !pids.is_empty() || k.inode == 0,
                owners: pids,
                since_ns: now,
                source: Source::Snapshot,
                remote: k.remote.map(Box::new),
            });
        }
        Resolved {
            holders,
            processes: procs.into_values().collect(),
        }
    }

    /// Every socket the holder table follows, in every namespace.
    pub fn snapshot(&mut self) -> Snapshot {
        self.namespaces.refresh();
        let taken_ns = bindwatch_core::clock::now_unix_ns();
        let queries = [
            DiagQuery {
                proto: Proto::Tcp,
                states: sockdiag::TABLE_STATES,
                port: None,
            },
            DiagQuery {
                proto: Proto::Udp,
                states: sockdiag::ALL_STATES,
                port: None,
            },
        ];
        let r = self.resolve(None, &queries, true);
        Snapshot {
            taken_ns,
            holders: r.holders,
            processes: r.processes,
            netns: self.namespaces.cookies().collect(),
            others: Default::default(),
        }
    }
}

impl Default for KernelView {
    fn default() -> Self {
        Self::new()
    }
}

/// Most namespaces whose NAT rules one reading lists (one `nft` each).
pub const NAT_NAMESPACES_MAX: usize = 256;

impl KernelView {
    /// This process's own network namespace.
    pub fn own_netns(&self) -> Option<u64> {
        self.namespaces.own
    }

    /// The destination-NAT rules of every namespace known (the first
    /// [`NAT_NAMESPACES_MAX`]).
    pub fn nat_rules_everywhere(
        &mut self,
    ) -> std::collections::HashMap<u64, Vec<bindwatch_core::owner::NatRule>> {
        let cookies: Vec<u64> = self.namespaces.cookies().take(NAT_NAMESPACES_MAX).collect();
        self.nat_rules(cookies)
    }

    /// The destination-NAT rules of each of these namespaces; a namespace
    /// whose rules could not be read is left out (and said at debug level).
    pub fn nat_rules(
        &mut self,
        cookies: impl IntoIterator<Item = u64>,
    ) -> std::collections::HashMap<u64, Vec<bindwatch_core::owner::NatRule>> {
        let mut out = std::collections::HashMap::new();
        for c in cookies {
            if out.contains_key(&c) {
                continue;
            }
            let Some(ns) = self.namespaces.get_or_find(Some(c), std::process::id()) else {
                continue;
            };
            match super::nat::rules_in(ns) {
                Ok(rules) => {
                    out.insert(c, rules);
                }
                Err(e) => tracing::debug!(netns = c, error = %e, "NAT rules not read"),
            }
        }
        out
    }
}

impl HostFacts for KernelView {
    fn process(&mut self, pid: u32) -> Option<ProcessInfo> {
        self.process_info(pid)
    }
    fn owners_of(
        &mut self,
        netns: u64,
        proto: Proto,
        port: u16,
        cookie: u64,
    ) -> Option<(Holder, Vec<ProcessInfo>)> {
        // A /proc walk: only within the walk budget.
        if !self.take_walk() {
            return None;
        }
        if !self.namespaces.contains(netns) {
            self.namespaces.refresh();
        }
        let q = DiagQuery {
            proto,
            states: sockdiag::ALL_STATES,
            port: Some(port),
        };
        let r = self.resolve(Some(&[netns]), &[q], true);
        let holder = r.holders.into_iter().find(|h| h.cookie == cookie)?;
        Some((holder, r.processes))
    }

    fn unprivileged_port_start(&mut self, netns: Option<u64>, pid: u32) -> Option<u16> {
        let ns = self.namespaces.get_or_find(netns, pid)?;
        cached(&mut self.sysctls.port_start, ns.cookie, || {
            ns.run(netns::unprivileged_port_start).flatten()
        })
    }

    fn ephemeral_ports(
        &mut self,
        netns: Option<u64>,
        pid: u32,
        _proto: Proto,
    ) -> Option<EphemeralPorts> {
        let ns = self.namespaces.get_or_find(netns, pid)?;
        cached(&mut self.sysctls.ephemeral, ns.cookie, || {
            ns.run(netns::ephemeral_ports).flatten()
        })
    }

    fn addresses(&mut self, netns: Option<u64>, pid: u32) -> Option<Vec<IpAddr>> {
        self.namespaces
            .get_or_find(netns, pid)?
            .run(netns::local_addresses)
    }

    fn port_sockets(
        &mut self,
        netns: Option<u64>,
        pid: u32,
        proto: Proto,
        port: u16,
    ) -> Option<(Vec<Holder>, Vec<ProcessInfo>)> {
        let cookie = self.namespaces.get_or_find(netns, pid)?.cookie;
        let walk = self.take_walk();
        let q = DiagQuery {
            proto,
            states: sockdiag::ALL_STATES,
            port: Some(port),
        };
        let r = self.resolve(Some(&[cookie]), &[q], walk);
        Some((r.holders, r.processes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaces_sysctl_is_read_once_per_ttl() {
        let mut map: HashMap<u64, (Instant, Option<u16>)> = HashMap::new();
        let mut reads = 0;
        let mut read = |v| {
            reads += 1;
            v
        };
        assert_eq!(cached(&mut map, 7, || read(Some(1024))), Some(1024));
        assert_eq!(cached(&mut map, 7, || read(Some(80))), Some(1024));
        assert_eq!(cached(&mut map, 8, || read(Some(80))), Some(80));
        // Past the TTL the namespace is read again.
        map.get_mut(&7).unwrap().0 -= SYSCTL_TTL;
        assert_eq!(cached(&mut map, 7, || read(Some(80))), Some(80));
        assert_eq!(reads, 3);
    }
}
