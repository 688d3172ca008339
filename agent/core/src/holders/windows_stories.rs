//! The Windows stories of the brief, end to end without Windows: ETW
//! records shaped as ferrisetw yields them go through the joiner, the
//! events into the holder table, and the failed bind through the Windows
//! rules.

use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::conflict::{Reason, RuleSet};
use crate::etw::manifest;
use crate::etw::record::Value::{self, Str, U64};
use crate::etw::status::{STATUS_ACCESS_DENIED, STATUS_ADDRESS_ALREADY_EXISTS};
use crate::etw::{EtwProvider, EtwRecord, HttpSys, Joiner};
use crate::owner::http_sys::HttpSysState;
use crate::owner::iis::IisConfig;

const T0: u64 = 1_700_000_000_000_000_000;
const W3WP: u32 = 2120;
/// The svchost that hosts W3SVC and WAS.
const W3SVC: u32 = 1460;

struct Facts(HttpSys, Option<EphemeralPorts>, Option<Arc<IisConfig>>);

impl HostFacts for Facts {
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
    ) -> Option<(Vec<Holder>, Vec<ProcessInfo>)> {
        None
    }
    fn http_sys(&mut self) -> Option<HttpSys> {
        Some(self.0.clone())
    }
    fn iis(&mut self) -> Option<Arc<IisConfig>> {
        self.2.clone()
    }
    fn ephemeral_ports(&mut self, _: Option<u64>, _: u32, _: Proto) -> Option<EphemeralPorts> {
        self.1.clone()
    }
}

/// A Windows host: the joiner and the table it feeds.
struct Host {
    joiner: Joiner,
    table: HolderTable,
    t: u64,
    next_endpoint: u64,
    /// What netsh says of the dynamic range and exclusions.
    ports: Option<EphemeralPorts>,
    /// IIS's applicationHost.config, when the story has IIS 7 or later.
    iis: Option<Arc<IisConfig>>,
}

impl Host {
    fn new() -> Self {
        let mut table = HolderTable::new();
        table.rules = RuleSet::Windows;
        Self {
            joiner: Joiner::new(),
            table,
            t: T0,
            next_endpoint: 0xffff_a28c_5e3f_7000,
            ports: None,
            iis: None,
        }
    }

    /// A record as the session reads it, built from the manifest's
    /// template (`etw::manifest`).
    fn rec(&mut self, p: EtwProvider, id: u16, pid: u32, values: &[(&str, Value)]) -> EtwRecord {
        let t = self.tick();
        manifest::record(p, id, pid, t, values)
    }

    /// The next record's time.
    fn tick(&mut self) -> u64 {
        self.t += 1_000;
        self.t
    }

    /// Feeds records; returns the events, named as the Windows session
    /// names them (image name from the process cache).
    fn feed(&mut self, recs: Vec<EtwRecord>, comm: &str) -> Vec<Event> {
        let mut out = Vec::new();
        for r in &recs {
            crate::etw::manifest::check(r);
            self.joiner.on_record(r, &mut out).unwrap();
        }
        let evs: Vec<Event> = out
            .iter()
            .map(|r| crate::testing::event(&crate::testing::with_comm(*r, comm)))
            .collect();
        for e in &evs {
            self.table.apply(e);
        }
        evs
    }

    fn process(&mut self, pid: u32, comm: &str, cmdline: &str, service: Option<&str>) {
        self.table.set_process(ProcessInfo {
            pid,
            comm: comm.into(),
            cmdline: cmdline.into(),
            unit: service.map(str::to_owned),
            ..ProcessInfo::default()
        });
    }

