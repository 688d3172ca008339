//! What the timeline records of events and alerts, the filters operators
//! type (`--since 2h`), and the table they read. The daemon's `store`
//! keeps the records; this module decides what they say.

mod at;
mod record;

pub use at::{
    AGENT_KINDS, AtAnswer, FAILURES_AROUND_NS, Interval, LIFECYCLE_KINDS, Since, Until, holders_at,
};
pub use record::{Detail, Record};

use std::collections::HashMap;

use chrono::{DateTime, Local, NaiveDateTime, TimeZone};

use crate::alerts::Alert;
use crate::event::{Event, EventKind, Proto};
use crate::holders::Diagnosis;

/// Which records to read (the CLI and the API build it; the store runs it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineFilter {
    pub port: Option<u16>,
    pub proto: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub since_ns: Option<u64>,
    pub until_ns: Option<u64>,
    pub kinds: Vec<String>,
    pub limit: usize,
}

/// Record kinds, as `--kind` takes them.
pub const KINDS: &[&str] = &[
    "bind_failed",
    "bind",
    "listen",
    "listen_stop",
    "release",
    "held",
    "binds_aggregated",
    "alert_firing",
    "alert_resolved",
    "agent_start",
    "agent_stop",
    "probe_status",
    "events_lost",
];

const TCP_LISTEN: u8 = bindwatch_common::tcp_state::LISTEN as u8;

fn base(ev: &Event, kind: &str, summary: String) -> Record {
    Record {
        time_ns: ev.time_ns,
        kind: kind.into(),
        port: Some(ev.effective_port()),
        proto: Some(ev.proto.as_str().into()),
        addr: Some(ev.addr.to_string()),
        pid: Some(ev.pid),
        comm: Some(ev.comm.clone()),
        netns: ev.netns_cookie,
        summary,
        detail: Detail::of(ev),
        ..Record::default()
    }
}

/// How an event goes into the timeline: a record of its own, counted into
/// the per-minute aggregate, or not at all. Cheap: decided on the event
/// loop; the record itself is built by [`record`] on the writer thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Record,
    Aggregate,
    Skip,
}

/// Failures, listeners starting and stopping, listening (and explicitly
/// bound UDP) sockets released, and explicit UDP binds are recorded; other
/// successful binds are aggregated.
pub fn plan(ev: &Event) -> Plan {
    match ev.kind {
        EventKind::Bind if ev.failed() => Plan::Record,
        EventKind::Bind if ev.proto == Proto::Udp && ev.port != 0 => Plan::Record,
        EventKind::Bind => Plan::Aggregate,
        EventKind::Listen if ev.failed() => Plan::Skip,
        EventKind::Listen | EventKind::ListenStop => Plan::Record,
        EventKind::Release if ev.state == Some(TCP_LISTEN) || ev.proto == Proto::Udp => {
            Plan::Record
        }
        EventKind::Release => Plan::Skip,
    }
}

/// The record of an event [`plan`] says to record.
pub fn record(ev: &Event, d: Option<&Diagnosis>) -> Option<Record> {
    if plan(ev) != Plan::Record {
        return None;
    }
    let who = format!("{} (pid {})", ev.comm, ev.pid);
    Some(match ev.kind {
        EventKind::Bind if ev.failed() => {
            let mut r = base(
                ev,
                "bind_failed",
                match d {
                    Some(d) => format!("{who} bind {}: {}", ev.endpoint(), d.summary),
                    None => format!("{who} bind {}: {}", ev.endpoint(), ev.result_str()),
                },
            );
            r.port = Some(ev.port);
            r.error = ev.error.map(str::to_owned);
            if let Some(d) = d {
                if let Some(b) = d.holders.first() {
                    r.reason = Some(b.reason.code().into());
                    if let Some(o) = b.holder.owners.first() {
                        r.holder_pid = Some(o.pid);
                        r.holder_comm = Some(o.comm.clone());
                    }
                }
                r.detail = Detail::of(&crate::trace::EventLine {
                    event: ev,
                    diagnosis: Some(d),
                });
            }
            r
        }
        EventKind::Bind => base(ev, "bind", format!("{who} bound udp {}", ev.endpoint())),
        EventKind::Listen => base(
            ev,
            "listen",
            format!("{who} listens on tcp {}", ev.endpoint()),
        ),
        EventKind::ListenStop => base(
            ev,
            "listen_stop",
            format!("tcp {} stopped listening ({who} closed it)", ev.endpoint()),
        ),
        EventKind::Release => base(
            ev,
            "release",
            format!("{} {} released by {who}", ev.proto, ev.endpoint()),
        ),
    })
}

