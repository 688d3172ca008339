//! `bindwatch trace`: which events to show and how they read.

use std::io::Write;

use serde::Serialize;

use crate::event::{Event, Proto};
use crate::holders::Diagnosis;

/// The one JSON shape of an event with what bindwatch made of it: the
/// event's fields, and `diagnosis` beside them for a failed bind. The trace
/// line, the JSON-lines export, the timeline's detail of a failed bind and
/// `/api/v1/conflicts` all write this shape.
#[derive(Serialize)]
pub struct EventLine<'a> {
    #[serde(flatten)]
    pub event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<&'a Diagnosis>,
}

const INDENT: &str = "              ";

/// The lines printed under a failed bind: holders, reasons, hint.
pub fn diagnosis_lines(d: &Diagnosis) -> Vec<String> {
    let mut v = Vec::new();
    if d.holders.is_empty() {
        v.push(format!("{INDENT}└─ {}", d.summary));
    }
    for b in &d.holders {
        let h = &b.holder;
        let since = match h.source {
            crate::holders::Source::Event => format!("since {}", clock_str(h.since_ns)),
            crate::holders::Source::Snapshot => {
                format!("since before {}", clock_str(h.since_ns))
            }
        };
        v.push(format!(
            "{INDENT}└─ held by {} on {} {} {since} [{}{}]",
            h.owner_label(),
            h.proto,
            h.endpoint,
            b.reason.code(),
            if b.certain { "" } else { ", probable" }
        ));
        if let Some(o) = h.owners.first().filter(|o| !o.cmdline.is_empty()) {
            v.push(format!(
                "{INDENT}   command: {}",
                crate::who::one_line(&o.cmdline, 120)
            ));
        }
        v.push(format!("{INDENT}   why: {}", b.explanation));
    }
    if let Some(r) = &d.requester {
        let starting = if r.state.as_deref() == Some("created") {
            ", which was starting"
        } else {
            ""
        };
        v.push(format!(
            "{INDENT}   for: {} was binding it for {}{starting}",
            r.middleman.as_deref().unwrap_or("the middleman"),
            r.who()
        ));
    }
    if let Some(hint) = &d.hint {
        v.push(format!("{INDENT}   fix: {hint}"));
    }
    v
}

/// Filters given on the command line; all must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub errors_only: bool,
    pub proto: Option<Proto>,
}

impl Filter {
    pub fn matches(&self, ev: &Event) -> bool {
        if self.errors_only && !ev.failed() {
            return false;
        }
        if let Some(p) = self.port
            && ev.port != p
            && ev.bound_port != Some(p)
        {
            return false;
        }
        if let Some(pid) = self.pid
            && ev.pid != pid
        {
            return false;
        }
        if let Some(proto) = self.proto
            && ev.proto != proto
        {
            return false;
        }
        true
    }

    /// Accept summaries carry only a port and are TCP.
    pub fn matches_accepts(&self, port: u16) -> bool {
        !self.errors_only
            && self.pid.is_none()
            && self.port.is_none_or(|p| p == port)
            && self.proto.is_none_or(|p| p == Proto::Tcp)
    }
}

/// Completed handshakes on a listening port during the last interval.
#[derive(Clone, Debug, Serialize)]
pub struct AcceptSummary {
    pub kind: &'static str,
    pub time_ns: u64,
    pub family: &'static str,
    pub port: u16,
    pub delta: u64,
    pub total: u64,
}

/// Loss and decode counters, printed when they move and at exit.
#[derive(Clone, Debug, Serialize)]
pub struct LossReport {
    pub kind: &'static str,
    pub time_ns: u64,
    pub events: u64,
    pub lost_ringbuf_full: u64,
    pub lost_pending_map_full: u64,
    pub lost_accept_map_full: u64,
    /// Runs of the probes' programs the kernel skipped (Linux).
    pub lost_program_skipped: u64,
    pub malformed: u64,
    /// Releases of TCP sockets the decoder could not give an address: it
    /// saw no bind or listen of the socket (a bind among the events lost
    /// above, a client bound by hand whose connect failed, a socket bound
    /// before the probes loaded). Dropped; not a loss of their own.
    pub releases_unjoined: u64,
    /// Binds the decoder's join had no room for (`decode::JOIN_CAPACITY`):
    /// their listen lacks its cookies, their TCP release its address.
    pub join_full: u64,
}

