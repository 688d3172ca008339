//! bindwatch: watches every bind, listen and accept, and names the holder
//! when a bind fails. The binary (`main.rs`) is a thin CLI over this library.
//!
//! The platform folders are declared here and reached through `platform`,
//! the one door: no other module carries a `cfg` on the OS.

pub mod api;
pub mod client;
pub mod config;
pub mod containers;
pub mod control;
pub mod daemon;
pub mod deliver;
pub mod error;
pub mod event_loop;
pub mod export;
pub mod metrics;
pub mod platform;
pub mod redact;
pub mod report;
pub mod secret;
pub mod serve;
pub mod source;
pub mod store;
pub mod tls_client;

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(windows)]
pub mod windows;

pub use error::{Error, Result};

// The core's modules are reached by their own crate's name
// (`bindwatch_core::holders`), so a reader and the module graph see which
// edges leave the daemon for the core.
/// The core, for the system tests and the fuzz targets, which reach it
/// through this crate.
pub use bindwatch_core as core;
