//! The timeline against real processes: the nginx story produces the
//! expected ordered record, and the CLI table, its JSON and the API agree;
//! `kill -9` during a burst of writes leaves a sound database holding every
//! event older than the batching interval, once.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The page's DOM after its script ran, from headless Chromium; a missing
/// or failing Chromium fails the test (scripts/test installs it).
fn chromium_dom(url: &str, screenshot: Option<&Path>) -> String {
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1300,800",
    ];
    let profile = std::env::temp_dir().join(format!(
        "bindwatch-chromium-{}-{}",
        std::process::id(),
        url.len()
    ));
    let run = |extra: &str| {
        Command::new("chromium")
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(url)
            .output()
    };
    let out =
        run("--dump-dom").unwrap_or_else(|e| panic!("chromium (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(p) = screenshot {
        let _ = run(&format!("--screenshot={}", p.display()));
    }
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// Failures drawn: marks carry how many failures they stand for.
fn mark_total(dom: &str) -> usize {
    dom.split(r#"class="mark" data-count=""#)
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse::<usize>().ok())
        .sum()
}

#[test]
fn nginx_story_timeline_is_ordered_and_every_surface_agrees() {
    let state = temp("tl-story");
    let ns = Netns::new("tl");
    let listen = &free_local_addr();
    let daemon = Daemon::start(
        &state,
        listen,
        &format!(
            "[[watch]]\nname = \"web\"\nport = 80\nnetns = \"/run/netns/{}\"\n[watch.owner]\ncommand = \"nginx\"\n",
            ns.name
        ),
    );
    // Each step waits for the daemon to have recorded the one before.
    let recorded = |what: &str, pred: &dyn Fn(&Value) -> bool| {
        wait_for(what, 30, || {
            let v: Value = serde_json::from_str(
                &curl(&format!("http://{listen}/api/v1/timeline?port=80&since=1h")).ok()?,
            )
            .ok()?;
            v["records"].as_array()?.iter().any(pred).then_some(())
        })
    };
    let mut nginx = Server::nginx(&ns, &["0.0.0.0:80"], 80);
    let err = ns.run(|| std::net::TcpListener::bind("0.0.0.0:80").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    recorded("the failed bind on nginx", &|r| {
        r["kind"] == "bind_failed" && r["holder_comm"] == "nginx"
    });
    nginx.stop();
    recorded("port lost", &|r| alert_fired(r, "BindwatchPortLost"));
    let mut stray = Server::spawn(&ns, &["socat", "TCP4-LISTEN:80", "-"]);
    stray.wait_listening(&ns, 80);
    let restart = nginx.nginx_again(&ns);
    let restart_pid = restart.pid;
    recorded("nginx's failed restart", &|r| {
        r["kind"] == "bind_failed" && r["pid"] == restart_pid && r["holder_comm"] == "socat"
    });
    drop(restart);

    let api: Value =
        serde_json::from_str(&curl(&format!("http://{listen}/api/v1/timeline?port=80")).unwrap())
            .unwrap();
    let api = api["records"].as_array().unwrap().clone();
    let bad = Command::new("curl")
        .args(["-s", "-w", "%{http_code}"])
        .arg(format!("http://{listen}/api/v1/timeline?port=eighty"))
        .output()
        .unwrap();
    let bad = String::from_utf8_lossy(&bad.stdout);
    assert!(
        bad.ends_with("400") && bad.contains(r#""parameter":"port""#),
        "{bad}"
    );
    let ui_dom = chromium_dom(&format!("http://{listen}/ui?port=80"), None);
    let ui_page = curl(&format!("http://{listen}/ui?port=80")).unwrap();
    daemon.stop();

    // With the daemon stopped, the CLI reads the file itself.
    let json: Vec<Value> = timeline_cli(&state, &["--port", "80", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let table = timeline_cli(&state, &["--port", "80"]);
    let key = |r: &Value| {
        (
            r["time_ns"].as_u64().unwrap(),
            r["kind"].as_str().unwrap().to_owned(),
        )
    };
    let api_keys: Vec<_> = api.iter().map(key).collect();
    let json_keys: Vec<_> = json.iter().map(key).collect();
    assert_eq!(api_keys, json_keys, "API and CLI JSON agree");
    assert_eq!(
        table.lines().count(),
        json.len() + 1,
        "one table row per record:\n{table}"
    );
    for r in &json {
        assert!(table.contains(r["summary"].as_str().unwrap()), "{table}");
    }

    // The story, in order (other records may sit between these).
    let nginx_pids = |r: &Value| r["comm"] == "nginx";
    type Step = (&'static str, Box<dyn Fn(&Value) -> bool>);
    let steps: Vec<Step> = vec![
        (
            "nginx listens",
            Box::new(move |r: &Value| r["kind"] == "listen" && nginx_pids(r)),
        ),
        (
            "a bind fails on nginx",
            Box::new(|r: &Value| r["kind"] == "bind_failed" && r["holder_comm"] == "nginx"),
        ),
        (
            "nginx stops listening",
            Box::new(|r: &Value| r["kind"] == "listen_stop" && r["comm"] == "nginx"),
        ),
        (
            "port lost",
            Box::new(|r: &Value| {
                r["kind"] == "alert_firing"
                    && r["summary"]
                        .as_str()
                        .unwrap()
                        .starts_with("BindwatchPortLost")
            }),
        ),
        (
            "socat listens",
            Box::new(|r: &Value| r["kind"] == "listen" && r["comm"] == "socat"),
        ),
        (
            "port taken",
            Box::new(|r: &Value| {
                r["kind"] == "alert_firing"
                    && r["summary"]
                        .as_str()
                        .unwrap()
                        .starts_with("BindwatchPortTaken")
            }),
        ),
        (
            "nginx's restart fails on socat",
            Box::new(|r: &Value| {
                r["kind"] == "bind_failed" && r["comm"] == "nginx" && r["holder_comm"] == "socat"
            }),
        ),
    ];
    let mut at = 0;
    for (what, f) in &steps {
        let pos = json[at..]
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("{what} missing after record {at}:\n{table}"));
        at += pos + 1;
    }
    // Alerts carry the time they were raised, a moment after their event.
    let first_fail = json
        .iter()
        .position(|r| r["kind"] == "bind_failed")
        .unwrap();
    assert!(json[first_fail..].iter().any(|r| {
        r["kind"] == "alert_firing"
            && r["summary"]
                .as_str()
                .unwrap()
                .starts_with("BindwatchBindConflict")
    }));
    assert!(
        json.windows(2)
            .all(|w| w[0]["time_ns"].as_u64() <= w[1]["time_ns"].as_u64())
    );
    // The picture: the same lanes, bars and marks from the HTML file and
    // from the daemon's /ui, as headless Chromium drew them.
    let html = state.parent().unwrap().join("timeline.html");
    timeline_cli(&state, &["--port", "80", "--html", html.to_str().unwrap()]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("timeline-report.png");
    let file_dom = chromium_dom(&format!("file://{}", html.display()), Some(&shot));
    // Nothing in either page reaches the network (no external script,
    // stylesheet, image, fetch or import).
    let file_page = std::fs::read_to_string(&html).unwrap();
    for (what, page) in [("report", &file_page), ("/ui", &ui_page)] {
        let refs = bindwatch::report::network_references(page);
        assert!(refs.is_empty(), "{what} reaches the network: {refs:?}");
    }
    let failures = json.iter().filter(|r| r["kind"] == "bind_failed").count();
    for (what, dom) in [("report", &file_dom), ("/ui", &ui_dom)] {
        assert_eq!(
            count(dom, r#"class="lane" data-port="80""#),
            1,
            "{what}: one lane"
        );
        assert!(
            count(dom, r#"class="bar" data-label="nginx"#) >= 1,
            "{what}: nginx bar"
        );
        assert!(
            count(dom, r#"class="bar" data-label="socat"#) >= 1,
            "{what}: socat bar"
        );
        assert_eq!(mark_total(dom), failures, "{what}: every failure drawn");
        assert!(count(dom, r#"class="alert""#) >= 3, "{what}: alert spans");
    }
    eprintln!("timeline_story: screenshot at {}", shot.display());
    let fail = json.iter().find(|r| r["holder_comm"] == "socat").unwrap();
    assert_eq!(fail["holder_pid"], stray.pid);
    assert_eq!(fail["reason"], "same_address");
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

#[test]
fn kill_9_during_a_burst_keeps_the_database_sound_and_complete() {
    let state = temp("tl-crash");
    let listen = &free_local_addr();
    let mut daemon = Daemon::start(&state, listen, "");
    let ns = Netns::new("crash");
    // 3000 held ports; then one failed bind on each, in order, at about
    // 2000 a second, each on a port of its own.
    let (done, kill_at) = ns.run(move || {
        // Raising our own descriptor limit (root).
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(16384),
                maximum: Some(16384),
            },
        )
        .expect("RLIMIT_NOFILE");
        let held: Vec<_> = (0..3000u16)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", 40000 + i)).unwrap())
            .collect();
        let start = Instant::now();
        let mut done: Vec<(u16, Instant)> = Vec::new();
        let mut kill_at = None;
        for i in 0..3000u16 {
            let port = 40000 + i;
            let e = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
            done.push((port, Instant::now()));
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
            if kill_at.is_none() && start.elapsed() > Duration::from_millis(1000) {
                kill_at = Some(Instant::now());
                support::signal(daemon.child.id(), support::Signal::KILL).expect("SIGKILL");
            }
        }
        drop(held);
        let _ = daemon.child.wait();
        (done, kill_at.expect("the burst outlasted a second"))
    });

    let db = state.join("timeline.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mut seen: HashMap<u16, u32> = HashMap::new();
    let mut st = conn
        // Only this test's ports: the daemon sees every namespace.
        .prepare(
            "SELECT port FROM records WHERE kind = 'bind_failed' AND port BETWEEN 40000 AND 42999",
        )
        .unwrap();
    for p in st.query_map([], |r| r.get::<_, u16>(0)).unwrap() {
        *seen.entry(p.unwrap()).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "nothing duplicated: {dups:?}");
    // Older than the batching interval (250 ms) before the kill, plus
    // 250 ms for the event to reach the writer: present.
    let cutoff = kill_at - Duration::from_millis(500);
    let must: Vec<u16> = done
        .iter()
        .filter(|(_, t)| *t < cutoff)
        .map(|(p, _)| *p)
        .collect();
    let missing: Vec<&u16> = must.iter().filter(|p| !seen.contains_key(p)).collect();
    eprintln!(
        "timeline_crash: {} failures before the cutoff, {} written in all, {} missing",
        must.len(),
        seen.len(),
        missing.len()
    );
    assert!(!must.is_empty());
    assert!(missing.is_empty(), "missing {missing:?}");

    // It starts again on the same file.
    let again = Daemon::start(&state, listen, "");
    again.stop();
    let out = timeline_cli(&state, &["--kind", "agent_start"]);
    assert_eq!(out.lines().count(), 3, "two starts recorded:\n{out}");
    let _ = std::fs::remove_dir_all(state.parent().unwrap());
}

/// "Who held the port at that moment?" across a holder's restart and the
/// daemon's: the interval of a holder that outlives a restart of bindwatch
/// is one interval, a moment while bindwatch was down is answered from both
/// sides of the gap, and the failures around the moment are listed.
#[test]
fn at_a_moment_across_holder_and_daemon_restarts() {
    const PORT: u16 = 7481;
    let state = temp("tl-at");
    let ns = Netns::new("tlat");
    let listen = free_local_addr();
    let now = bindwatch::core::clock::now_unix_ns;
    let recorded = |listen: &str, what: &str, pred: &dyn Fn(&Value) -> bool| {
        wait_for(what, 30, || {
            let v: Value = serde_json::from_str(
                &curl(&format!("http://{listen}/api/v1/timeline?port={PORT}")).ok()?,
            )
            .ok()?;
            v["records"].as_array()?.iter().any(pred).then_some(())
        })
    };
    let daemon = Daemon::start(&state, &listen, "");
    let socat = |ns: &Netns| {
        let mut s = Server::spawn(ns, &["socat", &format!("TCP4-LISTEN:{PORT}"), "-"]);
        s.wait_listening(ns, PORT);
        s
    };
    let mut first = socat(&ns);
    let first_pid = first.pid;
    recorded(&listen, "the first holder's listen", &|r| {
        r["kind"] == "listen" && r["pid"] == first_pid
    });
    let t_first = now();
    first.stop();
    recorded(&listen, "the first holder's stop", &|r| {
        r["kind"] == "listen_stop" && r["pid"] == first_pid
    });
    let mut second = socat(&ns);
    let second_pid = second.pid;
    recorded(&listen, "the second holder's listen", &|r| {
        r["kind"] == "listen" && r["pid"] == second_pid
    });
    let t_second = now();
    daemon.stop();
    let t_down = now();
    let daemon = Daemon::start(&state, &listen, "");
    let err = ns.run(|| std::net::TcpListener::bind(("0.0.0.0", PORT)).unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    recorded(&listen, "the failed bind", &|r| {
        r["kind"] == "bind_failed" && r["holder_comm"] == "socat"
    });
    let t_fail = now();
    // The API answers the same question.
    let api: Value = serde_json::from_str(
        &curl(&format!(
            "http://{listen}/api/v1/timeline?port={PORT}&at={}",
            bindwatch::core::clock::rfc3339_utc(t_down)
        ))
        .unwrap(),
    )
    .unwrap();
    let (status, body) = http_get(
        &listen,
        &format!("/api/v1/timeline?port={PORT}&at=whenever"),
    )
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at"), "{body}");
    daemon.stop();

    let at = |t: u64| -> Value {
        let out = timeline_cli(
            &state,
            &[
                "--port",
                &PORT.to_string(),
                "--at",
                &bindwatch::core::clock::rfc3339_utc(t),
                "--json",
            ],
        );
        serde_json::from_str(&out).unwrap()
    };
    let holders = |v: &Value| -> Vec<Value> { v["holders"].as_array().unwrap().clone() };

    let v = at(t_first);
    let h = holders(&v);
    assert_eq!(h.len(), 1, "{v:#}");
    assert_eq!(
        (&h[0]["pid"], &h[0]["since"], &h[0]["until"]),
        (&first_pid.into(), &"recorded".into(), &"released".into()),
        "{v:#}"
    );

    for (t, watching) in [(t_second, true), (t_down, false)] {
        let v = at(t);
        let h = holders(&v);
        assert_eq!(v["watching"], watching, "{v:#}");
        assert_eq!(
            h.len(),
            1,
            "one interval across the daemon's restart: {v:#}"
        );
        assert_eq!(h[0]["pid"], second_pid, "{v:#}");
        assert_eq!(h[0]["since"], "recorded", "{v:#}");
        assert_eq!(h[0]["until"], "still_held", "{v:#}");
        assert_eq!(h[0]["restarts_spanned"], 1, "{v:#}");
    }
    assert_eq!(
        holders(&api),
        holders(&at(t_down)),
        "the API and the CLI agree"
    );

    let v = at(t_fail);
    let fails = v["failures"].as_array().unwrap();
    assert!(fails.iter().any(|f| f["holder_pid"] == second_pid), "{v:#}");
    let text = timeline_cli(
        &state,
        &[
            "--port",
            &PORT.to_string(),
            "--at",
            &bindwatch::core::clock::rfc3339_utc(t_down),
        ],
    );
    assert!(
        text.contains(&format!("held by socat (pid {second_pid})")),
        "{text}"
    );
    assert!(
        text.contains("found again across 1 bindwatch restart(s)"),
        "{text}"
    );
    assert!(text.contains("bindwatch was not running then"), "{text}");
    // The picture marks the moment; the held records keep the holder's bar
    // whole across the daemon's restart.
    let html = state.parent().unwrap().join("timeline-at.html");
    timeline_cli(
        &state,
        &[
            "--port",
            &PORT.to_string(),
            "--at",
            &bindwatch::core::clock::rfc3339_utc(t_down),
            "--html",
            html.to_str().unwrap(),
        ],
    );
    let dom = chromium_dom(&format!("file://{}", html.display()), None);
    assert_eq!(count(&dom, r#"id="at""#), 1, "the moment is marked once");
    assert_eq!(
        count(&dom, &format!(r#"data-label="socat ({second_pid})""#)),
        1,
        "one bar for the second holder"
    );
    second.stop();
}
