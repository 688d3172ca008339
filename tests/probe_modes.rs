//! The same events from every probe set the kernel offers. One scripted
//! scenario (TCP and UDP, IPv4 and IPv6, failed and successful binds, a
//! port-0 bind, listen, close, accepts) runs under `bindwatch trace` in
//! each mode, in a namespace of its own; the events must be the same apart
//! from what differs from run to run (times, thread ids, cookies, kernel
//! addresses, the port the kernel picked, and the file descriptor, which
//! the trampolines on the kernel's bind and listen do not see). On the
//! host only the tracepoint set loads, and `auto` must fall back to it;
//! in the Debian guests both sets load. A refusal of the fexit set part
//! way through (forced) must fall back cleanly: no trampoline left behind,
//! every event once. The TCP lifecycle (listen addresses, listener stops,
//! accept counts) comes from sock_ops callbacks where the kernel takes
//! them, else from the state tracepoint: the same scenario, plus a
//! listener stopped by shutdown(2) and one that was listening before the
//! tracer started, gives the same events from both. Bound sockets are
//! marked for their release in socket-local storage, else (forced here) in
//! a map: the same events from both.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;
use support::*;

/// One test at a time: accepts are counted by port alone, and trampolines
/// are counted host-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What the scenario does, in a namespace; returns the port the kernel
/// chose for the port-0 bind. `failed_listen`: also a listen that fails
/// (only where both runs take the lifecycle from the same source: the
/// state tracepoint sees such a listen reach LISTEN and fall back to
/// CLOSE, which sock_ops does not report).
fn scenario(failed_listen: bool) -> u16 {
    // TCP over IPv4: a listener, a failed bind on its address, accepts.
    let l4 = TcpListener::bind("127.0.0.1:8080").unwrap();
    let err = TcpListener::bind("127.0.0.1:8080").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    for _ in 0..3 {
        let c = TcpStream::connect("127.0.0.1:8080").unwrap();
        let (s, _) = l4.accept().unwrap();
        drop((c, s));
    }
    // A client that binds its source port, then connects: its bind is an
    // event, its release is not (a connection's, like the accepted one's).
    let client = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    client
        .bind(
            &"127.0.0.1:8085"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    client
        .connect(
            &"127.0.0.1:8080"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let (s, _) = l4.accept().unwrap();
    drop((client, s));
    // TCP over IPv6, and a failure.
    let l6 = TcpListener::bind("[::1]:8081").unwrap();
    let err = TcpListener::bind("[::1]:8081").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    // UDP over both, and their failures.
    let u4 = UdpSocket::bind("127.0.0.1:5353").unwrap();
    assert!(UdpSocket::bind("127.0.0.1:5353").is_err());
    let u6 = UdpSocket::bind("[::1]:5354").unwrap();
    assert!(UdpSocket::bind("[::1]:5354").is_err());
    // A listener stopped without being closed: LISTEN to CLOSE, no release.
    let stopped = TcpListener::bind("127.0.0.1:8083").unwrap();
    rustix::net::shutdown(&stopped, rustix::net::Shutdown::Read).expect("shutdown");
    // An address the namespace lacks.
    let err = TcpListener::bind("192.0.2.1:8082").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRNOTAVAIL));
    // Port 0: the kernel picks.
    let l0 = TcpListener::bind("127.0.0.1:0").unwrap();
    let chosen = l0.local_addr().unwrap().port();
    // MPTCP sockets: newer kernels bind and listen them without calling
    // inet_bind or inet_listen.
    let m4 = mptcp_listener("127.0.0.1:8086");
    let err = mptcp_socket(socket2::Domain::IPV4)
        .bind(
            &"127.0.0.1:8086"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let m6 = mptcp_listener("[::1]:8087");
    // A listen that fails: two sockets share an address with SO_REUSEADDR
    // while neither listens; the second listen finds the first listening.
    let shared: std::net::SocketAddr = "127.0.0.1:8088".parse().unwrap();
    let reuse = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&shared.into()).unwrap();
        s
    };
    if failed_listen {
        let (first, second) = (reuse(), reuse());
        first.listen(16).unwrap();
        let err = second.listen(17).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    }
    drop((l4, l6, u4, u6, l0, stopped, m4, m6));
    chosen
}

fn mptcp_socket(domain: socket2::Domain) -> socket2::Socket {
    socket2::Socket::new(
        domain,
        socket2::Type::STREAM,
        Some(socket2::Protocol::MPTCP),
    )
    .expect("an MPTCP socket (net.mptcp.enabled, on in Debian's kernels and this host's)")
}