/// Most `held` records written at one start (the busiest host's listeners
/// beyond it are counted in the `agent_start` summary, not listed).
pub const MAX_HELD_RECORDS: usize = 10_000;

/// The sockets found holding a port when bindwatch starts (TCP listeners,
/// UDP sockets bound to a port), one `held` record each, stamped `time_ns`
/// (the `agent_start` record's): what lets a holder's interval continue
/// across a restart of bindwatch. Returns the records and how many were
/// left out past [`MAX_HELD_RECORDS`].
pub fn held_records(table: &crate::holders::HolderTable, time_ns: u64) -> (Vec<Record>, usize) {
    use crate::conflict::SockState;
    let mut out = Vec::new();
    let mut left_out = 0;
    for h in table.iter() {
        let holds = match h.proto {
            Proto::Tcp => h.state == SockState::Listen,
            Proto::Udp => h.port != 0,
            Proto::Unknown => false,
        };
        if !holds {
            continue;
        }
        if out.len() >= MAX_HELD_RECORDS {
            left_out += 1;
            continue;
        }
        let v = table.view(h);
        let owner = v.owners.first();
        out.push(Record {
            time_ns,
            kind: "held".into(),
            port: Some(h.port),
            proto: Some(h.proto.as_str().into()),
            addr: Some(h.addr.to_string()),
            pid: owner.map(|o| o.pid),
            comm: owner.map(|o| o.comm.clone()),
            netns: Some(h.netns),
            summary: format!(
                "{} {} held by {} when bindwatch started",
                h.proto,
                v.endpoint,
                v.owner_label()
            ),
            detail: Detail::of(&v),
            ..Record::default()
        });
    }
    (out, left_out)
}

/// An alert notification as a record.
pub fn alert_record(a: &Alert, now_ns: u64) -> Record {
    let l = &a.labels;
    let firing = a.firing();
    Record {
        time_ns: if firing {
            now_ns
        } else {
            a.ends_ns.unwrap_or(now_ns)
        },
        kind: if firing {
            "alert_firing"
        } else {
            "alert_resolved"
        }
        .into(),
        port: l.get("port").and_then(|p| p.parse().ok()),
        proto: l.get("proto").cloned(),
        holder_pid: a.annotations.get("holder_pid").and_then(|p| p.parse().ok()),
        reason: a.annotations.get("reason").cloned(),
        summary: format!(
            "{} {}: {}",
            l.get("alertname").map(String::as_str).unwrap_or("alert"),
            if firing { "firing" } else { "resolved" },
            a.annotations
                .get("summary")
                .map(String::as_str)
                .unwrap_or("")
        ),
        detail: Detail::of(a),
        ..Record::default()
    }
}

/// `2h`, `90s`, `15m`, `7d` ago; or an absolute RFC 3339 time; or local
/// `YYYY-MM-DD HH:MM[:SS]`.
pub fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Some((num, unit)) = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, _)| s.split_at(i))
        && !num.is_empty()
        && let Ok(n) = num.parse::<u64>()
    {
        let secs = match unit {
            "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        };
        if let Some(mul) = secs {
            // Past u64 nanoseconds (about 584 years) is refused, not wrapped.
            return n
                .checked_mul(mul * 1_000_000_000)
                .map(|ago| now_ns.saturating_sub(ago))
                .ok_or_else(|| format!("{s:?} reaches too far back: at most about 500 years"));
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64);
    }
    for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt)
            && let Some(t) = Local.from_local_datetime(&n).single()
        {
            return Ok(t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64);
        }
    }
    Err(format!(
        "{s:?} is not a time: use a duration ago (90s, 15m, 2h, 7d), RFC 3339, or YYYY-MM-DD HH:MM[:SS]"
    ))
}

