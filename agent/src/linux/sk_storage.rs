//! Writing a socket's entry of a socket-local storage map from user space.
//!
//! aya 0.13 has no type for `BPF_MAP_TYPE_SK_STORAGE` (0.14 has, and needs
//! a newer toolchain's features); the kernel's interface is one command,
//! `BPF_MAP_UPDATE_ELEM`, whose key is a descriptor of the socket in the
//! caller's table.

use std::os::fd::{AsRawFd, BorrowedFd};

use bindwatch_common::BoundSock;

/// `BPF_MAP_UPDATE_ELEM` in `enum bpf_cmd`.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
/// `BPF_ANY`: create the entry, or replace the one there.
const BPF_ANY: u64 = 0;

/// The map-element member of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Sets `sock`'s entry in the socket storage map `map` to `value`.
pub fn update(map: BorrowedFd<'_>, sock: BorrowedFd<'_>, value: &BoundSock) -> std::io::Result<()> {
    let key: i32 = sock.as_raw_fd();
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const i32 as u64,
        value: value as *const BoundSock as u64,
        flags: BPF_ANY,
    };
    // SAFETY: `attr` and what it points to outlive the call; the kernel
    // reads `size_of` bytes of it and writes nothing back for this command.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
