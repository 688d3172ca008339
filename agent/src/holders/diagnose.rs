//! Why a bind failed: the holders that block it under Linux's rules (from
//! the table, no /proc), the privileged-port rule for EACCES, and the
//! namespace's addresses for EADDRNOTAVAIL.

use std::net::IpAddr;

use serde::Serialize;

use super::{Departed, Holder, HolderTable, HolderView};
use crate::conflict::{Reason, SockSpec, SockState, conflict};
use crate::event::{Event, Proto, endpoint};

use crate::errno::{EACCES, EADDRINUSE, EADDRNOTAVAIL};

/// What the diagnosis may ask of the host beyond the table. Each answer is
/// read on demand, only for the failure that needs it; a platform without
/// the facts answers None. `tid` is the failing thread: its namespace and
/// credentials may differ from its process's.
pub trait HostFacts {
    /// `net.ipv4.ip_unprivileged_port_start` of the failing process's namespace.
    fn unprivileged_port_start(&mut self, netns: Option<u64>, tid: u32) -> Option<u16>;
    /// The addresses of the failing process's namespace.
    fn addresses(&mut self, netns: Option<u64>, tid: u32) -> Option<Vec<IpAddr>>;
    /// Sockets on the port the table does not follow (connections,
    /// TIME_WAIT, sockets bound before the probes loaded), with owners.
    fn port_sockets(
        &mut self,
        netns: Option<u64>,
        tid: u32,
        proto: Proto,
        port: u16,
    ) -> Option<(Vec<Holder>, Vec<super::ProcessInfo>)>;
}

/// No facts: the table alone.
pub struct NoFacts;

impl HostFacts for NoFacts {
    fn unprivileged_port_start(&mut self, _: Option<u64>, _: u32) -> Option<u16> {
        None
    }
    fn addresses(&mut self, _: Option<u64>, _: u32) -> Option<Vec<IpAddr>> {
        None
    }
    fn port_sockets(
        &mut self,
        _: Option<u64>,
        _: u32,
        _: Proto,
        _: u16,
    ) -> Option<(Vec<Holder>, Vec<super::ProcessInfo>)> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosisKind {
    /// EADDRINUSE with the holder(s) named.
    Conflict,
    /// EADDRINUSE and no holder could be found.
    HolderNotFound,
    /// EADDRINUSE on a port-0 bind: no free port in the range.
    NoFreePort,
    /// EACCES on a privileged port.
    PrivilegedPort,
    /// EADDRNOTAVAIL.
    AddressNotAvailable,
}

/// One holder that blocks the bind, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blame {
    pub reason: Reason,
    pub explanation: String,
    pub hint: &'static str,
    /// False when the verdict rests on an option bindwatch could not read
    /// (IPV6_V6ONLY of a socket it saw bound; flags of a TIME_WAIT socket).
    pub certain: bool,
    pub holder: HolderView,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    pub kind: DiagnosisKind,
    /// One line for people.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<Blame>,
    /// The port's last holder, when none holds it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_known: Option<Departed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unprivileged_port_start: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cap_net_bind_service: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<IpAddr>>,
}

impl Diagnosis {
    fn new(kind: DiagnosisKind, summary: String) -> Self {
        Self {
            kind,
            summary,
            hint: None,
            holders: Vec::new(),
            last_known: None,
            unprivileged_port_start: None,
            cap_net_bind_service: None,
            addresses: None,
        }
    }
}

/// The request as the conflict rules see it. IPV6_V6ONLY of the new socket
/// is unknown (the probes cannot read it); [`judge`] tries both.
fn request(ev: &Event) -> SockSpec {
    SockSpec {
        netns: ev.netns_cookie,
        proto: ev.proto,
        addr: ev.addr,
        port: ev.port,
        v6only: false,
        reuseaddr: ev.options.reuseaddr,
        reuseport: ev.options.reuseport,
        uid: ev.uid,
        bound_ifindex: ev.options.bound_ifindex,
        state: SockState::Bound,
    }
}

/// Whether `h` blocks `req`, trying every value of the options nobody could
/// read. Certain when it blocks under all of them; the reason is the one
/// under the kernel's defaults (options off).
pub fn judge(req: &SockSpec, req_v6only_known: bool, h: &Holder) -> Option<(Reason, bool)> {
    let base = h.spec();
    let unknown = [
        !req_v6only_known && req.addr.is_ipv6(),
        h.v6only.is_none() && h.addr.is_ipv6(),
        h.reuseaddr.is_none(),
        h.reuseport.is_none(),
    ];
    let mut default = None;
    let mut all = true;
    let mut any = None;
    for combo in 0u8..16 {
        if (0..4).any(|i| combo & (1 << i) != 0 && !unknown[i]) {
            continue;
        }
        let mut r = req.clone();
        let mut s = base.clone();
        if combo & 1 != 0 {
            r.v6only = true;
        }
        if combo & 2 != 0 {
            s.v6only = true;
        }
        if combo & 4 != 0 {
            s.reuseaddr = true;
        }
        if combo & 8 != 0 {
            s.reuseport = true;
        }
        let c = conflict(&r, &s);
        if combo == 0 {
            default = c;
        }
        match c {
            Some(reason) => any = any.or(Some(reason)),
            None => all = false,
        }
    }
    default.or(any).map(|reason| (reason, all))
}

