//! The stories of BRIEF.md that Linux can show, each run for real in a
//! network namespace of its own with real holders (nginx, socat, sockets of
//! this process), watched by a real `bindwatch trace --json`. Each asserts
//! the holder's pid(s), the reason code, and that no other holder is named.

use std::net::TcpListener;

use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};
use support::*;

/// A namespace with `lo` up and a veth pair carrying `addrs`.
fn netns_with(tag: &str, addrs: &[&str]) -> Netns {
    let ns = Netns::new(tag);
    if !addrs.is_empty() {
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        for a in addrs {
            ns.ip(&["addr", "add", a, "dev", "v0"]);
        }
        ns.ip(&["link", "set", "v0", "up"]);
        ns.ip(&["link", "set", "v1", "up"]);
    }
    ns
}

fn sock(addr: &str, ty: Type, reuseaddr: bool, reuseport: bool) -> Socket {
    let a: std::net::SocketAddr = addr.parse().unwrap();
    let s = Socket::new(Domain::for_address(a), ty, None).unwrap();
    s.set_reuse_address(reuseaddr).unwrap();
    s.set_reuse_port(reuseport).unwrap();
    s
}

fn bind(s: &Socket, addr: &str) -> std::io::Result<()> {
    s.bind(&SockAddr::from(
        addr.parse::<std::net::SocketAddr>().unwrap(),
    ))
}

/// The diagnosis of the only failed bind of `addr:port`.
fn only_diagnosis<'a>(events: &'a [Value], addr: &str, port: u64) -> &'a Value {
    let f = failures(events, addr, port);
    assert_eq!(f.len(), 1, "one failed bind of {addr}:{port}: {events:#?}");
    let d = &f[0]["diagnosis"];
    assert!(d.is_object(), "the failure has a diagnosis: {:#?}", f[0]);
    d
}

#[test]
fn story_1_nginx_on_the_wildcard_blocks_a_specific_address() {
    let ns = netns_with("s1", &["10.0.0.5/24", "10.0.0.6/24"]);
    // nginx starts before bindwatch: it is found in the kernel snapshot.
    let nginx = Server::nginx(&ns, &["0.0.0.0:80"], 80);
    let tracer = Tracer::start(&[]);
    let err = ns
        .run(|| TcpListener::bind("10.0.0.6:80").unwrap_err())
        .raw_os_error();
    assert_eq!(err, Some(libc::EADDRINUSE));
    let events = in_netns(&tracer.stop(), ns.cookie());
    let d = only_diagnosis(&events, "10.0.0.6", 80);
    assert_eq!(d["kind"], "conflict");
    // Master and worker share the listening socket: both are named.
    assert_eq!(
        blamed(d),
        vec![(nginx.family(), "wildcard_holder".to_owned())],
        "{d:#}"
    );
    assert!(d["holders"][0]["certain"].as_bool().unwrap());
    for o in d["holders"][0]["holder"]["owners"].as_array().unwrap() {
        assert_eq!(o["comm"], "nginx");
    }
    assert!(d["hint"].as_str().unwrap().contains("iplisten"), "{d:#}");
}

#[test]
fn story_2_dual_stack_holder_blocks_ipv4_unless_v6only() {
    let ns = netns_with("s2", &[]);
    let tracer = Tracer::start(&[]);
    let mut dual = Server::spawn(&ns, &["socat", "TCP6-LISTEN:443,ipv6only=0", "-"]);
    dual.wait_listening(&ns, 443);
    let mut v6 = Server::spawn(&ns, &["socat", "TCP6-LISTEN:8443,ipv6only=1", "-"]);
    v6.wait_listening(&ns, 8443);
    let (a, b) = ns.run(|| {
        (
            TcpListener::bind("0.0.0.0:443").map(|_| ()),
            TcpListener::bind("0.0.0.0:8443").map(|_| ()),
        )
    });
    assert_eq!(a.unwrap_err().raw_os_error(), Some(libc::EADDRINUSE));
    assert!(b.is_ok(), "IPV6_V6ONLY leaves IPv4 free");
    let events = in_netns(&tracer.stop(), ns.cookie());
    let d = only_diagnosis(&events, "0.0.0.0", 443);
    assert_eq!(
        blamed(d),
        vec![(vec![dual.pid], "dual_stack_holder".to_owned())],
        "{d:#}"
    );
    // bindwatch read the holder's IPV6_V6ONLY from the kernel: a certain verdict.
    assert!(d["holders"][0]["certain"].as_bool().unwrap(), "{d:#}");
    assert!(d["hint"].as_str().unwrap().contains("IPV6_V6ONLY"));
    assert!(failures(&events, "0.0.0.0", 8443).is_empty());
}

#[test]
fn story_3_one_process_binds_the_same_port_twice() {
    let (events, pid) = trace_in_netns("s3", || {
        let _http = TcpListener::bind("127.0.0.1:8443").unwrap();
        let err = TcpListener::bind("127.0.0.1:8443").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        std::process::id()
    });
    let d = only_diagnosis(&events, "127.0.0.1", 8443);
    assert_eq!(blamed(d), vec![(vec![pid], "same_address".to_owned())]);
    assert!(d["summary"].as_str().unwrap().contains("its own process"));
}

