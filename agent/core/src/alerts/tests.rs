use bindwatch_common::{IPPROTO_TCP, kind};

use super::*;
use crate::holders::{NoFacts, diagnose};
use crate::testing;

/// The `[[watch]]` and `[alerts]` tables of a configuration file, as the
/// daemon's `config` composes them.
#[derive(serde::Deserialize)]
struct Sample {
    #[serde(default)]
    watch: Vec<WatchConfig>,
    #[serde(default)]
    alerts: AlertsConfig,
}

fn parse(text: &str) -> Sample {
    toml::from_str(text).unwrap()
}

fn ev(k: u8, cookie: u64, pid: u32, comm: &str, port: u16, ret: i32) -> Event {
    let mut r = testing::with_comm(testing::raw(k, "0.0.0.0", port, IPPROTO_TCP, ret), comm);
    r.pid = pid;
    r.sock_cookie = cookie;
    testing::event(&r)
}

fn listen(t: &mut HolderTable, cookie: u64, pid: u32, comm: &str) {
    t.apply(&ev(kind::BIND, cookie, pid, comm, 80, 0));
    t.apply(&ev(kind::LISTEN, cookie, pid, comm, 80, 0));
    t.set_process(ProcessInfo {
        pid,
        comm: comm.into(),
        ..ProcessInfo::default()
    });
}

fn engine() -> AlertEngine {
    let cfg = parse("[[watch]]\nname = \"web\"\nport = 80\n[watch.owner]\ncommand = \"nginx\"\n");
    let w = cfg
        .watch
        .into_iter()
        .map(|w| Watch::new(w, Some(1)))
        .collect();
    AlertEngine::new(w, &AlertsConfig::default())
}

fn names(v: &[Alert]) -> Vec<(String, bool)> {
    v.iter()
        .map(|a| (a.labels["alertname"].clone(), a.firing()))
        .collect()
}

#[test]
fn nginx_loses_port_80_and_a_stray_takes_it() {
    let mut t = HolderTable::new();
    let mut e = engine();
    listen(&mut t, 1, 100, "nginx");
    assert!(e.evaluate(&t, 1).is_empty(), "held by nginx: quiet");
    assert!(e.status(&t)[0].ok);

    t.apply(&ev(kind::RELEASE, 1, 100, "nginx", 80, 0));
    let out = e.evaluate(&t, 2);
    assert_eq!(names(&out), vec![("BindwatchPortLost".into(), true)]);
    assert!(out[0].annotations["last_holder"].contains("nginx (pid 100"));

    listen(&mut t, 2, 200, "socat");
    let out = e.evaluate(&t, 3);
    assert_eq!(
        names(&out),
        vec![
            ("BindwatchPortLost".into(), false),
            ("BindwatchPortTaken".into(), true)
        ]
    );
    assert_eq!(out[0].ends_ns, Some(3));
    assert!(out[1].annotations["holder"].contains("socat (pid 200"));
    assert_eq!(out[1].annotations["expected_owner"], "nginx");
    assert!(!e.status(&t)[0].ok);

    // nginx restarts and fails: bind conflict naming socat.
    let failed = ev(kind::BIND, 0, 300, "nginx", 80, -98);
    let d = diagnose(&t, &failed, &mut NoFacts).unwrap();
    let out = e.on_failed_bind(&failed, &d, 4);
    assert_eq!(names(&out), vec![("BindwatchBindConflict".into(), true)]);
    assert_eq!(out[0].annotations["holder_pid"], "200");
    assert_eq!(out[0].annotations["reason"], "same_address");
    assert_eq!(out[0].annotations["failing_process"], "nginx (pid 300)");

    // The stray goes, nginx holds it again: everything resolves.
    t.apply(&ev(kind::RELEASE, 2, 200, "socat", 80, 0));
    listen(&mut t, 3, 300, "nginx");
    let out = e.evaluate(&t, 5);
    let mut n = names(&out);
    n.sort();
    assert_eq!(
        n,
        vec![
            ("BindwatchBindConflict".into(), false),
            ("BindwatchPortTaken".into(), false)
        ]
    );
    assert_eq!(e.firing().count(), 0);
}

#[test]
fn firing_alerts_are_resent_and_grace_delays_port_lost() {
    let cfg = parse("[alerts]\nresend_every_secs = 10\n[[watch]]\nport = 80\ngrace_secs = 5\n");
    let w = cfg
        .watch
        .into_iter()
        .map(|w| Watch::new(w, Some(1)))
        .collect();
    let mut e = AlertEngine::new(w, &cfg.alerts);
    let t = HolderTable::new();
    let s = 1_000_000_000;
    assert!(e.evaluate(&t, 0).is_empty(), "within grace");
    assert!(e.evaluate(&t, 4 * s).is_empty(), "within grace");
    assert_eq!(e.evaluate(&t, 5 * s).len(), 1, "grace over");
    assert!(e.evaluate(&t, 6 * s).is_empty(), "not yet due");
    let again = e.evaluate(&t, 15 * s);
    assert_eq!(again.len(), 1, "re-sent");
    assert_eq!(again[0].starts_ns, 0, "same start");
}

#[test]
fn a_reload_keeps_firing_alerts_and_resolves_those_of_removed_watches() {
    let t = HolderTable::new();
    let mut e = engine();
    assert_eq!(
        names(&e.evaluate(&t, 1)),
        vec![("BindwatchPortLost".into(), true)]
    );
    // Same watch, another one added: nothing re-fires for "web".
    let cfg = parse(
        "[[watch]]\nname = \"web\"\nport = 80\n[watch.owner]\ncommand = \"nginx\"\n\
         [[watch]]\nname = \"dns\"\nport = 53\nproto = \"udp\"\n",
    );
    let w: Vec<Watch> = cfg
        .watch
        .into_iter()
        .map(|w| Watch::new(w, Some(1)))
        .collect();
    assert!(e.reconfigure(w, &cfg.alerts, 2).is_empty());
    let out = e.evaluate(&t, 3);
    assert_eq!(
        names(&out),
        vec![("BindwatchPortLost".into(), true)],
        "only dns is new"
    );
    assert_eq!(out[0].labels["watch"], "dns");
    // "web" removed: its alert resolves.
    let cfg = parse("[[watch]]\nname = \"dns\"\nport = 53\nproto = \"udp\"\n");
    let w: Vec<Watch> = cfg
        .watch
        .into_iter()
        .map(|w| Watch::new(w, Some(1)))
        .collect();
    let gone = e.reconfigure(w, &cfg.alerts, 4);
    assert_eq!(names(&gone), vec![("BindwatchPortLost".into(), false)]);
    assert_eq!(gone[0].labels["watch"], "web");
    assert_eq!(gone[0].ends_ns, Some(4));
}
