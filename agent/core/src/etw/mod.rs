//! ETW records, as the Windows event source reads them, turned into the
//! same raw events the Linux probes produce.
//!
//! Plain Rust with no Windows API: `windows::session` reads each record's
//! fields through ferrisetw into an [`EtwRecord`] and hands it to the
//! [`Joiner`]; everything else here (SOCKADDR decoding, NTSTATUS mapping,
//! joining enter and exit halves and endpoints to processes, http.sys's
//! listen list and URL registrations) is tested on Linux with records shaped
//! as ferrisetw yields them.

pub mod httpsys;
pub mod join;
#[cfg(test)]
pub(crate) mod manifest;
pub mod record;
pub mod schema;
pub mod sockaddr;
pub mod status;

pub use httpsys::HttpSys;
pub use join::{JoinError, JoinStats, Joiner};
pub use record::{EtwProvider, EtwRecord, Value};
