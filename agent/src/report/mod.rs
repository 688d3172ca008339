//! The timeline as a picture: one self-contained HTML file (no network).
//! `picture` computes the lanes and the span the page opens on, `rows`
//! the table (each thing once); the page's script (`page.js`) only draws
//! them, zooms and pans, and links marks, bars and spans to their rows.

mod picture;
mod rows;

pub use picture::{Bar, Lane, MAX_LANES, MAX_MARKS, Mark, Picture, Span, fit, picture};
pub use rows::{MAX_MEMBERS, MAX_ROWS, Member, Row, Rows, rows};

use bindwatch_core::timeline::Record;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The whole page. `refresh_secs` (for /ui) reloads it periodically,
/// keeping the reader's view.
pub fn render_html(
    title: &str,
    records: &[Record],
    from_ns: u64,
    to_ns: u64,
    at_ns: Option<u64>,
    refresh_secs: Option<u32>,
) -> String {
    let mut pic = picture(records, from_ns, to_ns, at_ns);
    pic.refresh_s = refresh_secs;
    // `</` inside the JSON would end the script element.
    let data = serde_json::to_string(&pic)
        .unwrap_or_default()
        .replace("</", "<\\/");
    let shown = match pic.rows_left_out {
        0 => format!("{} rows for {} records", pic.rows.len(), records.len()),
        n => format!(
            "the latest {} rows for {} records ({n} older rows left out)",
            pic.rows.len(),
            records.len()
        ),
    };
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head>\n\
<body><h1>{t}</h1>\n<div class=\"meta\">{lanes} ports, {fails} failed binds, {n} records</div>\n\
<div class=\"legend\"><span><i class=\"sw\" style=\"background:#4a90d9\"></i>held by</span>\
<span><i class=\"sw\" style=\"background:#d0021b\"></i>failed bind (click: holder, reason, fix)</span>\
<span><i class=\"sw\" style=\"background:#f5a623;opacity:.4\"></i>alert firing</span>\
<span>gaps: nobody held the port</span></div>\n\
<div class=\"controls\"><button id=\"fit\" title=\"0, Esc\">Fit records</button><button id=\"whole\" title=\"w\">Whole window</button>\
<button id=\"zin\" title=\"+\">Zoom in</button><button id=\"zout\" title=\"-\">Zoom out</button><span id=\"viewtext\"></span>\
<span class=\"help\">drag on the lanes or the window strip to zoom in; wheel zooms, shift+wheel and arrow keys pan; 0 fits the records again</span></div>\n\
<svg id=\"overview\" xmlns=\"http://www.w3.org/2000/svg\"></svg>\n\
<svg id=\"lanes\" tabindex=\"0\" xmlns=\"http://www.w3.org/2000/svg\"></svg>\n\
<div id=\"card\" hidden></div><div id=\"tip\" hidden></div>\n\
<h2>Records ({shown})</h2>\n<table id=\"rows\"><thead><tr><th>time</th><th>kind</th><th>count</th><th>port</th><th>pid</th><th>command</th><th>summary</th></tr></thead><tbody></tbody></table>\n\
<script type=\"application/json\" id=\"picture\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
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

/// A record of a TCP port for the tests of the picture and the page.
#[cfg(test)]
fn test_record(t: u64, kind: &str, port: u16, pid: u32, comm: &str) -> Record {
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

#[cfg(test)]
mod tests {
    use super::test_record as r;
    use super::*;

    #[test]
    fn a_busy_days_page_reaches_no_network_and_keeps_its_bounds() {
        let recs: Vec<Record> = (0..100_000u64)
            .map(|i| {
                r(
                    i,
                    "bind_failed",
                    (i % 100) as u16 + 1,
                    (i % 3000) as u32,
                    "x",
                )
            })
            .collect();
        let html = render_html("t", &recs, 0, 100_000, None, Some(10));
        assert_eq!(network_references(&html), Vec::<String>::new());
        assert!(html.contains("the latest 1000 rows for 100000 records"));
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
