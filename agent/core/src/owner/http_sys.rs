//! The owner behind http.sys (pid 4, System): the IIS sites whose bindings
//! claim the port (from `iis`), their app pools, the URLs registered on
//! the port and who registered them (an IIS worker names its app pool; on
//! IIS 7 and later the WWW service's svchost registers, named by its
//! services; a request queue with no worker is an idle app pool), and the
//! IP listen list that says which addresses http.sys takes.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::iis::{IisConfig, SiteClaim};
use crate::etw::httpsys::{HttpSys, app_pool};

/// What the resolver reads: http.sys's state (from ETW, netsh and the HTTP
/// Server API) and, where IIS is installed, its sites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpSysState {
    pub http: HttpSys,
    /// applicationHost.config's sites; None without IIS.
    pub iis: Option<Arc<IisConfig>>,
}

/// A registering process as the host knows it.
pub struct Registrant {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// The services a svchost hosts.
    pub services: Option<String>,
}

/// Whom http.sys holds a port for.
pub struct HttpSysOwner<'a> {
    /// The IIS sites whose bindings claim the port, started ones first
    /// (none when IIS's configuration was not read or no binding claims it).
    pub sites: Vec<SiteClaim<'a>>,
    /// "w3wp.exe (pid 5120, app pool DefaultAppPool)", "app pool Shop (no
    /// worker running)", or "pid 1460" when the process is not known; each
    /// once.
    pub on_behalf: Vec<String>,
    /// The URLs registered on the port.
    pub urls: Vec<String>,
    /// http.sys listens on every address (its IP listen list is empty, or
    /// its state is unknown).
    pub all_addresses: bool,
    /// The IP listen list, when it is not empty.
    pub listen_list: Vec<String>,
}

/// Who http.sys holds `port` (its socket on `addr`) for, from its state,
/// IIS's configuration and the processes the host knows.
pub fn resolve<'a>(
    state: Option<&'a HttpSysState>,
    addr: IpAddr,
    port: u16,
    process: impl Fn(u32) -> Option<Registrant>,
) -> HttpSysOwner<'a> {
    let http = state.map(|s| &s.http);
    let mut on_behalf = Vec::new();
    let mut urls = Vec::new();
    for reg in http.map(|x| x.urls_on_port(port)).unwrap_or_default() {
        urls.push(reg.url.clone());
        let pool = reg.queue.as_deref();
        let who = match (reg.pid, process(reg.pid)) {
            (0, _) => match pool {
                Some(pool) => format!("app pool {pool} (no worker process running)"),
                None => continue,
            },
            (_, Some(p)) => match (app_pool(&p.cmdline).as_deref().or(pool), &p.services) {
                (Some(pool), _) => format!("{} (pid {}, app pool {pool})", p.comm, p.pid),
                (None, Some(services)) => {
                    format!("{} (pid {}, services {services})", p.comm, p.pid)
                }
                (None, None) => format!("{} (pid {})", p.comm, p.pid),
            },
            (pid, None) => match pool {
                Some(pool) => format!("pid {pid} (app pool {pool})"),
                None => format!("pid {pid}"),
            },
        };
        if !on_behalf.contains(&who) {
            on_behalf.push(who);
        }
    }
    let sites = state
        .and_then(|s| s.iis.as_deref())
        .map(|c| c.claims(port, Some(addr)))
        .unwrap_or_default();
    let all_addresses = http.is_none_or(HttpSys::listens_on_all);
    let listen_list = match http {
        Some(x) if !all_addresses => x.listen_list.iter().map(|a| a.to_string()).collect(),
        _ => Vec::new(),
    };
    HttpSysOwner {
        sites,
        on_behalf,
        urls,
        all_addresses,
        listen_list,
    }
}

/// Whom http.sys holds a socket for, as a holder's view carries it (`who`,
/// the API, the timeline): the words of [`HttpSysOwner`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpSysView {
    /// `IIS site 'Default Web Site' (app pool DefaultAppPool), binding *:80:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Who registered the port's URLs (or the idle app pool that owns them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registered_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// http.sys's IP listen list; empty: every address.
    pub listen_list: Vec<String>,
    /// How to free an address of the port for another server.
    pub fix: String,
}

impl HttpSysOwner<'_> {
    /// The view of a holder of port `port` on `addr`.
    pub fn view(&self, addr: IpAddr, port: u16) -> HttpSysView {
        let fix = match (self.sites.first(), self.all_addresses) {
            (Some(s), true) => format!(
                "to leave other addresses of port {port} to another server: {}, then add that \
                 address to http.sys's listen list (`netsh http add iplisten \
                 ipaddress=IIS_ADDRESS`; then `net stop http /y` and `net start w3svc`)",
                s.rebind("IIS_ADDRESS")
            ),
            (None, true) => format!(
                "to leave other addresses of port {port} to another server: `netsh http add \
                 iplisten ipaddress=ADDRESS` for each address IIS serves (then `net stop http /y` \
                 and `net start w3svc`)"
            ),
            (_, false) => format!(
                "to free {addr}: `netsh http delete iplisten ipaddress={addr}`, and move the \
                 bindings that use it"
            ),
        };
        HttpSysView {
            sites: self.sites.iter().map(SiteClaim::label).collect(),
            registered_by: self.on_behalf.clone(),
            urls: self.urls.clone(),
            listen_list: self.listen_list.clone(),
            fix,
        }
    }
}
