//! "Who held port 80 at 03:14, and for how long?": holder intervals
//! rebuilt from the stored records, across restarts of the holders and of
//! bindwatch itself, and the failures around the moment.
//!
//! An interval opens with a `listen` (or an explicit UDP `bind`) and
//! closes with the `listen_stop` or `release` of the same process. When
//! bindwatch starts it records every socket it finds holding a port
//! (`held`, stamped with the `agent_start` time): an interval open before
//! a restart that is found again continues as one interval; one that is
//! not found ended while bindwatch was not running, and says so. An
//! interval whose opening record is gone (pruned, or the socket was bound
//! before bindwatch first ran) starts "before" its first record.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Record;

/// How far around the moment failures are listed.
pub const FAILURES_AROUND_NS: u64 = 5 * 60 * 1_000_000_000;

/// Record kinds the intervals are rebuilt from (the port's own).
pub const LIFECYCLE_KINDS: &[&str] = &["listen", "bind", "listen_stop", "release", "held"];
/// bindwatch's own starts and stops (no port).
pub const AGENT_KINDS: &[&str] = &["agent_start", "agent_stop"];

/// How an interval began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Since {
    /// Its `listen` or `bind` record.
    Recorded,
    /// Found holding the port when bindwatch started; how long before is
    /// not known (bound before bindwatch ran, or its records were pruned).
    Before,
}

/// How an interval ended, as far as the records go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Its `listen_stop` or `release` record.
    Released,
    /// Gone when bindwatch started again: it let go between `until_ns`
    /// (bindwatch stopped or its last sign of life) and `gone_by_ns`.
    WhileStopped,
    /// Still held at the last record read.
    StillHeld,
}

/// One holder's time on the port.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub proto: String,
    pub addr: String,
    pub pid: u32,
    pub comm: String,
    pub since_ns: u64,
    pub since: Since,
    /// The release; for `while_stopped`, the last moment it was known held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ns: Option<u64>,
    pub until: Until,
    /// For `while_stopped`: when bindwatch, back, no longer found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gone_by_ns: Option<u64>,
    /// bindwatch restarts the interval spans (found again each time).
    pub restarts_spanned: u32,
}

/// The answer for one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtAnswer {
    pub at_ns: u64,
    pub port: u16,
    /// Whether bindwatch was running at the moment (false: between a stop
    /// and the next start, so the holders listed are those held on both
    /// sides of the gap, or ended somewhere in it).
    pub watching: bool,
    pub holders: Vec<Interval>,
    /// Failed binds on the port within [`FAILURES_AROUND_NS`] of the moment.
    pub failures: Vec<Record>,
    /// The oldest record read: nothing before it is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_from_ns: Option<u64>,
}

type Key = (String, u32);

fn key(r: &Record) -> Key {
    (r.proto.clone().unwrap_or_default(), r.pid.unwrap_or(0))
}

fn open_interval(r: &Record, since: Since) -> Interval {
    Interval {
        proto: r.proto.clone().unwrap_or_default(),
        addr: r.addr.clone().unwrap_or_default(),
        pid: r.pid.unwrap_or(0),
        comm: r.comm.clone().unwrap_or_default(),
        since_ns: r.time_ns,
        since,
        until_ns: None,
        until: Until::StillHeld,
        gone_by_ns: None,
        restarts_spanned: 0,
    }
}

