//! Why a bind failed: the holders that block it under Linux's rules (from
//! the table, no /proc), the privileged-port rule for EACCES, and the
//! namespace's addresses for EADDRNOTAVAIL.

use std::net::IpAddr;

use serde::Serialize;

use super::{Departed, EphemeralPorts, Holder, HolderTable, HolderView};
use crate::conflict::winsock::{self, WinOption};
use crate::conflict::{Overlap, Reason, RuleSet, SockSpec, SockState, conflict};
use crate::etw::httpsys::{HttpSys, SYSTEM_PID, app_pool};
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
    match (ev.errno, table.rules) {
        (EADDRINUSE, _) => Some(in_use(table, ev, facts)),
        (EACCES, RuleSet::Linux) => Some(privileged(ev, facts)),
        (EACCES, RuleSet::Windows) => Some(denied_windows(table, ev, facts)),
        (EADDRNOTAVAIL, _) => Some(not_available(ev, facts, table.rules)),
        _ => None,
    }
}

/// Judges one holder under Windows's rules. The options of Windows sockets
/// are not known (no event or table carries them), so every possibility is
/// tried; the error narrows them. http.sys is judged apart.
fn judge_windows(
    req: &SockSpec,
    ev: &Event,
    h: &Holder,
    table: &HolderTable,
    http: Option<&HttpSys>,
) -> Option<(Reason, bool, String, String)> {
    let mut spec = h.spec();
    spec.v6only = h.v6only.unwrap_or(spec.addr.is_ipv6());
    if h.owners.contains(&SYSTEM_PID) && h.proto == Proto::Tcp {
        // http.sys's sockets are kernel sockets without a security
        // descriptor of their own; the one they get allows no sharing, so
        // the table's security check fails for every other process. Its
        // options, like the request's, are unknown: all are tried, and the
        // verdict is certain only where the table blocks whatever they were.
        let ov = winsock::overlap(req, &spec)?;
        if req.port != h.port {
            return None;
        }
        let documented = winsock::judge(
            req,
            &WinOption::ALL,
            &spec,
            &WinOption::ALL,
            ev.errno,
            Some(false),
        );
        let (certain, note) = match documented {
            // By the table a wildcard bind shares a specific listener's
            // port unless it asked for SO_EXCLUSIVEADDRUSE itself.
            Some(v) if v.reason == Reason::ExclusiveRequest => (
                v.certain,
                format!(
                    "; only if {} asked for SO_EXCLUSIVEADDRUSE, which shares the port with \
                     no other socket",
                    ev.comm
                ),
            ),
            Some(v) => (v.certain, String::new()),
            // A specific address beside http.sys's wildcard: the table
            // gives WSAEACCES, field reports of IIS's socket pooling (on
            // older releases) WSAEADDRINUSE. Blamed, not certain, and said.
            None if ev.errno == EADDRINUSE && ov == Overlap::HolderWildcard => (
                false,
                "; Microsoft's sharing table gives WSAEACCES for this bind on current \
                 Windows, this host answered WSAEADDRINUSE"
                    .to_owned(),
            ),
            None => return None,
        };
        let (mut explanation, hint) = http_sys_words(req, ev, &spec, table, http);
        explanation.push_str(&note);
        return Some((Reason::HttpSys, certain, explanation, hint));
    }
    let holder_options: &[WinOption] = match h.reuseaddr {
        Some(true) => &[WinOption::ReuseAddr],
        Some(false) => &[WinOption::Default, WinOption::Exclusive],
        None => &WinOption::ALL,
    };
    // Socket security compares accounts; known once both processes' details
    // were read.
    let account = |pid: u32| table.process(pid).and_then(|p| p.user.clone());
    let same_account = match (account(ev.pid), h.owners.first().and_then(|&o| account(o))) {
        (Some(a), Some(b)) => Some(a.eq_ignore_ascii_case(&b)),
        _ => None,
    };
    let v = winsock::judge(
        req,
        &WinOption::ALL,
        &spec,
        holder_options,
        ev.errno,
        same_account,
    )?;
    let mut hint = v.reason.hint().to_owned();
    if h.owners.contains(&ev.pid) {
        hint = format!(
            "{} already holds port {} itself: two of its listeners (HTTP and SSL?) are set to the \
             same port; give each its own",
            ev.comm, h.port
        );
    }
    Some((v.reason, v.certain, v.reason.explain(req, &spec), hint))
}

