//! The Linux event source: eBPF probes through aya.

pub mod containers;
pub mod files;
pub mod host;
pub mod kernel;
pub mod memory;
pub mod nat;
pub mod netns;
pub mod privileges;
pub mod probes;
pub mod procscan;
pub mod ring;
pub mod signals;
pub mod sk_storage;
pub mod sockdiag;
pub mod who;

pub use host::{
    HAS_SERVICE_MANAGER, kernel_release, netns_cookie, pipe_closed, run_as_service, user_id,
};
pub use probes::{HookStatus, LostCounts, ProbeConfig, Probes};
pub use ring::RingReader;
pub use signals::{Reload, Shutdown};
pub use who::standalone as who_standalone;