impl LossReport {
    /// Events the kernel produced that never reached the agent.
    pub fn lost_events(&self) -> u64 {
        self.lost_ringbuf_full + self.lost_pending_map_full + self.lost_program_skipped
    }
}

fn clock_str(time_ns: u64) -> String {
    crate::clock::local(time_ns, crate::clock::Shown::TimeOfDay)
        .unwrap_or_else(|| time_ns.to_string())
}

pub const HEADER: &str = "TIME          PID      COMM             EVENT        PROTO  ADDRESS                                 RESULT         OPTIONS";

pub fn table_row(ev: &Event) -> String {
    let mut opts = ev.options.to_string();
    if let Some(b) = ev.backlog {
        if !opts.is_empty() {
            opts.push(',');
        }
        opts.push_str(&format!("backlog={b}"));
    }
    if ev.bound_port.is_some_and(|p| p != ev.port) {
        if !opts.is_empty() {
            opts.push(',');
        }
        opts.push_str(&format!("asked={}", ev.port));
    }
    format!(
        "{:<13} {:<8} {:<16} {:<12} {:<6} {:<39} {:<14} {}",
        clock_str(ev.time_ns),
        ev.pid,
        ev.comm,
        ev.kind.as_str(),
        ev.proto.as_str(),
        ev.endpoint(),
        ev.result_str(),
        opts
    )
}

pub fn accepts_row(a: &AcceptSummary) -> String {
    let any = if a.family == "ipv6" { "[::]" } else { "*" };
    format!(
        "{:<13} {:<8} {:<16} {:<12} {:<6} {:<39} +{} (total {})",
        clock_str(a.time_ns),
        "-",
        "-",
        "accepts",
        "tcp",
        format!("{any}:{}", a.port),
        a.delta,
        a.total
    )
}

/// Writes one line in the chosen format.
pub fn write_json_line<W: Write, T: Serialize>(out: &mut W, v: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(std::io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use bindwatch_common::{IPPROTO_UDP, kind};

    fn ev(port: u16, ret: i32, proto: u8, pid: u32) -> Event {
        let mut r = testing::raw(kind::BIND, "0.0.0.0", port, proto, ret);
        r.pid = pid;
        testing::event(&r)
    }

    #[test]
    fn filters_combine() {
        let f = Filter {
            port: Some(53),
            errors_only: true,
            proto: Some(Proto::Udp),
            pid: None,
        };
        assert!(f.matches(&ev(53, -98, IPPROTO_UDP, 1)));
        assert!(!f.matches(&ev(53, 0, IPPROTO_UDP, 1)), "errors only");
        assert!(!f.matches(&ev(54, -98, IPPROTO_UDP, 1)), "port");
        assert!(!f.matches(&ev(53, -98, 6, 1)), "proto");
        let by_pid = Filter {
            pid: Some(7),
            ..Filter::default()
        };
        assert!(by_pid.matches(&ev(1, 0, 6, 7)));
        assert!(!by_pid.matches(&ev(1, 0, 6, 8)));
        assert!(!by_pid.matches_accepts(80));
        assert!(Filter::default().matches_accepts(80));
    }

    #[test]
    fn row_names_the_errno_and_address() {
        let row = table_row(&ev(80, -98, 6, 1234));
        assert!(row.contains("0.0.0.0:80"), "{row}");
        assert!(row.contains("EADDRINUSE"), "{row}");
        assert!(row.contains("bind"), "{row}");
        assert!(row.contains("1234"), "{row}");
    }
}
