//! The table under the picture, saying each thing once: an alert episode
//! (fired, re-sent while it lasted, resolved) is one row with how many
//! failures it covered; repeated failures of one process on one address
//! against one holder are one row with a count, first and last time, and
//! the individual records behind it; every other record is a row of its
//! own. The JSON API keeps every record; this is only how a person reads
//! them.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use bindwatch_core::timeline::{Record, local_time};

/// Most rows (the latest), so a busy day stays a page a browser opens.
pub const MAX_ROWS: usize = 1_000;
/// Most individual records listed under one grouped row (the first ones;
/// the rest are counted).
pub const MAX_MEMBERS: usize = 50;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Member {
    pub time_ns: u64,
    pub summary: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    /// The record kind, or `alert` for an episode.
    pub kind: String,
    pub first_ns: u64,
    /// Grouped failures: the last one. Episodes: when it was resolved
    /// (None: still firing at the end of the window). Others: None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ns: Option<u64>,
    /// Failures in a group, notifications in an episode, else 1.
    pub count: u64,
    /// Episodes on a port: the failed binds on it while the alert lasted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub summary: String,
    /// What clicking it shows: (label, text) pairs.
    pub card: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Member>,
    #[serde(skip_serializing_if = "is_zero")]
    pub members_left_out: u64,
    /// The record the row starts with.
    #[serde(skip)]
    pub(super) first: usize,
    /// Episodes: the alert's name (the lane draws its span).
    #[serde(skip)]
    pub(super) alert: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub struct Rows {
    /// In the order of their first record, the latest [`MAX_ROWS`].
    pub rows: Vec<Row>,
    /// Rows older than those kept.
    pub left_out: usize,
    /// Each record's row (an index into `rows`), None when left out.
    pub of_record: Vec<Option<u32>>,
}

type FailureKey<'a> = (
    Option<u32>,
    Option<&'a str>,
    Option<&'a str>,
    Option<u16>,
    Option<&'a str>,
    Option<u32>,
);

/// An alert's identity on the page: lane, name, watch.
type EpisodeKey<'a> = (Option<&'a str>, Option<u16>, String, String);

fn alert_name(r: &Record) -> String {
    r.summary
        .split_whitespace()
        .next()
        .unwrap_or("alert")
        .to_owned()
}

