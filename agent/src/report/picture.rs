//! The lanes of the picture, computed here so the page's script only
//! draws them: one lane per port with who held it as bars, failed binds as
//! marks (bucketed, so 100k failures never become 100k DOM nodes), alert
//! episodes as spans; each element names its row in the table. And the
//! span the page opens on: where the records are, not the whole window
//! asked for, since outages are bursts inside long windows.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::rows::{Row, Rows, rows};
use bindwatch_core::timeline::Record;

/// Most lanes drawn (the busiest ports first).
pub const MAX_LANES: usize = 100;
/// Most marks drawn over all lanes, after bucketing.
pub const MAX_MARKS: usize = 20_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bar {
    pub start_ns: u64,
    /// None: still held at the end of the window.
    pub end_ns: Option<u64>,
    pub label: String,
    pub pid: u32,
    /// The row of the record it starts with.
    pub row: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mark {
    pub time_ns: u64,
    pub count: u64,
    /// The first failure in the bucket, as text.
    pub summary: String,
    /// The row of that failure.
    pub row: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub alert: String,
    pub row: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Lane {
    pub proto: String,
    pub port: u16,
    pub bars: Vec<Bar>,
    pub marks: Vec<Mark>,
    pub alerts: Vec<Span>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Picture {
    /// The window asked for (the overview strip).
    pub from_ns: u64,
    pub to_ns: u64,
    /// The span the page opens on: the records' own, padded.
    pub fit_from_ns: u64,
    pub fit_to_ns: u64,
    /// The host's offset from UTC, so the page shows the table's times.
    pub utc_offset_s: i32,
    pub lanes: Vec<Lane>,
    pub rows: Vec<Row>,
    pub rows_left_out: usize,
    pub records: usize,
    pub failures: u64,
    /// The moment asked about (`--at`), marked across the lanes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// `/ui`: reload every so many seconds (keeping the view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_s: Option<u32>,
}

/// Records that say something happened, as opposed to state restated
/// (`held` at a start of bindwatch) or the agent's own life.
fn is_activity(kind: &str) -> bool {
    matches!(
        kind,
        "bind_failed"
            | "bind"
            | "listen"
            | "listen_stop"
            | "release"
            | "alert_firing"
            | "alert_resolved"
    )
}

/// The span to open on: from the first to the last record of activity
/// (any record if none is), a twentieth of it added on each side, at least
/// a second wide, inside the window. The asked window when it is empty.
pub fn fit(records: &[Record], from_ns: u64, to_ns: u64, at_ns: Option<u64>) -> (u64, u64) {
    let first = records.iter().find(|r| is_activity(&r.kind));
    let last = records.iter().rev().find(|r| is_activity(&r.kind));
    let (lo, hi) = match (first, last) {
        (Some(a), Some(b)) => (a.time_ns, b.time_ns),
        _ => match (records.first(), records.last()) {
            (Some(a), Some(b)) => (a.time_ns, b.time_ns),
            _ => return (from_ns, to_ns.max(from_ns + 1)),
        },
    };
    let (lo, hi) = match at_ns {
        Some(at) => (lo.min(at), hi.max(at)),
        None => (lo, hi),
    };
    let pad = ((hi - lo) / 20).max(500_000_000);
    let (a, b) = (
        lo.saturating_sub(pad).max(from_ns),
        hi.saturating_add(pad).min(to_ns.max(from_ns + 1)),
    );
    if a < b { (a, b) } else { (from_ns, to_ns) }
}

/// Builds the picture of a window from its records (oldest first).
pub fn picture(records: &[Record], from_ns: u64, to_ns: u64, at_ns: Option<u64>) -> Picture {
    let Rows {
        rows,
        left_out,
        of_record,
    } = rows(records, to_ns);
    let (fit_from_ns, fit_to_ns) = fit(records, from_ns, to_ns, at_ns);
    let mut lanes: BTreeMap<(String, u16), Lane> = BTreeMap::new();
    // Holders open on each lane: pid -> index of its bar.
    let mut open: HashMap<(String, u16), HashMap<u32, usize>> = HashMap::new();
    let mut failures_by_lane: HashMap<(String, u16), Vec<usize>> = HashMap::new();
    let mut failures = 0;
    for (i, r) in records.iter().enumerate() {
        let (Some(port), Some(proto)) = (r.port, r.proto.clone()) else {
            continue;
        };
        let key = (proto.clone(), port);
        let lane = lanes.entry(key.clone()).or_insert_with(|| Lane {
            proto,
            port,
            bars: Vec::new(),
            marks: Vec::new(),
            alerts: Vec::new(),
        });
        let pid = r.pid.unwrap_or(0);
        let label = r.comm.clone().unwrap_or_else(|| "?".into());
        match r.kind.as_str() {
            "listen" | "bind" | "held" => {
                if let std::collections::hash_map::Entry::Vacant(v) =
                    open.entry(key).or_default().entry(pid)
                {
                    lane.bars.push(Bar {
                        start_ns: r.time_ns,
                        end_ns: None,
                        label: format!("{label} ({pid})"),
                        pid,
                        row: of_record[i],
                    });
                    v.insert(lane.bars.len() - 1);
                }
            }
            "listen_stop" | "release" => {
                if let Some(o) = open.get_mut(&key) {
                    // The closer may be another process sharing the socket:
                    // end its bar, else the oldest open one.
                    let idx = o
                        .remove(&pid)
                        .or_else(|| o.keys().next().copied().and_then(|k| o.remove(&k)));
                    if let Some(b) = idx {
                        lane.bars[b].end_ns = Some(r.time_ns);
                    }
                }
            }
            "bind_failed" => {
                failures += 1;
                failures_by_lane.entry(key).or_default().push(i);
            }
            _ => {}
        }
    }
    // Alert spans: the episodes the table shows, one span each.
    for (n, row) in rows.iter().enumerate() {
        if let (Some(alert), Some(port), Some(proto)) = (&row.alert, row.port, &row.proto)
            && let Some(lane) = lanes.get_mut(&(proto.clone(), port))
        {
            lane.alerts.push(Span {
                start_ns: row.first_ns,
                end_ns: row.last_ns,
                alert: alert.clone(),
                row: Some(n as u32),
            });
        }
    }
    // The busiest lanes, at most MAX_LANES, in port order.
    let mut keys: Vec<(String, u16)> = lanes.keys().cloned().collect();
    let weight = |k: &(String, u16)| {
        let l = &lanes[k];
        l.bars.len() + l.alerts.len() + failures_by_lane.get(k).map_or(0, |v| v.len())
    };
    keys.sort_by_key(|k| std::cmp::Reverse(weight(k)));
    keys.truncate(MAX_LANES);
    keys.sort_by_key(|k| (k.1, k.0.clone()));
    // Marks are bucketed over the span the page opens on (where every
    // failure is), finer than over the whole window.
    let n = keys.len().max(1);
    let buckets = (MAX_MARKS / n).clamp(50, 2000) as u64;
    let span = fit_to_ns.saturating_sub(fit_from_ns).max(1);
    let width = span.div_ceil(buckets);
    let mut out = Vec::new();
    for k in keys {
        let Some(mut lane) = lanes.remove(&k) else {
            continue;
        };
        let mut marks: BTreeMap<u64, Mark> = BTreeMap::new();
        for &i in failures_by_lane.get(&k).into_iter().flatten() {
            let r = &records[i];
            let b = r.time_ns.saturating_sub(fit_from_ns) / width;
            marks
                .entry(b)
                .and_modify(|m| m.count += 1)
                .or_insert_with(|| Mark {
                    time_ns: r.time_ns,
                    count: 1,
                    summary: r.summary.clone(),
                    row: of_record[i],
                });
        }
        lane.marks = marks.into_values().collect();
        out.push(lane);
    }
    Picture {
        at_ns,
        refresh_s: None,
        from_ns,
        to_ns,
        fit_from_ns,
        fit_to_ns,
        utc_offset_s: bindwatch_core::clock::local_offset_secs(to_ns),
        lanes: out,
        rows,
        rows_left_out: left_out,
        records: records.len(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_record as r;
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn holders_become_bars_with_gaps_and_failures_become_marks() {
        let mut recs = vec![
            r(10, "listen", 80, 1, "nginx"),
            r(20, "bind_failed", 80, 9, "other"),
            r(30, "listen_stop", 80, 1, "nginx"),
            r(35, "alert_firing", 80, 0, ""),
            r(40, "listen", 80, 2, "socat"),
        ];
        recs[3].summary = "BindwatchPortLost firing: x".into();
        let p = picture(&recs, 0, 100, None);
        assert_eq!(p.lanes.len(), 1);
        let l = &p.lanes[0];
        assert_eq!(l.bars.len(), 2);
        assert_eq!((l.bars[0].start_ns, l.bars[0].end_ns), (10, Some(30)));
        assert_eq!(l.bars[1].end_ns, None, "still held");
        assert_eq!(l.bars[1].label, "socat (2)");
        assert_eq!(l.marks.len(), 1);
        assert_eq!(l.alerts[0].alert, "BindwatchPortLost");
        // Each element points at its row.
        let row = |n: Option<u32>| &p.rows[n.unwrap() as usize];
        assert_eq!(row(l.bars[1].row).summary, "listen by socat");
        assert_eq!(row(l.marks[0].row).kind, "bind_failed");
        assert_eq!(row(l.alerts[0].row).kind, "alert");
    }

    #[test]
    fn the_page_opens_on_the_records_not_the_window() {
        let hour = 3600 * S;
        let t0 = 2 * hour;
        let mut recs = vec![r(t0 - hour, "held", 80, 1, "nginx")];
        recs[0].kind = "held".into();
        recs.push(r(t0 + S, "listen_stop", 80, 1, "nginx"));
        recs.push(r(t0 + 31 * S, "listen", 80, 1, "nginx"));
        let (a, b) = fit(&recs, 0, 3 * hour, None);
        assert!(a >= t0 - 2 * S && a <= t0 + S, "{a}");
        assert!(b >= t0 + 31 * S && b <= t0 + 34 * S, "{b}");
        // --at widens it to the moment.
        assert!(fit(&recs, 0, 3 * hour, Some(t0 - hour)).0 < t0 - hour);
        // Only state restated: those records.
        let (a, b) = fit(&recs[..1], 0, 3 * hour, None);
        assert!(a < t0 - hour && b > t0 - hour);
        // Nothing: the window.
        assert_eq!(fit(&[], 7, 9, None), (7, 9));
        // A single record: a second around it, inside the window.
        assert_eq!(fit(&recs[1..2], 0, t0 + S, None), (t0 + S / 2, t0 + S));
    }

    #[test]
    fn a_hundred_thousand_failures_stay_a_bounded_drawing() {
        let recs: Vec<Record> = (0..100_000u64)
            .map(|i| r(i, "bind_failed", (i % 100) as u16 + 1, 1, "x"))
            .collect();
        let p = picture(&recs, 0, 100_000, None);
        assert_eq!(p.lanes.len(), 100);
        let marks: usize = p.lanes.iter().map(|l| l.marks.len()).sum();
        assert!(marks <= MAX_MARKS, "{marks}");
        let counted: u64 = p.lanes.iter().flat_map(|l| &l.marks).map(|m| m.count).sum();
        assert_eq!(counted, 100_000, "every failure counted in some mark");
    }
}