fn mptcp_listener(addr: &str) -> socket2::Socket {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let s = mptcp_socket(socket2::Domain::for_address(addr));
    s.bind(&addr.into()).unwrap();
    s.listen(8).unwrap();
    s
}

/// An event as it must be the same in every mode.
fn comparable(e: &Value, chosen: u16) -> String {
    let mut e = e.clone();
    let o = e.as_object_mut().unwrap();
    for k in [
        "time_ns",
        "tid",
        "sock_cookie",
        "netns_cookie",
        "skaddr",
        "fd",
        "cgroup_id",
        "diagnosis",
    ] {
        o.remove(k);
    }
    for k in ["port", "bound_port"] {
        if o.get(k).and_then(Value::as_u64) == Some(chosen as u64) {
            o.insert(k.into(), "chosen".into());
        }
    }
    serde_json::to_string(&e).unwrap()
}

/// How many of each set's programs were loaded while a run's tracer ran.
#[derive(Clone, Copy, Debug)]
struct Loaded {
    /// The fexit set's trampolines.
    trampolines: usize,
    /// The exit-only tracepoint set's programs (its cgroup bind hooks are
    /// the fexit set's too).
    exit_only: usize,
    /// The programs that mark bound sockets in their own storage.
    storage: usize,
    /// Their stand-ins that mark them in the `BOUND` map.
    map_store: usize,
}

impl Loaded {
    /// Counted among the tracer's own programs only (those it holds
    /// open): another bindwatch on the host (a CI machine's own agent, a
    /// second test) must not count. By name, as the kernel keeps it
    /// (truncated to 15 characters).
    fn by(tracer: &Tracer) -> Self {
        let ours = tracer.programs();
        let names: Vec<String> = aya::programs::loaded_programs()
            .map(|p| p.expect("listing the kernel's programs"))
            .filter(|p| ours.contains(&p.id()))
            .map(|p| p.name_as_str().unwrap_or_default().to_owned())
            .collect();
        let count = |prefixes: &[&str]| {
            names
                .iter()
                .filter(|n| prefixes.iter().any(|p| n.starts_with(p)))
                .count()
        };
        let exactly = |wanted: &[&str]| {
            names
                .iter()
                .filter(|n| wanted.contains(&n.as_str()))
                .count()
        };
        Self {
            trampolines: count(&["fentry_inet", "fexit_inet", "fentry_mptcp", "fexit_mptcp"]),
            exit_only: count(&["bind_exit", "listen_exit", "bind4_begin", "bind6_begin"]),
            storage: exactly(&["post_bind4", "post_bind6", "sock_release", "tcp_lifecycle"]),
            map_store: exactly(&[
                "post_bind4_map",
                "post_bind6_map",
                "release_map",
                "lifecycle_map",
            ]),
        }
    }
}

/// The scenario's events under one mode (and environment), comparable;
/// the probe set the tracer's start-up line names; and what was loaded
/// while it ran.
fn run(mode: &str, env: &[(&str, &str)]) -> (Vec<String>, String, Loaded) {
    let (events, started, loaded) = run_with_lifecycle(mode, env, true);
    let set = probe_set_of(&started)
        .unwrap_or_else(|| panic!("no probe set in {started:?}"))
        .to_owned();
    (events, set, loaded)
}

/// As `run`, with the tracer's whole start-up line; a listener in the
/// namespace already listens when the tracer starts, and is closed during
/// the scenario.
fn run_with_lifecycle(
    mode: &str,
    env: &[(&str, &str)],
    failed_listen: bool,
) -> (Vec<String>, String, Loaded) {
    let ns = Netns::new("modes");
    let cookie = ns.cookie();
    let before = ns.run(|| TcpListener::bind("[::1]:8084").unwrap());
    let tracer = Tracer::try_start_env(&["--probes", mode], env)
        .unwrap_or_else(|e| panic!("the kernel refused the probes: {e}"));
    let loaded = Loaded::by(&tracer);
    let chosen = ns.run(move || scenario(failed_listen));
    drop(before);
    let tracer_started = tracer.started.clone();
    let events = tracer.stop();
    let mut ours: Vec<String> = in_netns(&events, cookie)
        .iter()
        .map(|e| comparable(e, chosen))
        .collect();
    // A failed listen names no socket, so no namespace: ours by process.
    ours.extend(
        events
            .iter()
            .filter(|e| e["kind"] == "listen" && e["errno"] != 0 && e["pid"] == std::process::id())
            .map(|e| format!("failed listen: {}", comparable(e, chosen))),
    );
    // Accepts are per-port sums without a namespace: ours by port.
    let accepted: u64 = of_kind(&events, "accepts")
        .iter()
        .filter(|e| e["port"] == 8080)
        .map(|e| e["delta"].as_u64().unwrap())
        .sum();
    ours.push(format!("accepts on 8080: {accepted}"));
    ours.sort();
    (ours, tracer_started, loaded)
}

