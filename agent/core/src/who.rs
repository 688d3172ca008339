//! `bindwatch who`: the answer, and how it reads.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::holders::{HolderView, Source, WhoQuery};

/// Where the answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The running daemon's holder table.
    Daemon,
    /// A snapshot of the kernel's tables taken for this query.
    Kernel,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAnswer {
    pub query: WhoQuery,
    pub source: AnswerSource,
    pub holders: Vec<HolderView>,
    /// Risks beside the answer: a held port inside its namespace's
    /// ephemeral range, unreserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// A warning for each listening port of `holders` an outbound connection
/// could take in its namespace (inside ip_local_port_range, unreserved).
pub fn ephemeral_notes(
    holders: &[HolderView],
    facts: &mut dyn crate::holders::HostFacts,
) -> Vec<String> {
    use crate::conflict::SockState;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for h in holders {
        let listens = match h.proto {
            crate::event::Proto::Tcp => h.state == SockState::Listen,
            _ => false,
        };
        if !listens || !seen.insert((h.netns, h.proto.as_str(), h.port)) {
            continue;
        }
        if let Some(e) = facts
            .ephemeral_ports(Some(h.netns), 0, h.proto)
            .filter(|e| e.hands_out(h.port))
        {
            out.push(format!(
                "netns {}: {}",
                h.netns,
                e.warning(h.proto.as_str(), h.port)
            ));
        }
    }
    out
}

impl WhoAnswer {
    /// The answer from sockets read off the host for this query (the
    /// standalone `who` on either platform).
    pub fn from_host(
        query: WhoQuery,
        mut holders: Vec<crate::holders::Holder>,
        processes: Vec<crate::holders::ProcessInfo>,
        containers: std::sync::Arc<crate::owner::Directory>,
    ) -> Self {
        holders.retain(|h| query.matches(h));
        let mut table = crate::holders::HolderTable::new();
        table.set_directory(containers);
        table.seed(crate::holders::Snapshot {
            taken_ns: crate::clock::now_unix_ns(),
            holders,
            processes,
            netns: Default::default(),
            others: Default::default(),
        });
        let holders = query.run(&table);
        Self {
            query,
            source: AnswerSource::Kernel,
            holders,
            notes: Vec::new(),
        }
    }
}

fn when(ns: u64) -> String {
    crate::clock::local(ns, crate::clock::Shown::Seconds).unwrap_or_else(|| ns.to_string())
}

/// A command line on one line: control characters shown as spaces, long
/// ones cut.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// The answer as a person reads it.
pub fn render(a: &WhoAnswer) -> String {
    let mut s = String::new();
    let source = match a.source {
        AnswerSource::Daemon => "running daemon",
        AnswerSource::Kernel => "kernel's socket tables",
    };
    if a.holders.is_empty() {
        let _ = writeln!(s, "nobody holds {} (from the {source})", a.query);
        return s;
    }
    let _ = writeln!(
        s,
        "{} holder{} of {} (from the {source})",
        a.holders.len(),
        if a.holders.len() == 1 { "" } else { "s" },
        a.query,
    );
    for h in &a.holders {
        let state = serde_json::to_value(h.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "\n{} {} {}  netns {}",
            h.proto.as_str().to_uppercase(),
            h.endpoint,
            state,
            h.netns
        );
        if h.owners.is_empty() {
            let _ = writeln!(s, "  held by   {}", h.owner_label());
        }
        for (i, o) in h.owners.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {} {}",
                if i == 0 { "held by  " } else { "shared by" },
                o.label()
            );
            if !o.cmdline.is_empty() {
                let _ = writeln!(s, "            {}", one_line(&o.cmdline, 160));
            }
        }
        if let Some(owner) = &h.owner {
            let what = match (&owner.via, &owner.mapping) {
                (crate::owner::Via::Process, _) => format!("runs in {}", owner.who()),
                (_, Some(m)) => format!("publishes -p {} for {}", m.flag(), owner.who()),
                (_, None) => format!("publishes for {}", owner.who()),
            };
            let _ = writeln!(s, "  owner     {what}");
            if let Some(why) = &owner.unknown {
                let _ = writeln!(s, "            identity unknown: {why}");
            }
            let _ = writeln!(s, "  fix       {}", owner.fix());
        }
        if let Some(x) = &h.http_sys {
            let mut what = match x.sites.as_slice() {
                [] => "http.sys for the URLs registered on the port".to_owned(),
                sites => format!("http.sys for {}", sites.join(" and ")),
            };
            if !x.registered_by.is_empty() {
                what.push_str(&format!(", registered by {}", x.registered_by.join(", ")));
            }
            let _ = writeln!(s, "  owner     {what}");
            if !x.urls.is_empty() {
                let _ = writeln!(s, "  urls      {}", x.urls.join(", "));
            }
            let scope = if x.listen_list.is_empty() {
                "every address (its IP listen list is empty)".to_owned()
            } else {
                format!("its IP listen list: {}", x.listen_list.join(", "))
            };
            let _ = writeln!(s, "  listens   on {scope}");
            let _ = writeln!(s, "  fix       {}", x.fix);
        }
        if let Some(sh) = &h.shadowed {
            let _ = writeln!(
                s,
                "  SHADOWED  {}: the traffic it takes never reaches this socket",
                sh.describe()
            );
            let _ = writeln!(s, "  fix       {}", sh.fix());
        }
        match (h.source, h.owners.iter().filter_map(|o| o.started_ns).min()) {
            (Source::Event, _) => {
                let _ = writeln!(s, "  since     {} (bound)", when(h.since_ns));
            }
            (Source::Snapshot, Some(started)) => {
                let _ = writeln!(
                    s,
                    "  since     before {} (bound before bindwatch watched; its process started {})",
                    when(h.since_ns),
                    when(started)
                );
            }
            (Source::Snapshot, None) => {
                let _ = writeln!(
                    s,
                    "  since     before {} (bound before bindwatch watched)",
                    when(h.since_ns)
                );
            }
        }
        let mut opts = Vec::new();
        for (name, v) in [
            ("SO_REUSEADDR", h.reuseaddr),
            ("SO_REUSEPORT", h.reuseport),
            (
                "IPV6_V6ONLY",
                if h.addr.is_ipv6() {
                    h.v6only
                } else {
                    Some(false)
                },
            ),
        ] {
            match v {
                Some(true) => opts.push(name.to_owned()),
                None => opts.push(format!("{name}=?")),
                Some(false) => {}
            }
        }
        if let Some(i) = h.bound_ifindex {
            opts.push(format!("SO_BINDTODEVICE={i}"));
        }
        if !opts.is_empty() {
            let _ = writeln!(s, "  options   {}", opts.join(", "));
        }
        for (i, b) in h.blocks.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {} {b}",
                if i == 0 { "blocks   " } else { "         " }
            );
        }
    }
    for n in &a.notes {
        let _ = writeln!(s, "\nnote: {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conflict::SockState;
    use crate::etw::HttpSys;
    use crate::event::Proto;
    use crate::holders::ip_helper::{Row, holder};
    use crate::holders::{HolderTable, ProcessInfo, Snapshot, WhoQuery};
    use crate::owner::http_sys::HttpSysState;
    use crate::owner::iis::IisConfig;

    /// `who 80` on an IIS host: http.sys's socket, the sites behind it,
    /// who registered the URL, where it listens, and the fix.
    #[test]
    fn who_prints_the_iis_sites_behind_http_sys() {
        let mut table = HolderTable::new();
        let row = Row {
            proto: Proto::Tcp,
            addr: "0.0.0.0".parse().unwrap(),
            port: 80,
            state: SockState::Listen,
            pid: 4,
        };
        table.seed(Snapshot {
            taken_ns: 1,
            holders: vec![holder(&row, 1)],
            processes: vec![ProcessInfo {
                pid: 1460,
                comm: "svchost.exe".into(),
                unit: Some("W3SVC, WAS".into()),
                ..ProcessInfo::default()
            }],
            netns: Default::default(),
            others: Default::default(),
        });
        let mut http = HttpSys::default();
        http.add_url("http://*:80/", 1460, 1, 0);
        table.set_http_sys(Some(HttpSysState {
            http,
            iis: Some(std::sync::Arc::new(
                IisConfig::parse(crate::owner::iis::tests::CONFIG).unwrap(),
            )),
        }));
        let q: WhoQuery = "80".parse().unwrap();
        let answer = WhoAnswer {
            holders: q.run(&table),
            query: q,
            source: AnswerSource::Daemon,
            notes: Vec::new(),
        };
        let text = render(&answer);
        for line in [
            "  owner     http.sys for IIS site 'Default Web Site' (app pool DefaultAppPool), \
             binding *:80: and IIS site 'Intranet' (app pool IntranetPool), binding \
             *:80:intranet.contoso.com, registered by svchost.exe (pid 1460, services W3SVC, WAS)\n",
            "  urls      http://*:80/\n",
            "  listens   on every address (its IP listen list is empty)\n",
            "  fix       to leave other addresses of port 80 to another server: change its binding \
             *:80: to IIS_ADDRESS:80:",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }
}
