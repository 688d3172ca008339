//! Why a bind failed, written once for every platform: the holders that
//! block it (from the table, no /proc; the host's sockets on the port when
//! the table has none), the outbound connection that took an ephemeral
//! port, and the namespace's addresses for EADDRNOTAVAIL. What differs per
//! platform (how one holder is judged, what EACCES means, http.sys) is in
//! `rules/`, one file per platform behind [`rules::PlatformRules`].

use std::net::IpAddr;

use serde::Serialize;

use super::rules::{self, Judged, Verdict};
use super::{Departed, EphemeralPorts, Holder, HolderTable, HolderView};
use crate::conflict::{Reason, RuleSet, SockSpec, SockState, conflict};
use crate::etw::httpsys::HttpSys;
use crate::event::{Event, Proto, endpoint};
use crate::owner::http_sys::HttpSysState;

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
    /// The namespace's ephemeral range and reserved ports for `proto`
    /// (one range for both on Linux; one each on Windows).
    fn ephemeral_ports(
        &mut self,
        _netns: Option<u64>,
        _tid: u32,
        _proto: Proto,
    ) -> Option<EphemeralPorts> {
        None
    }
    /// Windows: http.sys's listen list and URL registrations.
    fn http_sys(&mut self) -> Option<HttpSys> {
        None
    }
    /// Windows: IIS's sites (applicationHost.config), where IIS is installed.
    fn iis(&mut self) -> Option<std::sync::Arc<crate::owner::iis::IisConfig>> {
        None
    }
    /// A process's details read now: a middleman that failed to bind (a
    /// docker-proxy) exits at once, before the table's next read.
    fn process(&mut self, _pid: u32) -> Option<super::ProcessInfo> {
        None
    }
    /// The socket `cookie` on `port` as the host has it now, with every
    /// process sharing it (forked children included); None when it is gone
    /// or the host may not be asked now (implementations rate-limit this).
    fn owners_of(
        &mut self,
        _netns: u64,
        _proto: Proto,
        _port: u16,
        _cookie: u64,
    ) -> Option<(Holder, Vec<super::ProcessInfo>)> {
        None
    }
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
    /// Windows: EACCES (WSAEACCES) that no socket on the port explains: an
    /// excluded port range, or a firewall or filter driver.
    AccessDenied,
}

/// One holder that blocks the bind, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blame {
    pub reason: Reason,
    pub explanation: String,
    pub hint: String,
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
    /// Whom the failing process was binding for, when it is a middleman
    /// (docker-proxy publishing a container that is starting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<crate::owner::Owner>,
}

impl Diagnosis {
    pub(super) fn new(kind: DiagnosisKind, summary: String) -> Self {
        Self {
            kind,
            summary,
            hint: None,
            holders: Vec::new(),
            last_known: None,
            unprivileged_port_start: None,
            cap_net_bind_service: None,
            addresses: None,
            requester: None,
        }
    }

    /// Says whom the failing middleman was binding for, and how to fix it
    /// on that owner's side.
    pub fn set_requester(&mut self, owner: crate::owner::Owner, ev: &Event) {
        let what = match &owner.state {
            Some(s) if s == "created" => ", which was starting",
            _ => "",
        };
        self.summary.push_str(&format!(
            "; {} was binding it for {}{what}",
            owner.middleman.as_deref().unwrap_or(&ev.comm),
            owner.who()
        ));
        if let (Some(c), Some(m)) = (&owner.container, &owner.mapping) {
            let other = match self.hint.take() {
                Some(h) => format!(" ({h})"),
                None => String::new(),
            };
            self.hint = Some(format!(
                "free {} from its holder{other}, or publish {} on another host port (change -p {})",
                endpoint(ev.addr, ev.port),
                c.label_short(),
                m.flag()
            ));
        }
        self.requester = Some(owner);
    }
}

/// The request as the conflict rules see it. IPV6_V6ONLY of the new socket
/// is unknown (the probes cannot read it); [`judge`] tries both.
pub(in crate::holders) fn request(ev: &Event) -> SockSpec {
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
        EACCES => Some(rules::of(table.rules).denied(table, ev, facts)),
        EADDRNOTAVAIL => Some(not_available(ev, facts, table.rules)),
        _ => None,
    }
}

