//! `bindwatch who`, standalone (the kernel's tables) and from a running
//! daemon, against real holders in a namespace of the test's own.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn who(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bindwatch"))
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
    if !can_run("who_standalone") {
        return;
    }
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
    if !can_run("who_daemon") {
        return;
    }
    let ns = Netns::new("whod");
    let cookie = ns.cookie();
    let listen = "127.0.0.1:17686";
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_bindwatch"))
        .args(["run", "--listen", listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = Command::new("curl")
            .args(["-sf", &format!("{url}/readyz")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            let _ = daemon.wait();
            if required() {
                panic!("the daemon never became ready");
            }
            eprintln!("SKIPPED who_daemon: the daemon did not start");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Bound after the daemon started: known from its events.
    let mut srv = Server::spawn(&ns, &["socat", "TCP4-LISTEN:7444", "-"]);
    srv.wait_listening(&ns, 7444);
    std::thread::sleep(Duration::from_millis(200));
    let (ok, out, err) = who(&["7444", "--daemon", &url, "--json"]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "daemon", "{out}");
    let hs = holders_of(&out, cookie);
    assert_eq!(hs.len(), 1, "{out}");
    assert_eq!(hs[0]["owners"][0]["pid"], srv.pid);
    assert_eq!(hs[0]["source"], "event");
}