#[test]
fn every_probe_set_the_kernel_offers_sees_the_same_events() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (tracepoint, set, loaded) = run("tracepoint", &[]);
    assert_eq!(
        (set.as_str(), loaded.trampolines, loaded.exit_only),
        ("tracepoint", 0, 4)
    );
    // Sanity: the scenario's events are there at all.
    let binds = tracepoint
        .iter()
        .filter(|e| e.contains("\"kind\":\"bind\""))
        .count();
    assert!(binds >= 10, "{tracepoint:#?}");
    assert!(tracepoint.contains(&"accepts on 8080: 4".to_owned()));
    // The MPTCP sockets' binds (one failed) and listens, with their process.
    let mptcp = |kind: &str, port: u16, errno: u64| {
        // Every line but the accept count and the failed listen is an event.
        tracepoint.iter().filter(|e| e.starts_with('{')).any(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["kind"] == kind && v["port"] == port && v["errno"] == errno && v["pid"] != 0
        })
    };
    assert!(
        tracepoint.iter().any(|e| e.starts_with("failed listen:")
            && e.contains("\"backlog\":17")
            && e.contains("\"errno\":98")),
        "the failed listen: {tracepoint:#?}"
    );
    for (kind, port, errno) in [
        ("bind", 8086, 0),
        ("bind", 8086, libc::EADDRINUSE as u64),
        ("listen", 8086, 0),
        ("bind", 8087, 0),
        ("listen", 8087, 0),
    ] {
        assert!(
            mptcp(kind, port, errno),
            "MPTCP {kind} on {port} (errno {errno}): {tracepoint:#?}"
        );
    }
    let (auto, auto_set, _) = run("auto", &[]);
    if kernel_offers_fexit() {
        assert_eq!(
            auto_set, "fexit",
            "auto takes fexit where the kernel has it"
        );
        let (fexit, set, loaded) = run("fexit", &[]);
        // Five trampolines on inet and MPTCP binds' and listens' ends, one
        // on MPTCP's listen entry.
        assert_eq!((set.as_str(), loaded.trampolines), ("fexit", 6));
        assert_eq!(fexit, tracepoint, "fexit against tracepoint");
    } else {
        assert_eq!(auto_set, "tracepoint", "auto falls back");
        let out = Command::new(bindwatch_bin())
            .args(["trace", "--probes", "fexit"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("refused the fexit probe set"),
            "forced fexit on a kernel without it: {err}"
        );
    }
    assert_eq!(auto, tracepoint, "auto ({auto_set}) against tracepoint");
    // The entry set, where a kernel refuses the exits alone.
    let (entry, set, loaded) = run("tracepoint_entry", &[]);
    assert_eq!(
        (set.as_str(), loaded.trampolines, loaded.exit_only),
        ("tracepoint_entry", 0, 0)
    );
    assert_eq!(entry, tracepoint, "tracepoint_entry against tracepoint");
}

#[test]
fn a_refusal_part_way_through_the_fexit_set_falls_back_cleanly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The last program refused: the seven attached before it (the
    // trampolines and the first cgroup bind hook) must be gone, and the
    // events must be the tracepoint set's.
    let (events, set, loaded) = run("auto", &[("BINDWATCH_REFUSE_FEXIT_AT", "7")]);
    assert_eq!(
        (set.as_str(), loaded.trampolines),
        ("tracepoint", 0),
        "fell back with no trampoline left behind"
    );
    let (tracepoint, _, _) = run("tracepoint", &[]);
    assert_eq!(events, tracepoint);
}

#[test]
fn a_refusal_part_way_through_the_exit_only_set_falls_back_to_the_entry_set() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The last program refused: the exits and the first cgroup bind hook
    // attached before it must be gone, and the events the same.
    let (events, set, loaded) = run("tracepoint", &[("BINDWATCH_REFUSE_EXITS_AT", "3")]);
    assert_eq!(set, "tracepoint_entry", "fell back to the entry set");
    assert_eq!(loaded.exit_only, 0, "an exit-only program left behind");
    let (tracepoint, _, _) = run("tracepoint", &[]);
    assert_eq!(events, tracepoint);
}