/// Groups a window's records (oldest first) into rows.
pub fn rows(records: &[Record], to_ns: u64) -> Rows {
    let mut rows: Vec<Row> = Vec::new();
    let mut of_record: Vec<u32> = Vec::with_capacity(records.len());
    let mut groups: HashMap<FailureKey, usize> = HashMap::new();
    let mut open_episodes: HashMap<EpisodeKey, usize> = HashMap::new();
    // Failure times per lane, for what an episode covered.
    let mut failures: HashMap<(Option<&str>, Option<u16>), Vec<u64>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let new_row = |kind: &str| Row {
            kind: kind.to_owned(),
            first_ns: r.time_ns,
            last_ns: None,
            count: 1,
            covered: None,
            proto: r.proto.clone(),
            port: r.port,
            pid: r.pid,
            comm: r.comm.clone(),
            summary: r.summary.clone(),
            card: Vec::new(),
            members: Vec::new(),
            members_left_out: 0,
            first: i,
            alert: None,
        };
        let row = match r.kind.as_str() {
            "bind_failed" => {
                failures
                    .entry((r.proto.as_deref(), r.port))
                    .or_default()
                    .push(r.time_ns);
                let key = (
                    r.pid,
                    r.proto.as_deref(),
                    r.addr.as_deref(),
                    r.port,
                    r.error.as_deref(),
                    r.holder_pid,
                );
                match groups.get(&key) {
                    Some(&g) => {
                        let row = &mut rows[g];
                        row.count += 1;
                        row.last_ns = Some(r.time_ns);
                        if row.members.len() < MAX_MEMBERS {
                            row.members.push(Member {
                                time_ns: r.time_ns,
                                summary: r.summary.clone(),
                            });
                        } else {
                            row.members_left_out += 1;
                        }
                        g
                    }
                    None => {
                        let mut row = new_row("bind_failed");
                        row.last_ns = Some(r.time_ns);
                        row.members.push(Member {
                            time_ns: r.time_ns,
                            summary: r.summary.clone(),
                        });
                        rows.push(row);
                        groups.insert(key, rows.len() - 1);
                        rows.len() - 1
                    }
                }
            }
            "alert_firing" | "alert_resolved" => {
                let detail = r.detail.value();
                let watch = detail["labels"]["watch"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let name = alert_name(r);
                let key = (r.proto.as_deref(), r.port, name.clone(), watch);
                let firing = r.kind == "alert_firing";
                match open_episodes.get(&key).copied() {
                    Some(e) if firing => {
                        rows[e].count += 1;
                        e
                    }
                    Some(e) => {
                        open_episodes.remove(&key);
                        rows[e].last_ns = Some(r.time_ns);
                        e
                    }
                    None => {
                        let mut row = new_row("alert");
                        row.pid = None;
                        row.comm = None;
                        row.alert = Some(name);
                        // The alert's own start: the failure that raised
                        // it, the moment the port went unheld; a record is
                        // written a moment later (and, for an episode
                        // resolved inside the window, maybe before it).
                        row.first_ns = detail["starts_ns"]
                            .as_u64()
                            .unwrap_or(r.time_ns)
                            .min(r.time_ns);
                        if !firing {
                            row.last_ns = Some(r.time_ns);
                        }
                        rows.push(row);
                        if firing {
                            open_episodes.insert(key, rows.len() - 1);
                        }
                        rows.len() - 1
                    }
                }
            }
            _ => {
                rows.push(new_row(&r.kind));
                rows.len() - 1
            }
        };
        of_record.push(row as u32);
    }
    for row in rows
        .iter_mut()
        .filter(|r| r.kind == "alert" && r.port.is_some())
    {
        let end = row.last_ns.unwrap_or(to_ns);
        row.covered = Some(
            failures
                .get(&(row.proto.as_deref(), row.port))
                .map_or(0, |ts| {
                    (ts.partition_point(|&t| t <= end) - ts.partition_point(|&t| t < row.first_ns))
                        as u64
                }),
        );
    }
    let left_out = rows.len().saturating_sub(MAX_ROWS);
    let mut rows = rows.split_off(left_out);
    for row in &mut rows {
        row.card = card(row, &records[row.first]);
    }
    let of_record = of_record
        .into_iter()
        .map(|r| r.checked_sub(left_out as u32))
        .collect();
    Rows {
        rows,
        left_out,
        of_record,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a click on the row (or its mark, bar or span) shows.
fn card(row: &Row, first: &Record) -> Vec<(String, String)> {
    let mut c: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            c.push((k.to_owned(), v));
        }
    };
    let detail = first.detail.value();
    let who = |comm: &Option<String>, pid: Option<u32>| match (comm, pid) {
        (Some(c), Some(p)) => Some(format!("{c} (pid {p})")),
        (None, Some(p)) => Some(format!("pid {p}")),
        _ => None,
    };
    match row.kind.as_str() {
        "bind_failed" => {
            let d = &detail["diagnosis"];
            let blame = &d["holders"][0];
            let owner = &blame["holder"]["owners"][0];
            put("Failed bind", Some(first.summary.clone()));
            put("Process", who(&first.comm, first.pid));
            put("Error", first.error.clone());
            put("Diagnosis", text(&d["summary"]));
            put(
                "Holder",
                who(&first.holder_comm, first.holder_pid).map(|h| {
                    match text(&blame["holder"]["endpoint"]) {
                        Some(e) => format!("{h} on {e}"),
                        None => h,
                    }
                }),
            );
            put("Command line", text(&owner["cmdline"]));
            put("Service", text(&owner["unit"]));
            put(
                "Reason",
                match (first.reason.clone(), text(&blame["explanation"])) {
                    (Some(r), Some(e)) => Some(format!("{r}: {e}")),
                    (r, e) => r.or(e),
                },
            );
            put("Fix", text(&blame["hint"]).or_else(|| text(&d["hint"])));
            if row.count > 1 {
                put(
                    "Repeated",
                    Some(format!(
                        "{} times, {} to {}",
                        row.count,
                        local_time(row.first_ns),
                        local_time(row.last_ns.unwrap_or(row.first_ns))
                    )),
                );
            }
        }
        "alert" => {
            put("Alert", row.alert.clone());
            put("Summary", text(&detail["annotations"]["summary"]));
            put("Fired", Some(local_time(row.first_ns)));
            put(
                "Resolved",
                Some(
                    row.last_ns
                        .map_or_else(|| "still firing".to_owned(), local_time),
                ),
            );
            put("Notifications", Some(row.count.to_string()));
            put("Failed binds covered", row.covered.map(|n| n.to_string()));
            if let Some(a) = detail["annotations"].as_object() {
                for (k, v) in a.iter().filter(|(k, _)| *k != "summary") {
                    put(&k.replace('_', " "), text(v));
                }
            }
        }
        _ => {
            put("Record", Some(first.summary.clone()));
            put("Process", who(&first.comm, first.pid));
            put("Address", first.addr.clone());
            let owner = &detail["owners"][0];
            put("Command line", text(&owner["cmdline"]));
            put("Service", text(&owner["unit"]));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use bindwatch_core::timeline::Detail;

    fn rec(t: u64, kind: &str, pid: u32, summary: &str) -> Record {
        Record {
            time_ns: t,
            kind: kind.into(),
            port: Some(80),
            proto: Some("tcp".into()),
            addr: Some("0.0.0.0".into()),
            pid: Some(pid),
            comm: Some(format!("p{pid}")),
            summary: summary.into(),
            ..Record::default()
        }
    }

    fn alert(t: u64, firing: bool, name: &str) -> Record {
        let mut r = rec(
            t,
            if firing {
                "alert_firing"
            } else {
                "alert_resolved"
            },
            0,
            &format!("{name} {}: x", if firing { "firing" } else { "resolved" }),
        );
        r.detail = Detail::of(&serde_json::json!({
            "labels": {"alertname": name, "watch": "web"},
            "annotations": {"summary": "x", "reason": "same_address"},
            "starts_ns": 5,
        }));
        r
    }

    #[test]
    fn an_episode_is_one_row_and_repeated_failures_are_one_row() {
        let mut recs = vec![
            rec(10, "listen", 1, "nginx listens"),
            rec(20, "bind_failed", 2, "a"),
            alert(21, true, "BindwatchBindConflict"),
            rec(30, "bind_failed", 2, "b"),
            alert(31, true, "BindwatchBindConflict"),
            rec(40, "bind_failed", 3, "c"),
            alert(41, true, "BindwatchBindConflict"),
            rec(50, "bind_failed", 2, "d"),
            alert(90, false, "BindwatchBindConflict"),
            rec(95, "bind_failed", 2, "e"),
        ];
        recs[5].holder_pid = Some(1);
        let r = rows(&recs, 100);
        let kinds: Vec<(&str, u64)> = r.rows.iter().map(|r| (r.kind.as_str(), r.count)).collect();
        assert_eq!(
            kinds,
            vec![
                ("listen", 1),
                ("bind_failed", 4),
                ("alert", 3),
                ("bind_failed", 1),
            ],
            "pid 2's four failures one row; the episode one row; pid 3 its own"
        );
        let group = &r.rows[1];
        assert_eq!((group.first_ns, group.last_ns), (20, Some(95)));
        assert_eq!(group.members.len(), 4);
        let ep = &r.rows[2];
        assert_eq!(
            (ep.first_ns, ep.last_ns),
            (5, Some(90)),
            "from the alert's own start"
        );
        assert_eq!(
            ep.covered,
            Some(4),
            "the failures at 20 (which raised it), 30, 40 and 50"
        );
        assert!(
            ep.card
                .iter()
                .any(|(k, v)| k == "reason" && v == "same_address")
        );
        assert_eq!(
            r.of_record[9],
            Some(1),
            "the last failure is in pid 2's row"
        );
        assert_eq!(r.of_record[8], Some(2), "the resolution is the episode's");
    }

    #[test]
    fn an_episode_that_began_before_the_window_starts_at_the_alerts_start() {
        let r = rows(&[alert(50, false, "BindwatchPortLost")], 100);
        assert_eq!(r.rows.len(), 1);
        assert_eq!((r.rows[0].first_ns, r.rows[0].last_ns), (5, Some(50)));
    }

    #[test]
    fn a_group_lists_its_first_records_and_counts_the_rest() {
        let recs: Vec<Record> = (0..MAX_MEMBERS as u64 + 7)
            .map(|t| rec(t, "bind_failed", 2, "x"))
            .collect();
        let r = rows(&recs, 100);
        assert_eq!(r.rows.len(), 1);
        assert_eq!(r.rows[0].members.len(), MAX_MEMBERS);
        assert_eq!(r.rows[0].members_left_out, 7);
        assert_eq!(r.rows[0].count, MAX_MEMBERS as u64 + 7);
    }

    #[test]
    fn past_the_bound_the_latest_rows_are_kept_and_records_point_at_them() {
        let recs: Vec<Record> = (0..MAX_ROWS as u64 + 10)
            .map(|t| rec(t, "listen", t as u32, "x"))
            .collect();
        let r = rows(&recs, 10_000);
        assert_eq!((r.rows.len(), r.left_out), (MAX_ROWS, 10));
        assert_eq!(r.of_record[9], None);
        assert_eq!(r.of_record[10], Some(0));
        assert_eq!(r.rows[0].first_ns, 10);
    }
}
