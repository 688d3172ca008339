//! The timeline as a picture: one self-contained HTML file (no network),
//! one lane per port with who held it as bars, failed binds as marks,
//! alert spans, and the records as a table below. The lanes are computed
//! here; the page's script only draws them. Marks are aggregated into
//! time buckets so 100k failures never become 100k DOM nodes.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::timeline::Record;

/// Most lanes drawn (the busiest ports first).
pub const MAX_LANES: usize = 100;
/// Most marks drawn over all lanes, after bucketing.
pub const MAX_MARKS: usize = 20_000;
/// Most table rows (the latest).
pub const MAX_ROWS: usize = 1_000;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Bar {
    pub start_ns: u64,
    /// None: still held at the end of the window.
    pub end_ns: Option<u64>,
    pub label: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mark {
    pub time_ns: u64,
    pub count: u64,
    /// The first failure in the bucket, as text.
    pub summary: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    pub alert: String,
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
    pub from_ns: u64,
    pub to_ns: u64,
    pub lanes: Vec<Lane>,
    pub records: usize,
    pub failures: u64,
    /// The moment asked about (`--at`), marked across the lanes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
}

/// Builds the lanes of a window from its records (oldest first).
pub fn picture(records: &[Record], from_ns: u64, to_ns: u64) -> Picture {
    let mut lanes: BTreeMap<(String, u16), Lane> = BTreeMap::new();
    // Holders open on each lane: pid -> index of its bar.
    let mut open: HashMap<(String, u16), HashMap<u32, usize>> = HashMap::new();
    let mut failures_by_lane: HashMap<(String, u16), Vec<&Record>> = HashMap::new();
    let mut open_alerts: HashMap<(String, u16, String), usize> = HashMap::new();
    let mut failures = 0;
    for r in records {
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
                    if let Some(i) = idx {
                        lane.bars[i].end_ns = Some(r.time_ns);
                    }
                }
            }
            "bind_failed" => {
                failures += 1;
                failures_by_lane.entry(key).or_default().push(r);
            }
            "alert_firing" | "alert_resolved" => {
                let name = r
                    .summary
                    .split_whitespace()
                    .next()
                    .unwrap_or("alert")
                    .to_owned();
                let akey = (key.0.clone(), key.1, name.clone());
                if r.kind == "alert_firing" {
                    open_alerts.entry(akey).or_insert_with(|| {
                        lane.alerts.push(Span {
                            start_ns: r.time_ns,
                            end_ns: None,
                            alert: name,
                        });
                        lane.alerts.len() - 1
                    });
                } else if let Some(i) = open_alerts.remove(&akey) {
                    lane.alerts[i].end_ns = Some(r.time_ns);
                }
            }
            _ => {}
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
    let n = keys.len().max(1);
    let buckets = (MAX_MARKS / n).clamp(50, 2000) as u64;
    let span = to_ns.saturating_sub(from_ns).max(1);
    let width = span.div_ceil(buckets);
    let mut out = Vec::new();
    for k in keys {
        let mut lane = lanes.remove(&k).unwrap();
        let mut marks: BTreeMap<u64, Mark> = BTreeMap::new();
        for r in failures_by_lane.get(&k).into_iter().flatten() {
            let b = r.time_ns.saturating_sub(from_ns) / width;
            marks
                .entry(b)
                .and_modify(|m| m.count += 1)
                .or_insert_with(|| Mark {
                    time_ns: r.time_ns,
                    count: 1,
                    summary: r.summary.clone(),
                });
        }
        lane.marks = marks.into_values().collect();
        out.push(lane);
    }
    Picture {
        at_ns: None,
        from_ns,
        to_ns,
        lanes: out,
        records: records.len(),
        failures,
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = r#"
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px;margin:0 0 4px}
.meta{color:#666;margin-bottom:12px}
svg{background:#fafafa;border:1px solid #ddd}
.lane-label{font:12px monospace;fill:#333}
.bar{fill:#4a90d9;opacity:.85}
.bar-label{font:11px sans-serif;fill:#fff;pointer-events:none}
.mark{fill:#d0021b}
.alert{fill:#f5a623;opacity:.25}
.axis{font:10px monospace;fill:#666}
table{border-collapse:collapse;margin-top:16px;font:12px monospace}
td,th{border-bottom:1px solid #eee;padding:2px 8px;text-align:left;vertical-align:top}
.legend span{display:inline-block;margin-right:16px}
.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
"#;

const SCRIPT: &str = r#"
(function(){
const P = JSON.parse(document.getElementById('picture').textContent);
const NS = 'http://www.w3.org/2000/svg';
const W = 1200, LEFT = 110, LANE = 26, TOP = 20;
const svg = document.getElementById('lanes');
const H = TOP + P.lanes.length * LANE + 20;
svg.setAttribute('width', W); svg.setAttribute('height', H);
const span = Math.max(1, P.to_ns - P.from_ns);
const x = t => LEFT + (W - LEFT - 10) * Math.min(1, Math.max(0, (t - P.from_ns) / span));
function el(name, attrs, parent, text){
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e); return e;
}
function when(ns){ return new Date(ns / 1e6).toISOString().replace('T',' ').replace('Z',''); }
for (let i = 0; i <= 4; i++) {
  const t = P.from_ns + span * i / 4;
  el('text', {x: x(t), y: 12, class: 'axis', 'text-anchor': i == 0 ? 'start' : i == 4 ? 'end' : 'middle'}, svg, when(t).slice(11, 19));
}
if (P.at_ns) {
  const ax = x(P.at_ns);
  el('line', {id: 'at', x1: ax, x2: ax, y1: 14, y2: H - 6, stroke: '#222', 'stroke-dasharray': '4 3'}, svg);
  el('text', {x: ax + 3, y: H - 8, class: 'axis'}, svg, 'at ' + when(P.at_ns).slice(11, 23));
}
P.lanes.forEach((l, i) => {
  const y = TOP + i * LANE;
  const g = el('g', {class: 'lane', 'data-port': l.port, 'data-proto': l.proto}, svg);
  el('text', {x: 4, y: y + 16, class: 'lane-label'}, g, l.proto + ' ' + l.port);
  for (const a of l.alerts) {
    const r = el('rect', {class: 'alert', 'data-alert': a.alert, x: x(a.start_ns), y: y, height: LANE - 2,
      width: Math.max(2, x(a.end_ns || P.to_ns) - x(a.start_ns))}, g);
    el('title', {}, r, a.alert + ' from ' + when(a.start_ns) + (a.end_ns ? ' to ' + when(a.end_ns) : ' (still firing)'));
  }
  for (const b of l.bars) {
    const x0 = x(b.start_ns), x1 = x(b.end_ns || P.to_ns);
    const r = el('rect', {class: 'bar', 'data-label': b.label, x: x0, y: y + 4, height: LANE - 10, width: Math.max(2, x1 - x0)}, g);
    el('title', {}, r, b.label + ' held ' + l.proto + ' ' + l.port + ' from ' + when(b.start_ns) + (b.end_ns ? ' to ' + when(b.end_ns) : ' to the end of the window'));
    if (x1 - x0 > 60) el('text', {x: x0 + 4, y: y + 17, class: 'bar-label'}, g, b.label);
  }
  for (const m of l.marks) {
    const c = el('circle', {class: 'mark', 'data-count': m.count, cx: x(m.time_ns), cy: y + LANE / 2 - 1, r: m.count > 1 ? 5 : 3.5}, g);
    el('title', {}, c, (m.count > 1 ? m.count + ' failed binds from ' : '') + when(m.time_ns) + ': ' + m.summary);
  }
});
})();
"#;

/// The whole page. `refresh_secs` (for /ui) reloads it periodically.
pub fn render_html(
    title: &str,
    records: &[Record],
    from_ns: u64,
    to_ns: u64,
    at_ns: Option<u64>,
    refresh_secs: Option<u32>,
) -> String {
    let mut pic = picture(records, from_ns, to_ns);
    pic.at_ns = at_ns;
    // `</` inside the JSON would end the script element.
    let data = serde_json::to_string(&pic)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let mut rows = String::new();
    let skip = records.len().saturating_sub(MAX_ROWS);
    for r in &records[skip..] {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            crate::timeline::local_time(r.time_ns),
            escape(&r.kind),
            escape(&format!(
                "{} {}",
                r.proto.as_deref().unwrap_or("-"),
                r.port.map(|p| p.to_string()).unwrap_or_default()
            )),
            r.pid.map(|p| p.to_string()).unwrap_or_default(),
            escape(r.comm.as_deref().unwrap_or("")),
            escape(&r.summary)
        ));
    }
    let refresh = refresh_secs
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let shown = if skip > 0 {
        format!("the latest {MAX_ROWS} of {} records", records.len())
    } else {
        format!("{} records", records.len())
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">{refresh}<title>{t}</title><style>{STYLE}</style></head>\n\
<body><h1>{t}</h1>\n<div class=\"meta\">{lanes} ports, {fails} failed binds, {n} records</div>\n\
<div class=\"legend\"><span><i class=\"sw\" style=\"background:#4a90d9\"></i>held by</span>\
<span><i class=\"sw\" style=\"background:#d0021b\"></i>failed bind (hover: holder and reason)</span>\
<span><i class=\"sw\" style=\"background:#f5a623;opacity:.4\"></i>alert firing</span>\
<span>gaps: nobody held the port</span></div>\n\
<svg id=\"lanes\" xmlns=\"http://www.w3.org/2000/svg\"></svg>\n\
<script type=\"application/json\" id=\"picture\">{data}</script>\n<script>{SCRIPT}</script>\n\
<h2 style=\"font-size:15px\">Records ({shown})</h2>\n<table><tr><th>time</th><th>kind</th><th>port</th><th>pid</th><th>command</th><th>summary</th></tr>\n{rows}</table>\n</body></html>\n",
        t = escape(title),
        lanes = pic.lanes.len(),
        fails = pic.failures,
        n = records.len(),
    )
}

/// Everything in a page that could reach the network: an attribute that
/// loads (`src`, `href`, `srcset`, `action`, `poster`, `data`), a script
/// API that fetches or navigates, a stylesheet import, an embedded frame,
/// and any URL other than the SVG namespace. The page must have none: it
/// is opened on hosts without a route out and kept as an incident record.
/// Text the page shows (a command line with a URL) counts too, so check a
/// page whose records hold none.
pub fn network_references(html: &str) -> Vec<String> {
    const SVG_NS: &str = "http://www.w3.org/2000/svg";
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut note = |at: usize, what: &str| {
        let end = (at + 60).min(html.len());
        let end = (end..=html.len())
            .find(|&i| html.is_char_boundary(i))
            .unwrap_or(html.len());
        found.push(format!("{what}: {}", &html[at..end]));
    };
    for attr in [
        "src",
        "href",
        "srcset",
        "action",
        "formaction",
        "poster",
        "data",
    ] {
        for (i, _) in lower.match_indices(&format!("{attr}=")) {
            // An attribute (after a space, or xlink:href), not part of a
            // longer word such as `data-x=` or `JSON.data=`.
            let before = lower[..i].chars().next_back();
            if !before.is_some_and(|c| c.is_whitespace() || c == ':') {
                continue;
            }
            let value = lower[i + attr.len() + 1..].trim_start_matches(['"', '\'']);
            if !value.starts_with('#') {
                note(i, "an attribute that loads");
            }
        }
    }
    for api in [
        "fetch(",
        "xmlhttprequest",
        "websocket(",
        "eventsource(",
        "sendbeacon(",
        "import(",
        "importscripts(",
        "@import",
        "<link",
        "<iframe",
        "<object",
        "<embed",
        "window.open(",
        "location.href",
        "location.assign(",
        "location.replace(",
        "type=\"module\"",
    ] {
        for (i, _) in lower.match_indices(api) {
            note(i, "a script or style that loads");
        }
    }
    for (i, _) in lower.match_indices("url(") {
        let value = lower[i + 4..].trim_start_matches(['"', '\'']);
        if !value.starts_with('#') && !value.starts_with("data:") {
            note(i, "a stylesheet url()");
        }
    }
    for scheme in ["http://", "https://", "ws://", "wss://", "ftp://"] {
        for (i, _) in lower.match_indices(scheme) {
            if !lower[i..].starts_with(SVG_NS) {
                note(i, "a URL");
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t: u64, kind: &str, port: u16, pid: u32, comm: &str) -> Record {
        Record {
            time_ns: t,
            kind: kind.into(),
            port: Some(port),
            proto: Some("tcp".into()),
            pid: Some(pid),
            comm: Some(comm.into()),
            summary: format!("{kind} by {comm}"),
            ..Record::default()
        }
    }

    #[test]
    fn holders_become_bars_with_gaps_and_failures_become_marks() {
        let recs = vec![
            r(10, "listen", 80, 1, "nginx"),
            r(20, "bind_failed", 80, 9, "other"),
            r(30, "listen_stop", 80, 1, "nginx"),
            r(35, "alert_firing", 80, 0, ""),
            r(40, "listen", 80, 2, "socat"),
        ];
        let mut recs = recs;
        recs[3].summary = "BindwatchPortLost firing: x".into();
        let p = picture(&recs, 0, 100);
        assert_eq!(p.lanes.len(), 1);
        let l = &p.lanes[0];
        assert_eq!(l.bars.len(), 2);
        assert_eq!((l.bars[0].start_ns, l.bars[0].end_ns), (10, Some(30)));
        assert_eq!(l.bars[1].end_ns, None, "still held");
        assert_eq!(l.bars[1].label, "socat (2)");
        assert_eq!(l.marks.len(), 1);
        assert_eq!(l.alerts[0].alert, "BindwatchPortLost");
    }

    #[test]
    fn a_hundred_thousand_failures_stay_a_bounded_drawing() {
        let mut recs = Vec::new();
        for i in 0..100_000u64 {
            recs.push(r(i, "bind_failed", (i % 100) as u16 + 1, 1, "x"));
        }
        let p = picture(&recs, 0, 100_000);
        assert_eq!(p.lanes.len(), 100);
        let marks: usize = p.lanes.iter().map(|l| l.marks.len()).sum();
        assert!(marks <= MAX_MARKS, "{marks}");
        let counted: u64 = p.lanes.iter().flat_map(|l| &l.marks).map(|m| m.count).sum();
        assert_eq!(counted, 100_000, "every failure counted in some mark");
        let html = render_html("t", &recs, 0, 100_000, None, None);
        assert!(html.matches("<tr>").count() <= MAX_ROWS + 1);
        assert_eq!(network_references(&html), Vec::<String>::new());
    }

    #[test]
    fn the_page_reaches_no_network_and_the_check_would_see_it() {
        let recs = vec![
            r(10, "listen", 80, 1, "nginx"),
            r(20, "bind_failed", 80, 2, "x"),
        ];
        let html = render_html("t", &recs, 0, 100, Some(15), None);
        assert_eq!(network_references(&html), Vec::<String>::new());
        // Each way a page could load something is seen.
        for bad in [
            "<script src=\"https://cdn.example/d3.js\"></script>",
            "<img src='x.png'>",
            "<link rel=stylesheet href=\"/s.css\">",
            "<style>@import 'x.css';</style>",
            "<style>body{background:url(/bg.png)}</style>",
            "<script>fetch('/api/v1/timeline')</script>",
            "<script>import('./m.js')</script>",
            "<script type=\"module\">1</script>",
            "<a href=\"https://example.org/\">x</a>",
            "<svg><use xlink:href=\"sprites.svg#a\"/></svg>",
            "<iframe></iframe>",
        ] {
            let page = html.replacen("</body>", &format!("{bad}</body>"), 1);
            assert!(!network_references(&page).is_empty(), "missed {bad}");
        }
        // What stays inside the page is fine.
        for good in ["<a href=\"#rec-3\">3</a>", "<rect fill=\"url(#g)\"/>"] {
            let page = html.replacen("</body>", &format!("{good}</body>"), 1);
            assert_eq!(network_references(&page), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn script_breakouts_are_escaped() {
        let mut x = r(1, "bind_failed", 80, 1, "</script><b>");
        x.summary = "</script><script>alert(1)</script>".into();
        let html = render_html("t", &[x], 0, 10, None, None);
        assert!(!html.contains("</script><script>alert(1)"));
    }
}
