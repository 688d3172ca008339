//! Faults and hostile input against the real daemon: the timeline's disk
//! fills up, its database is damaged or locked at
//! start-up, alert targets are down, the ring buffer overflows, HTTP
//! requests are malformed or oversized; and the security settings: bearer
//! token and TLS (scraped by a real Prometheus), redaction of secrets in
//! command lines, private state files.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn json(url: &str) -> Option<Value> {
    serde_json::from_str(&curl(url).ok()?).ok()
}

/// Status code and body of a request `curl` makes with `args`.
/// curl's HTTP status and body; no HTTP answer at all fails the test.
fn http(args: &[&str]) -> (u16, String) {
    try_http(args).unwrap_or_else(|(code, e)| panic!("curl {args:?}: exit {code}: {e}"))
}

/// curl's HTTP status and body, or, when no HTTP answer came, curl's exit
/// code and its error.
fn try_http(args: &[&str]) -> Result<(u16, String), (i32, String)> {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "000"));
    match code.trim().parse::<u16>() {
        Ok(c) if c != 0 && out.status.success() => Ok((c, body.to_owned())),
        _ => Err((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
    }
}

/// Failed binds in `ns` against a socat holding `port`: returns the holder.
fn conflict_source(ns: &Netns, port: u16) -> Server {
    let mut holder = Server::spawn(
        ns,
        &[
            "socat",
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"),
            "-",
        ],
    );
    holder.wait_listening(ns, port);
    holder
}

fn fail_binds(ns: &Netns, port: u16, n: usize) {
    ns.run(move || {
        for _ in 0..n {
            let s = std::net::TcpListener::bind(("127.0.0.1", port));
            assert!(s.is_err(), "port {port} should be taken");
        }
    });
}

#[test]
fn timeline_disk_full_keeps_the_daemon_working_and_writes_resume() {
    let base = temp("rel-full");
    let mnt = base.parent().unwrap().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run_ok(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=4m",
            "bwfull",
            mnt.to_str().unwrap(),
        ],
    );
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _u = Umount(&mnt);
    let state = mnt.join("state");
    let listen = &free_local_addr();
    let ns = Netns::new("full");
    let daemon = Daemon::start(&state, listen, "");
    let _holder = conflict_source(&ns, 8081);
    fail_binds(&ns, 8081, 5);
    wait_for("the first failures in the timeline", 10, || {
        let v = json(&format!(
            "http://{listen}/api/v1/timeline?port=8081&kind=bind_failed"
        ))?;
        (v["records"].as_array()?.len() >= 5).then_some(())
    });

    // Fill the file system.
    let filler = mnt.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let cookie = ns.cookie();
    fail_binds(&ns, 8081, 1000);
    let health = wait_for("healthz to say the timeline is failing", 15, || {
        let h = json(&format!("http://{listen}/healthz"))?;
        (h["status"] == "degraded").then_some(h)
    });
    assert!(
        health["timeline"].as_str().unwrap().starts_with("failing:"),
        "{health}"
    );
    // The metrics follow at the next tick.
    wait_for("bindwatch_timeline_up 0 and the errors counted", 5, || {
        (metric(listen, "bindwatch_timeline_up") == 0.0
            && try_metric(listen, "bindwatch_timeline_write_errors_total").is_ok_and(|v| v >= 1.0))
        .then_some(())
    });
    // The API still works: the newest 1000 conflicts on the port (as many
    // as it keeps) are all this namespace's, each diagnosed.
    wait_for("the failures diagnosed", 20, || {
        let v = json(&format!(
            "http://{listen}/api/v1/conflicts?port=8081&limit=1000"
        ))?;
        let cs = v["conflicts"].as_array()?;
        (cs.len() == 1000 && cs.iter().all(|c| c["netns_cookie"] == cookie)).then_some(())
    });
    let conflicts = json(&format!(
        "http://{listen}/api/v1/conflicts?port=8081&limit=1"
    ))
    .unwrap();
    assert_eq!(
        conflicts["conflicts"][0]["diagnosis"]["holders"][0]["holder"]["owners"][0]["comm"],
        "socat"
    );

    // Space returns: the held-back records are written.
    std::fs::remove_file(&filler).unwrap();
    wait_for("healthz ok again", 15, || {
        let h = json(&format!("http://{listen}/healthz"))?;
        (h["status"] == "ok").then_some(())
    });
    wait_for("bindwatch_timeline_up 1 again", 5, || {
        try_metric(listen, "bindwatch_timeline_up")
            .is_ok_and(|v| v == 1.0)
            .then_some(())
    });
    wait_for("the failures during the outage in the timeline", 10, || {
        let v = json(&format!(
            "http://{listen}/api/v1/timeline?port=8081&kind=bind_failed&limit=5000"
        ))?;
        (v["records"].as_array()?.len() >= 1005).then_some(())
    });

    assert_eq!(
        metric(listen, "bindwatch_timeline_records_dropped_total"),
        0.0
    );
    daemon.stop();
}

