//! bindwatch's core: what bindwatch knows, with no I/O and no runtime.
//! Events and their decoding from the probes' records, the conflict rules
//! of Linux and Windows, the holder table and the diagnosis of a failed
//! bind, the alert state machine, what the timeline records, the ETW
//! joiner, and the trace and `who` formats. The daemon (`bindwatch`) feeds
//! it from the kernel and serves, stores and sends what it concludes.

pub mod alerts;
pub mod clock;
pub mod conflict;
pub mod decode;
pub mod errno;
pub mod etw;
pub mod event;
pub mod holders;
pub mod owner;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timeline;
pub mod trace;
pub mod who;
