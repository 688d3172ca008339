//! Windows result codes: the NTSTATUS AFD and TCPIP log, the Winsock error
//! the application sees for it, and the errno bindwatch files it under
//! (events carry Linux's numbers on every platform, see `crate::errno`).

use crate::errno;

pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_ACCESS_DENIED: u32 = 0xC000_0022;
pub const STATUS_SHARING_VIOLATION: u32 = 0xC000_0043;
pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
pub const STATUS_INSUFFICIENT_RESOURCES: u32 = 0xC000_009A;
pub const STATUS_INVALID_ADDRESS_COMPONENT: u32 = 0xC000_0207;
pub const STATUS_TOO_MANY_ADDRESSES: u32 = 0xC000_0209;
pub const STATUS_ADDRESS_ALREADY_EXISTS: u32 = 0xC000_020A;
pub const STATUS_ADDRESS_ALREADY_ASSOCIATED: u32 = 0xC000_0238;

pub const WSAEACCES: u32 = 10013;
pub const WSAEINVAL: u32 = 10022;
pub const WSAEADDRINUSE: u32 = 10048;
pub const WSAEADDRNOTAVAIL: u32 = 10049;
pub const WSAENOBUFS: u32 = 10055;

/// Whether an NTSTATUS reports failure (severity error or warning).
pub fn failed(status: u32) -> bool {
    status >> 30 >= 2
}

/// The Winsock error an application sees for a bind that ended with
/// `status` (the mapping AFD applies, as documented publicly; not checked
/// on a Windows host). None for success and for statuses not mapped here.
pub fn winsock_of(status: u32) -> Option<u32> {
    Some(match status {
        STATUS_ADDRESS_ALREADY_EXISTS | STATUS_SHARING_VIOLATION => WSAEADDRINUSE,
        STATUS_ACCESS_DENIED => WSAEACCES,
        STATUS_INVALID_ADDRESS_COMPONENT => WSAEADDRNOTAVAIL,
        // No free port for a port-0 bind.
        STATUS_TOO_MANY_ADDRESSES => WSAENOBUFS,
        STATUS_INSUFFICIENT_RESOURCES => WSAENOBUFS,
        STATUS_INVALID_PARAMETER | STATUS_ADDRESS_ALREADY_ASSOCIATED => WSAEINVAL,
        _ => return None,
    })
}

/// The errno a Winsock error is filed under.
pub fn errno_of_winsock(wsa: u32) -> Option<i32> {
    Some(match wsa {
        WSAEACCES => errno::EACCES,
        WSAEINVAL => errno::EINVAL,
        WSAEADDRINUSE => errno::EADDRINUSE,
        WSAEADDRNOTAVAIL => errno::EADDRNOTAVAIL,
        WSAENOBUFS => errno::ENOBUFS,
        _ => return None,
    })
}

/// What a failed status becomes in an event: the mapped errno, or
/// [`errno::EUNMAPPED`] for a status with no mapping (the joiner counts and
/// logs it by number).
pub fn errno_of_status(status: u32) -> i32 {
    if !failed(status) {
        return 0;
    }
    winsock_of(status)
        .and_then(errno_of_winsock)
        .unwrap_or(errno::EUNMAPPED)
}

/// Names for the codes people paste from Windows logs and dialogs.
pub fn describe(code: u32) -> Option<&'static str> {
    Some(match code {
        STATUS_ADDRESS_ALREADY_EXISTS => {
            "STATUS_ADDRESS_ALREADY_EXISTS: the address is in use (Winsock 10048, WSAEADDRINUSE)"
        }
        STATUS_SHARING_VIOLATION => {
            "STATUS_SHARING_VIOLATION: the address is in use (Winsock 10048, WSAEADDRINUSE)"
        }
        STATUS_ACCESS_DENIED => "STATUS_ACCESS_DENIED: access denied (Winsock 10013, WSAEACCES)",
        STATUS_INVALID_ADDRESS_COMPONENT => {
            "STATUS_INVALID_ADDRESS_COMPONENT: not an address of this host (Winsock 10049, WSAEADDRNOTAVAIL)"
        }
        WSAEADDRINUSE => {
            "WSAEADDRINUSE: only one usage of each socket address (protocol/network address/port) is normally permitted"
        }
        WSAEACCES => {
            "WSAEACCES: an attempt was made to access a socket in a way forbidden by its access permissions"
        }
        0x8007_2740 => "HRESULT for WSAEADDRINUSE (10048): the address is in use",
        0x8007_0020 => {
            "ERROR_SHARING_VIOLATION as an HRESULT: IIS reports a site's port taken this way"
        }
        0xC00D_158A => "NS_E_PORT_IN_USE (Windows Media Services): the network port is in use",
        0xC00D_158B => {
            "NS_E_PORT_IN_USE_HTTP (Windows Media Services): the HTTP port is in use, usually by http.sys for IIS"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_statuses_map_to_winsock_and_errno() {
        assert_eq!(errno_of_status(STATUS_SUCCESS), 0);
        assert_eq!(
            errno_of_status(STATUS_ADDRESS_ALREADY_EXISTS),
            errno::EADDRINUSE
        );
        assert_eq!(errno_of_status(STATUS_SHARING_VIOLATION), errno::EADDRINUSE);
        assert_eq!(errno_of_status(STATUS_ACCESS_DENIED), errno::EACCES);
        assert_eq!(
            errno_of_status(STATUS_INVALID_ADDRESS_COMPONENT),
            errno::EADDRNOTAVAIL
        );
        assert_eq!(winsock_of(STATUS_ADDRESS_ALREADY_EXISTS), Some(10048));
    }

    #[test]
    fn informational_statuses_are_success_and_unknown_failures_are_kept_apart() {
        assert_eq!(errno_of_status(0x0000_0103), 0); // STATUS_PENDING
        assert_eq!(errno_of_status(0xC000_0001), errno::EUNMAPPED);
        assert_eq!(errno::display(errno::EUNMAPPED), "EUNMAPPED");
    }

    #[test]
    fn address_already_associated_is_ntstatus_0xc0000238() {
        // ntstatus.h: STATUS_ADDRESS_ALREADY_ASSOCIATED ((NTSTATUS)0xC0000238L),
        // a socket bound twice.
        assert_eq!(errno_of_status(0xC000_0238), errno::EINVAL);
        assert_eq!(errno_of_status(0xC000_0328), errno::EUNMAPPED);
    }

    #[test]
    fn the_media_services_code_is_named() {
        assert!(describe(0xC00D_158B).unwrap().contains("http.sys"));
    }
}
