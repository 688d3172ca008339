//! `bindwatch run` under test: started on its own state directory and
//! port, its metrics and timeline read back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

/// `bindwatch run` on a configuration of the test's own.
pub struct Daemon {
    pub child: Child,
    /// Its standard error, shown when it fails.
    log: PathBuf,
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
        let mut d = Self { child, log };
        d.wait_ready(listen);
        d
    }

    /// Waits (60 s: emulated guest kernels are slow) until `/readyz` says 200.
    pub fn wait_ready(&mut self, listen: &str) {
        let log = &self.log;
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

    /// SIGTERM, then its exit: a daemon that fails or panics on the way
    /// out fails the test, with its log.
    pub fn stop(mut self) {
        crate::signal(self.child.id(), crate::Signal::TERM).expect("SIGTERM");
        let status = self.child.wait().expect("waiting for the daemon");
        assert!(
            status.success(),
            "the daemon exited {status} on SIGTERM:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
