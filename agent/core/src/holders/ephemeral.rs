//! The ports the kernel hands out for outbound connections
//! (`net.ipv4.ip_local_port_range`, per network namespace, less
//! `ip_local_reserved_ports`). A service port inside that range can be
//! taken by any outbound connection before the service binds it: the
//! classic outage after a restart or a reboot.

use serde::Serialize;

/// One namespace's ephemeral range and its reserved ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EphemeralPorts {
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports`, as inclusive ranges.
    pub reserved: Vec<(u16, u16)>,
}

impl EphemeralPorts {
    /// From the two sysctl files' text: "32768\t60999" and "8080,9000-9010".
    pub fn parse(range: &str, reserved: &str) -> Option<Self> {
        let mut it = range.split_whitespace().map(|n| n.parse::<u16>().ok());
        let (low, high) = (it.next()??, it.next()??);
        let mut res = Vec::new();
        for part in reserved.trim().split(',').filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let p = part.trim().parse().ok()?;
                    (p, p)
                }
            };
            res.push((a, b));
        }
        Some(Self {
            low,
            high,
            reserved: res,
        })
    }

    /// Whether the kernel may give `port` to an outbound connection.
    pub fn hands_out(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
            && !self.reserved.iter().any(|&(a, b)| (a..=b).contains(&port))
    }

    /// "ip_local_port_range 32768-60999".
    pub fn describe(&self) -> String {
        format!("ip_local_port_range {}-{}", self.low, self.high)
    }

    /// The fix for `port`: reserve it, or move the service out of the range.
    pub fn fix(&self, port: u16) -> String {
        let mut list: Vec<String> = self
            .reserved
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        list.push(port.to_string());
        format!(
            "reserve the port so the kernel never gives it to an outbound connection: \
             `sysctl -w net.ipv4.ip_local_reserved_ports={}` (and the same line in \
             /etc/sysctl.d/ to keep it after a reboot), or move the service out of {}",
            list.join(","),
            self.describe()
        )
    }

    /// The warning for a service port inside the range, with the fix.
    pub fn warning(&self, proto: &str, port: u16) -> String {
        format!(
            "{proto} port {port} lies inside the namespace's {} and is not reserved: an outbound \
             connection can take it before the service binds it (after a restart or a reboot); {}",
            self.describe(),
            self.fix(port)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl_files() {
        let e = EphemeralPorts::parse("32768\t60999\n", "8080,40000-40010\n").unwrap();
        assert_eq!((e.low, e.high), (32768, 60999));
        assert_eq!(e.reserved, vec![(8080, 8080), (40000, 40010)]);
        assert!(e.hands_out(32768) && e.hands_out(60999) && e.hands_out(50000));
        assert!(!e.hands_out(40005), "reserved");
        assert!(!e.hands_out(8080) && !e.hands_out(61000));
        assert!(
            e.fix(50000)
                .contains("ip_local_reserved_ports=8080,40000-40010,50000")
        );
        assert_eq!(
            EphemeralPorts::parse("32768 60999", "").unwrap().reserved,
            vec![]
        );
        assert!(EphemeralPorts::parse("32768", "").is_none());
        assert!(EphemeralPorts::parse("1 2", "x").is_none());
    }
}
