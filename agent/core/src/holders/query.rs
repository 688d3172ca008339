//! `who` queries: `80`, `53/udp`, `10.0.0.6:80`, `[::1]:443/tcp`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Holder, HolderTable, HolderView};
use crate::conflict::{SockSpec, overlap};
use crate::event::{Proto, endpoint};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoQuery {
    pub port: u16,
    /// None: both protocols.
    pub proto: Option<Proto>,
    /// None: any address; else only holders that would block a bind of it.
    pub addr: Option<IpAddr>,
    /// None: every namespace.
    pub netns: Option<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for QueryError {}

impl FromStr for WhoQuery {
    type Err = QueryError;

    fn from_str(s: &str) -> Result<Self, QueryError> {
        let bad = |why: &str| QueryError(format!("bad target {s:?}: {why}"));
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, p)) => (
                r,
                Some(Proto::parse(p).ok_or_else(|| bad("the protocol must be tcp or udp"))?),
            ),
            None => (s, None),
        };
        let (addr, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (a, p) = v6
                .split_once("]:")
                .ok_or_else(|| bad("write an IPv6 address as [ADDR]:PORT"))?;
            (
                Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| bad("not an IPv6 address"))?,
                ),
                p,
            )
        } else if let Some((a, p)) = rest.rsplit_once(':') {
            if a.contains(':') {
                return Err(bad("write an IPv6 address as [ADDR]:PORT"));
            }
            (
                Some(a.parse::<IpAddr>().map_err(|_| bad("not an IP address"))?),
                p,
            )
        } else {
            (None, rest)
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        Ok(Self {
            port,
            proto,
            addr,
            netns: None,
        })
    }
}

impl fmt::Display for WhoQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => f.write_str(&endpoint(a, self.port))?,
            None => write!(f, "port {}", self.port)?,
        }
        if let Some(p) = self.proto {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

impl WhoQuery {
    /// Whether this socket answers the query.
    pub fn matches(&self, h: &Holder) -> bool {
        if h.port != self.port
            || self.proto.is_some_and(|p| p != h.proto)
            || self.netns.is_some_and(|n| n != h.netns)
        {
            return false;
        }
        match self.addr {
            None => true,
            Some(a) => {
                let req = SockSpec::new(h.proto, a, self.port);
                overlap(&req, &h.spec()).is_some()
            }
        }
    }

    /// Matching holders from the table, ordered by namespace, protocol and
    /// address.
    pub fn run(&self, table: &HolderTable) -> Vec<HolderView> {
        let mut v: Vec<HolderView> = table
            .iter()
            .filter(|h| self.matches(h))
            .map(|h| table.view(h))
            .collect();
        v.sort_by_key(|h| (h.netns, h.proto, h.addr, h.cookie));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_operators_type() {
        let q: WhoQuery = "80".parse().unwrap();
        assert_eq!((q.port, q.proto, q.addr), (80, None, None));
        let q: WhoQuery = "53/udp".parse().unwrap();
        assert_eq!((q.port, q.proto), (53, Some(Proto::Udp)));
        let q: WhoQuery = "10.0.0.6:80".parse().unwrap();
        assert_eq!(q.addr, Some("10.0.0.6".parse().unwrap()));
        let q: WhoQuery = "[::1]:443/tcp".parse().unwrap();
        assert_eq!(
            (q.addr, q.port, q.proto),
            (Some("::1".parse().unwrap()), 443, Some(Proto::Tcp))
        );
        assert_eq!(q.to_string(), "[::1]:443/tcp");
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        for (t, why) in [
            ("0", "port"),
            ("http", "port"),
            ("70000", "port"),
            ("80/sctp", "protocol"),
            ("::1:80", "[ADDR]:PORT"),
            ("10.0.0:80", "IP address"),
        ] {
            let e = t.parse::<WhoQuery>().unwrap_err().to_string();
            assert!(e.contains(why), "{t}: {e}");
            assert!(e.contains(t), "{t}: {e}");
        }
    }
}
