//! "nginx loses :80" end to end, with real components: nginx and socat in
//! a namespace, `bindwatch run` with a watched port, a real Alertmanager
//! receiving its alerts, and a real Prometheus scraping it and evaluating
//! the shipped alert rules. Every dashboard panel's query must return data
//! from that Prometheus. SIGHUP with a bad file keeps the old configuration.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use support::*;

/// Alertmanager's, Prometheus's and the agent's addresses: loopback ports
/// free when the test starts.
fn addr_am() -> &'static str {
    static A: OnceLock<String> = OnceLock::new();
    A.get_or_init(free_local_addr)
}

fn addr_prom() -> &'static str {
    static A: OnceLock<String> = OnceLock::new();
    A.get_or_init(free_local_addr)
}

fn addr_agent() -> &'static str {
    static A: OnceLock<String> = OnceLock::new();
    A.get_or_init(free_local_addr)
}

fn get(url: &str) -> Option<Value> {
    let out = Command::new("curl")
        .args(["-sf", "-m", "2", url])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn get_text(url: &str) -> String {
    curl(url).unwrap_or_else(|e| panic!("{e}"))
}

/// Active alerts in Alertmanager named `name`. Alertmanager is up before
/// the first call, so no answer is a failure, never an empty list: a wait
/// for an alert to resolve must not pass because Alertmanager went away.
fn am_alerts(name: &str) -> Vec<Value> {
    let am = addr_am();
    let url = format!("http://{am}/api/v2/alerts?active=true");
    let v = get(&url).unwrap_or_else(|| panic!("Alertmanager did not answer {url}"));
    v.as_array()
        .unwrap_or_else(|| panic!("{url} answered no list: {v}"))
        .clone()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == name && a["status"]["state"] == "active")
        .collect()
}

fn try_promql(expr: &str) -> Option<Vec<Value>> {
    let prom = addr_prom();
    let out = Command::new("curl")
        .args(["-sf", "-m", "5", "--data-urlencode"])
        .arg(format!("query={expr}"))
        .arg(format!("http://{prom}/api/v1/query"))
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].as_array().cloned()
}

fn promql(expr: &str) -> Vec<Value> {
    try_promql(expr).unwrap_or_else(|| panic!("Prometheus did not answer {expr}"))
}

/// A pid annotation (a string) as a number.
fn pid_of(v: &Value) -> Option<u32> {
    v.as_str()?.parse().ok()
}

fn have(bin: &str) -> bool {
    Command::new(bin).arg("--version").output().is_ok()
}

