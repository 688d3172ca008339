//! Windows's rules: the socket-sharing table (`crate::conflict::winsock`)
//! with every unknown option tried, http.sys's kernel sockets (whom it
//! holds the port for comes from `crate::owner::http_sys`), WSAEACCES (socket
//! security, excluded port ranges) and Windows Media Services' code.

use super::{Judged, PlatformRules, Verdict};
use crate::conflict::winsock::{self, WinOption};
use crate::conflict::{Overlap, Reason, SockSpec};
use crate::errno::EADDRINUSE;
use crate::etw::httpsys::SYSTEM_PID;
use crate::event::{Event, Proto, endpoint};
use crate::holders::diagnose::{blame_all, blamed_label, request};
use crate::holders::{Diagnosis, DiagnosisKind, EphemeralPorts, HolderTable, HostFacts};
use crate::owner::http_sys::{self, HttpSysState};

pub struct Windows;

impl PlatformRules for Windows {
    fn judge(&self, j: &Judged) -> Option<Verdict> {
        judge_windows(j)
    }

    fn denied(&self, table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
        denied(table, ev, facts)
    }

    fn excluded(&self, ev: &Event, eph: &EphemeralPorts) -> Option<Diagnosis> {
        excluded_port(ev, eph)
    }

    fn http_sys(&self, facts: &mut dyn HostFacts) -> Option<HttpSysState> {
        let http = facts.http_sys()?;
        Some(HttpSysState {
            http,
            iis: facts.iis(),
        })
    }

    fn conflict_note(&self, table: &HolderTable, ev: &Event) -> Option<&'static str> {
        media_services_code(table, ev)
    }

    fn address_scope(&self) -> &'static str {
        "host"
    }

    fn address_hint(&self) -> &'static str {
        "bind one of those addresses or the wildcard, or add the address to \
         an adapter (`netsh interface ipv4 add address`)"
    }
}

/// Judges one holder under Windows's rules. The options of Windows sockets
/// are not known (no event or table carries them), so every possibility is
/// tried; the error narrows them. http.sys is judged apart.
fn judge_windows(j: &Judged) -> Option<Verdict> {
    let (req, ev, h, table, http) = (j.req, j.ev, j.holder, j.table, j.http);
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
        return Some(Verdict {
            reason: Reason::HttpSys,
            certain,
            explanation,
            hint,
        });
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
        if let Some(site) = http
            .and_then(|x| x.iis.as_deref())
            .and_then(|c| c.http_and_https_on(h.port))
        {
            hint = format!(
                "{} already holds port {} itself: IIS site '{}' (app pool {}) has an http and an \
                 https binding on port {} ({} and {}); give the https binding its own port \
                 (IIS Manager: Sites > {} > Bindings, or `{}`)",
                ev.comm,
                h.port,
                site.site.name,
                site.site.app_pool,
                h.port,
                site.http.information,
                site.https.information,
                site.site.name,
                site.appcmd_https("443")
            );
        }
    }
    Some(Verdict {
        reason: v.reason,
        certain: v.certain,
        explanation: v.reason.explain(req, &spec),
        hint,
    })
}

/// "http.sys for IIS site 'Default Web Site' (app pool DefaultAppPool),
/// binding *:80:, registered by svchost.exe (...), listening on all
/// addresses", and the fix on the site's binding and the iplisten list.
fn http_sys_words(
    req: &SockSpec,
    ev: &Event,
    holder: &SockSpec,
    table: &HolderTable,
    http: Option<&HttpSysState>,
) -> (String, String) {
    let h = endpoint(holder.addr, holder.port);
    let r = endpoint(req.addr, req.port);
    let owner = http_sys::resolve(http, holder.addr, holder.port, |pid| {
        table.process(pid).map(crate::holders::registrant)
    });
    let on_behalf = match (owner.sites.is_empty(), owner.on_behalf.is_empty()) {
        (true, true) => "http.sys for the URLs registered on the port".to_owned(),
        (true, false) => format!("http.sys on behalf of {}", owner.on_behalf.join(", ")),
        (false, registrants_unknown) => {
            let sites: Vec<String> = owner.sites.iter().map(|s| s.label()).collect();
            let mut s = format!("http.sys for {}", sites.join(" and "));
            if !registrants_unknown {
                s.push_str(&format!(", registered by {}", owner.on_behalf.join(", ")));
            }
            s
        }
    };
    let all = owner.all_addresses;
    let scope = if all {
        "listening on all addresses (its IP listen list is empty)".to_owned()
    } else {
        format!(
            "listening on its IP listen list ({})",
            owner.listen_list.join(", ")
        )
    };
    let urls = owner.urls;
    let mut explanation = format!("{on_behalf}, {scope}: {h} covers {r}");
    if !urls.is_empty() {
        explanation.push_str(&format!(" (URLs {})", urls.join(", ")));
    }
    let restart = "then `net stop http /y` and `net start w3svc`";
    let site = owner.sites.first();
    let hint = match site {
        Some(s) if all && req.addr.is_unspecified() => format!(
            "http.sys holds port {} on every address for {}: give IIS and {} one address each: \
             {}, add that address to http.sys's listen list (`netsh http add iplisten \
             ipaddress=IIS_ADDRESS`; {restart}), and bind {} to its own address instead of the \
             wildcard; or move the site to another port",
            req.port,
            s.label(),
            ev.comm,
            s.rebind("IIS_ADDRESS"),
            ev.comm
        ),
        Some(s) if all => format!(
            "add an iplisten entry for the address IIS needs (`netsh http add iplisten \
             ipaddress=ADDRESS` for each address IIS serves, not {}; {restart}) and give the \
             site that address: {}; http.sys then leaves {} to {}",
            req.addr,
            s.rebind("ADDRESS"),
            req.addr,
            ev.comm
        ),
        None if all && req.addr.is_unspecified() => format!(
            "http.sys holds port {} on every address for IIS: give IIS and {} one address each \
             (`netsh http add iplisten ipaddress=IIS_ADDRESS`, {restart}), and bind {} to its \
             own address instead of the wildcard",
            req.port, ev.comm, ev.comm
        ),
        None if all => format!(
            "add an iplisten entry for the address IIS needs (`netsh http add iplisten \
             ipaddress=ADDRESS` for each address IIS serves, not {}; {restart}): http.sys then \
             leaves {} to {}",
            req.addr, req.addr, ev.comm
        ),
        _ => {
            let mut hint = format!(
                "remove {} from http.sys's listen list (`netsh http delete iplisten \
                 ipaddress={}`), or bind {} to another address",
                holder.addr, holder.addr, ev.comm
            );
            if let Some(s) = site {
                hint.push_str(&format!(
                    "; {} is served there: to keep it, {}",
                    s.label(),
                    s.rebind("ANOTHER_ADDRESS")
                ));
            }
            hint
        }
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

/// Windows's WSAEACCES: another account's socket refused by socket
/// security, or a port Windows keeps for itself.
fn denied(table: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let req = request(ev);
    let http = Windows.http_sys(facts);
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
fn excluded_port(ev: &Event, eph: &EphemeralPorts) -> Option<Diagnosis> {
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
