//! The wire layout between bindwatch's kernel probes and its agent.
//!
//! This crate is `no_std` and has no dependencies: the probes compile it for
//! `bpfel-unknown-none`, the agent for the host. It knows nothing of tokio,
//! serde or Prometheus. With the `user` feature (the agent's, on Linux) it
//! also says that its map types are plain old data for aya, beside the
//! types themselves. Whatever changes the byte layout of [`RawEvent`] or
//! the meaning of a field must bump [`LAYOUT_VERSION`]; the agent refuses a
//! probe object built against another version.
//!
//! Two halves: `kernel` is what the probes see (the types they write and
//! the numbers in them; the probes use nothing else), `agent` what only the
//! agent uses (the names it loads by, a record checked and read as an
//! event, and under `user` the aya `Pod` declarations).
#![no_std]

mod agent;
mod kernel;

pub use agent::*;
pub use kernel::*;

/// Version of the event layout and of what its flags mean. Stored in the
/// probe object as the global [`LAYOUT_SYMBOL`] and in every event.
pub const LAYOUT_VERSION: u16 = 4;

/// Name of the `u16` global in the probe object that holds [`LAYOUT_VERSION`].
pub const LAYOUT_SYMBOL: &str = "BINDWATCH_LAYOUT_VERSION";

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layout_is_stable() {
        assert_eq!(RAW_EVENT_SIZE, 120);
        assert_eq!(core::mem::align_of::<RawEvent>(), 8);
        assert_eq!(core::mem::offset_of!(RawEvent, addr), 76);
        assert_eq!(core::mem::offset_of!(RawEvent, comm), 104);
        assert_eq!(core::mem::size_of::<AcceptKey>(), 4);
        assert_eq!(core::mem::size_of::<BoundSock>(), 24);
    }

    fn valid() -> RawEvent {
        let mut ev = RawEvent::zeroed();
        ev.kind = kind::BIND;
        ev.family = AF_INET;
        ev
    }

    #[test]
    fn round_trip() {
        let mut ev = valid();
        ev.port = 80;
        ev.ret = -98;
        assert_eq!(RawEvent::from_bytes(ev.as_bytes()), Ok(ev));
    }

    #[test]
    fn short_and_long_records_are_rejected() {
        let ev = valid();
        let bytes = ev.as_bytes();
        assert_eq!(
            RawEvent::from_bytes(&bytes[..10]),
            Err(DecodeError::Size { got: 10 })
        );
        assert_eq!(RawEvent::from_bytes(&[]), Err(DecodeError::Size { got: 0 }));
        let mut long = std::vec::Vec::from(bytes);
        long.push(0);
        assert_eq!(
            RawEvent::from_bytes(&long),
            Err(DecodeError::Size {
                got: RAW_EVENT_SIZE + 1
            })
        );
    }

    #[test]
    fn foreign_version_kind_and_family_are_rejected() {
        let mut ev = valid();
        ev.version = LAYOUT_VERSION + 1;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Version {
                got: LAYOUT_VERSION + 1
            })
        );
        let mut ev = valid();
        ev.kind = 99;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Kind { got: 99 })
        );
        let mut ev = valid();
        ev.family = 1;
        assert_eq!(
            RawEvent::from_bytes(ev.as_bytes()),
            Err(DecodeError::Family { got: 1 })
        );
    }
}