#[test]
fn a_damaged_or_locked_database_is_reported_and_never_replaced() {
    // Damaged: garbage where the database should be.
    let state = temp("rel-damaged");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("timeline.db");
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "");
    let h = json(&format!("http://{listen}/healthz")).unwrap();
    assert_eq!(h["status"], "degraded", "{h}");
    let why = h["timeline"].as_str().unwrap();
    assert!(
        why.contains("damaged") && why.contains("move the file aside"),
        "{why}"
    );
    // The daemon still serves metrics; the evidence is untouched.
    curl(&format!("http://{listen}/metrics")).unwrap();
    let (code, body) = http(&[&format!("http://{listen}/api/v1/timeline")]);
    assert_eq!(code, 503, "{body}");
    daemon.stop();
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "the damaged file was written to"
    );
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert!(log.contains("damaged"), "{log}");

    // Locked: another process holds a write transaction on a sound file.
    let state = temp("rel-locked");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("timeline.db");
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch("CREATE TABLE t(x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .unwrap();
    let daemon = Daemon::start(&state, listen, "");
    let h = json(&format!("http://{listen}/healthz")).unwrap();
    assert!(
        h["timeline"]
            .as_str()
            .unwrap()
            .contains("locked by another process"),
        "{h}"
    );
    daemon.stop();
    drop(other);
}

