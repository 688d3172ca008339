//! bindwatch: watches every bind, listen and accept, and names the holder
//! when a bind fails. The binary (`main.rs`) is a thin CLI over this library.

pub mod api;
pub mod config;
pub mod containers;
pub mod control;
pub mod deliver;
pub mod error;
pub mod export;
pub mod metrics;
pub mod redact;
pub mod report;
pub mod serve;
pub mod source;
pub mod store;
pub mod tls_client;

#[cfg(any(target_os = "linux", windows))]
pub mod cmd;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(any(target_os = "linux", windows))]
pub mod platform;
#[cfg(windows)]
pub mod windows;

pub use error::{Error, Result};

// The core's modules, at the paths the daemon has always used.
#[cfg(test)]
pub(crate) use bindwatch_core::testing;
pub use bindwatch_core::{
    alerts, clock, conflict, decode, errno, etw, event, holders, owner, timeline, trace, who,
};
