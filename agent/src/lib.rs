//! bindwatch: watches every bind, listen and accept, and names the holder
//! when a bind fails. The binary (`main.rs`) is a thin CLI over this library.

pub mod alerts;
pub mod api;
pub mod clock;
pub mod config;
pub mod conflict;
pub mod decode;
pub mod errno;
pub mod error;
pub mod etw;
pub mod event;
pub mod export;
pub mod holders;
pub mod metrics;
pub mod redact;
pub mod report;
pub mod serve;
pub mod source;
pub mod store;
#[cfg(test)]
pub(crate) mod testing;
pub mod timeline;
pub mod trace;
pub mod who;

#[cfg(any(target_os = "linux", windows))]
pub mod cmd;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(any(target_os = "linux", windows))]
pub mod platform;
#[cfg(windows)]
pub mod windows;

pub use error::{Error, Result};