#[test]
fn state_files_are_private_and_a_world_writable_config_is_refused() {
    let state = temp("rel-perms");
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("timeline.db")), 0o600, "timeline.db");
    // Least privilege: after start-up only CAP_DAC_READ_SEARCH (2),
    // CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19) and CAP_SYS_ADMIN (21), in
    // every set, and no_new_privs.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap()
    };
    let want = format!("{:016x}", (1u64 << 2) | (1 << 12) | (1 << 19) | (1 << 21));
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(field(set), want, "{set}");
    }
    assert_eq!(field("CapAmb:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // And it still works with them: a listener appears in the table.
    let ns = Netns::new("perms");
    let mut l = Server::spawn(&ns, &["socat", "TCP-LISTEN:8097,bind=127.0.0.1", "-"]);
    l.wait_listening(&ns, 8097);
    wait_for("a listener seen after the drop", 10, || {
        curl(&format!("http://{listen}/api/v1/holders?port=8097"))
            .ok()?
            .contains("socat")
            .then_some(())
    });
    daemon.stop();

    let cfg = state.with_extension("toml");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(bindwatch_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("world-writable"), "{err}");
}

#[test]
fn hostile_http_requests_get_json_errors_and_the_daemon_stays_up() {
    let state = temp("rel-http");
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "");
    let base = format!("http://{listen}");
    let long = "a".repeat(3000);
    let many: String = (0..40).map(|i| format!("p{i}=1&")).collect();
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (format!("{base}/api/v1/holders?port={long}"), 400, None),
        (format!("{base}/api/v1/holders?{long}=1"), 400, None),
        (format!("{base}/api/v1/holders?{many}"), 400, None),
        (
            format!("{base}/api/v1/holders?port=80&port=81"),
            400,
            Some("port"),
        ),
        (
            format!("{base}/api/v1/holders?port=99999"),
            400,
            Some("port"),
        ),
        (
            format!("{base}/api/v1/holders?port=80&addr=%00%FF"),
            400,
            Some("addr"),
        ),
        (format!("{base}/api/v1/holders?port=%ZZ"), 400, None),
        (
            format!("{base}/api/v1/timeline?since=yesterday-ish"),
            400,
            Some("since"),
        ),
        (
            format!("{base}/api/v1/timeline?limit=-1"),
            400,
            Some("limit"),
        ),
        (
            format!("{base}/api/v1/conflicts?limit=1000000"),
            400,
            Some("limit"),
        ),
        (format!("{base}/api/v1/../../etc/passwd"), 404, None),
        (format!("{base}/nope"), 404, None),
    ];
    for (url, want, param) in cases {
        let (code, body) = http(&[&url]);
        let shown = &url[..url.len().min(120)];
        assert_eq!(code, want, "{shown}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{shown}: not JSON: {body}"));
        assert!(v["error"].is_string(), "{shown}: {v}");
        assert!(
            body.len() < 1024,
            "{shown}: the error repeats too much: {} bytes",
            body.len()
        );
        if let Some(p) = param {
            assert_eq!(v["parameter"], p, "{shown}: {v}");
        }
    }
    // Past hyper's own URI limit: a 414 before any of our code runs.
    let huge = "a".repeat(100_000);
    let (code, _) = http(&[&format!("{base}/api/v1/holders?port={huge}")]);
    assert_eq!(code, 414);
    let (code, body) = http(&["-X", "POST", &format!("{base}/api/v1/holders?port=80")]);
    assert_eq!(code, 405, "{body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok(), "{body}");
    // Garbage on the socket, a huge header, a slow half request.
    use std::io::{Read, Write};
    for raw in [
        b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
        format!(
            "GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "b".repeat(200_000)
        )
        .into_bytes(),
        b"GET /api/v1/holders?port=80 HTTP/1.1\r\nHost: x\r\n".to_vec(),
    ] {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&raw);
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
    }
    let h = json(&format!("{base}/healthz")).expect("the daemon answers after hostile input");
    assert_eq!(h["status"], "ok");
    daemon.stop();
}

