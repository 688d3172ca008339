//! The owner behind http.sys (pid 4, System): the URLs registered on the
//! port and who registered them (an IIS worker names its app pool; on IIS 7
//! and later the WWW service's svchost registers, named by its services),
//! and the IP listen list that says which addresses http.sys takes.

use crate::etw::httpsys::{HttpSys, app_pool};

/// A registering process as the host knows it.
pub struct Registrant {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// The services a svchost hosts.
    pub services: Option<String>,
}

/// Whom http.sys holds a port for.
pub struct HttpSysOwner {
    /// "w3wp.exe (pid 5120, app pool DefaultAppPool)", or "pid 1460" when
    /// the process is not known; each once.
    pub on_behalf: Vec<String>,
    /// The URLs registered on the port.
    pub urls: Vec<String>,
    /// http.sys listens on every address (its IP listen list is empty, or
    /// its state is unknown).
    pub all_addresses: bool,
    /// The IP listen list, when it is not empty.
    pub listen_list: Vec<String>,
}

/// Who http.sys holds `port` for, from its state and the processes the
/// host knows.
pub fn resolve(
    http: Option<&HttpSys>,
    port: u16,
    process: impl Fn(u32) -> Option<Registrant>,
) -> HttpSysOwner {
    let mut on_behalf = Vec::new();
    let mut urls = Vec::new();
    for reg in http.map(|x| x.urls_on_port(port)).unwrap_or_default() {
        urls.push(reg.url.clone());
        let who = match process(reg.pid) {
            Some(p) => match (app_pool(&p.cmdline), &p.services) {
                (Some(pool), _) => format!("{} (pid {}, app pool {pool})", p.comm, p.pid),
                (None, Some(services)) => {
                    format!("{} (pid {}, services {services})", p.comm, p.pid)
                }
                (None, None) => format!("{} (pid {})", p.comm, p.pid),
            },
            None => format!("pid {}", reg.pid),
        };
        if !on_behalf.contains(&who) {
            on_behalf.push(who);
        }
    }
    let all_addresses = http.is_none_or(HttpSys::listens_on_all);
    let listen_list = match http {
        Some(x) if !all_addresses => x.listen_list.iter().map(|a| a.to_string()).collect(),
        _ => Vec::new(),
    };
    HttpSysOwner {
        on_behalf,
        urls,
        all_addresses,
        listen_list,
    }
}
