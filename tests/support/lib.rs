//! Shared by the system tests: network namespaces of their own, the real
//! `bindwatch` binary (as a tracer or a daemon), real servers, and waiting
//! on conditions with deadlines.
//!
//! There is no skip path: these tests need root, iproute2 and a kernel that
//! loads the probes, and they fail (with one line saying what is missing)
//! wherever that is not so. The unit tests beside the code need none of it.
//!
//! One module per thing supported: `host` (root, the binary, ports,
//! processes), `netns`, `tracer`, `daemon`, `servers`, `wait`; `rules`
//! and `containers` for the tests that need them. Everything is
//! re-exported here, so a test says `support::Netns`.

pub mod containers;
mod daemon;
mod host;
mod netns;
pub mod rules;
mod servers;
mod tracer;
mod wait;

pub use daemon::*;
pub use host::*;
pub use netns::*;
pub use servers::*;
pub use tracer::*;
pub use wait::*;
