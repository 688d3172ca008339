//! Windows's bind-conflict rules: who may share a port, from the
//! socket-sharing table Microsoft documents for Windows Server 2003 and
//! later ("Sharing Transport Addresses", WSK; the same for Winsock under
//! enhanced socket security). They differ from Linux's: a specific address
//! may be bound beside another account's wildcard only after a security
//! check, SO_REUSEADDR must be set by the first socket too, and a socket
//! with SO_EXCLUSIVEADDRUSE refuses every later bind of its address (of any
//! address when it holds the wildcard; a later non-exclusive wildcard bind
//! still succeeds beside an exclusive specific one).
//!
//! Pure: no I/O. Which options a socket set is rarely known on Windows (no
//! event or table carries them), so [`judge`] tries every possibility and
//! keeps those that agree with the error the bind returned.

use std::net::IpAddr;

use super::{Overlap, Reason, SockSpec};
use crate::errno::{EACCES, EADDRINUSE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WinOption {
    Default,
    ReuseAddr,
    Exclusive,
}

impl WinOption {
    pub const ALL: [Self; 3] = [Self::Default, Self::ReuseAddr, Self::Exclusive];
}

/// The result of binding a second socket, as the table gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// WSAEADDRINUSE.
    InUse,
    /// WSAEACCES.
    Denied,
    /// Allowed when the second socket's account passes the first's
    /// security check (the same account), else WSAEACCES.
    Check,
}

use Outcome::{Check as C, Denied as D, InUse as U, Success as S};

/// `TABLE[second option][second specific?][first option * 2 + first specific?]`:
/// rows are the second bind, columns the first; "specific" against
/// "specific" means the same address.
const TABLE: [[[Outcome; 6]; 2]; 3] = [
    // second: no option
    [[U, S, U, S, U, S], [C, U, C, D, D, U]],
    // second: SO_REUSEADDR
    [[D, S, S, S, D, S], [C, D, S, S, D, D]],
    // second: SO_EXCLUSIVEADDRUSE
    [[U, U, U, U, U, U], [C, U, C, U, D, U]],
];

fn index(o: WinOption) -> usize {
    match o {
        WinOption::Default => 0,
        WinOption::ReuseAddr => 1,
        WinOption::Exclusive => 2,
    }
}

/// What binding `second` does when `first` already holds an overlapping
/// address on the port.
pub fn outcome(
    first: WinOption,
    first_specific: bool,
    second: WinOption,
    second_specific: bool,
) -> Outcome {
    TABLE[index(second)][usize::from(second_specific)]
        [index(first) * 2 + usize::from(first_specific)]
}

/// How the addresses overlap under Windows's defaults: an IPv6 socket is
/// IPv6-only unless its holder is known to have cleared IPV6_V6ONLY.
pub fn overlap(req: &SockSpec, holder: &SockSpec) -> Option<Overlap> {
    let (r, h) = (req.addr, holder.addr);
    match (r, h) {
        (IpAddr::V4(_), IpAddr::V6(h6)) if !holder.v6only && h6.is_unspecified() => {
            Some(Overlap::HolderDualStack)
        }
        _ if r.is_ipv4() != h.is_ipv4() => None,
        _ if r == h => Some(Overlap::Exact),
        _ if h.is_unspecified() => Some(Overlap::HolderWildcard),
        _ if r.is_unspecified() => Some(Overlap::RequestWildcard),
        _ => None,
    }
}

/// A holder's part in a failed bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// True when the holder blocks the bind whatever the unknown options.
    pub certain: bool,
}

fn agrees(o: Outcome, errno: i32, same_account: Option<bool>) -> bool {
    match o {
        Outcome::Success => false,
        Outcome::InUse => errno == EADDRINUSE,
        Outcome::Denied => errno == EACCES,
        Outcome::Check => errno == EACCES && same_account != Some(true),
    }
}

