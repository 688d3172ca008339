//! Errno names for the results bind and listen return.
//!
//! Events carry Linux's errno numbers on every platform: the Windows source
//! maps Winsock errors onto them (see `etw::status`), so metric labels,
//! alerts and the timeline read the same on both.

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EINTR: i32 = 4;
pub const EBADF: i32 = 9;
pub const ENOMEM: i32 = 12;
pub const EACCES: i32 = 13;
pub const EFAULT: i32 = 14;
pub const EINVAL: i32 = 22;
pub const ENFILE: i32 = 23;
pub const EMFILE: i32 = 24;
pub const ENOTSOCK: i32 = 88;
pub const EDESTADDRREQ: i32 = 89;
pub const EPROTOTYPE: i32 = 91;
pub const EOPNOTSUPP: i32 = 95;
pub const EAFNOSUPPORT: i32 = 97;
pub const EADDRINUSE: i32 = 98;
pub const EADDRNOTAVAIL: i32 = 99;
pub const ENETDOWN: i32 = 100;
pub const ENOBUFS: i32 = 105;
pub const EISCONN: i32 = 106;
pub const ENOTCONN: i32 = 107;
pub const ENODEV: i32 = 19;
/// A Windows status bindwatch has no mapping for (the Windows source counts
/// it and logs its number); not a Linux errno.
pub const EUNMAPPED: i32 = 4094;

// The numbers above are the kernel's: a mismatch would mislabel every event.
#[cfg(target_os = "linux")]
const _: () = {
    assert!(EPERM == libc::EPERM && ENOENT == libc::ENOENT && EINTR == libc::EINTR);
    assert!(EBADF == libc::EBADF && ENOMEM == libc::ENOMEM && EACCES == libc::EACCES);
    assert!(EFAULT == libc::EFAULT && EINVAL == libc::EINVAL && ENFILE == libc::ENFILE);
    assert!(EMFILE == libc::EMFILE && ENOTSOCK == libc::ENOTSOCK);
    assert!(EDESTADDRREQ == libc::EDESTADDRREQ && EPROTOTYPE == libc::EPROTOTYPE);
    assert!(EOPNOTSUPP == libc::EOPNOTSUPP && EAFNOSUPPORT == libc::EAFNOSUPPORT);
    assert!(EADDRINUSE == libc::EADDRINUSE && EADDRNOTAVAIL == libc::EADDRNOTAVAIL);
    assert!(ENETDOWN == libc::ENETDOWN && ENOBUFS == libc::ENOBUFS);
    assert!(EISCONN == libc::EISCONN && ENOTCONN == libc::ENOTCONN && ENODEV == libc::ENODEV);
};

/// The symbolic name of `errno` (positive), as `strerrorname_np` would give it.
pub fn name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EINTR => "EINTR",
        EBADF => "EBADF",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EINVAL => "EINVAL",
        ENFILE => "ENFILE",
        EMFILE => "EMFILE",
        ENOTSOCK => "ENOTSOCK",
        EDESTADDRREQ => "EDESTADDRREQ",
        EPROTOTYPE => "EPROTOTYPE",
        EOPNOTSUPP => "EOPNOTSUPP",
        EAFNOSUPPORT => "EAFNOSUPPORT",
        EADDRINUSE => "EADDRINUSE",
        EADDRNOTAVAIL => "EADDRNOTAVAIL",
        ENETDOWN => "ENETDOWN",
        ENOBUFS => "ENOBUFS",
        EISCONN => "EISCONN",
        ENOTCONN => "ENOTCONN",
        ENODEV => "ENODEV",
        EUNMAPPED => "EUNMAPPED",
        _ => return None,
    })
}

/// The errno name, or the number when it has no name here.
pub fn display(errno: i32) -> String {
    name(errno).map_or_else(|| format!("errno {errno}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(name(98), Some("EADDRINUSE"));
        assert_eq!(name(99), Some("EADDRNOTAVAIL"));
        assert_eq!(display(4095), "errno 4095");
    }
}