#[test]
fn sock_ops_and_the_state_tracepoint_see_the_same_tcp_lifecycle() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (sock_ops, started, _) = run_with_lifecycle("tracepoint", &[], false);
    assert_eq!(
        lifecycle_of(&started),
        Some("sock_ops"),
        "every kernel the project runs on takes sock_ops on the cgroup: {started}"
    );
    let (tracepoint, started, _) =
        run_with_lifecycle("tracepoint", &[("BINDWATCH_NO_SOCK_OPS", "1")], false);
    assert_eq!(
        lifecycle_of(&started),
        Some("state_tracepoint"),
        "{started}"
    );
    // The cases this lifecycle exists for are in the events at all.
    for (what, needle) in [
        // Released after its stop: no longer listening.
        (
            "the listener stopped by shutdown",
            "\"port\":8083,\"proto\":\"tcp\",\"schema\":1,\"state\":7",
        ),
        ("the listener from before the tracer", "\"port\":8084"),
        ("accepts", "accepts on 8080: 4"),
        ("the bound client", "\"port\":8085"),
    ] {
        assert!(
            sock_ops.iter().any(|e| e.contains(needle)),
            "{what} missing from the sock_ops lifecycle's events: {sock_ops:#?}"
        );
    }
    let stops = |evs: &[String], port: u16| {
        evs.iter()
            .filter(|e| {
                e.contains("\"kind\":\"listen_stop\"") && e.contains(&format!("\"port\":{port},"))
            })
            .count()
    };
    for port in [8080, 8081, 8083, 8084] {
        assert_eq!(stops(&sock_ops, port), 1, "stops of {port}: {sock_ops:#?}");
    }
    let client_releases = sock_ops
        .iter()
        .filter(|e| e.contains("\"kind\":\"release\"") && e.contains("\"port\":8085,"))
        .count();
    assert_eq!(client_releases, 0, "a connection's release: {sock_ops:#?}");
    assert_eq!(
        sock_ops, tracepoint,
        "sock_ops against the state tracepoint"
    );
}

#[test]
fn socket_storage_and_its_map_fallback_see_the_same_releases() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let refuse = ("BINDWATCH_REFUSE_SOCKET_STORAGE", "1");
    let no_sock_ops = ("BINDWATCH_NO_SOCK_OPS", "1");
    for lifecycle in [&[][..], &[no_sock_ops][..]] {
        let (storage, started, loaded) = run_with_lifecycle("tracepoint", lifecycle, false);
        assert!(
            !started.contains("socket storage refused"),
            "every kernel the project runs on gives cgroup socket programs socket storage: {started}"
        );
        // The marking programs and the release hook (and sock_ops, when it
        // carries the lifecycle) from the storage side, none from the map's.
        let with_sock_ops = usize::from(lifecycle.is_empty());
        assert_eq!(
            (loaded.storage, loaded.map_store),
            (3 + with_sock_ops, 0),
            "{started}"
        );
        let env: Vec<(&str, &str)> = lifecycle.iter().copied().chain([refuse]).collect();
        let (map, started, loaded) = run_with_lifecycle("tracepoint", &env, false);
        assert!(
            started.contains("socket storage refused: BINDWATCH_REFUSE_SOCKET_STORAGE is set"),
            "{started}"
        );
        assert_eq!(
            (loaded.storage, loaded.map_store),
            (0, 3 + with_sock_ops),
            "{started}"
        );
        // Releases are what the store serves: the listener from before the
        // tracer (seeded through its descriptor), the scenario's own, and
        // no client's.
        let releases = |evs: &[String]| -> Vec<String> {
            evs.iter()
                .filter(|e| e.contains("\"kind\":\"release\""))
                .cloned()
                .collect()
        };
        for port in [8080, 8081, 8084, 5353, 5354] {
            assert!(
                releases(&storage)
                    .iter()
                    .any(|e| e.contains(&format!("\"port\":{port},"))),
                "no release of {port} from socket storage: {storage:#?}"
            );
        }
        assert!(
            !releases(&storage)
                .iter()
                .any(|e| e.contains("\"port\":8085,")),
            "a connection's release: {storage:#?}"
        );
        assert_eq!(
            storage, map,
            "socket storage against the map ({lifecycle:?})"
        );
    }
}