/// "http.sys on behalf of w3wp.exe (app pool DefaultAppPool), listening on
/// all addresses", and the iplisten fix.
fn http_sys_words(
    req: &SockSpec,
    ev: &Event,
    holder: &SockSpec,
    table: &HolderTable,
    http: Option<&HttpSys>,
) -> (String, String) {
    let h = endpoint(holder.addr, holder.port);
    let r = endpoint(req.addr, req.port);
    let mut behalf = Vec::new();
    let mut urls = Vec::new();
    for reg in http
        .map(|x| x.urls_on_port(holder.port))
        .unwrap_or_default()
    {
        urls.push(reg.url.clone());
        // A worker process names its app pool; on IIS 7 and later the
        // registration itself comes from the WWW service in a svchost,
        // named by its services.
        let who = match table.process(reg.pid) {
            Some(p) => match (app_pool(&p.cmdline), &p.unit) {
                (Some(pool), _) => format!("{} (pid {}, app pool {pool})", p.comm, p.pid),
                (None, Some(services)) => {
                    format!("{} (pid {}, services {services})", p.comm, p.pid)
                }
                (None, None) => format!("{} (pid {})", p.comm, p.pid),
            },
            None => format!("pid {}", reg.pid),
        };
        if !behalf.contains(&who) {
            behalf.push(who);
        }
    }
    let on_behalf = if behalf.is_empty() {
        "for the URLs registered on the port".to_owned()
    } else {
        format!("on behalf of {}", behalf.join(", "))
    };
    let all = http.is_none_or(HttpSys::listens_on_all);
    let scope = if all {
        "listening on all addresses (its IP listen list is empty)".to_owned()
    } else {
        let list: Vec<String> = http
            .map(|x| x.listen_list.iter().map(|a| a.to_string()).collect())
            .unwrap_or_default();
        format!("listening on its IP listen list ({})", list.join(", "))
    };
    let mut explanation = format!("http.sys {on_behalf}, {scope}: {h} covers {r}");
    if !urls.is_empty() {
        explanation.push_str(&format!(" (URLs {})", urls.join(", ")));
    }
    let hint = if all && req.addr.is_unspecified() {
        format!(
            "http.sys holds port {} on every address for IIS: give IIS and {} one address each \
             (`netsh http add iplisten ipaddress=IIS_ADDRESS`, then `net stop http /y` and \
             `net start w3svc`), and bind {} to its own address instead of the wildcard",
            req.port, ev.comm, ev.comm
        )
    } else if all {
        format!(
            "add an iplisten entry for the address IIS needs (`netsh http add iplisten \
             ipaddress=ADDRESS` for each address IIS serves, not {}; then `net stop http /y` and \
             `net start w3svc`): http.sys then leaves {} to {}",
            req.addr, req.addr, ev.comm
        )
    } else {
        format!(
            "remove {} from http.sys's listen list (`netsh http delete iplisten \
             ipaddress={}`), or bind {} to another address",
            holder.addr, holder.addr, ev.comm
        )
    };
    (explanation, hint)
}

/// The code Windows Media Services shows for this failure, when it is the
/// one that failed.
fn media_services_code(table: &HolderTable, ev: &Event) -> Option<&'static str> {
    let is_wms = |s: &str| s.to_ascii_lowercase().contains("wmserver");
    let p = table.process(ev.pid);
    (is_wms(&ev.comm) || p.is_some_and(|p| p.unit.as_deref().is_some_and(is_wms)))
        .then_some("Windows Media Services reports it as 0xC00D158B (NS_E_PORT_IN_USE_HTTP)")
}

