//! The port an outbound connection took: a service port inside its
//! namespace's ephemeral range is reported before the outage (`check`'s
//! note, the daemon's start-up warning and gauge) and named when it
//! happens (the failed bind's reason `ephemeral_port`, with the
//! connection's peer and the fix), in a namespace whose range is narrowed
//! to the service's port.

use std::net::{TcpListener, TcpStream};
use std::process::Command;

use serde_json::Value;
use support::*;

const SERVICE: u16 = 40000;
const REMOTE: u16 = 9100;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(bindwatch_bin())
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().expect("check was killed by a signal");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (code, text)
}

#[test]
fn an_outbound_connection_takes_the_service_port() {
    let ns = Netns::new("eph");
    let path = format!("/run/netns/{}", ns.name);
    run_ok(
        "ip",
        &[
            "netns",
            "exec",
            &ns.name,
            "sh",
            "-c",
            &format!("echo {SERVICE} {SERVICE} > /proc/sys/net/ipv4/ip_local_port_range"),
        ],
    );
    let target = format!("0.0.0.0:{SERVICE}");

    // Before the outage: the port is free, and at risk.
    let (code, out) = check(&[&target, "--netns", &path, "--standalone"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "note: tcp port {SERVICE} lies inside the namespace's ip_local_port_range {SERVICE}-{SERVICE}"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("ip_local_reserved_ports={SERVICE}")),
        "{out}"
    );
    let listen = free_local_addr();
    let state = temp("eph");
    let daemon = Daemon::start(
        &state,
        &listen,
        &format!("[[watch]]\nname = \"svc\"\nport = {SERVICE}\nnetns = \"{path}\"\n"),
    );
    let series = format!("bindwatch_port_in_ephemeral_range{{proto=\"tcp\",port=\"{SERVICE}\"}}");
    assert_eq!(metric(&listen, &series), 1.0);
    daemon.stop();
    // `who` says it of a listener on the port.
    let mut svc = Server::spawn(&ns, &["socat", &format!("TCP4-LISTEN:{SERVICE}"), "-"]);
    svc.wait_listening(&ns, SERVICE);
    let out = Command::new(bindwatch_bin())
        .args(["who", &SERVICE.to_string(), "--standalone"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "note: netns {}: tcp port {SERVICE} lies inside",
            ns.cookie()
        )),
        "{text}"
    );
    svc.stop();

    // The outage: an outbound connection is given the service's port.
    let remote = ns.run(|| TcpListener::bind(("127.0.0.1", REMOTE)).unwrap());
    let conn = ns.run(|| TcpStream::connect(("127.0.0.1", REMOTE)).unwrap());
    assert_eq!(
        conn.local_addr().unwrap().port(),
        SERVICE,
        "the range has one port"
    );
    let tracer = Tracer::start(&[]);
    let err = ns.run(move || TcpListener::bind(("0.0.0.0", SERVICE)).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let events = in_netns(&tracer.stop(), ns.cookie());
    let f = failures(&events, "0.0.0.0", SERVICE as u64);
    assert_eq!(f.len(), 1, "{events:#?}");
    let d = &f[0]["diagnosis"];
    assert_eq!(
        blamed(d),
        vec![(vec![std::process::id()], "ephemeral_port".to_owned())],
        "{d:#}"
    );
    let why = d["holders"][0]["explanation"].as_str().unwrap();
    assert!(
        why.contains(&format!("outbound connection to 127.0.0.1:{REMOTE}")),
        "{why}"
    );
    assert!(
        why.contains(&format!("ip_local_port_range {SERVICE}-{SERVICE}")),
        "{why}"
    );
    assert!(
        d["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("ip_local_reserved_ports={SERVICE}")),
        "{d:#}"
    );
    // `check` names it the same way, and says no more about the risk.
    let (code, out) = check(&[&target, "--netns", &path, "--standalone", "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["diagnosis"]["holders"][0]["reason"], "ephemeral_port",
        "{out}"
    );
    assert!(v["note"].is_null(), "{out}");
    drop((conn, remote));
}
