//! The Linux event source: eBPF probes through aya.

pub mod probes;
pub mod ring;

pub use probes::{HookStatus, LostCounts, ProbeConfig, Probes};
pub use ring::RingReader;