#[test]
fn bearer_token_and_tls_protect_the_api_and_prometheus_scrapes_through_them() {
    if Command::new("openssl").arg("version").output().is_err()
        || Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
    {
        panic!("token_tls: openssl and prometheus are needed (scripts/test installs them)");
    }
    let state = temp("rel-tls");
    let dir = state.parent().unwrap().to_owned();
    let (cert, key, token) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("token"));
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bindwatch-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    std::fs::write(&token, "t0ken-for-tests\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let listen = &free_local_addr();
    let extra = format!(
        "token_file = {:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
        token, cert, key
    );
    // A token file others can read is refused.
    let cfg = state.with_extension("toml");
    std::fs::write(&cfg, format!("[http]\nlisten = \"{listen}\"\n{extra}")).unwrap();
    let out = Command::new(bindwatch_bin())
        .args(["run", "--config", cfg.to_str().unwrap(), "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("readable by everyone"));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    let cfg_text = format!("[http]\nlisten = \"{listen}\"\n{extra}");
    std::fs::write(&cfg, &cfg_text).unwrap();
    let log = std::fs::File::create(state.with_extension("log")).unwrap();
    let _daemon = Proc(
        Command::new(bindwatch_bin())
            .args(["run", "--config", cfg.to_str().unwrap(), "--state-dir"])
            .arg(&state)
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ca = cert.to_str().unwrap();
    let base = format!("https://{listen}");
    wait_for("the daemon over HTTPS", 30, || {
        try_http(&["--cacert", ca, &format!("{base}/readyz")])
            .is_ok_and(|(code, _)| code == 200)
            .then_some(())
    });
    // Health is open; everything else needs the token, /metrics included.
    assert_eq!(http(&["--cacert", ca, &format!("{base}/healthz")]).0, 200);
    for path in [
        "/metrics",
        "/api/v1/holders?port=80",
        "/api/v1/conflicts",
        "/api/v1/timeline",
        "/ui",
    ] {
        let (code, body) = http(&["--cacert", ca, &format!("{base}{path}")]);
        assert_eq!(code, 401, "{path} without a token: {body}");
        let (code, _) = http(&[
            "--cacert",
            ca,
            "-H",
            "Authorization: Bearer wrong",
            &format!("{base}{path}"),
        ]);
        assert_eq!(code, 401, "{path} with a wrong token");
        let (code, _) = http(&[
            "--cacert",
            ca,
            "-H",
            "Authorization: Bearer t0ken-for-tests",
            &format!("{base}{path}"),
        ]);
        assert_eq!(code, 200, "{path} with the token");
    }
    // Plain HTTP on the TLS port connects, and what comes back is the TLS
    // side's alert, not HTTP: curl stops with "Received HTTP/0.9 when not
    // allowed" (exit 1). A daemon that went away would give a refusal (7)
    // or a time-out (28) instead.
    let plain = try_http(&[&format!("http://{listen}/metrics")]);
    match plain {
        Err((1, e)) if e.contains("HTTP/0.9") => {}
        other => panic!("plain HTTP on the TLS port: {other:?}"),
    }

    // `who` and `check` ask the protected daemon with its configuration's
    // token and certificate, and say which source answered.
    let cli = |args: &[&str]| {
        let out = Command::new(bindwatch_bin()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cfg_s = cfg.to_str().unwrap();
    let (code, out, err) = cli(&["who", "9", "--config", cfg_s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(from the running daemon)"), "{out}");
    assert!(err.is_empty(), "{err}");
    let (_, out, err) = cli(&["check", ":9", "--config", cfg_s, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(v["answered_by"], "daemon", "{out}{err}");
    // Without the configuration: the certificate is not trusted, and the
    // answer says it came from the kernel, and why.
    let (code, out, err) = cli(&["who", "9", "--daemon", &base]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(from the kernel's socket tables)"), "{out}");
    assert!(
        err.contains(&format!("the daemon at {base} did not answer"))
            && err.contains("certificate"),
        "{err}"
    );
    // With a configuration whose token file cannot be read: 401, and why.
    let no_token = dir.join("no-token.toml");
    std::fs::write(
        &no_token,
        cfg_text.replace(token.to_str().unwrap(), "/nonexistent/token"),
    )
    .unwrap();
    let (_, out, err) = cli(&["who", "9", "--config", no_token.to_str().unwrap()]);
    assert!(out.contains("(from the kernel's socket tables)"), "{out}");
    assert!(
        err.contains("401") && err.contains("token file cannot be used"),
        "{err}"
    );

    // A real Prometheus scrapes it with the CA and the token file.
    let prom_listen = &free_local_addr();
    std::fs::write(
        dir.join("prom.yml"),
        format!(
            "global: {{ scrape_interval: 1s }}\nscrape_configs:\n  - job_name: bindwatch\n    scheme: https\n    \
             tls_config: {{ ca_file: {ca} }}\n    authorization: {{ credentials_file: {} }}\n    \
             static_configs: [{{ targets: ['{listen}'] }}]\n",
            token.display()
        ),
    )
    .unwrap();
    let _prom = spawn(
        "prometheus",
        &[
            &format!("--config.file={}", dir.join("prom.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address={prom_listen}"),
        ],
        &dir.join("prometheus.log"),
    );
    wait_for(
        "Prometheus to scrape bindwatch over HTTPS with the token",
        60,
        || {
            let out = Command::new("curl")
                .args([
                    "-sf",
                    "-m",
                    "2",
                    "--data-urlencode",
                    "query=bindwatch_build_info",
                ])
                .arg(format!("http://{prom_listen}/api/v1/query"))
                .output()
                .ok()?;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (!v["data"]["result"].as_array()?.is_empty()).then_some(())
        },
    );
}

/// HTTPS alert targets for real: Alertmanager 0.25 serving TLS through its
/// web config file, and a webhook behind socat's TLS, both with a
/// certificate from a CA of the test's own. The target given that CA gets
/// the alert (the webhook with its bearer token); the same Alertmanager
/// without it is refused by certificate checking, and counted failed.
#[test]
fn alerts_reach_alertmanager_and_a_webhook_over_https_with_their_own_ca() {
    for bin in ["openssl", "prometheus-alertmanager", "socat", "curl"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            "alert_tls: {bin} is not installed (scripts/test installs it)"
        );
    }
    let state = temp("rel-alert-tls");
    let dir = state.parent().unwrap().to_owned();
    let (ca, cert, key) = ca_and_server_cert(&dir);
    let ca_s = ca.to_str().unwrap();

    let am = free_local_addr();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: {cert:?}\n  key_file: {key:?}\n"),
    )
    .unwrap();
    let _am = alertmanager(&dir, &am, Some(&web));
    let am_alerts = || -> Option<Value> {
        let out = Command::new("curl")
            .args(["-sSf", "-m", "5", "--cacert", ca_s])
            .arg(format!("https://{am}/api/v2/alerts"))
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    wait_for("Alertmanager over HTTPS", 30, am_alerts);

    let plain = free_local_port();
    let got = webhook_receiver(plain);
    let hook = free_local_port();
    let _tls = spawn(
        "socat",
        &[
            &format!(
                "OPENSSL-LISTEN:{hook},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ),
            &format!("TCP:127.0.0.1:{plain}"),
        ],
        &dir.join("socat.log"),
    );
    wait_for("the webhook's TLS front", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", hook)).ok()
    });
    let token = dir.join("hook-token");
    std::fs::write(&token, "hook-t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();

    let ns = Netns::new("alert-tls");
    let mut holder = Server::spawn(&ns, &["socat", "TCP4-LISTEN:8091", "-"]);
    holder.wait_listening(&ns, 8091);
    let listen = &free_local_addr();
    let daemon = Daemon::start(
        &state,
        listen,
        &format!(
            "[alerts]\nresend_every_secs = 5\nretries = 1\n\
             alertmanager = [{{ url = \"https://{am}\", ca_file = {ca:?} }}, \"https://{am}\"]\n\
             webhook = [{{ url = \"https://127.0.0.1:{hook}/hook\", ca_file = {ca:?}, \
             bearer_token_file = {token:?} }}]\n\
             [[watch]]\nname = \"svc\"\nport = 8091\nnetns = \"/run/netns/{}\"\n",
            ns.name
        ),
    );
    holder.stop();
    let lost = wait_for("BindwatchPortLost in Alertmanager over HTTPS", 30, || {
        am_alerts()?
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == "BindwatchPortLost")
            .cloned()
    });
    assert_eq!(lost["labels"]["watch"], "svc", "{lost:#}");
    wait_for("the alert at the HTTPS webhook, with its token", 30, || {
        let g = got.lock().unwrap();
        (g.contains("BindwatchPortLost") && g.contains("Bearer hook-t0ken")).then_some(())
    });
    // The same Alertmanager without the CA: refused, counted, and said why.
    wait_metric(
        listen,
        r#"bindwatch_alert_deliveries_total{result="failed",target="alertmanager"}"#,
        1.0,
        30,
    );
    let log = std::fs::read_to_string(state.with_extension("log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("alert delivery failed") && l.contains("certificate")),
        "the log says why the target without the CA failed:\n{log}"
    );
    wait_metric(
        listen,
        r#"bindwatch_alert_deliveries_total{result="ok",target="webhook"}"#,
        1.0,
        10,
    );
    daemon.stop();
}

#[test]
fn secrets_in_command_lines_are_masked_in_every_surface() {
    let state = temp("rel-redact");
    let dir = state.parent().unwrap().to_owned();
    let listen = &free_local_addr();
    let hook_port: u16 = free_local_port();
    let got = webhook_receiver(hook_port);
    let ns = Netns::new("redact");
    let export = dir.join("events.jsonl");
    let daemon = Daemon::start(
        &state,
        listen,
        &format!(
            "[alerts]\nwebhook = [\"http://127.0.0.1:{hook_port}/hook\"]\n\
             [export]\nevents_jsonl = {export:?}\n\
             [[watch]]\nname = \"api\"\nport = 8090\nnetns = \"/run/netns/{}\"\nowner = {{ command = \"nginx\" }}\n",
            ns.name
        ),
    );
    let secret = "hunter2-s3cret";
    let mut holder = Server::spawn(
        &ns,
        &[
            "python3",
            "-c",
            "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',8090)); s.listen(); time.sleep(60)",
            &format!("--password={secret}"),
            "--api-key",
            secret,
        ],
    );
    holder.wait_listening(&ns, 8090);
    fail_binds(&ns, 8090, 3);
    let holders = wait_for("the holder in the API", 10, || {
        let v = curl(&format!("http://{listen}/api/v1/holders?port=8090")).ok()?;
        v.contains("python3").then_some(v)
    });
    assert!(
        holders.contains("--password=***") && holders.contains("--api-key ***"),
        "{holders}"
    );
    wait_for("the failed binds in the timeline", 10, || {
        let v = json(&format!(
            "http://{listen}/api/v1/timeline?port=8090&kind=bind_failed"
        ))?;
        (v["records"].as_array()?.len() >= 3).then_some(())
    });
    wait_for("an alert at the webhook", 15, || {
        (!got.lock().unwrap().is_empty()).then_some(())
    });
    let surfaces = [
        ("API holders", holders),
        (
            "API conflicts",
            curl(&format!("http://{listen}/api/v1/conflicts?port=8090")).unwrap(),
        ),
        (
            "API timeline",
            curl(&format!("http://{listen}/api/v1/timeline?port=8090")).unwrap(),
        ),
        (
            "page",
            curl(&format!("http://{listen}/ui?port=8090")).unwrap(),
        ),
        ("webhook", got.lock().unwrap().clone()),
    ];
    daemon.stop();
    let surfaces = surfaces.into_iter().chain([
        ("timeline CLI", {
            let out = Command::new(bindwatch_bin())
                .args(["timeline", "--json", "--port", "8090", "--state-dir"])
                .arg(&state)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }),
        (
            "JSON export",
            std::fs::read_to_string(&export).unwrap_or_default(),
        ),
    ]);
    for (name, text) in surfaces {
        assert!(!text.is_empty(), "{name} is empty");
        assert!(!text.contains(secret), "{name} shows the secret: {text}");
    }
}

#[test]
fn alert_targets_down_then_back_get_the_alert_and_overflow_is_counted() {
    let state = temp("rel-alerts");
    let listen = &free_local_addr();
    let hook: u16 = free_local_port();
    let ns = Netns::new("alertsdown");
    // Nothing listens on the webhook port yet. A queue of 2 overflows.
    let daemon = Daemon::start(
        &state,
        listen,
        &format!(
            "[alerts]\nresend_every_secs = 2\nqueue = 2\nretries = 2\ntimeout_ms = 300\n\
             webhook = [\"http://127.0.0.1:{hook}/hook\"]\n{}",
            (0..6)
                .map(|i| format!(
                    "[[watch]]\nname = \"w{i}\"\nport = {}\nnetns = \"/run/netns/{}\"\nowner = {{ command = \"nginx\" }}\n",
                    9100 + i,
                    ns.name
                ))
                .collect::<String>()
        ),
    );
    // Six watched ports, none held by nginx: six alerts at once.
    wait_for("failed deliveries counted", 20, || {
        try_metric(
            listen,
            "bindwatch_alert_deliveries_total{result=\"failed\",target=\"webhook\"}",
        )
        .is_ok_and(|v| v >= 1.0)
        .then_some(())
    });
    wait_for("queue overflow counted", 20, || {
        try_metric(listen, "bindwatch_alert_notifications_dropped_total")
            .is_ok_and(|v| v >= 1.0)
            .then_some(())
    });
    let h = json(&format!("http://{listen}/healthz")).unwrap();
    assert!(
        h["status"].is_string(),
        "the daemon answers while targets are down"
    );
    // The target comes back: the firing alerts are re-sent and arrive.
    let got = webhook_receiver(hook);
    wait_for(
        "every watch's alert delivered after the target returned",
        30,
        || {
            let g = got.lock().unwrap();
            (0..6)
                .all(|i| g.contains(&format!("\"w{i}\"")))
                .then_some(())
        },
    );
    daemon.stop();
}

#[test]
fn ring_buffer_overflow_is_counted_and_the_daemon_stays_up() {
    let state = temp("rel-ring");
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "[probes]\nring_buffer_bytes = 4096\n");
    let ns = Netns::new("ring");
    // Freeze the daemon so the tiny ring overflows for certain.
    support::signal(daemon.child.id(), support::Signal::STOP).expect("SIGSTOP");
    ns.run(|| {
        for _ in 0..2000 {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            drop(l);
        }
    });
    support::signal(daemon.child.id(), support::Signal::CONT).expect("SIGCONT");
    // 2000 binds and releases cannot fit a 4 KiB ring (a few dozen events)
    // while nothing reads it: this namespace alone overflowed it.
    wait_for("losses exported", 10, || {
        try_metric(
            listen,
            "bindwatch_events_lost_total{reason=\"ringbuf_full\"}",
        )
        .is_ok_and(|v| v > 0.0)
        .then_some(())
    });
    // Every cause has its series from the start, the kernel's skips of
    // our programs among them (a reading, whatever its value).
    for reason in ["pending_map_full", "accept_map_full", "program_skipped"] {
        let name = format!("bindwatch_events_lost_total{{reason=\"{reason}\"}}");
        try_metric(listen, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // And what the decoder could not join.
    for name in [
        "bindwatch_releases_unjoined_total",
        "bindwatch_join_full_total",
    ] {
        try_metric(listen, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let h = json(&format!("http://{listen}/healthz")).unwrap();
    assert!(h["status"].is_string());
    // Still following the kernel: a new listener shows up.
    let mut l = Server::spawn(&ns, &["socat", "TCP-LISTEN:8099,bind=127.0.0.1", "-"]);
    l.wait_listening(&ns, 8099);
    wait_for("the new listener in the table", 10, || {
        curl(&format!("http://{listen}/api/v1/holders?port=8099"))
            .ok()?
            .contains("socat")
            .then_some(())
    });
    daemon.stop();
}

#[test]
fn a_cgroup_hook_detached_behind_its_back_is_reported_and_attached_again() {
    assert!(
        Command::new("bpftool").arg("version").output().is_ok(),
        "bpftool is needed (Debian package bpftool; scripts/test installs it)"
    );
    let state = temp("rel-detach");
    let listen = &free_local_addr();
    let daemon = Daemon::start(&state, listen, "");
    // The daemon's post_bind4 program (in every probe set), and its live
    // cgroup link.
    let progs: Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "prog", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let links: Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // Programs the daemon holds, from its descriptors' fdinfo.
    let held: Vec<u64> = std::fs::read_dir(format!("/proc/{}/fdinfo", daemon.child.id()))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    let prog_id = progs
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "post_bind4")
        .filter_map(|p| p["id"].as_u64())
        .find(|id| held.contains(id))
        .expect("the daemon's post_bind4 program");
    let link = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["prog_id"] == prog_id && l["cgroup_id"] != 0)
        .map(|l| l["id"].as_u64().unwrap())
        .expect("its cgroup link");
    run_ok("bpftool", &["link", "detach", "id", &link.to_string()]);
    wait_for("the detached hook attached again", 10, || {
        try_metric(
            listen,
            "bindwatch_probe_reattach_total{hook=\"post_bind4\",result=\"ok\"}",
        )
        .is_ok_and(|v| v == 1.0)
        .then_some(())
    });
    assert_eq!(
        metric(listen, "bindwatch_probe_attached{hook=\"post_bind4\"}"),
        1.0
    );
    let links: Value = serde_json::from_slice(
        &Command::new("bpftool")
            .args(["-j", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        links
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["prog_id"] == prog_id && l["cgroup_id"] != 0),
        "no live link for post_bind4 after re-attachment"
    );
    wait_for("the incident in the timeline", 5, || {
        let v = json(&format!(
            "http://{listen}/api/v1/timeline?kind=probe_status"
        ))?;
        v["records"]
            .as_array()?
            .iter()
            .any(|r| {
                r["summary"]
                    .as_str()
                    .unwrap_or("")
                    .contains("post_bind4 was detached")
            })
            .then_some(())
    });
    daemon.stop();
}
