//! The owner behind the middleman, with a real Docker engine (Debian's
//! dockerd and its containerd, in a namespace of the test's own): a
//! published port's docker-proxy, dockerd itself with the userland proxy
//! off, a process inside a container and one on the host network are each
//! named by their container, through `trace --json`, `who` and `check`;
//! an engine that hangs leaves the identity unknown, with the reason.

use std::net::TcpListener;
use std::process::Command;

use serde_json::Value;
use support::containers::{Docker, IMAGE};
use support::*;

/// `bindwatch VERB ARGS` against `docker`'s engine: (exit code, stdout, stderr).
fn verb(docker: &Docker, verb: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bindwatch_bin())
        .arg(verb)
        .args(args)
        .env("DOCKER_HOST", docker.host())
        .output()
        .unwrap();
    (
        out.status.code().expect("bindwatch was killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bindwatch trace --json` reading `docker`'s engine.
fn tracer_for(docker: &Docker) -> Tracer {
    Tracer::try_start_env(&[], &[("DOCKER_HOST", &docker.host())])
        .unwrap_or_else(|e| panic!("the kernel refused the probes: {e}"))
}

/// Starts a busybox httpd container with `args` (name, labels, ports)
/// before the image.
fn run_httpd(docker: &Docker, args: &[&str], port: &str) {
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(args);
    a.extend_from_slice(&[IMAGE, "/bin/httpd", "-f", "-p", port]);
    docker.docker(&a);
}

/// `who PORT --standalone --json`: the holders in the engine's namespace.
fn who(docker: &Docker, port: u16) -> Vec<Value> {
    let (code, out, err) = verb(
        docker,
        "who",
        &[&port.to_string(), "--standalone", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let cookie = docker.ns.cookie();
    v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["netns"] == cookie)
        .cloned()
        .collect()
}

/// Binds `addr` in the engine's namespace; the bind must fail.
fn bind_fails(docker: &Docker, addr: &'static str) {
    let r = docker.ns.run(move || TcpListener::bind(addr).map(|_| ()));
    let e = r.expect_err("the bind must fail: the port is held");
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
}

fn failed_bind_of<'a>(events: &'a [Value], comm: &str, port: u16) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["kind"] == "bind" && e["comm"] == comm && e["port"] == port && e["errno"] == 98)
}

