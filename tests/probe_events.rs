//! Real sockets in network namespaces of their own, seen by a real
//! `bindwatch trace --json`. Needs root and eBPF; fails without them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};
use support::{Netns, Tracer, drop_thread_to_uid, final_loss, in_netns, of_kind, trace_in_netns};

fn sock(addr: &str, ty: Type, reuseaddr: bool, reuseport: bool) -> Socket {
    let a: SocketAddr = addr.parse().unwrap();
    let proto = if ty == Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let s = Socket::new(Domain::for_address(a), ty, Some(proto)).unwrap();
    s.set_reuse_address(reuseaddr).unwrap();
    s.set_reuse_port(reuseport).unwrap();
    s
}

fn bind(s: &Socket, addr: &str) -> std::io::Result<()> {
    s.bind(&addr.parse::<SocketAddr>().unwrap().into())
}

fn find<'a>(events: &'a [Value], kind: &str, addr: &str, port: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["addr"] == addr && e["port"] == port)
        .collect()
}

#[test]
fn tcp_bind_listen_close_and_eaddrinuse_keeps_the_requested_address() {
    let (events, ()) = trace_in_netns("tcp", || {
        let holder = sock("127.0.0.1:8080", Type::STREAM, true, false);
        bind(&holder, "127.0.0.1:8080").unwrap();
        holder.listen(16).unwrap();
        let second = sock("127.0.0.1:8080", Type::STREAM, false, false);
        let err = bind(&second, "127.0.0.1:8080").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        let v6 = TcpListener::bind("[::1]:8081").unwrap();
        let err = TcpListener::bind("[::1]:8081").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        drop(v6);
        drop(holder);
    });

    let binds = find(&events, "bind", "127.0.0.1", 8080);
    assert_eq!(binds.len(), 2, "{binds:#?}");
    assert_eq!(binds[0]["errno"], 0);
    assert_eq!(binds[0]["proto"], "tcp");
    assert_eq!(binds[0]["options"]["reuseaddr"], true);
    assert_eq!(binds[0]["bound_port"], 8080);
    let failed = binds[1];
    assert_eq!(failed["error"], "EADDRINUSE");
    assert_eq!(failed["errno"], libc::EADDRINUSE);
    assert_eq!(failed["proto"], "tcp");
    assert_eq!(failed["options"]["reuseaddr"], false);
    assert!(failed["bound_port"].is_null());
    assert_eq!(failed["pid"], std::process::id());

    let listen = find(&events, "listen", "127.0.0.1", 8080);
    assert_eq!(listen.len(), 1, "{events:#?}");
    assert_eq!(listen[0]["backlog"], 16);
    assert_eq!(listen[0]["errno"], 0);
    assert_eq!(find(&events, "listen_stop", "127.0.0.1", 8080).len(), 1);
    assert_eq!(find(&events, "release", "127.0.0.1", 8080).len(), 1);

    let v6 = find(&events, "bind", "::1", 8081);
    assert_eq!(v6.len(), 2, "{events:#?}");
    assert_eq!(v6[1]["error"], "EADDRINUSE");
    assert_eq!(find(&events, "listen_stop", "::1", 8081).len(), 1);
}

#[test]
fn udp_bind_conflict_and_release() {
    let (events, ()) = trace_in_netns("udp", || {
        let resolver = std::net::UdpSocket::bind("127.0.0.53:53").unwrap();
        let err = std::net::UdpSocket::bind("0.0.0.0:53").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        let v6 = std::net::UdpSocket::bind("[::1]:5353").unwrap();
        drop(v6);
        drop(resolver);
    });
    let ok = find(&events, "bind", "127.0.0.53", 53);
    assert_eq!(ok.len(), 1, "{events:#?}");
    assert_eq!(ok[0]["proto"], "udp");
    let failed = find(&events, "bind", "0.0.0.0", 53);
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["error"], "EADDRINUSE");
    assert_eq!(failed[0]["proto"], "udp");
    let rel = find(&events, "release", "127.0.0.53", 53);
    assert_eq!(rel.len(), 1, "UDP holders are seen leaving: {events:#?}");
    assert_eq!(rel[0]["proto"], "udp");
    assert_eq!(find(&events, "release", "::1", 5353).len(), 1);
}

