//! `bindwatch trace` under test: started in the test's namespace, waited
//! for until every hook is attached, its JSON lines read back; and the
//! probe set this kernel should give.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

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

    /// The ids of the BPF programs the tracer holds open (its fdinfo's
    /// `prog_id`): its own, whatever else runs on the host.
    pub fn programs(&self) -> std::collections::HashSet<u32> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .filter_map(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("prog_id:"))
                    .map(|v| v.trim().parse().expect("prog_id"))
            })
            .collect()
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
        crate::signal(self.child.id(), crate::Signal::TERM).expect("SIGTERM");
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
        Ok("tracepoint_entry") => "tracepoint_entry",
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
