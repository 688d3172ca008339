//! The dynamic port range and the excluded port ranges, per protocol, as
//! netsh prints them. The IP Helper API has no call that lists either
//! (its persistent-reservation calls look one reservation up by token),
//! so the daemon asks netsh, which every Windows has, and reads only the
//! numbers of its answer (its words are translated). They change rarely:
//! one answer is kept for a minute.

use std::process::Command;
use std::time::{Duration, Instant};

use bindwatch_core::event::Proto;
use bindwatch_core::holders::EphemeralPorts;

const FRESH_FOR: Duration = Duration::from_secs(60);

/// The last answer for TCP and for UDP.
#[derive(Default)]
pub struct PortRanges {
    tcp: Option<(Instant, Option<EphemeralPorts>)>,
    udp: Option<(Instant, Option<EphemeralPorts>)>,
}

impl PortRanges {
    pub fn get(&mut self, proto: Proto) -> Option<EphemeralPorts> {
        let (slot, name) = match proto {
            Proto::Tcp => (&mut self.tcp, "tcp"),
            Proto::Udp => (&mut self.udp, "udp"),
            Proto::Unknown => return None,
        };
        match slot {
            Some((at, v)) if at.elapsed() < FRESH_FOR => v.clone(),
            _ => {
                let v = read(name);
                *slot = Some((Instant::now(), v.clone()));
                v
            }
        }
    }
}

fn netsh(args: &[&str]) -> Option<String> {
    let out = Command::new("netsh").args(args).output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => {
            tracing::debug!(?args, status = %o.status, "netsh refused");
            None
        }
        Err(e) => {
            tracing::debug!(?args, error = %e, "netsh did not run");
            None
        }
    }
}

fn read(proto: &'static str) -> Option<EphemeralPorts> {
    let dynamic = netsh(&["interface", "ipv4", "show", "dynamicport", proto])?;
    let protocol = format!("protocol={proto}");
    // No exclusions is a valid answer; a refused query leaves them unknown
    // and the range is still worth its warning.
    let excluded =
        netsh(&["interface", "ipv4", "show", "excludedportrange", &protocol]).unwrap_or_default();
    EphemeralPorts::parse_netsh(proto, &dynamic, &excluded)
}