/// Every candidate that blocks the request under the table's rules,
/// blamed; the certain ones alone when any is certain.
pub(in crate::holders) fn blame_all<'a>(
    table: &HolderTable,
    ev: &Event,
    req: &SockSpec,
    req_v6only_known: bool,
    http: Option<&HttpSysState>,
    candidates: impl Iterator<Item = &'a Holder>,
) -> Vec<Blame> {
    let rules = rules::of(table.rules);
    let mut blames: Vec<Blame> = candidates
        .filter_map(|h| {
            let Verdict {
                reason,
                certain,
                explanation,
                hint,
            } = rules.judge(&Judged {
                req,
                req_v6only_known,
                ev,
                holder: h,
                table,
                http,
            })?;
            let holder = table.view(h);
            // A middleman's or a container's socket is fixed on its owner:
            // the container to stop or remap, not docker-proxy. A process
            // blocking itself keeps the rule's own advice.
            let hint = match &holder.owner {
                Some(o) if !h.owners.contains(&ev.pid) => o.fix(),
                _ => hint,
            };
            Some(Blame {
                reason,
                explanation,
                hint,
                certain,
                holder,
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
    in_use_for(table, ev, &request(ev), false, facts)
}

/// EADDRINUSE for `req`, whose IPV6_V6ONLY is known when a caller states
/// it (`bindwatch check`) and unknown for a bind the probes saw.
pub(super) fn in_use_for(
    table: &HolderTable,
    ev: &Event,
    req: &SockSpec,
    req_v6only_known: bool,
    facts: &mut dyn HostFacts,
) -> Diagnosis {
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
    let rules = rules::of(table.rules);
    let http = rules.http_sys(facts);
    let http = http.as_ref();
    let mut blames = match ev.netns_cookie {
        Some(ns) => blame_all(
            table,
            ev,
            req,
            req_v6only_known,
            http,
            table.on_port((ns, ev.proto, ev.port)),
        ),
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
            scratch.rules = table.rules;
            scratch.set_directory(table.directory_arc());
            blames = blame_all(&scratch, ev, req, req_v6only_known, http, scratch.iter());
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
    name_ephemeral(ev, facts, &mut blames);
    let first = &blames[0];
    let who = blamed_label(first, ev);
    let mut summary = format!(
        "{} {ep} is blocked by {who} on {}: {}",
        ev.proto, first.holder.endpoint, first.explanation
    );
    if blames.len() > 1 {
        summary.push_str(&format!(" (and {} more holder(s))", blames.len() - 1));
    }
    if let Some(note) = rules.conflict_note(table, ev) {
        summary.push_str(&format!("; {note}"));
    }
    let mut d = Diagnosis::new(DiagnosisKind::Conflict, summary);
    d.hint = Some(first.hint.clone());
    d.holders = blames;
    d
}

/// A connection (or its TIME_WAIT) on a port inside the namespace's
/// ephemeral range is taken to be an outbound connection the kernel gave
/// the port to: its own reason, the peer, and the fix (reserve the port).
/// By addresses alone it cannot be told from a connection accepted by an
/// old listener on that port; inside the range the outbound case is named.
fn name_ephemeral(ev: &Event, facts: &mut dyn HostFacts, blames: &mut [Blame]) {
    let linked = |r: Reason| matches!(r, Reason::Connection | Reason::TimeWait);
    if !blames.iter().any(|b| linked(b.reason)) {
        return;
    }
    let Some(eph) = facts
        .ephemeral_ports(ev.netns_cookie, ev.tid, ev.proto)
        .filter(|e| e.hands_out(ev.port))
    else {
        return;
    };
    for b in blames.iter_mut().filter(|b| linked(b.reason)) {
        b.reason = Reason::EphemeralPort;
        let peer = b
            .holder
            .remote
            .as_deref()
            .map(|r| format!(" to {r}"))
            .unwrap_or_default();
        b.explanation = format!(
            "{} was given {} by the kernel as the source port of an outbound connection{peer}: \
             port {} lies inside the namespace's {} and is not reserved",
            b.holder.owner_label(),
            b.holder.endpoint,
            ev.port,
            eph.describe()
        );
        b.hint = eph.fix(ev.port);
    }
}

/// How a summary names the first holder blamed.
pub(in crate::holders) fn blamed_label(b: &Blame, ev: &Event) -> String {
    if b.reason == Reason::HttpSys {
        "http.sys (pid 4, System)".to_owned()
    } else if b.holder.owners.iter().any(|p| p.pid == ev.pid) {
        format!("its own process, {}", b.holder.owner_label())
    } else {
        b.holder.owner_label()
    }
}

fn not_available(ev: &Event, facts: &mut dyn HostFacts, rules: RuleSet) -> Diagnosis {
    let addrs = facts.addresses(ev.netns_cookie, ev.tid);
    not_available_among(ev, addrs, rules)
}

/// EADDRNOTAVAIL, given the namespace's addresses (None: unknown).
pub(super) fn not_available_among(
    ev: &Event,
    addrs: Option<Vec<IpAddr>>,
    rules: RuleSet,
) -> Diagnosis {
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
            "{} is not an address of this {}; it has {}",
            ev.addr,
            rules::of(rules).address_scope(),
            list
        ),
    );
    d.hint = Some(rules::of(rules).address_hint().to_owned());
    d.addresses = addrs;
    d
}