#[test]
fn eacces_for_a_privileged_port_as_an_unprivileged_user() {
    let (events, ()) = trace_in_netns("eacces", || {
        drop_thread_to_uid(65534);
        let err = TcpListener::bind("0.0.0.0:80").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    });
    let b = find(&events, "bind", "0.0.0.0", 80);
    assert_eq!(b.len(), 1, "{events:#?}");
    assert_eq!(b[0]["error"], "EACCES");
    assert_eq!(b[0]["uid"], 65534);
}

/// Binds the kernel refuses before its bind hook runs: no socket behind
/// the descriptor, a sockaddr too short. The sets that trace the syscall
/// report them with the address asked for (the exit-only set reads the
/// arguments from the saved registers); the fexit set does not see them.
#[test]
fn binds_refused_before_the_kernels_bind_hook_are_reported_by_the_tracepoint_sets() {
    for mode in ["tracepoint", "tracepoint_entry"] {
        let tracer = Tracer::start(&["--probes", mode]);
        let ns = Netns::new("early");
        let (pipe_fd, sock_fd) = ns.run(|| {
            let addr = |port: u16| libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            // A bind(2) with `len` bytes of the sockaddr: its errno.
            let bind = |fd: i32, a: libc::sockaddr_in, len: u32| {
                // SAFETY: `a` outlives the call; the kernel reads `len` bytes.
                let rc = unsafe { libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) };
                assert_eq!(rc, -1);
                std::io::Error::last_os_error().raw_os_error()
            };
            let (pipe, _w) = std::io::pipe().unwrap();
            assert_eq!(bind(pipe.as_raw_fd(), addr(8091), 16), Some(libc::ENOTSOCK));
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            // Family, port and address, but not the whole sockaddr_in.
            assert_eq!(bind(s.as_raw_fd(), addr(8092), 8), Some(libc::EINVAL));
            (pipe.as_raw_fd(), s.as_raw_fd())
        });
        let events = tracer.stop();
        let ours = |port: u64| -> Vec<&Value> {
            events
                .iter()
                .filter(|e| {
                    e["kind"] == "bind" && e["pid"] == std::process::id() && e["port"] == port
                })
                .collect()
        };
        for (port, fd, error) in [(8091, pipe_fd, "ENOTSOCK"), (8092, sock_fd, "EINVAL")] {
            let b = ours(port);
            assert_eq!(b.len(), 1, "{mode}: the bind of port {port}: {events:#?}");
            assert_eq!(
                (&b[0]["addr"], &b[0]["error"], &b[0]["fd"]),
                (
                    &Value::from("127.0.0.1"),
                    &Value::from(error),
                    &Value::from(fd)
                ),
                "{mode}: {:#}",
                b[0]
            );
        }
    }
}

#[test]
fn eaddrnotavail_for_an_address_the_namespace_lacks() {
    let (events, ()) = trace_in_netns("notavail", || {
        // TEST-NET-1: documentation space, on no interface of this namespace.
        let err = TcpListener::bind("192.0.2.1:8080").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
    });
    let b = find(&events, "bind", "192.0.2.1", 8080);
    assert_eq!(b.len(), 1, "{events:#?}");
    assert_eq!(b[0]["error"], "EADDRNOTAVAIL");
}

#[test]
fn port_zero_bind_reports_the_port_the_kernel_chose() {
    let (events, (tcp_port, udp_port)) = trace_in_netns("port0", || {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        (
            t.local_addr().unwrap().port(),
            u.local_addr().unwrap().port(),
        )
    });
    let binds = find(&events, "bind", "127.0.0.1", 0);
    assert_eq!(binds.len(), 2, "{events:#?}");
    let tcp = binds.iter().find(|e| e["proto"] == "tcp").unwrap();
    let udp = binds.iter().find(|e| e["proto"] == "udp").unwrap();
    assert_eq!(tcp["bound_port"], tcp_port);
    assert_eq!(udp["bound_port"], udp_port);
    // The listener's own events carry the real port.
    assert_eq!(
        find(&events, "listen", "127.0.0.1", tcp_port.into()).len(),
        1
    );
}

