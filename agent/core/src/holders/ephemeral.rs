//! The ports the kernel hands out for outbound connections
//! (`net.ipv4.ip_local_port_range`, per network namespace, less
//! `ip_local_reserved_ports`). A service port inside that range can be
//! taken by any outbound connection before the service binds it: the
//! classic outage after a restart or a reboot.
//!
//! Windows keeps the same facts per protocol: the dynamic port range
//! (`netsh int ipv4 show dynamicport tcp`) and the excluded port ranges
//! (`netsh int ipv4 show excludedportrange protocol=tcp`). An
//! administered exclusion (marked `*`, added with `netsh ... add
//! excludedportrange`) is the counterpart of a reserved port: never handed
//! out, still bindable. Any other exclusion is a range a system component
//! (Hyper-V, WinNAT, Docker) took for itself: nobody else may bind there,
//! and a bind inside it fails with WSAEACCES.

use serde::Serialize;

/// Where the range was read, which decides how it is named and fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeSource {
    /// Linux: `ip_local_port_range` and `ip_local_reserved_ports`.
    Sysctl,
    /// Windows: netsh's dynamic port range and excluded ranges for `proto`
    /// ("tcp" or "udp").
    Netsh { proto: &'static str },
}

/// One namespace's ephemeral range and its reserved ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EphemeralPorts {
    pub low: u16,
    pub high: u16,
    /// `ip_local_reserved_ports` (Windows: the administered exclusions), as
    /// inclusive ranges.
    pub reserved: Vec<(u16, u16)>,
    /// Windows: ranges excluded for a system component, which nobody else
    /// may bind. Empty on Linux.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<(u16, u16)>,
    pub source: RangeSource,
}

/// The numbers on a line of netsh's output, whatever its language.
fn numbers(line: &str) -> Vec<u32> {
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse().ok())
        .collect()
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
            excluded: Vec::new(),
            source: RangeSource::Sysctl,
        })
    }

    /// From the output of `netsh int ipv4 show dynamicport PROTO` and
    /// `netsh int ipv4 show excludedportrange protocol=PROTO`. netsh's
    /// words are translated with Windows, so only its numbers and its `*`
    /// are read: the dynamic range is the first two numbers (start port,
    /// number of ports), an exclusion is a line of exactly two numbers
    /// (start, end), administered when the line ends in `*`.
    pub fn parse_netsh(proto: &'static str, dynamic: &str, excluded: &str) -> Option<Self> {
        let mut it = dynamic.lines().flat_map(numbers);
        let (start, count) = (it.next()?, it.next()?);
        if count == 0 || start == 0 || start + count - 1 > u32::from(u16::MAX) {
            return None;
        }
        let (mut reserved, mut system) = (Vec::new(), Vec::new());
        for line in excluded.lines() {
            let n = numbers(line);
            let [a, b] = n[..] else { continue };
            let (Ok(a), Ok(b)) = (u16::try_from(a), u16::try_from(b)) else {
                continue;
            };
            if a == 0 || b < a {
                continue;
            }
            if line.trim_end().ends_with('*') {
                reserved.push((a, b));
            } else {
                system.push((a, b));
            }
        }
        Some(Self {
            low: u16::try_from(start).ok()?,
            high: u16::try_from(start + count - 1).ok()?,
            reserved,
            excluded: system,
            source: RangeSource::Netsh { proto },
        })
    }

    /// Whether the kernel may give `port` to an outbound connection.
    pub fn hands_out(&self, port: u16) -> bool {
        let inside = |r: &[(u16, u16)]| r.iter().any(|&(a, b)| (a..=b).contains(&port));
        (self.low..=self.high).contains(&port) && !inside(&self.reserved) && !inside(&self.excluded)
    }

    /// Windows: the range a system component excluded that holds `port`.
    pub fn excluded_range(&self, port: u16) -> Option<(u16, u16)> {
        self.excluded
            .iter()
            .copied()
            .find(|&(a, b)| (a..=b).contains(&port))
    }

    /// "ip_local_port_range 32768-60999", "dynamic port range 49152-65535".
    pub fn describe(&self) -> String {
        match self.source {
            RangeSource::Sysctl => format!("ip_local_port_range {}-{}", self.low, self.high),
            RangeSource::Netsh { proto } => {
                format!("{proto} dynamic port range {}-{}", self.low, self.high)
            }
        }
    }

    /// The fix for `port`: reserve it, or move the service out of the range.
    pub fn fix(&self, port: u16) -> String {
        if let RangeSource::Netsh { proto } = self.source {
            return format!(
                "exclude the port from dynamic allocation before anything takes it (an \
                 administered exclusion: the service can still bind it): `netsh int ipv4 add \
                 excludedportrange protocol={proto} startport={port} numberofports=1 \
                 store=persistent`, or move the service out of the {}",
                self.describe()
            );
        }
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
            "{proto} port {port} lies inside the {}'s {} and is not reserved: an outbound \
             connection can take it before the service binds it (after a restart or a reboot); {}",
            match self.source {
                RangeSource::Sysctl => "namespace",
                RangeSource::Netsh { .. } => "host",
            },
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

    /// netsh's output as Windows prints it (the layout of
    /// `netsh int ipv4 show dynamicport tcp` and `show excludedportrange
    /// protocol=tcp` on Windows 10 and 11).
    const DYNAMIC: &str = "\r\nProtocol tcp Dynamic Port Range\r\n\
        ---------------------------------\r\n\
        Start Port      : 49152\r\n\
        Number of Ports : 16384\r\n\r\n";
    const EXCLUDED: &str = "\r\nProtocol tcp Port Exclusion Ranges\r\n\r\n\
        Start Port    End Port\r\n\
        ----------    --------\r\n\
              5357        5357\r\n\
             50000       50059     *\r\n\
             55500       55599\r\n\r\n\
        * - Administered port exclusions.\r\n\r\n";

    #[test]
    fn parses_netsh_and_tells_administered_from_system_exclusions() {
        let e = EphemeralPorts::parse_netsh("tcp", DYNAMIC, EXCLUDED).unwrap();
        assert_eq!((e.low, e.high), (49152, 65535));
        assert_eq!(e.reserved, vec![(50000, 50059)], "the administered one");
        assert_eq!(e.excluded, vec![(5357, 5357), (55500, 55599)]);
        assert!(e.hands_out(49152) && e.hands_out(65535) && e.hands_out(60000));
        assert!(!e.hands_out(50010) && !e.hands_out(55500) && !e.hands_out(8080));
        assert_eq!(e.excluded_range(55599), Some((55500, 55599)));
        assert_eq!(e.excluded_range(50000), None, "administered: bindable");
        assert_eq!(e.describe(), "tcp dynamic port range 49152-65535");
        assert!(e.fix(60000).contains(
            "netsh int ipv4 add excludedportrange protocol=tcp startport=60000 numberofports=1"
        ));
        assert!(
            e.warning("tcp", 60000)
                .contains("inside the host's tcp dynamic port range")
        );
        // Another language: only the numbers and the star count.
        let de = "Protokoll tcp Dynamischer Portbereich\nStartport       : 1025\nAnzahl Ports    : 64511\n";
        let e = EphemeralPorts::parse_netsh("tcp", de, "").unwrap();
        assert_eq!((e.low, e.high), (1025, 65535));
        // Nonsense is refused, not guessed at.
        assert!(
            EphemeralPorts::parse_netsh("tcp", "Start Port : 60000\nNumber : 9000\n", "").is_none()
        );
        assert!(
            EphemeralPorts::parse_netsh("tcp", "The requested operation requires elevation.", "")
                .is_none()
        );
    }
}
