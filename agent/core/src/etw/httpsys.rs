//! http.sys, as bindwatch understands it: the IP listen list (empty: every
//! address) and the URLs registered on each port with the process that
//! registered them. A socket held by PID 4 on an http.sys port is http.sys
//! listening on behalf of those processes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

/// The System process: kernel-mode listeners (http.sys) show under it.
pub const SYSTEM_PID: u32 = 4;
/// Most URL registrations remembered (oldest dropped past it).
pub const MAX_URLS: usize = 4096;
/// Most listen-list entries kept.
pub const MAX_LISTEN_ENTRIES: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UrlRegistration {
    pub url: String,
    /// The process that registered it (w3wp.exe for an IIS app pool, or
    /// the service hosting the URL group).
    pub pid: u32,
    pub group_id: u64,
    pub since_ns: u64,
    /// The request queue the URL's group is bound to, when netsh named it:
    /// for IIS, the app pool. A queue with no worker running (an idle
    /// pool) keeps its URLs with `pid` 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The queue's controller (WAS's svchost for IIS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HttpSys {
    /// The IP listen list. Empty: http.sys listens on every address of
    /// every port it serves.
    pub listen_list: Vec<IpAddr>,
    /// Whether the list was read (from the configuration or from events);
    /// false: not known, taken as empty (http.sys's default).
    pub listen_list_known: bool,
    /// By URL in lower case: http.sys matches prefixes without regard to
    /// case, and netsh prints them in capitals where events do not.
    pub urls: BTreeMap<String, UrlRegistration>,
}

impl HttpSys {
    pub fn add_url(&mut self, url: &str, pid: u32, group_id: u64, since_ns: u64) {
        self.add_registration(UrlRegistration {
            url: url.to_owned(),
            pid,
            group_id,
            since_ns,
            queue: None,
            controller: None,
        });
    }

    fn add_registration(&mut self, reg: UrlRegistration) {
        let key = reg.url.to_ascii_lowercase();
        let url = key.as_str();
        if self.urls.len() >= MAX_URLS
            && !self.urls.contains_key(url)
            && let Some(oldest) = self
                .urls
                .iter()
                .min_by_key(|(_, r)| r.since_ns)
                .map(|(k, _)| k.clone())
        {
            self.urls.remove(&oldest);
        }
        // A queue named before keeps its name when an event re-registers
        // the URL (events do not name queues).
        let (queue, controller) = match self.urls.get(url) {
            Some(old) if reg.queue.is_none() => (old.queue.clone(), old.controller),
            _ => (reg.queue.clone(), reg.controller),
        };
        self.urls.insert(
            key,
            UrlRegistration {
                queue,
                controller,
                ..reg
            },
        );
    }

    /// Every process a registration names (workers and controllers), for
    /// the daemon to read while they run.
    pub fn registrant_pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .urls
            .values()
            .flat_map(|r| [r.pid, r.controller.unwrap_or(0)])
            .filter(|&p| p != 0)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn remove_url(&mut self, url: &str) {
        self.urls.remove(&url.to_ascii_lowercase());
    }

    pub fn remove_group(&mut self, group_id: u64) {
        self.urls.retain(|_, r| r.group_id != group_id);
    }

    /// A listen-list entry read by http.sys (event 19, or the configuration).
    pub fn add_listen_entry(&mut self, ip: IpAddr) {
        self.listen_list_known = true;
        if !self.listen_list.contains(&ip) && self.listen_list.len() < MAX_LISTEN_ENTRIES {
            self.listen_list.push(ip);
        }
    }

    pub fn set_listen_list(&mut self, list: Vec<IpAddr>) {
        self.listen_list = list;
        self.listen_list.truncate(MAX_LISTEN_ENTRIES);
        self.listen_list_known = true;
    }

    pub fn listens_on_all(&self) -> bool {
        self.listen_list.is_empty()
    }

    /// Registrations whose URL is on `port`, oldest first.
    pub fn urls_on_port(&self, port: u16) -> Vec<&UrlRegistration> {
        let mut v: Vec<_> = self
            .urls
            .values()
            .filter(|r| url_port(&r.url) == Some(port))
            .collect();
        v.sort_by_key(|r| (r.since_ns, r.url.clone()));
        v
    }
}

/// One request queue from `netsh http show servicestate view=requestq`:
/// the registrations made before bindwatch started, which no event reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestQueue {
    pub name: String,
    /// The process that created the queue (WAS's svchost for IIS).
    pub controller: Option<u32>,
    pub pids: Vec<u32>,
    pub urls: Vec<String>,
}

/// How netsh names a queue created without a name (not an app pool).
const UNNAMED_QUEUE: &str = "Request queue is unnamed.";

