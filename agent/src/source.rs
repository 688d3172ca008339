//! What every event source reports about itself, whichever platform feeds
//! the agent: its settings, the status of each hook (a probe program on
//! Linux, an ETW provider on Windows), incidents found by its health check,
//! and what it could not deliver.

use serde::Serialize;

/// Default size of the buffer between the source and the event loop: on
/// Linux the ring buffer (room for ~65k events, enough for a burst of 100k
/// bind/close cycles while the reader keeps pace); on Windows the queue
/// from the ETW thread.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Power of two, at least one page.
    pub ring_buffer_bytes: u32,
    pub mode: ProbeMode,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            mode: ProbeMode::Auto,
        }
    }
}

/// Which kernel hooks carry binds and listens on Linux. `fexit`: BPF
/// trampolines on the kernel's bind and listen functions, so no syscall
/// tracepoint is enabled and no other syscall pays for bindwatch (needs
/// BTF and trampolines; most distribution kernels since 5.5 have them).
/// `tracepoint`: the syscalls' exit tracepoints (a bind begun at the cgroup
/// bind hook, a listen at its address; needs BTF and Linux 5.15 to read a
/// refused call's arguments at its exit, and x86-64), falling back to
/// `tracepoint_entry`: the entry and exit tracepoints, which every kernel
/// has, and which make every syscall of every process take the kernel's
/// entry path as well. `auto`: the first of fexit, tracepoint and
/// tracepoint_entry the kernel loads. Windows has ETW whatever the mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeMode {
    #[default]
    Auto,
    Tracepoint,
    TracepointEntry,
    Fexit,
}

impl ProbeMode {
    pub const NAMES: &'static str = "auto, tracepoint, tracepoint_entry, fexit";

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "tracepoint" => Some(Self::Tracepoint),
            "tracepoint_entry" => Some(Self::TracepointEntry),
            "fexit" => Some(Self::Fexit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tracepoint => "tracepoint",
            Self::TracepointEntry => "tracepoint_entry",
            Self::Fexit => "fexit",
        }
    }
}

/// Whether one hook is attached, and why not.
#[derive(Clone, Debug, Serialize)]
pub struct HookStatus {
    pub hook: &'static str,
    pub attached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A hook found not running, and whether attaching it again worked.
#[derive(Debug)]
pub struct HookIncident {
    pub hook: &'static str,
    pub what: &'static str,
    pub reattached: std::result::Result<(), String>,
}

/// What the source could not deliver, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostCounts {
    /// Linux: the ring buffer was full. Windows: ETW's own lost events and
    /// buffers, and events dropped because the queue to the loop was full.
    pub ringbuf_full: u64,
    pub accept_map_full: u64,
    /// Linux: the per-syscall pending maps. Windows: the joiner's endpoint
    /// map or its TCPIP failures waiting for a twin.
    pub pending_map_full: u64,
    /// Linux: runs of the probes' programs the kernel skipped because another
    /// BPF program was running on that CPU (the programs' `recursion_misses`),
    /// each one an event never made. Windows: always 0.
    pub program_skipped: u64,
    /// Records the source could not decode before they reached the agent's
    /// decoder (Windows: ETW records missing a field); always 0 on Linux.
    pub undecodable: u64,
}