#[test]
fn nginx_loses_port_80_alerts_reach_alertmanager_and_prometheus_has_every_panel() {
    let (am, prom, agent) = (addr_am(), addr_prom(), addr_agent());
    for bin in [
        "prometheus",
        "prometheus-alertmanager",
        "nginx",
        "socat",
        "curl",
    ] {
        assert!(
            have(bin),
            "daemon_alerts: {bin} is not installed (scripts/test installs it)"
        );
    }
    let dir = std::env::temp_dir().join(format!("bindwatch-alerts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let ns = Netns::new("alerts");
    let nginx = Server::nginx(&ns, &["0.0.0.0:80"], 80);

    let _am = alertmanager(&dir, am, None);
    wait_for("alertmanager", 20, || {
        get(&format!("http://{am}/api/v2/status"))
    });

    let config = format!(
        "state_dir = \"{state}\"\n[http]\nlisten = \"{agent}\"\n[alerts]\nalertmanager = [\"http://{am}\"]\n\
         resend_every_secs = 5\n[[watch]]\nname = \"web\"\nport = 80\nnetns = \"/run/netns/{ns}\"\n\
         [watch.owner]\ncommand = \"nginx\"\n",
        state = dir.join("state").display(),
        ns = ns.name
    );
    let cfg_path = dir.join("bindwatch.toml");
    std::fs::write(&cfg_path, &config).unwrap();
    let agent_proc = spawn(
        bindwatch_bin().to_str().unwrap(),
        &["run", "--config", cfg_path.to_str().unwrap()],
        &dir.join("agent.log"),
    );
    let agent_pid = agent_proc.0.id() as i32;
    wait_for("the daemon to be ready", 60, || {
        curl(&format!("http://{agent}/readyz")).ok()
    });

    std::fs::write(
        dir.join("prom.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: bindwatch\n    static_configs:\n      - targets: ['{agent}']\n",
            repo().join("dashboards/bindwatch-rules.yml").display()
        ),
    )
    .unwrap();
    let _prom = spawn(
        "prometheus",
        &[
            &format!("--config.file={}", dir.join("prom.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            &format!("--web.listen-address={prom}"),
        ],
        &dir.join("prom.log"),
    );
    wait_for("prometheus to scrape the agent", 30, || {
        try_promql("bindwatch_build_info").filter(|v| !v.is_empty())
    });

    // Traffic, so accept counters move.
    for _ in 0..3 {
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.name, "curl", "-s", "http://127.0.0.1/"])
            .output();
    }
    assert!(
        get_text(&format!("http://{agent}/metrics"))
            .contains(r#"bindwatch_watched_port_up{port="80",proto="tcp",watch="web"} 1"#)
    );

    // A conflicting bind on the watched port: bind conflict, holder nginx.
    let err = ns.run(|| std::net::TcpListener::bind("0.0.0.0:80").unwrap_err());
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
    let c = wait_for("bind conflict naming nginx", 10, || {
        am_alerts("BindwatchBindConflict").into_iter().next()
    });
    assert_eq!(c["labels"]["watch"], "web");
    assert_eq!(c["labels"]["port"], "80");
    let family = nginx.family();
    assert!(
        family
            .iter()
            .any(|p| pid_of(&c["annotations"]["holder_pid"]) == Some(*p)),
        "{c:#}"
    );

    // nginx stops: port lost, timed from the listener's close.
    let mut nginx = nginx;
    let t0 = Instant::now();
    nginx.stop();
    let lost = wait_for("port lost", 10, || {
        am_alerts("BindwatchPortLost").into_iter().next()
    });
    eprintln!(
        "daemon_alerts: port lost visible in Alertmanager {} ms after nginx exited",
        t0.elapsed().as_millis()
    );
    assert!(
        lost["annotations"]["last_holder"]
            .as_str()
            .unwrap()
            .contains("nginx"),
        "{lost:#}"
    );

    // A stray process takes :80: port taken, naming it; port lost resolves.
    let mut stray = Server::spawn(&ns, &["socat", "TCP4-LISTEN:80,fork", "-"]);
    stray.wait_listening(&ns, 80);
    let taken = wait_for("port taken", 10, || {
        am_alerts("BindwatchPortTaken").into_iter().next()
    });
    assert_eq!(taken["annotations"]["holder_pid"], stray.pid.to_string());
    assert!(
        taken["annotations"]["holder"]
            .as_str()
            .unwrap()
            .contains("socat")
    );
    assert_eq!(taken["annotations"]["expected_owner"], "nginx");
    wait_for("port lost resolved", 10, || {
        am_alerts("BindwatchPortLost").is_empty().then_some(())
    });

    // nginx restarts and fails: the conflict names the stray.
    let prefix = format!("{}/", nginx.dir.as_ref().unwrap().display());
    let conf = format!("{}/nginx.conf", nginx.dir.as_ref().unwrap().display());
    let restart = Server::spawn(&ns, &["nginx", "-p", &prefix, "-c", &conf]);
    let c = wait_for("bind conflict naming the stray", 10, || {
        am_alerts("BindwatchBindConflict")
            .into_iter()
            .find(|a| pid_of(&a["annotations"]["holder_pid"]) == Some(stray.pid))
    });
    assert!(
        c["annotations"]["failing_process"]
            .as_str()
            .unwrap()
            .contains(&format!("pid {}", restart.pid)),
        "{c:#}"
    );
    assert_eq!(c["annotations"]["reason"], "same_address");
    eprintln!("daemon_alerts: alert as Alertmanager has it: {c:#}");
    drop(restart);

    // Prometheus: every panel's query has data (once scrapes and rule
    // evaluations have caught up); the shipped rules fire.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/bindwatch.json")).unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap().replace("$instance", ".*");
            let what = format!("panel {:?} to have data for {expr}", p["title"]);
            wait_for(&what, 30, || (!promql(&expr).is_empty()).then_some(()));
        }
    }
    for base in ["bindwatch_events_lost_total", "bindwatch_probe_attached"] {
        assert!(!promql(base).is_empty(), "{base}");
    }
    let mut polls = 0;
    wait_for("Prometheus rules firing", 20, || {
        let v = get(&format!("http://{prom}/api/v1/alerts"))?;
        polls += 1;
        if polls % 200 == 0 {
            eprintln!("daemon_alerts: Prometheus alerts so far: {v}");
        }
        let names: Vec<String> = v["data"]["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap_or("").to_owned())
            .collect();
        (names.iter().any(|n| n == "BindwatchPortTaken")
            && names.iter().any(|n| n == "BindwatchBindConflict"))
        .then_some(())
    });

    // 10k distinct failing ports: the port label stays bounded.
    ns.run(|| {
        // Not the watched port: that would be a bind conflict to alert on.
        for p in (1..=10_001u16).filter(|p| *p != 80) {
            let _ = std::net::TcpListener::bind(("192.0.2.1", p));
        }
    });
    // Events are read in order: once this process's failure on the last
    // port is in the timeline, all of its 10k failures have been counted.
    let me = std::process::id();
    wait_for("the last of the 10k failures recorded", 120, || {
        let v = get(&format!(
            "http://{agent}/api/v1/timeline?port=10001&since=1h&pid={me}"
        ))?;
        (!v["records"].as_array()?.is_empty()).then_some(())
    });
    let text = get_text(&format!("http://{agent}/metrics"));
    let ports: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("bindwatch_bind_failures_by_port_total{"))
        .filter_map(|l| l.split("port=\"").nth(1)?.split('"').next())
        .collect();
    assert!(ports.contains("other"));
    assert!(ports.len() <= 1024 + 1, "{} port label values", ports.len());
    let series = text
        .lines()
        .filter(|l| l.starts_with("bindwatch_") && !l.starts_with('#'))
        .count();
    eprintln!(
        "daemon_alerts: after 10k failing ports: {} port label values, {series} series in /metrics",
        ports.len()
    );

    // SIGHUP with a bad file: rejected, the old configuration stays.
    std::fs::write(&cfg_path, "[[watch]]\nport = 80\nbogus = 1\n").unwrap();
    support::signal(agent_pid as u32, support::Signal::HUP).expect("SIGHUP");
    wait_for("reload rejected", 10, || {
        get_text(&format!("http://{agent}/metrics"))
            .contains(r#"bindwatch_config_reloads_total{result="rejected"} 1"#)
            .then_some(())
    });
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap();
    assert!(log.contains("bogus"), "the error names the key: {log}");
    assert!(get_text(&format!("http://{agent}/metrics")).contains(r#"watch="web""#));

    // The stray goes and nginx is back: everything resolves.
    drop(stray);
    let _back = Server::nginx(&ns, &["0.0.0.0:80"], 80);
    wait_for("alerts resolved", 15, || {
        (am_alerts("BindwatchPortTaken").is_empty()
            && am_alerts("BindwatchBindConflict").is_empty())
        .then_some(())
    });

    // A good file adds a watch.
    std::fs::write(
        &cfg_path,
        config.clone() + "[[watch]]\nname = \"dns\"\nport = 53\nproto = \"udp\"\n",
    )
    .unwrap();
    support::signal(agent_pid as u32, support::Signal::HUP).expect("SIGHUP");
    wait_for("new watch after reload", 10, || {
        get_text(&format!("http://{agent}/metrics"))
            .contains(r#"watch="dns""#)
            .then_some(())
    });
    drop(agent_proc);
    let _ = std::fs::remove_dir_all(&dir);
}