fn blame_all<'a>(
    table: &HolderTable,
    ev: &Event,
    req: &SockSpec,
    req_v6only_known: bool,
    http: Option<&HttpSys>,
    candidates: impl Iterator<Item = &'a Holder>,
) -> Vec<Blame> {
    let mut blames: Vec<Blame> = candidates
        .filter_map(|h| {
            let (reason, certain, explanation, hint) = match table.rules {
                RuleSet::Linux => {
                    let (reason, certain) = judge(req, req_v6only_known, h)?;
                    (
                        reason,
                        certain,
                        reason.explain(req, &h.spec()),
                        reason.hint().to_owned(),
                    )
                }
                RuleSet::Windows => judge_windows(req, ev, h, table, http)?,
            };
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
    let http = match table.rules {
        RuleSet::Windows => facts.http_sys(),
        RuleSet::Linux => None,
    };
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
    if table.rules == RuleSet::Windows
        && let Some(code) = media_services_code(table, ev)
    {
        summary.push_str(&format!("; {code}"));
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

/// Windows's WSAEACCES: another account's socket refused by socket
/// security, or a port Windows keeps for itself.
/// How a summary names the first holder blamed.
fn blamed_label(b: &Blame, ev: &Event) -> String {
    if b.reason == Reason::HttpSys {
        "http.sys (pid 4, System)".to_owned()
    } else if b.holder.owners.iter().any(|p| p.pid == ev.pid) {
        format!("its own process, {}", b.holder.owner_label())
    } else {
        b.holder.owner_label()
    }
}

fn denied_windows(table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let req = request(ev);
    let http = facts.http_sys();
    let blames = match ev.netns_cookie {
        Some(ns) => blame_all(
            table,
            ev,
            &req,
            false,
            http.as_ref(),
            table.on_port((ns, ev.proto, ev.port)),
        ),
        None => Vec::new(),
    };
    let ep = endpoint(ev.addr, ev.port);
    if let Some(first) = blames.first() {
        let mut d = Diagnosis::new(
            DiagnosisKind::Conflict,
            format!(
                "{} {ep} is refused because of {} on {}: {}",
                ev.proto,
                blamed_label(first, ev),
                first.holder.endpoint,
                first.explanation
            ),
        );
        d.hint = Some(first.hint.clone());
        d.holders = blames;
        return d;
    }
    if let Some(d) = facts
        .ephemeral_ports(ev.netns_cookie, ev.tid, ev.proto)
        .and_then(|eph| excluded_port(ev, &eph))
    {
        return d;
    }
    let mut d = Diagnosis::new(
        DiagnosisKind::AccessDenied,
        format!(
            "permission denied binding {} {ep} (WSAEACCES), and no socket on the port explains it: \
             the port is likely in a range Windows excludes (Hyper-V, WinNAT and Docker reserve \
             ranges), or a firewall or filter driver refused it",
            ev.proto
        ),
    );
    d.hint = Some(
        "list the excluded ranges with `netsh int ipv4 show excludedportrange protocol=tcp`; \
         pick a port outside them, or reserve yours first (`netsh int ipv4 add \
         excludedportrange protocol=tcp startport=PORT numberofports=1`)"
            .to_owned(),
    );
    d
}

/// Windows: the bind's port inside a range a system component excluded
/// (Hyper-V, WinNAT and Docker take blocks of ports at boot), which no
/// other program may bind: WSAEACCES with no socket on the port.
pub(super) fn excluded_port(ev: &Event, eph: &EphemeralPorts) -> Option<Diagnosis> {
    let (a, b) = eph.excluded_range(ev.port)?;
    let proto = ev.proto.as_str();
    let mut d = Diagnosis::new(
        DiagnosisKind::AccessDenied,
        format!(
            "{proto} port {} lies in the excluded port range {a}-{b}, which a system component \
             (Hyper-V, WinNAT or Docker) took for itself: no other program may bind there \
             (WSAEACCES)",
            ev.port
        ),
    );
    d.hint = Some(format!(
        "use a port outside the excluded ranges (`netsh int ipv4 show excludedportrange \
         protocol={proto}`), or claim this one before the component does: `net stop winnat`, \
         `netsh int ipv4 add excludedportrange protocol={proto} startport={} numberofports=1 \
         store=persistent`, `net start winnat` (an administered exclusion stays bindable)",
        ev.port
    ));
    Some(d)
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
            match rules {
                RuleSet::Linux => "network namespace",
                RuleSet::Windows => "host",
            },
            list
        ),
    );
    d.hint = Some(match rules {
        RuleSet::Linux => "bind one of those addresses or the wildcard, add the address to an \
             interface (`ip addr add`), or set net.ipv4.ip_nonlocal_bind=1 / IP_FREEBIND to bind \
             before it exists"
            .to_owned(),
        RuleSet::Windows => "bind one of those addresses or the wildcard, or add the address to \
             an adapter (`netsh interface ipv4 add address`)"
            .to_owned(),
    });
    d.addresses = addrs;
    d
}