    /// A user-mode server: create, bind (enter, exit) and, when it worked
    /// and `listen`, listen. Returns the bind's event.
    fn bind(&mut self, pid: u32, comm: &str, addr: &str, status: u32, listen: bool) -> Event {
        self.next_endpoint += 0x10;
        let ep = self.next_endpoint;
        let mut recs = vec![
            manifest::afd_create(ep, pid, self.tick()),
            manifest::afd_bind(ep, pid, self.tick(), true, addr, 0),
        ];
        if status != 0 {
            // TCPIP logs the failure inside the bind, before AFD's exit.
            recs.push(manifest::tcp_bind_failure(self.tick(), addr, status));
        }
        recs.push(manifest::afd_bind(
            ep,
            pid,
            self.tick(),
            false,
            addr,
            status,
        ));
        if status == 0 && listen {
            recs.push(manifest::afd_listen(ep, pid, self.tick(), 200));
        }
        let evs = self.feed(recs, comm);
        evs.into_iter().find(|e| e.kind == EventKind::Bind).unwrap()
    }

    /// IIS 7 and later: the WWW service (W3SVC and WAS, in a svchost)
    /// registers the site's URL with http.sys, which listens on 0.0.0.0:80
    /// (a kernel-mode listener, seen by TCPIP only); the worker process
    /// w3wp.exe serves the requests.
    fn iis(&mut self) {
        self.process(
            W3WP,
            "w3wp.exe",
            r#"c:\windows\system32\inetsrv\w3wp.exe -ap "DefaultAppPool" -v "v4.0""#,
            None,
        );
        self.process(
            W3SVC,
            "svchost.exe",
            r"C:\Windows\system32\svchost.exe -k iissvcs",
            Some("W3SVC, WAS"),
        );
        let recs = vec![
            self.rec(
                EtwProvider::HttpService,
                31,
                W3SVC,
                &[
                    ("UrlGroupId", U64(0xFF00_0000_4000_0001)),
                    ("Url", Str("http://*:80/".into())),
                ],
            ),
            self.http_sys_listener("0.0.0.0:80"),
        ];
        self.feed(recs, "System");
    }

    /// TCPIP's record of a listener http.sys (pid 4) activated.
    fn http_sys_listener(&mut self, addr: &str) -> EtwRecord {
        manifest::tcp_listener(1123, 4, self.tick(), addr, 0)
    }

    /// A bind that fails with `status`, and its diagnosis.
    fn fails(
        &mut self,
        pid: u32,
        comm: &str,
        addr: &str,
        status: u32,
        listen: bool,
    ) -> (Event, Diagnosis) {
        let ev = self.bind(pid, comm, addr, status, listen);
        let d = self.diagnose(&ev);
        (ev, d)
    }

    fn diagnose(&mut self, ev: &Event) -> Diagnosis {
        let mut facts = Facts(
            self.joiner.http.clone(),
            self.ports.clone(),
            self.iis.clone(),
        );
        diagnose(&self.table, ev, &mut facts).expect("a diagnosis")
    }
}

