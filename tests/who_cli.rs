//! `bindwatch who`, standalone (the kernel's tables) and from a running
//! daemon, against real holders in a namespace of the test's own.

use std::process::Command;

use serde_json::Value;
use support::*;

fn who(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bindwatch_bin())
        .arg("who")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn holders_of(json: &str, netns: u64) -> Vec<Value> {
    let v: Value = serde_json::from_str(json).unwrap();
    v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["netns"] == netns)
        .cloned()
        .collect()
}

#[test]
fn bad_targets_are_refused_with_the_reason() {
    let (ok, _, err) = who(&["80/sctp", "--standalone"]);
    assert!(!ok);
    assert!(
        err.contains("\"80/sctp\"") && err.contains("tcp or udp"),
        "{err}"
    );
}

#[test]
fn standalone_names_holders_in_every_namespace_with_their_options() {
    let ns = Netns::new("who");
    let cookie = ns.cookie();
    let mut tcp = Server::spawn(
        &ns,
        &["socat", "TCP6-LISTEN:7443,ipv6only=0,reuseaddr", "-"],
    );
    tcp.wait_listening(&ns, 7443);
    let mut udp = Server::spawn(&ns, &["socat", "UDP4-RECV:7443,bind=127.0.0.53", "-"]);
    udp.wait_udp(&ns, 7443);

    let (ok, out, err) = who(&["7443", "--standalone", "--json"]);
    assert!(ok, "{err}");
    let hs = holders_of(&out, cookie);
    assert_eq!(hs.len(), 2, "{out}");
    let t = hs.iter().find(|h| h["proto"] == "tcp").unwrap();
    assert_eq!(t["owners"][0]["pid"], tcp.pid);
    assert_eq!(t["owners"][0]["comm"], "socat");
    assert_eq!(t["v6only"], false);
    assert_eq!(t["reuseaddr"], true);
    assert_eq!(t["state"], "listen");
    let u = hs.iter().find(|h| h["proto"] == "udp").unwrap();
    assert_eq!(u["owners"][0]["pid"], udp.pid);

    // By address: only the holders that block that address.
    let (_, out, _) = who(&["127.0.0.53:7443/udp", "--standalone", "--json"]);
    assert_eq!(holders_of(&out, cookie).len(), 1, "{out}");
    let (_, out, _) = who(&["127.0.0.54:7443/udp", "--standalone", "--json"]);
    assert_eq!(holders_of(&out, cookie).len(), 0, "{out}");

    let (_, text, _) = who(&["7443/tcp", "--standalone"]);
    assert!(text.contains("held by   socat"), "{text}");
    assert!(
        text.contains("every IPv4 address on tcp port 7443"),
        "{text}"
    );
}

#[test]
fn answers_from_the_running_daemon() {
    let ns = Netns::new("whod");
    let cookie = ns.cookie();
    let listen = free_local_addr();
    let state = temp("whod");
    let daemon = Daemon::start(&state, &listen, "");
    let url = format!("http://{listen}");
    // Bound after the daemon started: known from its events, once it has
    // read them.
    let mut srv = Server::spawn(&ns, &["socat", "TCP4-LISTEN:7444", "-"]);
    srv.wait_listening(&ns, 7444);
    let out = wait_for("the daemon to know the new listener", 30, || {
        let (ok, out, err) = who(&["7444", "--daemon", &url, "--json"]);
        assert!(ok, "{err}");
        // `who` answers from the kernel when the daemon is slow to answer
        // (500 ms; an emulated guest can be that slow): ask again.
        let v: Value = serde_json::from_str(&out).unwrap();
        (v["source"] == "daemon" && !holders_of(&out, cookie).is_empty()).then_some(out)
    });
    daemon.stop();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "daemon", "{out}");
    let hs = holders_of(&out, cookie);
    assert_eq!(hs.len(), 1, "{out}");
    assert_eq!(hs[0]["owners"][0]["pid"], srv.pid);
    assert_eq!(hs[0]["source"], "event");
}