#[test]
fn published_ports_and_container_processes_are_named_by_their_container() {
    let docker = Docker::start("own", true);
    let tracer = tracer_for(&docker);

    // Story 14: a published port held by docker-proxy blocks a host server.
    run_httpd(
        &docker,
        &[
            "--name",
            "web",
            "-l",
            "com.docker.compose.project=shop",
            "-l",
            "com.docker.compose.service=front",
            "-p",
            "18080:80",
        ],
        "80",
    );
    docker.wait_listening(18080);
    bind_fails(&docker, "127.0.0.1:18080");
    let ev = tracer.wait_for("the host server's failed bind", 20, |evs| {
        evs.iter()
            .find(|e| {
                e["kind"] == "bind"
                    && e["port"] == 18080
                    && e["errno"] == 98
                    && e["comm"] != "docker-proxy"
            })
            .cloned()
    });
    let d = &ev["diagnosis"];
    let owner = &d["holders"][0]["holder"]["owner"];
    assert_eq!(owner["via"], "docker_proxy", "{d}");
    assert_eq!(owner["container"]["name"], "web", "{d}");
    assert_eq!(owner["container"]["image"], IMAGE, "{d}");
    assert_eq!(owner["container"]["compose_project"], "shop", "{d}");
    assert_eq!(owner["container"]["compose_service"], "front", "{d}");
    assert_eq!(owner["mapping"]["host_port"], 18080, "{d}");
    assert_eq!(owner["mapping"]["container_port"], 80, "{d}");
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains("container web (image bw-busybox:test"),
        "{summary}"
    );
    let hint = d["hint"].as_str().unwrap();
    assert!(hint.contains("docker compose -p shop stop front"), "{hint}");
    assert!(hint.contains("\"18080:80\" of service front"), "{hint}");
    assert!(!hint.starts_with("stop the holder"), "{hint}");

    // who: the holder, its owner and the fix.
    let hs = who(&docker, 18080);
    let proxy = hs
        .iter()
        .find(|h| h["owners"][0]["comm"] == "docker-proxy")
        .unwrap_or_else(|| panic!("no docker-proxy holder: {hs:?}"));
    assert_eq!(proxy["owner"]["container"]["name"], "web", "{proxy}");
    let (_, text, _) = verb(&docker, "who", &["18080", "--standalone"]);
    assert!(
        text.contains("owner     publishes -p 18080:80 for container web (image bw-busybox:test"),
        "{text}"
    );

    // check: exit 1, the container and its fix.
    let ns_path = format!("/run/netns/{}", docker.ns.name);
    let (code, out, err) = verb(
        &docker,
        "check",
        &["127.0.0.1:18080", "--netns", &ns_path, "--standalone"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("container web"), "{out}");
    assert!(out.contains("docker compose -p shop stop front"), "{out}");

    // The process inside the container, in the container's own namespace.
    let inside = who(&docker, 80);
    assert!(
        inside.is_empty(),
        "port 80 is the container's, not the engine's: {inside:?}"
    );
    let (_, out, _) = verb(&docker, "who", &["80", "--standalone", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let web_id = docker.inspect("web")["Id"].as_str().unwrap().to_owned();
    let httpd = v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["owner"]["container"]["id"] == web_id.as_str())
        .unwrap_or_else(|| panic!("httpd in container web not named: {out}"));
    assert_eq!(httpd["owner"]["via"], "process", "{httpd}");
    assert_eq!(httpd["owners"][0]["comm"], "httpd", "{httpd}");

    // A container on the host network blocks a host server by its process.
    run_httpd(
        &docker,
        &["--name", "hostnet", "--network", "host"],
        "18081",
    );
    docker.wait_listening(18081);
    bind_fails(&docker, "127.0.0.1:18081");
    let ev = tracer.wait_for(
        "the failed bind beside the host-network container",
        20,
        |evs| {
            evs.iter()
                .find(|e| e["kind"] == "bind" && e["port"] == 18081 && e["errno"] == 98)
                .cloned()
        },
    );
    let b = &ev["diagnosis"]["holders"][0];
    assert_eq!(b["holder"]["owner"]["via"], "process", "{b}");
    assert_eq!(b["holder"]["owner"]["container"]["name"], "hostnet", "{b}");
    assert!(
        b["hint"].as_str().unwrap().contains("docker stop hostnet"),
        "{b}"
    );

    // Story 15: the container being started fails because a host process
    // holds the port; the failed bind is docker-proxy's.
    let mut holder = Server::spawn(
        &docker.ns,
        &["socat", "TCP-LISTEN:18082,bind=0.0.0.0,fork", "-"],
    );
    holder.wait_listening(&docker.ns, 18082);
    let refused = docker.try_docker(&[
        "run",
        "-d",
        "--name",
        "web3",
        "-p",
        "18082:80",
        IMAGE,
        "/bin/httpd",
        "-f",
        "-p",
        "80",
    ]);
    assert!(refused.is_err(), "docker run must fail: {refused:?}");
    let ev = tracer.wait_for("docker-proxy's failed bind", 20, |evs| {
        failed_bind_of(evs, "docker-proxy", 18082).cloned()
    });
    let d = &ev["diagnosis"];
    assert_eq!(
        d["holders"][0]["holder"]["owners"][0]["pid"], holder.pid,
        "{d}"
    );
    assert_eq!(d["requester"]["container"]["name"], "web3", "{d}");
    assert_eq!(d["requester"]["state"], "created", "{d}");
    let summary = d["summary"].as_str().unwrap();
    assert!(
        summary.contains("docker-proxy was binding it for container web3 (image bw-busybox:test)"),
        "{summary}"
    );
    assert!(
        d["hint"]
            .as_str()
            .unwrap()
            .contains("publish container web3 on another host port (change -p 18082:80)"),
        "{d}"
    );
    drop(holder);

    // An engine that hangs: every surface still answers from the kernel,
    // and says the identity is unknown and why.
    support::signal(docker.pid() as u32, support::Signal::STOP).expect("SIGSTOP");
    let hs = who(&docker, 18080);
    support::signal(docker.pid() as u32, support::Signal::CONT).expect("SIGCONT");
    let proxy = hs
        .iter()
        .find(|h| h["owners"][0]["comm"] == "docker-proxy")
        .unwrap_or_else(|| panic!("no docker-proxy holder while dockerd hung: {hs:?}"));
    let owner = &proxy["owner"];
    assert!(owner["container"].is_null(), "{owner}");
    let why = owner["unknown"].as_str().unwrap_or_default();
    assert!(why.contains("no answer within 1000 ms"), "{owner}");
    assert_eq!(owner["mapping"]["container_port"], 80, "{owner}");

    tracer.stop();
}

#[test]
fn dockerd_without_its_proxy_is_a_middleman_too() {
    let docker = Docker::start("noproxy", false);
    let tracer = tracer_for(&docker);
    run_httpd(&docker, &["--name", "api", "-p", "18095:80"], "80");
    docker.wait_listening(18095);
    let hs = who(&docker, 18095);
    let held = hs
        .iter()
        .find(|h| h["owners"][0]["comm"] == "dockerd")
        .unwrap_or_else(|| panic!("dockerd does not hold 18095: {hs:?}"));
    assert_eq!(held["owner"]["via"], "runtime", "{held}");
    assert_eq!(held["owner"]["container"]["name"], "api", "{held}");

    // A host server's failed bind names the container, not dockerd.
    bind_fails(&docker, "0.0.0.0:18095");
    let ev = tracer.wait_for("the failed bind beside dockerd's port", 20, |evs| {
        evs.iter()
            .find(|e| e["kind"] == "bind" && e["port"] == 18095 && e["errno"] == 98)
            .cloned()
    });
    let b = &ev["diagnosis"]["holders"][0];
    assert_eq!(b["holder"]["owners"][0]["comm"], "dockerd", "{b}");
    assert_eq!(b["holder"]["owner"]["container"]["name"], "api", "{b}");
    assert!(
        b["hint"].as_str().unwrap().contains("docker stop api"),
        "{b}"
    );
    tracer.stop();

    let ns_path = format!("/run/netns/{}", docker.ns.name);
    let (code, out, err) = verb(
        &docker,
        "check",
        &["0.0.0.0:18095", "--netns", &ns_path, "--standalone"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("container api (image bw-busybox:test), published -p 18095:80 by dockerd"),
        "{out}"
    );
    assert!(out.contains("docker stop api"), "{out}");
}

#[test]
fn the_daemon_names_the_container_in_its_log_alerts_and_timeline() {
    let docker = Docker::start("daemon", true);
    let dir = temp("container-daemon");
    let dir = dir.parent().unwrap().to_path_buf();
    let (am, agent) = (free_local_addr(), free_local_addr());
    let _am = alertmanager(&dir, &am, None);
    wait_for("alertmanager", 20, || {
        curl(&format!("http://{am}/api/v2/status")).ok()
    });
    let state = dir.join("state");
    let config = format!(
        "state_dir = \"{state}\"\n[http]\nlisten = \"{agent}\"\n[alerts]\nalertmanager = [\"http://{am}\"]\n\
         [export]\nevents_jsonl = \"{jsonl}\"\n[containers]\ndocker_host = \"{host}\"\n\
         [[watch]]\nname = \"shop\"\nport = 18090\nnetns = \"/run/netns/{ns}\"\n\
         [watch.owner]\ncommand = \"nginx\"\n",
        state = state.display(),
        jsonl = dir.join("events.jsonl").display(),
        host = docker.host(),
        ns = docker.ns.name
    );
    let cfg = dir.join("bindwatch.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.join("agent.log");
    let mut args = vec!["run", "--config", cfg.to_str().unwrap()];
    let forced = forced_probe_set(&[]);
    args.extend(forced.iter().map(String::as_str));
    let _agent = spawn(bindwatch_bin().to_str().unwrap(), &args, &log);
    wait_for("the daemon to be ready", 60, || {
        curl(&format!("http://{agent}/readyz")).ok()
    });

    run_httpd(
        &docker,
        &[
            "--name",
            "shop-web",
            "-l",
            "com.docker.compose.project=shop",
            "-l",
            "com.docker.compose.service=web",
            "-p",
            "18090:80",
        ],
        "80",
    );
    docker.wait_listening(18090);
    bind_fails(&docker, "127.0.0.1:18090");

    // The log line: the holder with its container, and the container fix.
    let line = wait_for("the daemon's bind-failed line", 20, || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| {
                l.contains("bind failed") && l.contains("18090") && !l.contains("comm=docker-proxy")
            })
            .map(str::to_owned)
    });
    assert!(
        line.contains(
            "owner=\"container shop-web (image bw-busybox:test, Compose project shop, service web)\""
        ),
        "{line}"
    );
    assert!(line.contains("docker compose -p shop stop web"), "{line}");

    // The API's holders, and the failed bind in the JSON-lines export.
    let api: Value = serde_json::from_str(
        &curl(&format!(
            "http://{agent}/api/v1/holders?port=18090&proto=tcp"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(
        api["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["owner"]["container"]["name"] == "shop-web"),
        "{api}"
    );
    wait_for("the failed bind in the JSON-lines export", 20, || {
        let text = std::fs::read_to_string(dir.join("events.jsonl")).ok()?;
        text.lines()
            .find(|l| l.contains("\"errno\":98") && l.contains("\"name\":\"shop-web\""))
            .map(|_| ())
    });

    // The alert at a real Alertmanager.
    let alert = wait_for("the bind conflict at Alertmanager", 20, || {
        let v: Value =
            serde_json::from_str(&curl(&format!("http://{am}/api/v2/alerts?active=true")).ok()?)
                .ok()?;
        v.as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "BindwatchBindConflict"
                    && a["labels"]["watch"] == "shop"
            })
            .cloned()
    });
    let ann = &alert["annotations"];
    assert!(
        ann["owner"]
            .as_str()
            .unwrap_or_default()
            .starts_with("container shop-web (image bw-busybox:test"),
        "{alert:#}"
    );
    assert!(
        ann["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("docker compose -p shop stop web"),
        "{alert:#}"
    );

    // The timeline record (read after the daemon wrote it).
    let rec = wait_for("the conflict in the timeline", 20, || {
        let out = Command::new(bindwatch_bin())
            .args([
                "timeline",
                "--state-dir",
                state.to_str().unwrap(),
                "--port",
                "18090",
                "--json",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // The failed bind's record: its diagnosis, with the container fix.
        text.lines()
            .find(|l| l.contains("EADDRINUSE") && l.contains("docker compose -p shop stop web"))
            .map(str::to_owned)
    });
    assert!(rec.contains("\"name\":\"shop-web\""), "{rec}");
}

/// `ctr` against the engine's own containerd.
fn ctr(docker: &Docker, args: &[&str]) -> Result<String, String> {
    let sock = docker.dir.join("x/containerd/containerd.sock");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", docker.ns.name))
        .args(["ctr", "--address", sock.to_str().unwrap(), "-n", "k8s.io"])
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Kills and removes a containerd task and container, however the test ends.
struct CtrTask<'a>(&'a Docker, &'a str);

impl Drop for CtrTask<'_> {
    fn drop(&mut self) {
        let _ = ctr(self.0, &["task", "kill", "-s", "KILL", self.1]);
        let _ = wait_for_gone(self.0, self.1);
        let _ = ctr(self.0, &["task", "delete", self.1]);
        let _ = ctr(self.0, &["containers", "rm", self.1]);
    }
}

fn wait_for_gone(docker: &Docker, id: &str) -> Option<()> {
    for _ in 0..100 {
        if ctr(docker, &["task", "delete", id]).is_ok() {
            return Some(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

#[test]
fn a_pod_on_the_host_network_is_named_by_its_pod() {
    // containerd as a kubelet drives it, without a kubelet: the CRI's
    // labels and annotations on a Kubernetes-shaped container (64-hex id,
    // namespace k8s.io), on the host network of the engine's namespace.
    let docker = Docker::start("pod", true);
    let tar = docker.dir.join("image.tar");
    docker.docker(&["save", IMAGE, "-o", tar.to_str().unwrap()]);
    ctr(&docker, &["images", "import", tar.to_str().unwrap()]).unwrap();
    let id = "5e1f".repeat(16);
    let _task = CtrTask(&docker, &id);
    ctr(
        &docker,
        &[
            "run",
            "-d",
            "--net-host",
            "--label",
            "io.kubernetes.pod.name=node-exporter-x7",
            "--label",
            "io.kubernetes.pod.namespace=monitoring",
            "--label",
            "io.kubernetes.container.name=node-exporter",
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-name=node-exporter-x7",
            "--annotation",
            "io.kubernetes.cri.sandbox-namespace=monitoring",
            "--annotation",
            "io.kubernetes.cri.container-name=node-exporter",
            "--annotation",
            "io.kubernetes.cri.image-name=quay.io/prometheus/node-exporter:v1.8",
            &format!("docker.io/library/{IMAGE}"),
            &id,
            "/bin/httpd",
            "-f",
            "-p",
            "19100",
        ],
    )
    .unwrap_or_else(|e| panic!("ctr run: {e}"));
    docker.wait_listening(19100);

    let cfg = docker.dir.join("bindwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "[containers]\ndocker_host = \"{}\"\ncontainerd_state = \"{}\"\n",
            docker.host(),
            docker.dir.join("x/containerd/daemon").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (code, out, err) = verb(
        &docker,
        "who",
        &["19100", "--standalone", "--json", "--config", cfg],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let cookie = docker.ns.cookie();
    let h = v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["netns"] == cookie)
        .unwrap_or_else(|| panic!("no holder of 19100: {out}"));
    let c = &h["owner"]["container"];
    assert_eq!(c["runtime"], "containerd", "{h}");
    assert_eq!(c["pod_namespace"], "monitoring", "{h}");
    assert_eq!(c["pod_name"], "node-exporter-x7", "{h}");
    assert_eq!(c["pod_container"], "node-exporter", "{h}");

    // A new agent on 9100's neighbour fails: named by pod, with the fix.
    let ns_path = format!("/run/netns/{}", docker.ns.name);
    let (code, out, err) = verb(
        &docker,
        "check",
        &[
            ":19100",
            "--netns",
            &ns_path,
            "--standalone",
            "--config",
            cfg,
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("in pod monitoring/node-exporter-x7 (container node-exporter, image quay.io/prometheus/node-exporter:v1.8)"),
        "{out}"
    );
    assert!(
        out.contains("kubectl -n monitoring delete pod node-exporter-x7"),
        "{out}"
    );
}

/// Loads an nftables rule set into `ns`.
fn nft(ns: &Netns, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft -f: {rules}");
}

#[test]
fn a_port_taken_by_a_nat_rule_is_reported_shadowed_until_the_rule_goes() {
    // No socket at all holds the port: a DNAT rule takes its traffic (as
    // Podman's netavark, the CNI portmap plugin or kube-proxy do).
    let ns = Netns::new("nat");
    let cookie = ns.cookie();
    nft(
        &ns,
        "table ip bwtest {\n chain out {\n  type nat hook output priority -100; policy accept;\n  \
         tcp dport 18180 dnat to 127.0.0.2:8080\n }\n}\n",
    );
    let path = format!("/run/netns/{}", ns.name);
    let check = |target: &str| {
        let out = Command::new(bindwatch_bin())
            .args(["check", target, "--netns", &path, "--standalone"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Before a service starts: its bind would succeed, and see nothing.
    let (code, out) = check("127.0.0.1:18180");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("SHADOWED: tcp 127.0.0.1:18180 as uid 0 would bind, but tcp/18180 is sent to 127.0.0.2:8080 by a DNAT rule (table ip bwtest, chain out, handle"),
        "{out}"
    );
    assert_eq!(
        check("127.0.0.1:18181").0,
        0,
        "another port is not shadowed"
    );

    // A listener on it: `who` says it is shadowed, and by what.
    let mut l = Server::spawn(&ns, &["socat", "TCP-LISTEN:18180,bind=127.0.0.1", "-"]);
    l.wait_listening(&ns, 18180);
    let who = |port: &str| {
        let out = Command::new(bindwatch_bin())
            .args(["who", port, "--standalone", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["netns"] == cookie)
            .cloned()
            .unwrap_or_else(|| panic!("no holder of {port} in the test's namespace: {v}"))
    };
    let h = who("18180");
    assert_eq!(h["owners"][0]["pid"], l.pid, "{h}");
    assert_eq!(h["shadowed"]["rule"]["to"], "127.0.0.2:8080", "{h}");
    assert_eq!(h["shadowed"]["rule"]["table"], "bwtest", "{h}");

    // The rule goes: nothing is shadowed any more.
    Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "nft", "delete", "table", "ip", "bwtest",
        ])
        .status()
        .unwrap();
    let h = who("18180");
    assert!(h["shadowed"].is_null(), "{h}");
    drop(l);
    assert_eq!(check("127.0.0.1:18180").0, 0);
}

#[test]
fn the_daemon_alerts_on_a_watched_port_a_nat_rule_takes() {
    let ns = Netns::new("natd");
    nft(
        &ns,
        "table ip portmap {\n chain out {\n  type nat hook output priority -100; policy accept;\n  \
         tcp dport 18280 dnat to 127.0.0.3:80\n }\n}\n",
    );
    let state = temp("nat-daemon");
    let listen = free_local_addr();
    let daemon = Daemon::start(
        &state,
        &listen,
        &format!(
            "[holders]\nreconcile_every_secs = 1\n[[watch]]\nname = \"front\"\nport = 18280\n\
             netns = \"/run/netns/{}\"\n",
            ns.name
        ),
    );
    let series = r#"bindwatch_watched_port_shadowed{watch="front",proto="tcp",port="18280"}"#;
    wait_for("the watched port reported shadowed", 20, || {
        (try_metric(&listen, series).ok()? == 1.0).then_some(())
    });
    let fired = wait_for("the shadow alert in the timeline", 20, || {
        let text = timeline_cli(&state, &["--port", "18280", "--json"]);
        text.lines()
            .find(|l| l.contains("\"alert_firing\"") && l.contains("BindwatchPortShadowed"))
            .map(str::to_owned)
    });
    assert!(
        fired.contains(
            "tcp/18280 is sent to 127.0.0.3:80 by a DNAT rule (table ip portmap, chain out"
        ),
        "{fired}"
    );
    // The rule goes: the next reading clears the gauge and resolves the alert.
    run_ok(
        "ip",
        &[
            "netns", "exec", &ns.name, "nft", "delete", "table", "ip", "portmap",
        ],
    );
    wait_for("the shadow cleared", 20, || {
        (try_metric(&listen, series).ok()? == 0.0).then_some(())
    });
    wait_for("the shadow alert resolved in the timeline", 20, || {
        let text = timeline_cli(&state, &["--port", "18280", "--json"]);
        text.lines()
            .any(|l| l.contains("\"alert_resolved\"") && l.contains("BindwatchPortShadowed"))
            .then_some(())
    });
    daemon.stop();
}