/// Rebuilds the intervals of `port` from `records` (oldest first: the
/// port's lifecycle records, bindwatch's starts and stops, its failures)
/// and answers for `at_ns`.
pub fn holders_at(records: &[Record], port: u16, at_ns: u64) -> AtAnswer {
    let mut open: BTreeMap<Key, Interval> = BTreeMap::new();
    let mut closed: Vec<Interval> = Vec::new();
    let mut watching = false;
    let mut last_seen_ns = 0u64;
    let mut i = 0;
    while i < records.len() {
        let r = &records[i];
        let on_port = r.port == Some(port);
        match r.kind.as_str() {
            "agent_start" => {
                // The sockets found at this start, recorded right after it.
                let mut found: BTreeMap<Key, &Record> = BTreeMap::new();
                let mut j = i + 1;
                while j < records.len() && records[j].time_ns == r.time_ns {
                    if records[j].kind == "held" && records[j].port == Some(port) {
                        found.insert(key(&records[j]), &records[j]);
                    }
                    j += 1;
                }
                for (k, mut iv) in std::mem::take(&mut open) {
                    if found.remove(&k).is_some() {
                        iv.restarts_spanned += 1;
                        open.insert(k, iv);
                    } else {
                        iv.until = Until::WhileStopped;
                        iv.until_ns = Some(last_seen_ns.max(iv.since_ns));
                        iv.gone_by_ns = Some(r.time_ns);
                        closed.push(iv);
                    }
                }
                for (k, h) in found {
                    open.insert(k, open_interval(h, Since::Before));
                }
                watching = true;
                i = j;
                continue;
            }
            "agent_stop" => watching = false,
            "listen" | "bind" if on_port => {
                open.entry(key(r))
                    .or_insert_with(|| open_interval(r, Since::Recorded));
            }
            // A `held` outside a start's batch (its start record pruned).
            "held" if on_port => {
                open.entry(key(r))
                    .or_insert_with(|| open_interval(r, Since::Before));
            }
            "listen_stop" | "release" if on_port => {
                // The closer may be another process sharing the socket:
                // end its interval, else the oldest open one.
                let k = key(r);
                let k = if open.contains_key(&k) {
                    Some(k)
                } else {
                    open.keys().find(|(p, _)| *p == k.0).cloned()
                };
                if let Some(mut iv) = k.and_then(|k| open.remove(&k)) {
                    iv.until = Until::Released;
                    iv.until_ns = Some(r.time_ns);
                    closed.push(iv);
                }
            }
            _ => {}
        }
        if r.kind != "agent_stop" {
            last_seen_ns = r.time_ns;
        } else {
            last_seen_ns = last_seen_ns.max(r.time_ns);
        }
        i += 1;
    }
    closed.extend(open.into_values());
    // Those that held the port at the moment: began at or before it and
    // had not let go (a holder that ended while bindwatch was stopped is
    // listed if the moment falls before it was found gone).
    let mut holders: Vec<Interval> = closed
        .into_iter()
        .filter(|iv| {
            iv.since_ns <= at_ns
                && match iv.until {
                    Until::Released => iv.until_ns.is_some_and(|u| u > at_ns),
                    Until::WhileStopped => iv.gone_by_ns.is_some_and(|g| g > at_ns),
                    Until::StillHeld => true,
                }
        })
        .collect();
    holders.sort_by_key(|iv| (iv.since_ns, iv.pid));
    let failures = records
        .iter()
        .filter(|r| {
            r.kind == "bind_failed"
                && r.port == Some(port)
                && r.time_ns.abs_diff(at_ns) <= FAILURES_AROUND_NS
        })
        .cloned()
        .collect();
    AtAnswer {
        at_ns,
        port,
        watching: watching_at(records, at_ns).unwrap_or(watching),
        holders,
        failures,
        records_from_ns: records.first().map(|r| r.time_ns),
    }
}

/// Whether bindwatch was running at `at_ns`: after its last start before
/// the moment and before that run's stop. None when no start or stop
/// precedes the moment.
fn watching_at(records: &[Record], at_ns: u64) -> Option<bool> {
    records
        .iter()
        .take_while(|r| r.time_ns <= at_ns)
        .filter(|r| r.kind == "agent_start" || r.kind == "agent_stop")
        .last()
        .map(|r| r.kind == "agent_start")
}

impl AtAnswer {
    /// The answer as text: each holder with its interval, then the
    /// failures around the moment.
    pub fn render(&self) -> String {
        let t = super::local_time;
        let mut s = format!("port {} at {}", self.port, t(self.at_ns));
        if !self.watching {
            s.push_str(" (bindwatch was not running then)");
        }
        s.push('\n');
        if self.holders.is_empty() {
            s.push_str("  nobody held it, as far as the records go");
            if let Some(from) = self.records_from_ns {
                s.push_str(&format!(" (they begin at {})", t(from)));
            }
            s.push('\n');
        }
        for h in &self.holders {
            let since = match h.since {
                Since::Recorded => format!("since {}", t(h.since_ns)),
                Since::Before => format!(
                    "since before {} (found holding it when bindwatch started; bound before \
                     bindwatch ran, or its start was pruned)",
                    t(h.since_ns)
                ),
            };
            let until = match (h.until, h.until_ns, h.gone_by_ns) {
                (Until::Released, Some(u), _) => format!(
                    "until {} (held {})",
                    t(u),
                    duration(u.saturating_sub(h.since_ns))
                ),
                (Until::WhileStopped, Some(u), Some(g)) => format!(
                    "let go while bindwatch was stopped, between {} and {}",
                    t(u),
                    t(g)
                ),
                _ => "still held at the last record".to_owned(),
            };
            let ep = match h.addr.parse() {
                Ok(a) => crate::event::endpoint(a, self.port),
                Err(_) => format!("{}:{}", h.addr, self.port),
            };
            s.push_str(&format!(
                "  {} {ep} held by {} (pid {}), {since}, {until}",
                h.proto, h.comm, h.pid
            ));
            if h.restarts_spanned > 0 {
                s.push_str(&format!(
                    "; found again across {} bindwatch restart(s)",
                    h.restarts_spanned
                ));
            }
            s.push('\n');
        }
        if !self.failures.is_empty() {
            s.push_str(&format!(
                "failed binds within {} minutes:\n",
                FAILURES_AROUND_NS / 60_000_000_000
            ));
            for f in &self.failures {
                s.push_str(&format!("  {}  {}\n", t(f.time_ns), f.summary));
            }
        }
        s
    }
}

