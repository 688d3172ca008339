//! The Linux event source: eBPF probes through aya.

pub mod containers;
pub mod kernel;
pub mod memory;
pub mod nat;
pub mod netns;
pub mod privileges;
pub mod probes;
pub mod procscan;
pub mod ring;
pub mod sockdiag;

pub use probes::{HookStatus, LostCounts, ProbeConfig, Probes};
pub use ring::RingReader;
