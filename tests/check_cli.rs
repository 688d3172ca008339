//! `bindwatch check` against the kernel: for every pair of the
//! conflict-rules matrix, the verdict `check` gives from the host's tables
//! (the holder's options read from its own descriptor) must be the
//! kernel's answer to the real bind made right after it. Then the same
//! question asked of a running daemon, and bad input.

use std::net::SocketAddr;
use std::process::Command;

use bindwatch::core::event::Proto;
use serde_json::Value;
use support::rules::{assert_all_agree, bind_as, cases, describe, kernel_refuses};
use support::*;

/// Exit code, standard output, standard error.
fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bindwatch_bin())
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().expect("check was killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verdicts_agree_with_the_kernel() {
    let ns = Netns::new("check");
    let path = format!("/run/netns/{}", ns.name);
    let mut checked = 0;
    let mut disagreements = Vec::new();
    for (holder, req) in cases(30000) {
        let _held = bind_as(&ns, holder.clone()).unwrap_or_else(|e| {
            panic!("holder {holder:?}: {e}");
        });
        let target = SocketAddr::new(req.addr, req.port).to_string();
        let uid = req.uid.to_string();
        let proto = if req.proto == Proto::Udp {
            "udp"
        } else {
            "tcp"
        };
        let mut args = vec![
            target.as_str(),
            "--proto",
            proto,
            "--user",
            &uid,
            "--netns",
            &path,
            "--standalone",
        ];
        if req.reuseaddr {
            args.push("--reuseaddr");
        }
        if req.reuseport {
            args.push("--reuseport");
        }
        let (code, out, err) = check(&args);
        assert!(
            code == 0 || code == 1,
            "check {args:?} exited {code}:\n{out}{err}"
        );
        let kernel = kernel_refuses(&ns, &holder, &req);
        if (code == 1) != kernel {
            disagreements.push(format!(
                "{} | kernel {} | check: {}",
                describe(&holder, &req),
                if kernel { "EADDRINUSE" } else { "ok" },
                out.lines().next().unwrap_or("")
            ));
        }
        checked += 1;
    }
    eprintln!("checked {checked} verdicts of `bindwatch check` against the kernel");
    assert_all_agree(checked, &disagreements);
}

#[test]
fn asks_the_running_daemon_and_refuses_bad_input() {
    let ns = Netns::new("checkd");
    let path = format!("/run/netns/{}", ns.name);
    let listen = free_local_addr();
    let state = temp("checkd");
    let daemon = Daemon::start(&state, &listen, "");
    let url = format!("http://{listen}");
    let mut srv = Server::spawn(&ns, &["socat", "TCP4-LISTEN:7445,bind=0.0.0.0", "-"]);
    srv.wait_listening(&ns, 7445);
    let ask = |target: &str| check(&[target, "--netns", &path, "--daemon", &url, "--json"]);
    // The daemon knows the listener once it has read its events.
    let (code, out) = wait_for("the daemon to judge the new listener", 30, || {
        let (code, out, err) = ask("127.0.0.1:7445");
        assert!(code == 0 || code == 1, "exit {code}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        (v["answered_by"] == "daemon" && v["would_bind"] == false).then_some((code, out))
    });
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(v["error"], "EADDRINUSE", "{out}");
    let blame = &v["diagnosis"]["holders"][0];
    assert_eq!(blame["reason"], "wildcard_holder", "{out}");
    assert_eq!(blame["holder"]["owners"][0]["pid"], srv.pid, "{out}");
    assert!(v["hint"].as_str().unwrap().contains("specific"), "{out}");

    let (code, out, _) = ask("127.0.0.1:7446");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, &v["answered_by"], &v["would_bind"]),
        (0, &Value::from("daemon"), &Value::from(true)),
        "{out}"
    );
    daemon.stop();

    // Text for people, from the host now that no daemon answers.
    let (code, out, _) = check(&["127.0.0.1:7445", "--netns", &path, "--daemon", &url]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("FAIL: tcp 127.0.0.1:7445 as uid 0 would fail with EADDRINUSE"),
        "{out}"
    );
    assert!(out.contains(&format!("socat (pid {}", srv.pid)), "{out}");
    assert!(out.contains("  fix: "), "{out}");

    for (args, names) in [
        (vec!["127.0.0.1:http"], "bad target"),
        (vec!["7445", "--proto", "sctp"], "--proto"),
        (
            vec!["7445", "--user", "no-such-user-here"],
            "no-such-user-here",
        ),
        (vec!["7445", "--netns", "/run/netns/none-such"], "none-such"),
        (vec!["127.0.0.1:7445", "--v6only"], "--v6only"),
    ] {
        let (code, out, err) = check(&args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(names), "{args:?}: {err}");
    }
    srv.stop();
}