/// 9m58s, 2h03m, 850ms.
fn duration(ns: u64) -> String {
    let ms = ns / 1_000_000;
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{}.{:01}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn rec(t: u64, kind: &str, pid: u32, comm: &str) -> Record {
        let agent = kind.starts_with("agent_");
        Record {
            time_ns: t * S,
            kind: kind.into(),
            port: (!agent).then_some(80),
            proto: (!agent).then(|| "tcp".into()),
            addr: (!agent).then(|| "0.0.0.0".into()),
            pid: (!agent).then_some(pid),
            comm: (!agent).then(|| comm.into()),
            ..Record::default()
        }
    }

    /// bindwatch starts with nginx already on :80; nginx is replaced by
    /// socat at 100; bindwatch restarts at 200-210 with socat still on; at
    /// 300-310 it restarts again and socat is gone meanwhile; at 400 nginx
    /// fails to bind.
    fn scenario() -> Vec<Record> {
        vec![
            rec(10, "agent_start", 0, ""),
            rec(10, "held", 50, "nginx"),
            rec(99, "listen_stop", 50, "nginx"),
            rec(100, "listen", 60, "socat"),
            rec(200, "agent_stop", 0, ""),
            rec(210, "agent_start", 0, ""),
            rec(210, "held", 60, "socat"),
            rec(250, "bind_failed", 70, "nginx"),
            rec(300, "agent_stop", 0, ""),
            rec(310, "agent_start", 0, ""),
            rec(400, "bind_failed", 71, "nginx"),
        ]
    }

    #[test]
    fn one_interval_across_a_restart_and_a_known_start() {
        let a = holders_at(&scenario(), 80, 205 * S);
        assert!(!a.watching, "205 is between a stop and a start");
        assert_eq!(a.holders.len(), 1, "{a:?}");
        let h = &a.holders[0];
        assert_eq!(
            (h.comm.as_str(), h.since_ns, h.since),
            ("socat", 100 * S, Since::Recorded)
        );
        assert_eq!(h.restarts_spanned, 1);
        assert_eq!(h.until, Until::WhileStopped);
        assert_eq!((h.until_ns, h.gone_by_ns), (Some(300 * S), Some(310 * S)));
        assert_eq!(
            a.failures.len(),
            2,
            "250 and 400 are within 5 minutes of 205"
        );
        assert!(
            a.render()
                .contains("found again across 1 bindwatch restart(s)")
        );
    }

    #[test]
    fn a_holder_from_before_bindwatch_and_its_release() {
        let a = holders_at(&scenario(), 80, 50 * S);
        assert!(a.watching);
        let h = &a.holders[0];
        assert_eq!((h.comm.as_str(), h.since), ("nginx", Since::Before));
        assert_eq!((h.until, h.until_ns), (Until::Released, Some(99 * S)));
        assert!(a.render().contains("since before"), "{}", a.render());
    }

    #[test]
    fn nobody_after_the_holder_went_while_stopped() {
        let a = holders_at(&scenario(), 80, 320 * S);
        assert!(a.watching);
        assert!(a.holders.is_empty(), "{a:?}");
        assert_eq!(a.failures.len(), 2);
        assert!(a.render().contains("nobody held it"));
    }

    #[test]
    fn other_ports_and_other_moments() {
        assert!(holders_at(&scenario(), 443, 150 * S).holders.is_empty());
        assert!(holders_at(&scenario(), 80, 5 * S).holders.is_empty());
    }
}