#[test]
fn reuse_flags_and_bound_device_are_seen() {
    let (events, ()) = trace_in_netns("reuse", || {
        let a = sock("[::]:7443", Type::STREAM, false, true);
        bind(&a, "[::]:7443").unwrap();
        let b = sock("[::]:7443", Type::STREAM, false, true);
        bind(&b, "[::]:7443").unwrap();
        let c = sock("127.0.0.1:7444", Type::DGRAM, true, true);
        c.bind_device(Some(b"lo")).unwrap();
        bind(&c, "127.0.0.1:7444").unwrap();
    });
    let v6 = find(&events, "bind", "::", 7443);
    assert_eq!(v6.len(), 2, "{events:#?}");
    for e in &v6 {
        assert_eq!(
            e["errno"], 0,
            "two SO_REUSEPORT sockets of one user share: {e}"
        );
        assert_eq!(e["options"]["reuseport"], true);
        assert_eq!(e["options"]["reuseaddr"], false);
    }
    let c = find(&events, "bind", "127.0.0.1", 7444);
    assert_eq!(c.len(), 1, "{events:#?}");
    assert_eq!(c[0]["options"]["reuseaddr"], true);
    assert_eq!(c[0]["options"]["reuseport"], true);
    assert_eq!(
        c[0]["options"]["bound_ifindex"], 1,
        "lo is ifindex 1 in a new namespace"
    );
}

#[test]
fn accepts_are_counted_per_listening_port_in_the_kernel() {
    let tracer = Tracer::start(&[]);
    const N: usize = 25;
    let ns = Netns::new("accept");
    // Accept summaries are keyed by port alone (the state tracepoint names
    // no namespace), so the listener takes a port the kernel picks at
    // random rather than a fixed one another namespace might be serving.
    let port = ns.run(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        for _ in 0..N {
            let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (s, _) = l.accept().unwrap();
            drop((c, s));
        }
        port
    });
    let events = tracer.stop();
    let ours: Vec<&Value> = of_kind(&events, "accepts")
        .into_iter()
        .filter(|e| e["port"] == port)
        .collect();
    let accepted: u64 = ours.iter().map(|e| e["delta"].as_u64().unwrap()).sum();
    assert_eq!(accepted, N as u64, "{events:#?}");
    // Accepts come as per-port sums, never as one event per connection.
    assert!(ours.len() <= 2, "{ours:#?}");
}

#[test]
fn namespaces_are_told_apart() {
    let tracer = Tracer::start(&[]);
    let a = Netns::new("nsa");
    let b = Netns::new("nsb");
    let (ca, cb) = (a.cookie(), b.cookie());
    assert_ne!(ca, cb);
    let ha = a.run(|| TcpListener::bind("0.0.0.0:80").unwrap());
    let hb = b.run(|| TcpListener::bind("0.0.0.0:80").unwrap());
    drop((ha, hb));
    let events = tracer.stop();
    for (cookie, ns) in [(ca, &a), (cb, &b)] {
        let evs = in_netns(&events, cookie);
        let binds = find(&evs, "bind", "0.0.0.0", 80);
        assert_eq!(binds.len(), 1, "{}: {evs:#?}", ns.name);
        assert_eq!(binds[0]["errno"], 0);
    }
}

/// A TCP socket carries no mark of its own: its release is sent when it
/// holds a port (bound and idle here) and given its address by the join,
/// and not sent for a socket that never held one, whose release would
/// only be dropped as nobody's (`releases_unjoined`).
#[test]
fn a_tcp_release_is_sent_for_a_bound_socket_and_not_for_one_never_bound() {
    const NEVER_BOUND: u64 = 2_000;
    let tracer = Tracer::start(&[]);
    let ns = Netns::new("unbound");
    let cookie = ns.cookie();
    ns.run(|| {
        let idle = sock("127.0.0.1:8090", Type::STREAM, false, false);
        bind(&idle, "127.0.0.1:8090").unwrap();
        drop(idle);
        for _ in 0..NEVER_BOUND {
            drop(sock("127.0.0.1:0", Type::STREAM, false, false));
        }
    });
    let all = tracer.stop();
    let ours = in_netns(&all, cookie);
    let rel = find(&ours, "release", "127.0.0.1", 8090);
    assert_eq!(rel.len(), 1, "the idle holder is seen leaving: {ours:#?}");
    assert_eq!(rel[0]["proto"], "tcp");
    // The counter is the host's: other closes may add to it, but had the
    // kernel sent ours it would hold at least all of them.
    let loss = final_loss(&all);
    let unjoined = loss["releases_unjoined"]
        .as_u64()
        .unwrap_or_else(|| panic!("no releases_unjoined in the loss report: {loss}"));
    assert!(
        unjoined < NEVER_BOUND,
        "{unjoined} releases were nobody's after {NEVER_BOUND} closes of sockets never bound"
    );
}