/// Diagnoses a failed bind; None for a success or an errno bindwatch has
/// nothing to add to.
pub fn diagnose(table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Option<Diagnosis> {
    match ev.errno {
        EADDRINUSE => Some(in_use(table, ev, facts)),
        EACCES => Some(privileged(ev, facts)),
        EADDRNOTAVAIL => Some(not_available(ev, facts)),
        _ => None,
    }
}

fn blame_all<'a>(
    table: &HolderTable,
    req: &SockSpec,
    candidates: impl Iterator<Item = &'a Holder>,
) -> Vec<Blame> {
    let mut blames: Vec<Blame> = candidates
        .filter_map(|h| {
            let (reason, certain) = judge(req, false, h)?;
            Some(Blame {
                reason,
                explanation: reason.explain(req, &h.spec()),
                hint: reason.hint(),
                certain,
                holder: table.view(h),
            })
        })
        .collect();
    // The kernel refused, so something blocks: if any verdict is certain,
    // the uncertain ones are not needed to explain it.
    if blames.iter().any(|b| b.certain) {
        blames.retain(|b| b.certain);
    }
    blames.sort_by_key(|b| (b.holder.since_ns, b.holder.cookie));
    blames
}

fn in_use(table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let ep = endpoint(ev.addr, ev.port);
    if ev.port == 0 {
        let mut d = Diagnosis::new(
            DiagnosisKind::NoFreePort,
            format!(
                "no free {} port for {} in the namespace's ip_local_port_range",
                ev.proto, ev.addr
            ),
        );
        d.hint = Some(
            "widen net.ipv4.ip_local_port_range, or find what holds so many ports \
             (`bindwatch who` on the busiest ports)"
                .into(),
        );
        return d;
    }
    let req = request(ev);
    let mut blames = match ev.netns_cookie {
        Some(ns) => blame_all(table, &req, table.on_port((ns, ev.proto, ev.port))),
        None => Vec::new(),
    };
    if blames.is_empty() {
        // Not in the table: a connection, a TIME_WAIT leftover, or a socket
        // whose events were lost. Ask the kernel (slow path).
        if let Some((socks, procs)) = facts.port_sockets(ev.netns_cookie, ev.tid, ev.proto, ev.port)
        {
            let mut scratch = HolderTable::new();
            for p in procs {
                scratch.set_process(p);
            }
            for h in socks {
                scratch.insert(h);
            }
            blames = blame_all(&scratch, &req, scratch.iter());
        }
    }
    let key = ev.netns_cookie.map(|ns| (ns, ev.proto, ev.port));
    if blames.is_empty() {
        let mut d = Diagnosis::new(
            DiagnosisKind::HolderNotFound,
            format!(
                "{} {ep} is in use, but no holder was found: it let go a moment ago, or is \
                 in a state bindwatch cannot see",
                ev.proto
            ),
        );
        d.last_known = key.and_then(|k| table.departed(k));
        if let Some(last) = &d.last_known {
            d.summary.push_str(&format!(
                "; last held by {} on {}",
                last.holder.owner_label(),
                last.holder.endpoint
            ));
        }
        return d;
    }
    let first = &blames[0];
    let who = if first.holder.owners.iter().any(|p| p.pid == ev.pid) {
        format!("its own process, {}", first.holder.owner_label())
    } else {
        first.holder.owner_label()
    };
    let mut summary = format!(
        "{} {ep} is blocked by {who} on {}: {}",
        ev.proto, first.holder.endpoint, first.explanation
    );
    if blames.len() > 1 {
        summary.push_str(&format!(" (and {} more holder(s))", blames.len() - 1));
    }
    let mut d = Diagnosis::new(DiagnosisKind::Conflict, summary);
    d.hint = Some(first.hint.to_owned());
    d.holders = blames;
    d
}

fn privileged(ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let start = facts.unprivileged_port_start(ev.netns_cookie, ev.tid);
    let below = start.is_none_or(|s| ev.port < s);
    // The kernel checks the capability only below the start; its refusal
    // there proves the thread lacked it at that moment.
    let cap = below.then_some(false);
    let summary = if below {
        format!(
            "{} port {} is privileged: ports below {} need CAP_NET_BIND_SERVICE, and {} (pid {}, uid {}) did not have it",
            ev.proto,
            ev.port,
            start.map_or("net.ipv4.ip_unprivileged_port_start".to_owned(), |s| s
                .to_string()),
            ev.comm,
            ev.pid,
            ev.uid,
        )
    } else {
        format!(
            "permission denied binding {} {}: port {} is above ip_unprivileged_port_start ({}), so a security module or cgroup program refused it",
            ev.proto,
            endpoint(ev.addr, ev.port),
            ev.port,
            start.unwrap_or_default()
        )
    };
    let mut d = Diagnosis::new(DiagnosisKind::PrivilegedPort, summary);
    d.hint = Some(if below {
        format!(
            "grant the capability (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a binary: \
             setcap cap_net_bind_service=+ep), use a port at or above {}, or lower \
             net.ipv4.ip_unprivileged_port_start in this namespace",
            start.unwrap_or(1024)
        )
    } else {
        "check the audit log for an AppArmor or SELinux denial".to_owned()
    });
    d.unprivileged_port_start = start;
    d.cap_net_bind_service = cap;
    d
}

fn not_available(ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let addrs = facts.addresses(ev.netns_cookie, ev.tid);
    let family: Vec<IpAddr> = addrs
        .iter()
        .flatten()
        .filter(|a| a.is_ipv4() == ev.addr.is_ipv4())
        .copied()
        .collect();
    let list = if family.is_empty() {
        "none of that family".to_owned()
    } else {
        family
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut d = Diagnosis::new(
        DiagnosisKind::AddressNotAvailable,
        format!(
            "{} is not an address of this network namespace; it has {}",
            ev.addr, list
        ),
    );
    d.hint = Some(
        "bind one of those addresses or the wildcard, add the address to an interface \
         (`ip addr add`), or set net.ipv4.ip_nonlocal_bind=1 / IP_FREEBIND to bind \
         before it exists"
            .to_owned(),
    );
    d.addresses = addrs;
    d
}