#[test]
fn story_4_a_stray_process_takes_the_port_while_nginx_restarts() {
    let ns = netns_with("s4", &[]);
    let tracer = Tracer::start(&[]);
    let mut nginx = Server::nginx(&ns, &["80"], 80);
    let old = nginx.family();
    nginx.stop();
    let mut stray = Server::spawn(&ns, &["socat", "TCP4-LISTEN:80", "-"]);
    stray.wait_listening(&ns, 80);
    // nginx retries its bind for about 2.5 s, then exits.
    let restart = Server::spawn(
        &ns,
        &[
            "nginx",
            "-p",
            &format!("{}/", nginx.dir.as_ref().unwrap().display()),
            "-c",
            &format!("{}/nginx.conf", nginx.dir.as_ref().unwrap().display()),
        ],
    );
    let cookie = ns.cookie();
    tracer.wait_for("nginx's failed bind on restart", 30, |evs| {
        failures(evs, "0.0.0.0", 80)
            .iter()
            .any(|e| e["pid"] == restart.pid && e["netns_cookie"] == cookie)
            .then_some(())
    });
    let events = in_netns(&tracer.stop(), cookie);
    let f = failures(&events, "0.0.0.0", 80);
    let mine: Vec<_> = f.iter().filter(|e| e["pid"] == restart.pid).collect();
    assert!(!mine.is_empty(), "nginx's failed bind is seen: {events:#?}");
    for e in mine {
        let d = &e["diagnosis"];
        assert_eq!(
            blamed(d),
            vec![(vec![stray.pid], "same_address".to_owned())],
            "{d:#}"
        );
        assert_eq!(d["holders"][0]["holder"]["owners"][0]["comm"], "socat");
        for (pids, _) in blamed(d) {
            assert!(
                pids.iter().all(|p| !old.contains(p)),
                "old nginx never named"
            );
        }
    }
}

#[test]
fn story_6_eacces_is_explained_by_the_sysctl_and_capability() {
    let (events, ()) = trace_in_netns("s6", || {
        drop_thread_to_uid(65534);
        let err = TcpListener::bind("0.0.0.0:80").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    });
    let d = only_diagnosis(&events, "0.0.0.0", 80);
    assert_eq!(d["kind"], "privileged_port");
    assert_eq!(d["unprivileged_port_start"], 1024);
    assert_eq!(d["cap_net_bind_service"], false);
    assert!(
        d["summary"]
            .as_str()
            .unwrap()
            .contains("CAP_NET_BIND_SERVICE")
    );
    assert!(
        d["hint"]
            .as_str()
            .unwrap()
            .contains("ip_unprivileged_port_start")
    );
}

