//! Shared by the system tests: network namespaces of their own, the real
//! `bindwatch` binary (as a tracer or a daemon), real servers, and waiting
//! on conditions with deadlines.
//!
//! There is no skip path: these tests need root, iproute2 and a kernel that
//! loads the probes, and they fail (with one line saying what is missing)
//! wherever that is not so. The unit tests beside the code need none of it.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod containers;
pub mod rules;

/// Fails the test at once, in one line, unless it runs as root with
/// iproute2 installed. Called by everything that needs them.
pub fn require_root() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        // SAFETY: plain syscall.
        let euid = unsafe { libc::geteuid() };
        assert!(
            euid == 0,
            "the system tests need root (eBPF, network namespaces); \
             run them as root, or run only the unit tests: cargo test -p bindwatch"
        );
        assert!(
            Command::new("ip").arg("-V").output().is_ok(),
            "the system tests need iproute2 (`ip`): scripts/test installs it"
        );
    });
}

/// The `bindwatch` binary under test: `BINDWATCH_BIN`, else the one cargo
/// built beside this test (`cargo build --release -p bindwatch`, which
/// scripts/system-tests runs first).
pub fn bindwatch_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BINDWATCH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/bindwatch
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary outside a target directory")
        .join("bindwatch");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p bindwatch, or scripts/system-tests)",
        bin.display()
    );
    bin
}

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// A loopback port nothing holds right now (see `free_local_addr`).
pub fn free_local_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A loopback address with a port nothing holds right now, for the test's
/// own servers outside its namespaces (the daemon's HTTP, Prometheus,
/// Alertmanager), so a listener already on the host cannot break a test.
pub fn free_local_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").to_string()
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, with `lo` up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = format!(
            "bwt-{tag}-{}-{}",
            std::process::id(),
            NS_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_ok("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        run_ok("ip", &a);
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it
    /// creates live there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// The namespace's cookie, as the probes report it.
    pub fn cookie(&self) -> u64 {
        // An unbound socket: binding one here would add an event to the test's.
        self.run(|| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            netns_cookie_of(s.as_raw_fd())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

pub fn netns_cookie_of(fd: i32) -> u64 {
    bindwatch::linux::netns::netns_cookie(fd).expect("SO_NETNS_COOKIE")
}

/// Drops this thread's credentials to `uid` (only this thread: the raw
/// syscall bypasses glibc's process-wide setxid broadcast).
pub fn drop_thread_to_uid(uid: u32) {
    // SAFETY: a plain syscall on this thread.
    let gid = unsafe { libc::syscall(libc::SYS_setresgid, uid, uid, uid) };
    assert_eq!(gid, 0, "setresgid: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let uid = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    assert_eq!(uid, 0, "setresuid: {}", std::io::Error::last_os_error());
}

pub fn run_ok(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `bindwatch trace --json`.
pub struct Tracer {
    child: Child,
    stderr_log: std::sync::Arc<std::sync::Mutex<String>>,
    // Read continuously: a full pipe would stall the tracer and overflow
    // the ring buffer, which is what the loss tests must not confuse.
    stdout_reader: std::thread::JoinHandle<()>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The start-up line: mode and hooks attached.
    pub started: String,
}

impl Tracer {
    /// Starts the tracer and waits until every probe is attached; fails the
    /// test with what it printed when the kernel refused it.
    pub fn start(extra: &[&str]) -> Self {
        Self::try_start(extra).unwrap_or_else(|e| panic!("the kernel refused the probes: {e}"))
    }

    /// As `start`, but Err holds what it printed when the kernel refused it.
    pub fn try_start(extra: &[&str]) -> Result<Self, String> {
        Self::try_start_env(extra, &[])
    }

    /// As `try_start`, with variables added to the tracer's environment.
    pub fn try_start_env(extra: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        require_root();
        let mut child = Command::new(bindwatch_bin())
            .arg("trace")
            .arg("--json")
            .args(forced_probe_set(extra))
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn bindwatch: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("bindwatch: tracing;") {
                    let _ = tx.send(line.clone());
                }
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        // Generous: the verifier is slow in the emulated guest kernels.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if !all_hooks_attached(&line) {
                    let _ = child.kill();
                    return Err(format!(
                        "not every hook attached: {line}\n{}",
                        log.lock().unwrap()
                    ));
                }
                return Ok(Self {
                    child,
                    stderr_log: log,
                    stdout_reader,
                    lines,
                    started: line,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Everything it printed: the pipe ends with the process.
                let _ = stderr_reader.join();
                return Err(format!(
                    "bindwatch trace exited ({status}): {}",
                    log.lock().unwrap()
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "bindwatch trace did not start: {}",
                    log.lock().unwrap()
                ));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// N of "hooks N/M attached" in the start-up line.
    pub fn hooks_attached(&self) -> usize {
        hooks(&self.started)
            .expect("hooks N/M in the start-up line")
            .0 as usize
    }

    /// Every JSON line printed so far.
    pub fn events(&self) -> Vec<Value> {
        parse_lines(&self.lines.lock().unwrap())
    }

    /// Polls the events printed so far until `found` picks something out
    /// of them; fails the test after `secs`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        secs: u64,
        mut found: impl FnMut(&[Value]) -> Option<T>,
    ) -> T {
        wait_for(what, secs, || found(&self.events()))
    }

    /// SIGTERM, then every JSON line it printed (it drains the ring first).
    pub fn stop(mut self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.stdout_reader.join().expect("stdout reader");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "bindwatch trace failed ({status}): {}",
            self.stderr_log.lock().unwrap()
        );
        parse_lines(&self.lines.lock().unwrap())
    }
}

/// `--probes MODE` when the run forces a probe set (BINDWATCH_PROBES, set
/// by the kernel matrix to run the probe tests in tracepoint mode where the
/// kernel would pick fexit), unless the test names one itself.
pub fn forced_probe_set(extra: &[&str]) -> Vec<String> {
    match std::env::var("BINDWATCH_PROBES") {
        Ok(m) if !m.is_empty() && !extra.contains(&"--probes") => vec!["--probes".into(), m],
        _ => Vec::new(),
    }
}

/// Whether this kernel takes the fexit probe set (`bindwatch probes
/// --probes fexit` attaches every hook).
pub fn kernel_offers_fexit() -> bool {
    Command::new(bindwatch_bin())
        .args(["probes", "--probes", "fexit"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The probe set a daemon or tracer started by these helpers uses.
pub fn expected_probe_set() -> &'static str {
    match std::env::var("BINDWATCH_PROBES").as_deref() {
        Ok("tracepoint") => "tracepoint",
        Ok("fexit") => "fexit",
        _ if kernel_offers_fexit() => "fexit",
        _ => "tracepoint",
    }
}

/// Where the TCP lifecycle must come from here: sock_ops on every kernel
/// the project runs on (cgroup v2), unless the tests force the fallback.
pub fn expected_lifecycle() -> &'static str {
    if std::env::var_os("BINDWATCH_NO_SOCK_OPS").is_some() {
        "state_tracepoint"
    } else {
        "sock_ops"
    }
}

/// The probe set named in a start-up line ("... (fexit probes ...").
pub fn probe_set_of(line: &str) -> Option<&str> {
    let (before, _) = line.split_once(" probes")?;
    before.rsplit(['(', ' ']).next()
}

/// Where the TCP lifecycle comes from, as the tracer's start-up line names
/// it: `sock_ops` or `state_tracepoint`.
pub fn lifecycle_of(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("TCP lifecycle from ")?;
    rest.split([',', ')', ';']).next()
}

/// (N, M) of "hooks N/M attached" in the tracer's start-up line.
fn hooks(line: &str) -> Option<(u32, u32)> {
    let (_, rest) = line.split_once("hooks ")?;
    let (frac, _) = rest.split_once(' ')?;
    let (n, m) = frac.split_once('/')?;
    Some((n.parse().ok()?, m.parse().ok()?))
}

/// Every hook attached: N = M, and at least one.
fn all_hooks_attached(line: &str) -> bool {
    hooks(line).is_some_and(|(n, m)| n == m && n > 0)
}

fn parse_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Runs `f` in a fresh namespace while a tracer watches. Returns the
/// events of that namespace and what `f` returned.
pub fn trace_in_netns<T: Send + 'static>(
    tag: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (Vec<Value>, T) {
    let tracer = Tracer::start(&[]);
    let ns = Netns::new(tag);
    let cookie = ns.cookie();
    let out = ns.run(f);
    (in_netns(&tracer.stop(), cookie), out)
}

/// Events of one namespace.
pub fn in_netns(events: &[Value], cookie: u64) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["netns_cookie"].as_u64() == Some(cookie))
        .cloned()
        .collect()
}

pub fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// The final loss report the tracer prints at exit.
pub fn final_loss(events: &[Value]) -> Value {
    events
        .iter()
        .rev()
        .find(|e| e["kind"] == "loss")
        .cloned()
        .expect("no loss report at exit")
}

/// A server process (nginx, socat) running inside a namespace, killed on drop.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub dir: Option<std::path::PathBuf>,
}

impl Server {
    /// `ip netns exec NS ARGS...`: `ip` execs the command after entering the
    /// namespace, so the child's pid is the server's.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            // Held open: socat's `-` end would end the server at EOF.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let pid = child.id();
        Self {
            child,
            pid,
            dir: None,
        }
    }

    /// nginx with one worker, in the foreground, listening on `listen`
    /// (nginx `listen` arguments). Waits until it listens on `port`.
    pub fn nginx(ns: &Netns, listen: &[&str], port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bindwatch-nginx-{}-{}",
            std::process::id(),
            NS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let listens: String = listen.iter().map(|l| format!("listen {l};\n")).collect();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ {listens} return 200 ok; }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf = dir.join("nginx.conf");
        let prefix = format!("{}/", dir.display());
        let mut s = Self::spawn(ns, &["nginx", "-p", &prefix, "-c", conf.to_str().unwrap()]);
        s.dir = Some(dir);
        s.wait_listening(ns, port);
        s
    }

    /// Another nginx with this one's configuration (a restart), started
    /// without waiting for it to listen: it may fail to.
    pub fn nginx_again(&self, ns: &Netns) -> Self {
        let dir = self
            .dir
            .as_ref()
            .expect("an nginx started by Server::nginx");
        let prefix = format!("{}/", dir.display());
        let conf = format!("{}/nginx.conf", dir.display());
        Self::spawn(ns, &["nginx", "-p", &prefix, "-c", &conf])
    }

    /// Waits until some socket in `ns` listens on (or, for UDP, holds) `port`.
    pub fn wait_listening(&mut self, ns: &Netns, port: u16) {
        self.wait_ss(ns, port, "-tu")
    }

    /// Waits until a UDP socket in `ns` holds `port`.
    pub fn wait_udp(&mut self, ns: &Netns, port: u16) {
        self.wait_ss(ns, port, "-u")
    }

    fn wait_ss(&mut self, ns: &Netns, port: u16, which: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "ss", "-H", "-ln", which])
                .arg(format!("sport = :{port}"))
                .output()
                .unwrap();
            if !out.stdout.is_empty() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("server exited ({st}) before holding port {port}: {err}");
            }
            assert!(Instant::now() < deadline, "nothing holds port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of the server and its children (nginx workers).
    pub fn family(&self) -> Vec<u32> {
        let mut v = vec![self.pid];
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid, self.pid))
                .unwrap_or_default();
        v.extend(
            kids.split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
        v.sort_unstable();
        v
    }

    /// SIGTERM (nginx: fast shutdown, which ends its workers), then waits.
    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Children first (nginx workers outlive a killed master, and would
        // keep the namespace alive).
        for pid in self.family().into_iter().rev() {
            // SAFETY: signalling our own child and its children.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The failed binds of `addr:port` and their diagnoses.
pub fn failures<'a>(events: &'a [Value], addr: &str, port: u64) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["kind"] == "bind" && e["addr"] == addr && e["port"] == port && e["errno"] != 0
        })
        .collect()
}