#[test]
fn iis_http_sys_on_every_address_blocks_a_second_web_server_and_the_fix_is_iplisten() {
    let mut h = Host::new();
    h.iis();
    let ev = h.bind(
        5000,
        "httpd.exe",
        "10.0.0.6:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(ev.error, Some("EADDRINUSE"));
    assert_eq!(ev.pid, 5000);
    let d = h.diagnose(&ev);
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(d.holders.len(), 1);
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert_eq!(d.holders[0].holder.owners[0].pid, 4);
    assert_eq!(
        d.summary,
        "tcp 10.0.0.6:80 is blocked by http.sys (pid 4, System) on 0.0.0.0:80: http.sys on \
         behalf of svchost.exe (pid 1460, services W3SVC, WAS), listening on all addresses \
         (its IP listen list is empty): 0.0.0.0:80 covers 10.0.0.6:80 (URLs http://*:80/); \
         Microsoft's sharing table gives WSAEACCES for this bind on current Windows, this host \
         answered WSAEADDRINUSE"
    );
    assert!(
        !d.holders[0].certain,
        "the table does not give this error here"
    );
    let hint = d.hint.unwrap();
    assert!(
        hint.starts_with("add an iplisten entry for the address IIS needs (`netsh http add iplisten ipaddress=ADDRESS`"),
        "{hint}"
    );
    assert!(
        hint.ends_with("http.sys then leaves 10.0.0.6 to httpd.exe"),
        "{hint}"
    );
}

/// The same on current Windows, as Microsoft's sharing table gives it: a
/// specific address beside http.sys's wildcard fails the security check
/// (http.sys's kernel socket has a descriptor that allows no sharing).
#[test]
fn iis_story_as_the_sharing_table_gives_it_is_wsaeacces_with_the_same_fix() {
    let mut h = Host::new();
    h.iis();
    let ev = h.bind(5000, "httpd.exe", "10.0.0.6:80", STATUS_ACCESS_DENIED, true);
    assert_eq!(ev.error, Some("EACCES"));
    let d = h.diagnose(&ev);
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert_eq!(
        d.summary,
        "tcp 10.0.0.6:80 is refused because of http.sys (pid 4, System) on 0.0.0.0:80: http.sys \
         on behalf of svchost.exe (pid 1460, services W3SVC, WAS), listening on all addresses \
         (its IP listen list is empty): 0.0.0.0:80 covers 10.0.0.6:80 (URLs http://*:80/)"
    );
    // Certain only if http.sys's options were known: with SO_REUSEADDR on
    // both sockets the table lets a specific address share the wildcard.
    assert!(!d.holders[0].certain);
    assert!(d.hint.unwrap().contains("netsh http add iplisten"));
}

/// A second server binding the wildcard (Apache's `Listen 80`) beside
/// http.sys's wildcard: WSAEADDRINUSE, as the table gives it.
#[test]
fn a_wildcard_bind_beside_http_sys_is_wsaeaddrinuse_and_names_it() {
    let mut h = Host::new();
    h.iis();
    let (_, d) = h.fails(
        5000,
        "httpd.exe",
        "0.0.0.0:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert!(!d.summary.contains("sharing table"), "{}", d.summary);
}

/// http.sys on one address only (an iplisten entry): a non-exclusive
/// wildcard bind beside it succeeds by the table, so a failed one is not
/// certainly its doing.
#[test]
fn a_failed_wildcard_bind_beside_a_specific_http_sys_listener_is_not_certain() {
    let mut h = Host::new();
    h.process(W3WP, "w3wp.exe", "w3wp.exe -ap DefaultAppPool", None);
    let recs = vec![h.http_sys_listener("10.0.0.5:80")];
    h.feed(recs, "System");
    let (_, d) = h.fails(
        5000,
        "httpd.exe",
        "0.0.0.0:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert!(!d.holders[0].certain);
    assert!(
        d.summary.ends_with("only if httpd.exe asked for SO_EXCLUSIVEADDRUSE, which shares the port with no other socket"),
        "{}",
        d.summary
    );
}

#[test]
fn with_an_iplisten_entry_http_sys_leaves_the_other_address_free() {
    let mut h = Host::new();
    h.process(W3WP, "w3wp.exe", "w3wp.exe -ap DefaultAppPool", None);
    let recs = vec![
        h.rec(
            EtwProvider::HttpService,
            19,
            4,
            &manifest::addr("IpAddress", "IpAddrLength", "10.0.0.5:0"),
        ),
        h.http_sys_listener("10.0.0.5:80"),
    ];
    h.feed(recs, "System");
    assert_eq!(
        h.joiner.http.listen_list,
        vec!["10.0.0.5".parse::<IpAddr>().unwrap()]
    );
    // Another server on 10.0.0.6 now binds; one on 10.0.0.5 still fails,
    // and the answer names the listen list.
    let ok = h.bind(5000, "httpd.exe", "10.0.0.6:80", 0, true);
    assert_eq!(ok.errno, 0);
    let (_, d) = h.fails(
        5001,
        "httpd.exe",
        "10.0.0.5:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        false,
    );
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert!(
        d.summary
            .contains("listening on its IP listen list (10.0.0.5)"),
        "{}",
        d.summary
    );
    assert!(
        d.hint
            .unwrap()
            .contains("netsh http delete iplisten ipaddress=10.0.0.5")
    );
}

/// The web service's HTTP listener on `port`, then its SSL listener on the
/// same port, which fails: the service blocks itself.
fn ssl_port_fails(h: &mut Host, port: u16) -> Diagnosis {
    h.process(
        900,
        "inetinfo.exe",
        r"C:\WINNT\System32\inetsrv\inetinfo.exe",
        Some("W3SVC"),
    );
    let addr = format!("0.0.0.0:{port}");
    let http = h.bind(900, "inetinfo.exe", &addr, 0, true);
    assert_eq!(http.errno, 0);
    let (_, d) = h.fails(
        900,
        "inetinfo.exe",
        &addr,
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(d.holders[0].reason, Reason::ReuseAddrNotShared);
    let own = format!("tcp {addr} is blocked by its own process, inetinfo.exe (pid 900");
    assert!(d.summary.starts_with(&own), "{}", d.summary);
    assert!(
        d.summary
            .contains("Windows shares an address only when both sockets set SO_REUSEADDR"),
        "{}",
        d.summary
    );
    d
}

#[test]
fn an_ssl_port_equal_to_the_http_port_blocks_the_service_itself() {
    let d = ssl_port_fails(&mut Host::new(), 80);
    assert_eq!(
        d.hint.as_deref(),
        Some(
            "inetinfo.exe already holds port 80 itself: two of its listeners (HTTP and SSL?) are \
             set to the same port; give each its own"
        )
    );
}

/// Windows Media Services (a svchost) binding port 80 beside IIS.
fn media_services_fails(h: &mut Host) -> Diagnosis {
    h.iis();
    h.process(
        3300,
        "svchost.exe",
        r"C:\Windows\system32\svchost.exe -k WMServer",
        Some("WMServer"),
    );
    let (_, d) = h.fails(
        3300,
        "svchost.exe",
        "0.0.0.0:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert!(
        d.summary
            .ends_with("; Windows Media Services reports it as 0xC00D158B (NS_E_PORT_IN_USE_HTTP)"),
        "{}",
        d.summary
    );
    d
}

#[test]
fn windows_media_services_beside_iis_is_0xc00d158b() {
    let d = media_services_fails(&mut Host::new());
    assert!(
        d.summary
            .contains("http.sys on behalf of svchost.exe (pid 1460, services W3SVC, WAS)"),
        "{}",
        d.summary
    );
    let hint = d.hint.unwrap();
    assert!(
        hint.contains("give IIS and svchost.exe one address each"),
        "{hint}"
    );
    assert!(
        hint.contains("netsh http add iplisten ipaddress=IIS_ADDRESS"),
        "{hint}"
    );
}

#[test]
fn a_stray_process_on_the_port_is_named_and_another_address_is_not_blamed() {
    let mut h = Host::new();
    h.bind(700, "stray.exe", "10.0.0.6:8080", 0, true);
    h.bind(701, "other.exe", "10.0.0.7:8080", 0, true);
    let (_, d) = h.fails(
        800,
        "nginx.exe",
        "10.0.0.6:8080",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    let pids: Vec<u32> = d.holders.iter().map(|b| b.holder.owners[0].pid).collect();
    assert_eq!(pids, vec![700]);
    assert_eq!(d.holders[0].reason, Reason::ReuseAddrNotShared);
}

#[test]
fn access_denied_with_no_holder_points_at_the_excluded_port_ranges() {
    let mut h = Host::new();
    let ev = h.bind(800, "node.exe", "0.0.0.0:50051", STATUS_ACCESS_DENIED, true);
    assert_eq!(ev.error, Some("EACCES"));
    let d = h.diagnose(&ev);
    assert_eq!(d.kind, DiagnosisKind::AccessDenied);
    assert!(
        d.hint
            .unwrap()
            .contains("netsh int ipv4 show excludedportrange protocol=tcp")
    );
}

/// netsh on a host where Hyper-V took 55500-55599 and an administrator
/// excluded 50000-50059.
fn netsh_ports() -> EphemeralPorts {
    EphemeralPorts::parse_netsh(
        "tcp",
        "Start Port      : 49152\nNumber of Ports : 16384\n",
        "Start Port    End Port\n----------    --------\n     50000       50059     *\n     \
         55500       55599\n\n* - Administered port exclusions.\n",
    )
    .unwrap()
}

#[test]
fn access_denied_inside_a_system_excluded_range_names_the_range() {
    let mut h = Host::new();
    h.ports = Some(netsh_ports());
    let ev = h.bind(800, "node.exe", "0.0.0.0:55555", STATUS_ACCESS_DENIED, true);
    let d = h.diagnose(&ev);
    assert_eq!(d.kind, DiagnosisKind::AccessDenied);
    assert!(
        d.summary.contains("excluded port range 55500-55599"),
        "{}",
        d.summary
    );
    assert!(d.hint.unwrap().contains("net stop winnat"));
    // An administered exclusion stays bindable: its refusal is not the
    // exclusion's, and the general sentence stands.
    let ev = h.bind(801, "node.exe", "0.0.0.0:50001", STATUS_ACCESS_DENIED, true);
    let d = h.diagnose(&ev);
    assert!(!d.summary.contains("excluded port range"), "{}", d.summary);
}

#[test]
fn check_refuses_a_port_in_a_system_excluded_range_before_binding() {
    let h = Host::new();
    let req = check::BindRequest {
        proto: Proto::Tcp,
        addr: "0.0.0.0".parse().unwrap(),
        port: 55510,
        reuseaddr: false,
        reuseport: false,
        v6only: false,
        uid: 0,
        netns: None,
    };
    let mut facts = Facts(HttpSys::default(), Some(netsh_ports()), None);
    let a = check::check(&h.table, &req, 0, &mut facts);
    assert!(!a.would_bind);
    assert_eq!(a.error.as_deref(), Some("EACCES"));
    assert!(a.summary.contains("excluded port range 55500-55599"));
    // Inside the dynamic range and free: it binds, with the warning.
    let req = check::BindRequest { port: 60000, ..req };
    let a = check::check(&h.table, &req, 0, &mut facts);
    assert!(a.would_bind);
    assert!(
        a.note
            .unwrap()
            .contains("tcp dynamic port range 49152-65535")
    );
}

#[test]
fn access_denied_by_another_accounts_wildcard_socket_names_it() {
    let mut h = Host::new();
    h.bind(700, "sqlservr.exe", "0.0.0.0:1433", 0, true);
    let ev = h.bind(800, "app.exe", "10.0.0.6:1433", STATUS_ACCESS_DENIED, true);
    let d = h.diagnose(&ev);
    assert_eq!(d.kind, DiagnosisKind::Conflict);
    assert_eq!(d.holders[0].holder.owners[0].pid, 700);
    assert_eq!(d.holders[0].reason, Reason::OtherAccount);
    assert!(!d.holders[0].certain, "accounts not read yet");
    // With both accounts read and different, the reason is the account.
    let mut account = |pid: u32, comm: &str, user: &str| {
        h.table.set_process(ProcessInfo {
            pid,
            comm: comm.into(),
            user: Some(user.into()),
            ..ProcessInfo::default()
        })
    };
    account(700, "sqlservr.exe", r"NT SERVICE\MSSQLSERVER");
    account(800, "app.exe", r"CONTOSO\alice");
    let d = h.diagnose(&ev);
    assert_eq!(d.holders[0].reason, Reason::OtherAccount);
    // Still not certain: no event says whether both sockets set
    // SO_REUSEADDR, with which the table lets the bind through.
    assert!(!d.holders[0].certain);
    assert!(
        d.summary
            .contains(r"sqlservr.exe (pid 700, NT SERVICE\MSSQLSERVER)"),
        "{}",
        d.summary
    );
}

#[test]
fn one_account_may_bind_a_specific_address_beside_its_own_wildcard() {
    let mut h = Host::new();
    h.bind(700, "svc.exe", "0.0.0.0:7000", 0, true);
    for (pid, comm) in [(700, "svc.exe"), (800, "svc2.exe")] {
        h.table.set_process(ProcessInfo {
            pid,
            comm: comm.into(),
            user: Some(r"NT AUTHORITY\SYSTEM".into()),
            ..ProcessInfo::default()
        });
    }
    // The security check passes for one account: WSAEACCES can only mean
    // the holder set SO_EXCLUSIVEADDRUSE, and the answer says so, unsure.
    let ev = h.bind(800, "svc2.exe", "10.0.0.6:7000", STATUS_ACCESS_DENIED, true);
    let d = h.diagnose(&ev);
    assert_eq!(d.holders[0].reason, Reason::ExclusiveHolder);
    assert!(!d.holders[0].certain);
}

#[test]
fn what_a_windows_holder_blocks_is_said_under_windows_rules() {
    let mut h = Host::new();
    h.iis();
    h.bind(700, "stray.exe", "10.0.0.6:8080", 0, true);
    h.bind(701, "any.exe", "0.0.0.0:9090", 0, true);
    let text = |port: u16| -> Vec<String> {
        let holder = h.table.iter().find(|x| x.port == port).unwrap();
        super::blocks_windows(holder)
    };
    assert_eq!(
        text(80),
        vec![
            "0.0.0.0:80 for every other server: http.sys (add iplisten entries to leave other addresses free)"
        ]
    );
    assert_eq!(
        text(8080),
        vec![
            "10.0.0.6:8080 unless both sockets set SO_REUSEADDR",
            "0.0.0.0:8080 (the wildcard) only for a socket asking SO_EXCLUSIVEADDRUSE"
        ]
    );
    assert!(
        text(9090)[1].starts_with("every other IPv4 address on tcp port 9090 for other accounts")
    );
}

impl Host {
    /// The host with IIS's configuration read: applicationHost.config as
    /// Microsoft documents it (`owner::iis`'s test file: the Default Web
    /// Site on every address's port 80 in DefaultAppPool, an intranet site
    /// on a host name of the same port, a Tickets site whose http and https
    /// bindings were set to one port, a stopped site).
    fn with_iis() -> Self {
        let mut h = Self::new();
        h.iis = Some(Arc::new(
            IisConfig::parse(crate::owner::iis::tests::CONFIG).unwrap(),
        ));
        h
    }
}

const DEFAULT_SITE: &str = "http.sys for IIS site 'Default Web Site' (app pool DefaultAppPool), \
     binding *:80: and IIS site 'Intranet' (app pool IntranetPool), binding *:80:intranet.contoso.com";
const REBIND_APPCMD: &str = "appcmd set site /site.name:\"Default Web Site\" \
     /bindings.[protocol='http',bindingInformation='*:80:'].bindingInformation:";

/// Story: IIS on every address blocks a second web server on one address;
/// the answer names the site, its app pool and binding, who registered
/// the URL, and the fix on the site's binding and the iplisten list.
#[test]
fn iis_story_names_the_site_its_app_pool_and_the_binding_to_change() {
    let mut h = Host::with_iis();
    h.iis();
    let (ev, d) = h.fails(
        5000,
        "httpd.exe",
        "10.0.0.6:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert_eq!(ev.error, Some("EADDRINUSE"));
    assert_eq!(d.holders[0].reason, Reason::HttpSys);
    assert_eq!(
        d.summary,
        format!(
            "tcp 10.0.0.6:80 is blocked by http.sys (pid 4, System) on 0.0.0.0:80: {DEFAULT_SITE}, \
             registered by svchost.exe (pid 1460, services W3SVC, WAS), listening on all \
             addresses (its IP listen list is empty): 0.0.0.0:80 covers 10.0.0.6:80 (URLs \
             http://*:80/); Microsoft's sharing table gives WSAEACCES for this bind on current \
             Windows, this host answered WSAEADDRINUSE"
        )
    );
    let hint = d.hint.unwrap();
    assert!(
        hint.starts_with(
            "add an iplisten entry for the address IIS needs (`netsh http add iplisten ipaddress=ADDRESS` for each address IIS serves, not 10.0.0.6;"
        ),
        "{hint}"
    );
    assert!(
        hint.contains(&format!(
            "give the site that address: change its binding *:80: to ADDRESS:80: (IIS Manager: \
             Sites > Default Web Site > Bindings, or `%windir%\\system32\\inetsrv\\{REBIND_APPCMD}ADDRESS:80:`)"
        )),
        "{hint}"
    );
    assert!(
        hint.ends_with("http.sys then leaves 10.0.0.6 to httpd.exe"),
        "{hint}"
    );

    // The same as WSAEACCES (the sharing table's answer): the same names.
    let (_, d) = h.fails(5001, "httpd.exe", "10.0.0.7:80", STATUS_ACCESS_DENIED, true);
    assert!(d.summary.contains(DEFAULT_SITE), "{}", d.summary);
    assert!(d.hint.unwrap().contains(REBIND_APPCMD));

    // A wildcard bind: one address each, the site moved to its own.
    let (_, d) = h.fails(
        5002,
        "httpd.exe",
        "0.0.0.0:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    let hint = d.hint.unwrap();
    assert!(
        hint.starts_with(
            "http.sys holds port 80 on every address for IIS site 'Default Web Site' (app pool \
             DefaultAppPool), binding *:80:: give IIS and httpd.exe one address each: change its \
             binding *:80: to IIS_ADDRESS:80:"
        ),
        "{hint}"
    );
    assert!(
        hint.contains("netsh http add iplisten ipaddress=IIS_ADDRESS"),
        "{hint}"
    );
    assert!(hint.ends_with("or move the site to another port"), "{hint}");
}

/// Story: Windows Media Services beside IIS: the code it shows, and the
/// site and app pool behind http.sys.
#[test]
fn media_services_story_names_the_iis_site_behind_http_sys() {
    let d = media_services_fails(&mut Host::with_iis());
    assert!(d.summary.contains(DEFAULT_SITE), "{}", d.summary);
    let hint = d.hint.unwrap();
    assert!(
        hint.contains("give IIS and svchost.exe one address each"),
        "{hint}"
    );
    assert!(hint.contains(REBIND_APPCMD), "{hint}");
    assert!(
        hint.contains("netsh http add iplisten ipaddress=IIS_ADDRESS"),
        "{hint}"
    );
}

#[test]
fn ssl_port_story_names_the_site_whose_http_and_https_bindings_share_the_port() {
    let d = ssl_port_fails(&mut Host::with_iis(), 8443);
    assert_eq!(
        d.hint.as_deref(),
        Some(
            "inetinfo.exe already holds port 8443 itself: IIS site 'Tickets' (app pool TicketsPool) \
             has an http and an https binding on port 8443 (*:8443: and *:8443:); give the https \
             binding its own port (IIS Manager: Sites > Tickets > Bindings, or \
             `%windir%\\system32\\inetsrv\\appcmd set site /site.name:\"Tickets\" \
             /bindings.[protocol='https',bindingInformation='*:8443:'].bindingInformation:*:443:`)"
        )
    );
}

/// An idle app pool (no w3wp running) keeps its URLs: netsh names the
/// queue, and the answer names the pool and the site.
#[test]
fn an_idle_app_pool_keeps_its_urls_and_is_named() {
    let mut h = Host::with_iis();
    let queues = crate::etw::httpsys::parse_request_queues(
        "Snapshot of HTTP service state (Request Queue View):\n\
         Request queue name: DefaultAppPool\n    Version: 2.0\n    State: Active\n    \
         Controller process ID: 1880\n    Process IDs:\n    URL groups:\n    \
         URL group ID: FF00000040000001\n        Registered URLs:\n            HTTP://*:80/\n",
    )
    .unwrap();
    h.joiner.http.add_request_queues(&queues, T0);
    assert_eq!(h.joiner.http.registrant_pids(), vec![1880]);
    let recs = vec![h.http_sys_listener("0.0.0.0:80")];
    h.feed(recs, "System");
    let (_, d) = h.fails(
        5000,
        "httpd.exe",
        "10.0.0.6:80",
        STATUS_ADDRESS_ALREADY_EXISTS,
        true,
    );
    assert!(
        d.summary.contains(&format!(
            "{DEFAULT_SITE}, registered by app pool DefaultAppPool (no worker process running)"
        )),
        "{}",
        d.summary
    );
    assert!(d.summary.contains("(URLs HTTP://*:80/)"), "{}", d.summary);
}

/// Reconciliation on Windows: a listener whose close was lost leaves the
/// table at the next snapshot, counted as drift; a socket bound before
/// its connect (the tables show it as a connection) stays.
#[test]
fn a_holder_whose_close_was_lost_is_removed_at_the_next_snapshot() {
    use crate::holders::ip_helper::{self, Row};
    let mut h = Host::new();
    h.bind(700, "stray.exe", "10.0.0.6:8080", 0, true);
    h.bind(701, "client.exe", "0.0.0.0:50000", 0, false);
    h.bind(702, "web.exe", "0.0.0.0:9090", 0, true);
    assert_eq!(h.table.len(), 3);
    // stray.exe exits; AFD's close never arrives. client.exe connected.
    let rows = [
        Row {
            proto: Proto::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port: 9090,
            state: SockState::Listen,
            pid: 702,
        },
        Row {
            proto: Proto::Tcp,
            addr: "10.0.0.9".parse().unwrap(),
            port: 50000,
            state: SockState::Established,
            pid: 701,
        },
    ];
    h.table.snapshot_begins();
    let r = h
        .table
        .reconcile(ip_helper::snapshot(h.t + 1, &rows, vec![]));
    assert_eq!((r.stale, r.missing, r.changed), (1, 0, 0), "{r:?}");
    assert_eq!(r.examples, ["tcp 10.0.0.6:8080 was gone"]);
    assert_eq!(h.table.stats().drift_stale, 1);
    let ports: Vec<u16> = {
        let mut v: Vec<u16> = h.table.iter().map(|x| x.port).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(ports, [9090, 50000]);
    // The next snapshot, with client.exe gone too, removes its holder.
    let r = h
        .table
        .reconcile(ip_helper::snapshot(h.t + 2, &rows[..1], vec![]));
    assert_eq!(r.stale, 1, "{r:?}");
    assert_eq!(h.table.len(), 1);
}

/// Options no Windows event carries are unknown in the table, not off.
#[test]
fn holders_learned_from_afd_have_unknown_options() {
    let mut h = Host::new();
    h.bind(700, "svc.exe", "0.0.0.0:7000", 0, true);
    let holder = h.table.iter().next().unwrap();
    assert_eq!(holder.reuseaddr, None);
}

/// The view of http.sys's socket (what `who` and the API show) names the
/// sites, their app pools and bindings, who registered the URL, and how to
/// free an address.
#[test]
fn the_view_of_http_sys_names_the_iis_sites_behind_it() {
    let mut h = Host::with_iis();
    h.iis();
    h.table.set_http_sys(Some(HttpSysState {
        http: h.joiner.http.clone(),
        iis: h.iis.clone(),
    }));
    let holder = h.table.iter().find(|x| x.port == 80).unwrap();
    let v = h.table.view(holder);
    let x = v.http_sys.expect("http.sys's owner");
    assert_eq!(
        x.sites,
        [
            "IIS site 'Default Web Site' (app pool DefaultAppPool), binding *:80:",
            "IIS site 'Intranet' (app pool IntranetPool), binding *:80:intranet.contoso.com"
        ]
    );
    assert_eq!(
        x.registered_by,
        ["svchost.exe (pid 1460, services W3SVC, WAS)"]
    );
    assert!(x.listen_list.is_empty());
    assert!(
        x.fix.starts_with(
            "to leave other addresses of port 80 to another server: change its binding *:80: to \
             IIS_ADDRESS:80:"
        ),
        "{}",
        x.fix
    );
    // Another process's socket carries no http.sys owner.
    h.bind(700, "stray.exe", "10.0.0.6:8080", 0, true);
    let stray = h.table.iter().find(|x| x.port == 8080).unwrap();
    assert!(h.table.view(stray).http_sys.is_none());
}