/// Parses netsh's request-queue view; None when the text is not its
/// English form (another locale: registrations are then learned from
/// events only, and none is dropped for netsh's silence).
pub fn parse_request_queues(text: &str) -> Option<Vec<RequestQueue>> {
    if !text.contains("(Request Queue View)") && !text.contains("Request queue name:") {
        return None;
    }
    #[derive(PartialEq)]
    enum List {
        None,
        Pids,
        Urls,
    }
    let mut out: Vec<RequestQueue> = Vec::new();
    let mut list = List::None;
    for line in text.lines() {
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if !indented && let Some(name) = t.strip_prefix("Request queue name:") {
            out.push(RequestQueue {
                name: name.trim().to_owned(),
                ..RequestQueue::default()
            });
            list = List::None;
            continue;
        }
        let Some(q) = out.last_mut() else {
            continue;
        };
        if let Some(pid) = t.strip_prefix("Controller process ID:") {
            q.controller = pid.trim().parse().ok();
            list = List::None;
        } else if t.eq_ignore_ascii_case("Process IDs:") {
            list = List::Pids;
        } else if t.eq_ignore_ascii_case("Registered URLs:") {
            list = List::Urls;
        } else if list == List::Pids
            && let Ok(pid) = t.parse::<u32>()
        {
            q.pids.push(pid);
        } else if list == List::Urls && t.contains("://") {
            q.urls.push(t.to_owned());
        } else {
            list = List::None;
        }
    }
    Some(out)
}

impl HttpSys {
    /// Adds the registrations of netsh's request queues: each URL to the
    /// queue's first worker process, or to none (pid 0) when the queue has
    /// no worker (an idle IIS pool), with the queue's name and controller.
    /// A registration an event made keeps its process and gains the name.
    pub fn add_request_queues(&mut self, queues: &[RequestQueue], now_ns: u64) {
        for q in queues {
            let name = (!q.name.is_empty() && q.name != UNNAMED_QUEUE).then(|| q.name.clone());
            let pid = q.pids.first().copied().unwrap_or(0);
            for url in &q.urls {
                match self.urls.get_mut(&url.to_ascii_lowercase()) {
                    Some(old) => {
                        old.queue = name.clone().or(old.queue.take());
                        old.controller = q.controller.or(old.controller);
                        if old.pid == 0 {
                            old.pid = pid;
                        }
                    }
                    None => self.add_registration(UrlRegistration {
                        url: url.clone(),
                        pid,
                        group_id: 0,
                        since_ns: now_ns,
                        queue: name.clone(),
                        controller: q.controller,
                    }),
                }
            }
        }
    }

    /// Makes the registrations what netsh listed at `taken_ns`: a URL it
    /// no longer lists was removed while no event said so (its group or
    /// queue deleted, an event lost) and is dropped, unless an event
    /// registered it after netsh ran.
    pub fn refresh_request_queues(&mut self, queues: &[RequestQueue], taken_ns: u64) {
        let listed: std::collections::HashSet<String> = queues
            .iter()
            .flat_map(|q| q.urls.iter().map(|u| u.to_ascii_lowercase()))
            .collect();
        self.urls
            .retain(|key, r| r.since_ns >= taken_ns || listed.contains(key));
        self.add_request_queues(queues, taken_ns);
    }
}

/// The port of an http.sys URL prefix: `http://+:80/`, `https://*:443/app/`,
/// `http://www.example.com/` (80).
pub fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next().unwrap_or("");
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    // An IPv6 literal keeps its colons inside brackets.
    let after_host = match authority.rfind(']') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    match after_host.rsplit_once(':') {
        Some((_, p)) => p.parse().ok(),
        None => Some(default),
    }
}

