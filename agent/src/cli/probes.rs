//! `bindwatch probes`: what this kernel lets bindwatch do. Loads the probe
//! object, attaches every hook, reports each one (attached, or refused and
//! the kernel's reason), and detaches on exit. The kernel matrix runs it on
//! every kernel it boots; an operator runs it before deploying to a new
//! kernel.

use bindwatch::error::Result;
use bindwatch::platform::{HookStatus, ProbeConfig, Probes};
use serde::Serialize;

pub fn exec(json: bool, mode: bindwatch::platform::ProbeMode) -> anyhow::Result<()> {
    super::init_logging("error");
    let report = report(&bindwatch::platform::ProbeConfig {
        mode,
        ..Default::default()
    })?;
    let text = if json {
        serde_json::to_string(&report)? + "\n"
    } else {
        report.render()
    };
    super::print_out(&text)?;
    if !report.all_attached() {
        anyhow::bail!(
            "{} of {} hooks refused by kernel {}",
            report.hooks.len() - report.attached(),
            report.hooks.len(),
            report.kernel
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct ProbeReport {
    /// The running kernel's release (`uname -r`), where the platform has one.
    pub kernel: String,
    /// The probe set that attached: `fexit`, `tracepoint`,
    /// `tracepoint_entry` (or `etw`).
    pub probes: &'static str,
    /// Where the TCP lifecycle comes from: `sock_ops`, `state_tracepoint`
    /// (or `etw`).
    pub tcp_lifecycle: &'static str,
    /// Why the lifecycle is not from sock_ops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sock_ops_refused: Option<String>,
    /// Where bound sockets are marked for their release: `socket_storage`,
    /// `map` (or `none`, ETW).
    pub bound_store: &'static str,
    /// Why they are not marked in socket-local storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_refused: Option<String>,
    /// Why `auto` fell back from the fexit set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fexit_refused: Option<String>,
    /// Why the exit-only tracepoint set was refused (the entry set in use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exits_refused: Option<String>,
    pub hooks: Vec<HookStatus>,
}

impl ProbeReport {
    pub fn attached(&self) -> usize {
        self.hooks.iter().filter(|h| h.attached).count()
    }

    pub fn all_attached(&self) -> bool {
        self.attached() == self.hooks.len()
    }

    pub fn render(&self) -> String {
        let mut s = format!(
            "kernel {}: {} probe set, TCP lifecycle from {}, bound sockets marked in {}, hooks {}/{} attached\n",
            self.kernel,
            self.probes,
            self.tcp_lifecycle,
            self.bound_store,
            self.attached(),
            self.hooks.len()
        );
        if let Some(why) = &self.fexit_refused {
            s.push_str(&format!("  fexit set refused: {why}\n"));
        }
        if let Some(why) = &self.exits_refused {
            s.push_str(&format!("  exit-only tracepoint set refused: {why}\n"));
        }
        if let Some(why) = &self.sock_ops_refused {
            s.push_str(&format!("  sock_ops refused: {why}\n"));
        }
        if let Some(why) = &self.storage_refused {
            s.push_str(&format!("  socket storage refused: {why}\n"));
        }
        for h in &self.hooks {
            match &h.error {
                None => s.push_str(&format!("  {:<20} attached\n", h.hook)),
                Some(e) => s.push_str(&format!("  {:<20} REFUSED: {e}\n", h.hook)),
            }
        }
        s
    }
}

/// Loads and attaches the probes, then drops them (detaching every hook).
/// Err when the object cannot load or nothing attaches at all.
fn report(cfg: &ProbeConfig) -> Result<ProbeReport> {
    let (probes, ring) = Probes::load(cfg)?;
    let report = ProbeReport {
        kernel: bindwatch::platform::kernel_release(),
        probes: probes.probe_set(),
        tcp_lifecycle: probes.lifecycle(),
        sock_ops_refused: probes.sock_ops_refused().map(str::to_owned),
        bound_store: probes.bound_store(),
        storage_refused: probes.storage_refused().map(str::to_owned),
        fexit_refused: probes.fallback().map(str::to_owned),
        exits_refused: probes.exits_refused().map(str::to_owned),
        hooks: probes.hooks().to_vec(),
    };
    drop(ring);
    drop(probes);
    Ok(report)
}