/// (sorted owner pids, reason code) of every holder a diagnosis names.
pub fn blamed(diagnosis: &Value) -> Vec<(Vec<u32>, String)> {
    diagnosis["holders"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|b| {
                    let mut pids: Vec<u32> = b["holder"]["owners"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o["pid"].as_u64().unwrap() as u32)
                        .collect();
                    pids.sort_unstable();
                    (pids, b["reason"].as_str().unwrap().to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `bindwatch run` on a configuration of the test's own.
pub struct Daemon {
    pub child: Child,
}

impl Daemon {
    /// Starts `bindwatch run` with `listen` and `config`, and waits until
    /// `/readyz` answers; a daemon that never gets ready fails the test,
    /// with its log.
    pub fn start(state: &Path, listen: &str, config: &str) -> Self {
        require_root();
        let cfg = state.with_extension("toml");
        std::fs::write(&cfg, format!("[http]\nlisten = \"{listen}\"\n{config}")).unwrap();
        let log = state.with_extension("log");
        let child = Command::new(bindwatch_bin())
            .args(["run", "--config", cfg.to_str().unwrap(), "--state-dir"])
            .arg(state)
            .args(forced_probe_set(&[]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Self { child };
        d.wait_ready(listen, &log);
        d
    }

    /// Waits (60 s: emulated guest kernels are slow) until `/readyz` says 200.
    pub fn wait_ready(&mut self, listen: &str, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if curl(&format!("http://{listen}/readyz")).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon never became ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` with curl; Err says what failed (connection, HTTP status).
pub fn curl(url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sSf", "-m", "5", url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "GET {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A real Alertmanager on `listen` that keeps what it gets (a null
/// receiver, no grouping delay), its files in `dir`; `web_config` serves
/// it over HTTPS (`--web.config.file`).
pub fn alertmanager(dir: &Path, listen: &str, web_config: Option<&Path>) -> Proc {
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: 'null'\n  group_wait: 0s\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let mut args = vec![
        format!("--config.file={}", dir.join("am.yml").display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address={listen}"),
        "--cluster.listen-address=".to_owned(),
    ];
    if let Some(w) = web_config {
        args.push(format!("--web.config.file={}", w.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn("prometheus-alertmanager", &args, &dir.join("am.log"))
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl in
/// `dir`: (ca.pem, server.pem, server.key).
pub fn ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("server.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.ext"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_s, ca_key_s) = (s(&ca), s(&ca_key));
    args.extend([
        "-days",
        "1",
        "-subj",
        "/CN=bindwatch test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
    ]);
    run_ok("openssl", &args);
    let (key_s, csr_s, cert_s, ext_s) = (s(&key), s(&csr), s(&cert), s(&ext));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=127.0.0.1", "-keyout", &key_s, "-out", &csr_s]);
    run_ok("openssl", &args);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca_s,
            "-CAkey",
            &ca_key_s,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext_s,
            "-out",
            &cert_s,
        ],
    );
    (ca, cert, key)
}

/// A fresh directory for the test; returns a `state` path inside it.
pub fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bindwatch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("state")
}

/// A timeline record (JSON) of the alert `name` firing.
pub fn alert_fired(r: &Value, name: &str) -> bool {
    r["kind"] == "alert_firing" && r["summary"].as_str().is_some_and(|s| s.starts_with(name))
}

/// `bindwatch timeline --state-dir STATE ARGS...`: its standard output;
/// fails the test with its standard error when it fails.
pub fn timeline_cli(state: &Path, args: &[&str]) -> String {
    let out = Command::new(bindwatch_bin())
        .arg("timeline")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd`, its standard error into `log`.
pub fn spawn(cmd: &str, args: &[&str], log: &Path) -> Proc {
    let f = std::fs::File::create(log).unwrap();
    Proc(
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd}: {e}")),
    )
}

/// Polls `f` every 20 ms until it answers; fails the test after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of a metric's series; `name{a="x",b="y"}` keeps the series
/// carrying each of those labels, whatever their order. A failed scrape or
/// a metric with no such series fails the test: missing is not zero.
pub fn metric(listen: &str, name: &str) -> f64 {
    try_metric(listen, name).unwrap_or_else(|e| panic!("{e}"))
}

/// As `metric`, but Err when the scrape fails or no series matches.
pub fn try_metric(listen: &str, name: &str) -> Result<f64, String> {
    let (base, labels) = name.split_once('{').unwrap_or((name, ""));
    let labels: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|l| !l.is_empty())
        .collect();
    let text = curl(&format!("http://{listen}/metrics"))?;
    let mut found = None;
    for l in text.lines() {
        if l.split(['{', ' ']).next() == Some(base) && labels.iter().all(|x| l.contains(x)) {
            let v = l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("unreadable sample: {l}"))?;
            *found.get_or_insert(0.0) += v;
        }
    }
    found.ok_or_else(|| format!("no series {name} in /metrics of {listen}"))
}

/// Waits (up to `secs`) until the metric `name` (as `metric` reads it)
/// reaches `at_least`; fails the test with what was last seen.
pub fn wait_metric(listen: &str, name: &str, at_least: f64, secs: u64) -> f64 {
    wait_for(&format!("{name} >= {at_least}"), secs, || {
        try_metric(listen, name).ok().filter(|v| *v >= at_least)
    })
}

/// GET `path` from the plain-HTTP server at `addr` with a request of our
/// own (no process per request: some tests ask thousands of times).
/// Returns the status and body; Err when the exchange fails.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
    // The API answers with a length or closes; chunked bodies are not
    // decoded (none of its answers are chunked).
    Ok((status, body.to_owned()))
}

/// A webhook endpoint on loopback that answers at once and keeps every
/// request body it gets, each after its `authorization:` header line when
/// it has one.
pub fn webhook_receiver(port: u16) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = got.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("authorization:") {
                            sink.lock().unwrap().push_str(&line);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&body));
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    got
}

#[cfg(test)]
mod tests {
    #[test]
    fn all_hooks_attached_needs_every_hook() {
        let line =
            |h: &str| format!("bindwatch: tracing; hooks {h} attached; ring buffer 4096 bytes");
        assert!(super::all_hooks_attached(&line("10/10")));
        assert!(!super::all_hooks_attached(&line("9/10")));
        assert!(!super::all_hooks_attached(&line("0/0")));
        assert!(!super::all_hooks_attached("bindwatch: tracing"));
    }
}