/// The application pool of an IIS worker: `w3wp.exe -ap "DefaultAppPool" ...`.
pub fn app_pool(cmdline: &str) -> Option<String> {
    let mut words = cmdline.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("-ap") {
            let first = words.next()?;
            if let Some(stripped) = first.strip_prefix('"') {
                if let Some(done) = stripped.strip_suffix('"') {
                    return Some(done.to_owned());
                }
                let mut name = stripped.to_owned();
                for more in words.by_ref() {
                    name.push(' ');
                    if let Some(done) = more.strip_suffix('"') {
                        name.push_str(done);
                        return Some(name);
                    }
                    name.push_str(more);
                }
                return Some(name);
            }
            return Some(first.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ports() {
        assert_eq!(url_port("http://+:80/"), Some(80));
        assert_eq!(url_port("https://*:443/app/"), Some(443));
        assert_eq!(url_port("http://www.example.com/"), Some(80));
        assert_eq!(url_port("HTTPS://example.com/x"), Some(443));
        assert_eq!(url_port("http://[::1]:8080/"), Some(8080));
        assert_eq!(url_port("http://[::1]/"), Some(80));
        assert_eq!(url_port("ftp://x/"), None);
        assert_eq!(url_port("garbage"), None);
    }

    #[test]
    fn app_pools_from_worker_command_lines() {
        let c = r#"c:\windows\system32\inetsrv\w3wp.exe -ap "DefaultAppPool" -v "v4.0" -l "webengine4.dll""#;
        assert_eq!(app_pool(c).as_deref(), Some("DefaultAppPool"));
        assert_eq!(
            app_pool(r#"w3wp.exe -ap "My Pool" -v x"#).as_deref(),
            Some("My Pool")
        );
        assert_eq!(app_pool("w3wp.exe -ap Shop").as_deref(), Some("Shop"));
        assert_eq!(app_pool("nginx.exe"), None);
    }

    /// The shape of `netsh http show servicestate view=requestq` on an IIS host.
    const NETSH: &str = "
Snapshot of HTTP service state (Request Queue View):
-----------------------------------------------------

Request queue name: DefaultAppPool
    Version: 2.0
    State: Active
    Request queue 503 verbosity level: Basic
    Max requests: 1000
    Number of active processes attached: 1
    Controller process ID: 1880
    Process IDs:
        2120
    URL groups:
    URL group ID: FF00000040000001
        State: Active
        Request queue name: DefaultAppPool
        Number of registered URLs: 2
        Registered URLs:
            HTTP://*:80/
            HTTPS://*:443/

Request queue name: Request queue is unnamed.
    Version: 2.0
    State: Active
    Process IDs:
        3300
    URL groups:
    URL group ID: FE00000040000002
        Registered URLs:
            HTTP://+:5985/WSMAN/
";

    #[test]
    fn netsh_request_queues_give_the_registrations_made_before_start() {
        let qs = parse_request_queues(NETSH).unwrap();
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].name, "DefaultAppPool");
        assert_eq!(qs[0].pids, vec![2120]);
        assert_eq!(qs[0].urls, vec!["HTTP://*:80/", "HTTPS://*:443/"]);
        assert_eq!(qs[1].pids, vec![3300]);
        let mut h = HttpSys::default();
        h.add_request_queues(&qs, 5);
        assert_eq!(h.urls_on_port(80)[0].pid, 2120);
        assert_eq!(h.urls_on_port(443)[0].pid, 2120);
        assert_eq!(h.urls_on_port(5985)[0].pid, 3300);
        assert_eq!(
            parse_request_queues(
                "Momentaufnahme des HTTP-Dienststatus (Anforderungswarteschlangen)"
            ),
            None
        );
        assert_eq!(
            parse_request_queues("Snapshot of HTTP service state (Request Queue View):\n------\n"),
            Some(Vec::new()),
            "no queue at all is an answer"
        );
    }

    /// netsh's view read again: a queue deleted while no event said so
    /// takes its URLs; one an event registered after netsh ran stays; an
    /// event's registration keeps its process and gains the queue's name.
    #[test]
    fn request_queues_read_again_drop_what_netsh_no_longer_lists() {
        let qs = parse_request_queues(NETSH).unwrap();
        let mut h = HttpSys::default();
        h.add_url("http://*:80/", 1460, 0xFF00_0000_4000_0001, 1);
        h.add_request_queues(&qs, 5);
        let r = &h.urls_on_port(80)[0];
        assert_eq!((r.pid, r.queue.as_deref()), (1460, Some("DefaultAppPool")));
        assert_eq!(r.controller, Some(1880));
        assert_eq!(h.urls.len(), 3, "netsh's capitals are the event's URL");
        assert_eq!(h.registrant_pids(), [1460, 1880, 2120, 3300]);
        h.add_url("http://+:9000/", 700, 9, 50);
        // Only the DefaultAppPool queue is left at 40.
        let only_pool: Vec<RequestQueue> = qs.iter().take(1).cloned().collect();
        h.refresh_request_queues(&only_pool, 40);
        let mut left: Vec<&str> = h.urls.values().map(|r| r.url.as_str()).collect();
        left.sort();
        assert_eq!(left, ["HTTPS://*:443/", "http://*:80/", "http://+:9000/"]);
    }

    #[test]
    fn registrations_are_bounded_and_grouped() {
        let mut h = HttpSys::default();
        for i in 0..MAX_URLS + 10 {
            h.add_url(&format!("http://+:80/{i}/"), 100, 7, i as u64);
        }
        assert_eq!(h.urls.len(), MAX_URLS);
        assert!(!h.urls.contains_key("http://+:80/0/"));
        h.add_url("https://+:443/", 200, 9, 1);
        h.remove_group(7);
        assert_eq!(h.urls_on_port(443).len(), 1);
        assert!(h.urls_on_port(80).is_empty());
        assert!(h.listens_on_all());
        h.add_listen_entry("10.0.0.5".parse().unwrap());
        assert!(!h.listens_on_all());
    }
}