/// The filters from query parameters (the API; the CLI builds the same
/// map). Err names the parameter.
pub fn filter_from_params(
    params: &HashMap<String, String>,
    now_ns: u64,
) -> Result<TimelineFilter, (String, String)> {
    let mut f = TimelineFilter::default();
    for (k, v) in params {
        let bad = |m: String| (k.clone(), m);
        match k.as_str() {
            "port" => {
                f.port = Some(
                    v.parse()
                        .map_err(|_| bad(format!("port {v:?} is not 0-65535")))?,
                )
            }
            "proto" => {
                f.proto = Some(
                    Proto::parse(v)
                        .ok_or_else(|| bad(format!("proto {v:?} is not tcp or udp")))?
                        .as_str()
                        .to_owned(),
                )
            }
            "pid" => {
                f.pid = Some(
                    v.parse()
                        .map_err(|_| bad(format!("pid {v:?} is not a number")))?,
                )
            }
            "comm" => f.comm = Some(v.clone()),
            "since" => f.since_ns = Some(parse_time(v, now_ns).map_err(bad)?),
            "until" => f.until_ns = Some(parse_time(v, now_ns).map_err(bad)?),
            "kind" => {
                for kind in v.split(',') {
                    if !KINDS.contains(&kind) {
                        return Err(bad(format!(
                            "kind {kind:?} is not one of {}",
                            KINDS.join(", ")
                        )));
                    }
                    f.kinds.push(kind.to_owned());
                }
            }
            "limit" => {
                f.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| bad(format!("limit {v:?} is not 1-100000")))?
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {k:?}: use port, proto, pid, comm, since, until, kind, limit"
                )));
            }
        }
    }
    Ok(f)
}

pub const HEADER: &str =
    "TIME                     KIND             PROTO PORT   PID      COMM             SUMMARY";

/// Local time with milliseconds (the timeline's way of showing a stamp).
pub fn local_time(ns: u64) -> String {
    crate::clock::local(ns, crate::clock::Shown::Millis).unwrap_or_default()
}

/// One record as a table row.
pub fn row(r: &Record) -> String {
    let t = local_time(r.time_ns);
    format!(
        "{t:<24} {:<16} {:<5} {:<6} {:<8} {:<16} {}",
        r.kind,
        r.proto.as_deref().unwrap_or("-"),
        r.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        r.comm.as_deref().unwrap_or("-"),
        r.summary
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_times() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_time("2h", now).unwrap(), now - 7200 * 1_000_000_000);
        assert_eq!(parse_time("90s", now).unwrap(), now - 90 * 1_000_000_000);
        assert_eq!(
            parse_time("2026-11-22T02:00:00Z", now).unwrap(),
            1_795_312_800 * 1_000_000_000
        );
        assert!(parse_time("2026-11-22 02:15", now).is_ok());
        let e = parse_time("yesterday", now).unwrap_err();
        assert!(e.contains("yesterday"), "{e}");
        assert!(parse_time("5y", now).is_err());
        // Found by fuzzing with overflow checks: this wrapped to 1977.
        let e = parse_time("20000000000s", now).unwrap_err();
        assert!(e.contains("too far back"), "{e}");
        assert_eq!(
            parse_time("18000000000s", now).unwrap(),
            0,
            "before 1970: the epoch"
        );
    }

    #[test]
    fn params_name_the_bad_one() {
        let p = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let f =
            filter_from_params(&p(&[("port", "80"), ("kind", "listen,bind_failed")]), 0).unwrap();
        assert_eq!(f.port, Some(80));
        assert_eq!(f.kinds, vec!["listen", "bind_failed"]);
        for (params, name) in [
            (p(&[("port", "x")]), "port"),
            (p(&[("since", "soon")]), "since"),
            (p(&[("kind", "explosion")]), "kind"),
            (p(&[("proto", "sctp")]), "proto"),
            (p(&[("limit", "0")]), "limit"),
            (p(&[("colour", "red")]), "colour"),
        ] {
            assert_eq!(filter_from_params(&params, 0).unwrap_err().0, name);
        }
    }
}
