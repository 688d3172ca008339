//! Raw SOCKADDR bytes, as AFD and TCPIP log them: family (u16,
//! little-endian; 2 = IPv4, 23 = IPv6), port (big-endian), then four
//! address bytes, or flowinfo and sixteen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const WIN_AF_INET: u16 = 2;
pub const WIN_AF_INET6: u16 = 23;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SockaddrError {
    #[error("SOCKADDR of {0} bytes is too short for its family")]
    Short(usize),
    #[error("SOCKADDR has unknown address family {0}")]
    Family(u16),
}

pub fn decode(b: &[u8]) -> Result<SocketAddr, SockaddrError> {
    if b.len() < 4 {
        return Err(SockaddrError::Short(b.len()));
    }
    let family = u16::from_le_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        WIN_AF_INET => {
            let a: [u8; 4] = b
                .get(4..8)
                .ok_or(SockaddrError::Short(b.len()))?
                .try_into()
                .expect("four bytes");
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
        }
        WIN_AF_INET6 => {
            let a: [u8; 16] = b
                .get(8..24)
                .ok_or(SockaddrError::Short(b.len()))?
                .try_into()
                .expect("sixteen bytes");
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        f => Err(SockaddrError::Family(f)),
    }
}

/// The bytes Windows would log for `addr` (tests, and recorded shapes).
pub fn encode(addr: SocketAddr) -> Vec<u8> {
    match addr {
        SocketAddr::V4(a) => {
            let mut b = WIN_AF_INET.to_le_bytes().to_vec();
            b.extend(a.port().to_be_bytes());
            b.extend(a.ip().octets());
            b.extend([0u8; 8]);
            b
        }
        SocketAddr::V6(a) => {
            let mut b = WIN_AF_INET6.to_le_bytes().to_vec();
            b.extend(a.port().to_be_bytes());
            b.extend(a.flowinfo().to_be_bytes());
            b.extend(a.ip().octets());
            b.extend(a.scope_id().to_le_bytes());
            b
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_ipv6_round_trip() {
        for s in ["10.0.0.6:80", "0.0.0.0:443", "[::]:8443", "[fe80::1]:53"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(decode(&encode(a)), Ok(a), "{s}");
        }
    }

    #[test]
    fn the_port_is_big_endian_and_the_family_little_endian() {
        // 0.0.0.0:80 as AFD logs it.
        let b = [0x02, 0x00, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode(&b), Ok("0.0.0.0:80".parse().unwrap()));
    }

    #[test]
    fn short_or_foreign_addresses_are_named() {
        assert_eq!(decode(&[2, 0, 0]), Err(SockaddrError::Short(3)));
        assert_eq!(decode(&[23, 0, 0, 80, 0, 0]), Err(SockaddrError::Short(6)));
        let e = decode(&[1, 0, 0, 80, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(e.to_string(), "SOCKADDR has unknown address family 1");
    }
}