#[test]
fn story_7_eaddrnotavail_lists_the_namespace_addresses() {
    let ns = netns_with("s7", &["10.0.0.5/24"]);
    let tracer = Tracer::start(&[]);
    let err = ns.run(|| TcpListener::bind("10.0.0.6:80").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
    let events = in_netns(&tracer.stop(), ns.cookie());
    let d = only_diagnosis(&events, "10.0.0.6", 80);
    assert_eq!(d["kind"], "address_not_available");
    let addrs: Vec<&str> = d["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(addrs.contains(&"10.0.0.5"), "{addrs:?}");
    assert!(addrs.contains(&"127.0.0.1"), "{addrs:?}");
    assert!(!addrs.contains(&"10.0.0.6"), "{addrs:?}");
}

#[test]
fn story_8_two_namespaces_each_hold_port_80_and_never_blame_each_other() {
    let a = netns_with("s8a", &[]);
    let b = netns_with("s8b", &[]);
    let tracer = Tracer::start(&[]);
    let mut in_a = Server::spawn(&a, &["socat", "TCP4-LISTEN:80", "-"]);
    in_a.wait_listening(&a, 80);
    let mut in_b = Server::spawn(&b, &["socat", "TCP4-LISTEN:80", "-"]);
    in_b.wait_listening(&b, 80);
    let err = b.run(|| TcpListener::bind("0.0.0.0:80").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let events = tracer.stop();
    let b_events = in_netns(&events, b.cookie());
    let d = only_diagnosis(&b_events, "0.0.0.0", 80);
    assert_eq!(
        blamed(d),
        vec![(vec![in_b.pid], "same_address".to_owned())],
        "{d:#}"
    );
    assert_eq!(d["holders"][0]["holder"]["netns"], b.cookie());
    // Both socats bound :80 without a conflict.
    assert!(failures(&in_netns(&events, a.cookie()), "0.0.0.0", 80).is_empty());
}

#[test]
fn story_9_udp_resolver_on_127_0_0_53_blocks_the_wildcard() {
    let ns = netns_with("s9", &[]);
    let tracer = Tracer::start(&[]);
    let mut resolver = Server::spawn(&ns, &["socat", "UDP4-RECV:53,bind=127.0.0.53", "-"]);
    resolver.wait_udp(&ns, 53);
    let err = ns.run(|| std::net::UdpSocket::bind("0.0.0.0:53").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let events = in_netns(&tracer.stop(), ns.cookie());
    let d = only_diagnosis(&events, "0.0.0.0", 53);
    assert_eq!(
        blamed(d),
        vec![(vec![resolver.pid], "wildcard_request".to_owned())],
        "{d:#}"
    );
    assert_eq!(d["holders"][0]["holder"]["proto"], "udp");
}

#[test]
fn story_10_reuseport_matching_mismatched_and_other_user() {
    let (events, pid) = trace_in_netns("s10", || {
        // Matching: both set SO_REUSEPORT, same user: shared.
        let a = sock("0.0.0.0:9001", Type::STREAM, false, true);
        bind(&a, "0.0.0.0:9001").unwrap();
        a.listen(8).unwrap();
        let b = sock("0.0.0.0:9001", Type::STREAM, false, true);
        bind(&b, "0.0.0.0:9001").unwrap();
        // Mismatch: the holder set it, the newcomer did not.
        let c = sock("0.0.0.0:9001", Type::STREAM, false, false);
        assert_eq!(
            bind(&c, "0.0.0.0:9001").unwrap_err().raw_os_error(),
            Some(libc::EADDRINUSE)
        );
        // Other user: both set it, but the newcomer runs as nobody.
        let h = sock("0.0.0.0:9002", Type::STREAM, false, true);
        bind(&h, "0.0.0.0:9002").unwrap();
        h.listen(8).unwrap();
        let other = std::thread::spawn(|| {
            drop_thread_to_uid(65534);
            let d = sock("0.0.0.0:9002", Type::STREAM, false, true);
            bind(&d, "0.0.0.0:9002").unwrap_err().raw_os_error()
        })
        .join()
        .unwrap();
        assert_eq!(other, Some(libc::EADDRINUSE));
        std::process::id()
    });
    let d = only_diagnosis(&events, "0.0.0.0", 9001);
    // Both SO_REUSEPORT sockets of the group block the newcomer.
    let b = blamed(d);
    assert_eq!(b.len(), 2, "{d:#}");
    assert!(
        b.iter()
            .all(|(p, r)| p == &vec![pid] && r == "reuseport_mismatch"),
        "{d:#}"
    );
    let d = only_diagnosis(&events, "0.0.0.0", 9002);
    assert_eq!(
        blamed(d),
        vec![(vec![pid], "reuseport_other_user".to_owned())]
    );
}

#[test]
fn holder_shared_by_parent_and_forked_child_names_both() {
    let ns = netns_with("fork", &[]);
    let tracer = Tracer::start(&[]);
    // Started after bindwatch: the bind event names only the master; the
    // worker inherits the socket by fork.
    let nginx = Server::nginx(&ns, &["8080"], 8080);
    let family = nginx.family();
    assert_eq!(family.len(), 2, "master and one worker: {family:?}");
    let err = ns.run(|| TcpListener::bind("0.0.0.0:8080").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let events = in_netns(&tracer.stop(), ns.cookie());
    let d = only_diagnosis(&events, "0.0.0.0", 8080);
    assert_eq!(
        blamed(d),
        vec![(family, "same_address".to_owned())],
        "{d:#}"
    );
    assert_eq!(d["holders"][0]["holder"]["owners_verified"], true);
}

#[test]
fn time_wait_blocks_without_so_reuseaddr_and_not_with_it() {
    let (events, ()) = trace_in_netns("tw", || {
        // The server closes first, so its side of the connection (local
        // port 9100) lingers in TIME_WAIT after the listener is gone.
        let l = sock("127.0.0.1:9100", Type::STREAM, true, false);
        bind(&l, "127.0.0.1:9100").unwrap();
        l.listen(8).unwrap();
        let mut c = std::net::TcpStream::connect("127.0.0.1:9100").unwrap();
        let (s, _) = l.accept().unwrap();
        drop(s);
        drop(l);
        // The server's FIN has arrived once the client reads end of file.
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut c, &mut buf).unwrap(), 0);
        drop(c);
        // `ss` runs in this thread's namespace (a child inherits it).
        wait_for("the server side in TIME_WAIT", 10, || {
            let out = std::process::Command::new("ss")
                .args(["-H", "-tn", "state", "time-wait", "sport = :9100"])
                .output()
                .unwrap();
            (!out.stdout.is_empty()).then_some(())
        });
        let plain = sock("127.0.0.1:9100", Type::STREAM, false, false);
        assert_eq!(
            bind(&plain, "127.0.0.1:9100").unwrap_err().raw_os_error(),
            Some(libc::EADDRINUSE)
        );
        let reuse = sock("127.0.0.1:9100", Type::STREAM, true, false);
        bind(&reuse, "127.0.0.1:9100").expect("SO_REUSEADDR passes TIME_WAIT");
    });
    let d = only_diagnosis(&events, "127.0.0.1", 9100);
    assert_eq!(blamed(d), vec![(vec![], "time_wait".to_owned())], "{d:#}");
    assert_eq!(d["holders"][0]["holder"]["state"], "time_wait");
}