/// Whether `holder` explains a bind of `req` that failed with `errno`.
/// `req_options` / `holder_options` list what each socket may have set (all
/// of [`WinOption::ALL`] when unknown); `same_account` is None when the
/// accounts are not known.
pub fn judge(
    req: &SockSpec,
    req_options: &[WinOption],
    holder: &SockSpec,
    holder_options: &[WinOption],
    errno: i32,
    same_account: Option<bool>,
) -> Option<Verdict> {
    if req.proto != holder.proto || req.port != holder.port {
        return None;
    }
    let ov = overlap(req, holder)?;
    let first_specific = !holder.addr.is_unspecified();
    let second_specific = !req.addr.is_unspecified();
    let mut agreeing = Vec::new();
    let mut always_blocks = true;
    for &h in holder_options {
        for &r in req_options {
            let o = outcome(h, first_specific, r, second_specific);
            // Certain only where the accounts are known to differ.
            let blocks = match o {
                Outcome::Success => false,
                Outcome::Check => same_account == Some(false),
                _ => true,
            };
            always_blocks &= blocks;
            if agrees(o, errno, same_account) {
                agreeing.push((h, r, o));
            }
        }
    }
    if agreeing.is_empty() {
        return None;
    }
    let all = |f: &dyn Fn(&(WinOption, WinOption, Outcome)) -> bool| agreeing.iter().all(f);
    let reason = if all(&|a| a.0 == WinOption::Exclusive) {
        Reason::ExclusiveHolder
    } else if all(&|a| a.1 == WinOption::Exclusive) {
        Reason::ExclusiveRequest
    } else if errno == EACCES {
        Reason::OtherAccount
    } else {
        match ov {
            Overlap::Exact => Reason::ReuseAddrNotShared,
            Overlap::HolderWildcard => Reason::WildcardHolder,
            Overlap::RequestWildcard => Reason::WildcardRequest,
            Overlap::HolderDualStack => Reason::DualStackHolder,
            Overlap::RequestDualStack => Reason::DualStackRequest,
        }
    };
    Some(Verdict {
        reason,
        certain: always_blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Proto;
    use WinOption::*;

    /// A socket with Windows's defaults (IPv6 sockets IPv6-only).
    fn s(addr: &str, port: u16) -> SockSpec {
        let mut spec = SockSpec::new(Proto::Tcp, addr.parse().unwrap(), port);
        spec.v6only = spec.addr.is_ipv6();
        spec
    }

    /// The documented table, cell by cell, in the order it is printed.
    #[test]
    fn the_table_as_documented() {
        let first = [
            (Default, false),
            (Default, true),
            (ReuseAddr, false),
            (ReuseAddr, true),
            (Exclusive, false),
            (Exclusive, true),
        ];
        let rows: [(WinOption, bool, &str); 6] = [
            (Default, false, "USUSUS"),
            (Default, true, "CUCDDU"),
            (ReuseAddr, false, "DSSSDS"),
            (ReuseAddr, true, "CDSSDD"),
            (Exclusive, false, "UUUUUU"),
            (Exclusive, true, "CUCUDU"),
        ];
        for (second, second_specific, cells) in rows {
            for ((f, fs), c) in first.iter().zip(cells.chars()) {
                let want = match c {
                    'S' => Outcome::Success,
                    'U' => Outcome::InUse,
                    'D' => Outcome::Denied,
                    'C' => Outcome::Check,
                    other => panic!("cell {other:?} is not one of S, U, D, C"),
                };
                assert_eq!(
                    outcome(*f, *fs, second, second_specific),
                    want,
                    "first {f:?} specific={fs}, second {second:?} specific={second_specific}"
                );
            }
        }
    }

    #[test]
    fn a_wildcard_holder_and_a_specific_request_of_the_same_account_share() {
        // Default against default: the security check passes for one account.
        let v = judge(
            &s("10.0.0.6", 80),
            &[Default],
            &s("0.0.0.0", 80),
            &[Default],
            EADDRINUSE,
            Some(true),
        );
        assert_eq!(v, None);
        // Another account: WSAEACCES, explained.
        let v = judge(
            &s("10.0.0.6", 80),
            &[Default],
            &s("0.0.0.0", 80),
            &[Default],
            EACCES,
            Some(false),
        )
        .unwrap();
        assert_eq!(v.reason, Reason::OtherAccount);
    }

    #[test]
    fn unknown_options_are_narrowed_by_the_error() {
        // Same address, options unknown, WSAEADDRINUSE: the holder did not
        // share (default or exclusive); not certain (both with
        // SO_REUSEADDR would have shared).
        let v = judge(
            &s("10.0.0.6", 80),
            &WinOption::ALL,
            &s("10.0.0.6", 80),
            &WinOption::ALL,
            EADDRINUSE,
            None,
        )
        .unwrap();
        assert_eq!(v.reason, Reason::ReuseAddrNotShared);
        assert!(!v.certain);
        // A specific holder does not block a wildcard request without
        // SO_EXCLUSIVEADDRUSE: with EADDRINUSE it must have been asked for.
        let v = judge(
            &s("0.0.0.0", 80),
            &WinOption::ALL,
            &s("10.0.0.6", 80),
            &[Default],
            EADDRINUSE,
            None,
        )
        .unwrap();
        assert_eq!(v.reason, Reason::ExclusiveRequest);
    }

    #[test]
    fn different_addresses_ports_families_and_protocols_never_conflict() {
        let all = WinOption::ALL;
        for (req, holder) in [
            (s("10.0.0.6", 80), s("10.0.0.7", 80)),
            (s("10.0.0.6", 80), s("10.0.0.6", 81)),
            (s("0.0.0.0", 80), s("::", 80)),
            (
                SockSpec::new(Proto::Udp, "0.0.0.0".parse().unwrap(), 80),
                s("0.0.0.0", 80),
            ),
        ] {
            for e in [EADDRINUSE, EACCES] {
                assert_eq!(judge(&req, &all, &holder, &all, e, None), None);
            }
        }
    }

    #[test]
    fn a_dual_stack_holder_is_only_one_that_cleared_ipv6_v6only() {
        let mut h = s("::", 443);
        h.v6only = false;
        let v = judge(
            &s("0.0.0.0", 443),
            &[Default],
            &h,
            &[Default],
            EADDRINUSE,
            None,
        )
        .unwrap();
        assert_eq!(v.reason, Reason::DualStackHolder);
    }
}
