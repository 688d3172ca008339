//! Shared by the privileged integration tests: network namespaces of our
//! own, a real `bindwatch trace --json` process, and the rule that decides
//! whether a test runs, skips, or fails when the kernel refuses eBPF.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// CI sets this: a test that cannot use eBPF fails instead of skipping.
pub const REQUIRE_VAR: &str = "BINDWATCH_REQUIRE_EBPF";

pub fn required() -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1")
}

/// Returns false (and says why) when the test must skip; panics in CI.
pub fn can_run(test: &str) -> bool {
    // SAFETY: plain syscall.
    let euid = unsafe { libc::geteuid() };
    let why = if euid != 0 {
        Some("not root".to_owned())
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("iproute2 (`ip`) is not installed".to_owned())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if required() => panic!("{test}: {why}, and {REQUIRE_VAR}=1 forbids skipping"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (set {REQUIRE_VAR}=1 to make this a failure)");
            false
        }
    }
}

static NS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace of the test's own, with `lo` up, removed on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
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
    // SAFETY: plain syscalls on this thread.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0);
        assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
    }
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
    stdout_reader: std::thread::JoinHandle<Vec<String>>,
}

impl Tracer {
    /// Starts the tracer and waits until its probes are attached. Err holds
    /// what it printed when the kernel refused it.
    pub fn start(extra: &[&str]) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bindwatch"))
            .arg("trace")
            .arg("--json")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn bindwatch: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdout_reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect()
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("bindwatch: tracing;") {
                    let _ = tx.send(line.clone());
                }
                log2.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                if !line.contains("hooks 10/10 attached") {
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
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
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

    /// SIGTERM, then every JSON line it printed (it drains the ring first).
    pub fn stop(mut self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let lines = self.stdout_reader.join().expect("stdout reader");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "bindwatch trace failed ({status}): {}",
            self.stderr_log.lock().unwrap()
        );
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }
}

/// Starts a tracer, or returns None when the test must skip; panics in CI.
pub fn tracer_or_skip(test: &str, extra: &[&str]) -> Option<Tracer> {
    if !can_run(test) {
        return None;
    }
    match Tracer::start(extra) {
        Ok(t) => Some(t),
        Err(e) if required() => panic!("{test}: the kernel refused the probes: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: the kernel refused the probes: {e}");
            None
        }
    }
}

/// Runs `f` in a fresh namespace while a tracer watches. Returns the
/// events of that namespace and what `f` returned, or None when the test
/// must skip (see `tracer_or_skip`).
pub fn trace_in_netns<T: Send + 'static>(
    test: &str,
    tag: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<(Vec<Value>, T)> {
    let tracer = tracer_or_skip(test, &[])?;
    let ns = Netns::new(tag);
    let cookie = ns.cookie();
    let out = ns.run(f);
    Some((in_netns(&tracer.stop(), cookie), out))
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
    pub fn start(state: &Path, listen: &str, config: &str) -> Option<Self> {
        let cfg = state.with_extension("toml");
        std::fs::write(&cfg, format!("[http]\nlisten = \"{listen}\"\n{config}")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_bindwatch"))
            .args(["run", "--config", cfg.to_str().unwrap(), "--state-dir"])
            .arg(state)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        let d = Self { child };
        let ok = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            curl(&format!("http://{listen}/readyz")).is_some()
        });
        if ok {
            Some(d)
        } else if required() {
            panic!("the daemon never became ready");
        } else {
            eprintln!("SKIPPED: the daemon did not start");
            None
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

pub fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "-m", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh directory for the test; returns a `state` path inside it.
pub fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bindwatch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.join("state")
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
/// carrying each of those labels, whatever their order.
pub fn metric(listen: &str, name: &str) -> f64 {
    let (base, labels) = name.split_once('{').unwrap_or((name, ""));
    let labels: Vec<&str> = labels
        .trim_end_matches('}')
        .split(',')
        .filter(|l| !l.is_empty())
        .collect();
    curl(&format!("http://{listen}/metrics"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(base) && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
