//! Watched ports and their three alerts: port lost, port taken, bind
//! conflict. Pure: evaluated against the holder table on the event loop,
//! producing notifications that the daemon's delivery sends without
//! blocking it.

use std::collections::BTreeMap;

use serde::Serialize;

pub mod settings;

use crate::conflict::{SockSpec, SockState, overlap};
use crate::event::{Event, Proto, endpoint};
use crate::holders::{Diagnosis, HolderTable, HolderView, ProcessInfo};
pub use settings::{AlertsConfig, OwnerConfig, Target, WatchConfig, WatchProto};

/// A watched port's state, for the gauges.
pub struct WatchedStatus {
    pub watch: String,
    pub proto: Proto,
    pub port: u16,
    pub ok: bool,
    /// (pid, command, unit, container) of each process holding it; the
    /// container is the owner's name (`web`, `monitoring/node-exporter-x7`)
    /// or empty.
    pub holders: Vec<(u32, String, String, String)>,
    /// A NAT rule sends the port's traffic elsewhere (its words).
    pub shadowed: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum AlertKind {
    PortLost,
    PortTaken,
    BindConflict,
    /// A NAT rule takes the watched port's traffic: held or not, the
    /// service never sees it.
    PortShadowed,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::PortLost => "BindwatchPortLost",
            Self::PortTaken => "BindwatchPortTaken",
            Self::BindConflict => "BindwatchBindConflict",
            Self::PortShadowed => "BindwatchPortShadowed",
        }
    }
}

/// One alert as sent: Alertmanager's shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Unix ns.
    pub starts_ns: u64,
    /// Set when resolved.
    pub ends_ns: Option<u64>,
}

impl Alert {
    pub fn firing(&self) -> bool {
        self.ends_ns.is_none()
    }
}

/// A watch with its resolved namespace.
#[derive(Clone, Debug)]
pub struct Watch {
    pub cfg: WatchConfig,
    pub name: String,
    /// None when the namespace could not be found (then nothing matches).
    pub netns: Option<u64>,
}

impl Watch {
    pub fn new(cfg: WatchConfig, netns: Option<u64>) -> Self {
        Self {
            name: cfg.display_name(),
            cfg,
            netns,
        }
    }

    fn proto(&self) -> Proto {
        self.cfg.proto.proto()
    }

    /// Whether an event is on this watch's port, protocol and namespace. A
    /// watch whose namespace is not found yet covers nothing; an event
    /// without a namespace (its hook refused) is given the benefit.
    pub fn covers(&self, ev: &Event) -> bool {
        ev.port == self.cfg.port
            && ev.proto == self.proto()
            && match (self.netns, ev.netns_cookie) {
                (Some(w), Some(e)) => w == e,
                (Some(_), None) => true,
                (None, _) => false,
            }
    }

    /// The sockets that hold this watch's port (listeners for TCP).
    /// The NAT rule that takes this port's traffic in the watch's
    /// namespace, whether a socket holds it or not.
    pub fn shadow(
        &self,
        table: &HolderTable,
        holders: &[HolderView],
    ) -> Option<crate::owner::Shadow> {
        holders.iter().find_map(|h| h.shadowed.clone()).or_else(|| {
            let ns = self.netns?;
            let addr = self
                .cfg
                .address
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            table
                .directory()
                .shadow(ns, self.proto(), addr, self.cfg.port)
        })
    }

    pub fn holders(&self, table: &HolderTable) -> Vec<HolderView> {
        let Some(ns) = self.netns else {
            return Vec::new();
        };
        table
            .on_port((ns, self.proto(), self.cfg.port))
            .filter(|h| h.proto == Proto::Udp || h.state == SockState::Listen)
            .filter(|h| match self.cfg.address {
                None => true,
                Some(a) => overlap(&SockSpec::new(h.proto, a, h.port), &h.spec()).is_some(),
            })
            .map(|h| table.view(h))
            .collect()
    }
}

/// Whether a process is the owner the watch expects.
pub fn owner_matches(o: &OwnerConfig, p: &ProcessInfo) -> bool {
    if o.is_empty() {
        return true;
    }
    o.unit.as_ref().is_some_and(|u| p.unit.as_ref() == Some(u))
        || o.command.as_ref().is_some_and(|c| &p.comm == c)
        || o.exe
            .as_ref()
            .is_some_and(|e| p.exe.as_deref() == Some(&*e.to_string_lossy()))
}

#[derive(Default)]
struct State {
    /// When nobody held the port, first seen (Unix ns).
    unheld_since: Option<u64>,
    firing: BTreeMap<AlertKind, Alert>,
    last_sent_ns: BTreeMap<AlertKind, u64>,
    last_conflict_ns: u64,
    /// Whether the last failed bind was the expected owner's own (its
    /// restart failing): then the owner holding the port again ends it.
    conflict_by_owner: bool,
}

pub struct AlertEngine {
    pub watches: Vec<Watch>,
    states: Vec<State>,
    resend_ns: u64,
    conflict_window_ns: u64,
}

fn labels(w: &Watch, kind: AlertKind) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("alertname".into(), kind.name().into());
    l.insert("watch".into(), w.name.clone());
    l.insert("port".into(), w.cfg.port.to_string());
    l.insert("proto".into(), w.proto().to_string());
    l.insert(
        "severity".into(),
        match kind {
            AlertKind::BindConflict => "warning",
            _ => "critical",
        }
        .into(),
    );
    l
}

/// An alert of `kind` for `w`, firing from `now`.
fn firing(w: &Watch, kind: AlertKind, annotations: BTreeMap<String, String>, now: u64) -> Alert {
    Alert {
        labels: labels(w, kind),
        annotations,
        starts_ns: now,
        ends_ns: None,
    }
}

/// `BindwatchPortShadowed`: the rule, its target, the owner behind it.
fn shadow_alert(w: &Watch, sh: &crate::owner::Shadow, now: u64) -> Alert {
    let mut a = BTreeMap::new();
    a.insert(
        "summary".into(),
        format!(
            "{} ({}): {}; the service never sees that traffic",
            w.cfg.port,
            w.name,
            sh.describe()
        ),
    );
    a.insert("rule".into(), sh.rule.location());
    a.insert("target".into(), sh.rule.to.clone());
    if let Some(c) = &sh.container {
        a.insert("owner".into(), c.label());
    }
    a.insert("hint".into(), sh.fix());
    firing(w, AlertKind::PortShadowed, a, now)
}

fn holder_text(h: &[HolderView]) -> String {
    h.iter()
        .map(|v| format!("{} on {}", v.owner_label(), v.endpoint))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AlertEngine {
    pub fn new(watches: Vec<Watch>, cfg: &AlertsConfig) -> Self {
        Self {
            states: watches.iter().map(|_| State::default()).collect(),
            watches,
            resend_ns: cfg.resend_every_secs.max(1) * 1_000_000_000,
            conflict_window_ns: cfg.conflict_resolve_after_secs * 1_000_000_000,
        }
    }

    /// A new configuration: watches that stay (same name, port and protocol)
    /// keep their alert state, so a reload neither re-fires nor forgets
    /// what is firing; alerts of watches that went are returned resolved.
    pub fn reconfigure(&mut self, watches: Vec<Watch>, cfg: &AlertsConfig, now: u64) -> Vec<Alert> {
        let mut old: Vec<(Watch, State)> = std::mem::take(&mut self.watches)
            .into_iter()
            .zip(std::mem::take(&mut self.states))
            .collect();
        let same = |a: &Watch, b: &Watch| {
            a.name == b.name && a.cfg.port == b.cfg.port && a.cfg.proto == b.cfg.proto
        };
        self.states = watches
            .iter()
            .map(|w| match old.iter().position(|(o, _)| same(o, w)) {
                Some(i) => old.swap_remove(i).1,
                None => State::default(),
            })
            .collect();
        self.watches = watches;
        self.resend_ns = cfg.resend_every_secs.max(1) * 1_000_000_000;
        self.conflict_window_ns = cfg.conflict_resolve_after_secs * 1_000_000_000;
        old.into_iter()
            .flat_map(|(_, st)| st.firing.into_values())
            .map(|mut a| {
                a.ends_ns = Some(now);
                a
            })
            .collect()
    }

    fn set(
        st: &mut State,
        out: &mut Vec<Alert>,
        kind: AlertKind,
        want: Option<Alert>,
        now: u64,
        resend: u64,
    ) {
        match (st.firing.get(&kind).cloned(), want) {
            (None, Some(a)) => {
                st.firing.insert(kind, a.clone());
                st.last_sent_ns.insert(kind, now);
                out.push(a);
            }
            (Some(mut old), None) => {
                st.firing.remove(&kind);
                st.last_sent_ns.remove(&kind);
                old.ends_ns = Some(now);
                out.push(old);
            }
            (Some(old), Some(mut a)) => {
                a.starts_ns = old.starts_ns;
                let changed = a.annotations != old.annotations;
                let due = now.saturating_sub(*st.last_sent_ns.get(&kind).unwrap_or(&0)) >= resend;
                if changed || due {
                    st.last_sent_ns.insert(kind, now);
                    out.push(a.clone());
                }
                st.firing.insert(kind, a);
            }
            (None, None) => {}
        }
    }

    /// A firing alert that could not be queued for delivery: due again at
    /// the next evaluation, so a full queue delays it instead of starving
    /// it until the next resend period.
    pub fn not_sent(&mut self, a: &Alert) {
        let kind = [
            AlertKind::PortLost,
            AlertKind::PortTaken,
            AlertKind::BindConflict,
        ]
        .into_iter()
        .find(|k| a.labels.get("alertname").map(String::as_str) == Some(k.name()));
        let watch = a.labels.get("watch");
        if let (Some(kind), Some(i)) = (
            kind,
            self.watches.iter().position(|w| Some(&w.name) == watch),
        ) {
            self.states[i].last_sent_ns.remove(&kind);
        }
    }

    /// Brings every watch's port-lost and port-taken alerts up to date;
    /// returns new, changed, re-sent and resolved alerts.
    pub fn evaluate(&mut self, table: &HolderTable, now: u64) -> Vec<Alert> {
        let mut out = Vec::new();
        for (w, st) in self.watches.iter().zip(&mut self.states) {
            let hs = w.holders(table);
            let expected = w.cfg.owner.describe();
            // Port lost.
            let lost = if hs.is_empty() {
                let since = *st.unheld_since.get_or_insert(now);
                (now - since >= w.cfg.grace_secs * 1_000_000_000).then(|| {
                    let mut a = BTreeMap::new();
                    a.insert(
                        "summary".into(),
                        format!(
                            "nobody holds {} port {} ({}); expected {expected}",
                            w.proto(),
                            w.cfg.port,
                            w.name
                        ),
                    );
                    a.insert("expected_owner".into(), expected.clone());
                    if let Some(last) =
                        table.departed((w.netns.unwrap_or(0), w.proto(), w.cfg.port))
                    {
                        a.insert(
                            "last_holder".into(),
                            format!("{} on {}", last.holder.owner_label(), last.holder.endpoint),
                        );
                    }
                    Alert {
                        labels: labels(w, AlertKind::PortLost),
                        annotations: a,
                        starts_ns: since,
                        ends_ns: None,
                    }
                })
            } else {
                st.unheld_since = None;
                None
            };
            Self::set(st, &mut out, AlertKind::PortLost, lost, now, self.resend_ns);
            // Port taken: held, but by nobody expected.
            let ok = hs
                .iter()
                .any(|h| h.owners.iter().any(|p| owner_matches(&w.cfg.owner, p)));
            let taken = (!hs.is_empty() && !ok).then(|| {
                let mut a = BTreeMap::new();
                a.insert(
                    "summary".into(),
                    format!(
                        "{} port {} ({}) is held by {}; expected {expected}",
                        w.proto(),
                        w.cfg.port,
                        w.name,
                        hs[0].owner_label()
                    ),
                );
                a.insert("holder".into(), holder_text(&hs));
                a.insert("expected_owner".into(), expected.clone());
                if let Some(o) = hs[0].owners.first() {
                    a.insert("holder_pid".into(), o.pid.to_string());
                    a.insert("holder_command".into(), o.cmdline.clone());
                }
                firing(w, AlertKind::PortTaken, a, now)
            });
            Self::set(
                st,
                &mut out,
                AlertKind::PortTaken,
                taken,
                now,
                self.resend_ns,
            );
            // Port shadowed: a NAT rule takes its traffic.
            let shadowed = w.shadow(table, &hs).map(|sh| shadow_alert(w, &sh, now));
            Self::set(
                st,
                &mut out,
                AlertKind::PortShadowed,
                shadowed,
                now,
                self.resend_ns,
            );
            // A conflict alert ends after the quiet window, or, when it was
            // the expected owner's bind that failed, once it holds the port.
            if let Some(c) = st.firing.get(&AlertKind::BindConflict).cloned() {
                let quiet = now.saturating_sub(st.last_conflict_ns) >= self.conflict_window_ns;
                let keep = if (ok && st.conflict_by_owner) || quiet {
                    None
                } else {
                    Some(c)
                };
                Self::set(
                    st,
                    &mut out,
                    AlertKind::BindConflict,
                    keep,
                    now,
                    self.resend_ns,
                );
            }
        }
        out
    }

    /// A failed bind: fires "bind conflict" on the watches it touches.
    pub fn on_failed_bind(&mut self, ev: &Event, d: &Diagnosis, now: u64) -> Vec<Alert> {
        let mut out = Vec::new();
        for (w, st) in self.watches.iter().zip(&mut self.states) {
            if !w.covers(ev) {
                continue;
            }
            st.last_conflict_ns = now;
            st.conflict_by_owner =
                w.cfg.owner.is_empty() || w.cfg.owner.command.as_deref() == Some(ev.comm.as_str());
            let mut a = BTreeMap::new();
            a.insert(
                "summary".into(),
                format!(
                    "{} (pid {}) failed to bind {} on {} ({}): {}",
                    ev.comm,
                    ev.pid,
                    endpoint(ev.addr, ev.port),
                    w.name,
                    ev.result_str(),
                    d.summary
                ),
            );
            a.insert(
                "failing_process".into(),
                format!("{} (pid {})", ev.comm, ev.pid),
            );
            a.insert("error".into(), ev.result_str());
            if let Some(b) = d.holders.first() {
                a.insert(
                    "holder".into(),
                    holder_text(std::slice::from_ref(&b.holder)),
                );
                a.insert("reason".into(), b.reason.code().into());
                if let Some(o) = b.holder.owners.first() {
                    a.insert("holder_pid".into(), o.pid.to_string());
                }
                if let Some(o) = &b.holder.owner {
                    a.insert("owner".into(), o.who());
                }
            }
            if let Some(r) = &d.requester {
                a.insert("binding_for".into(), r.who());
            }
            if let Some(h) = &d.hint {
                a.insert("hint".into(), h.clone());
            }
            let alert = Alert {
                labels: labels(w, AlertKind::BindConflict),
                annotations: a,
                // It began with the failed bind, a moment before it is
                // evaluated (the timeline counts that failure in it).
                starts_ns: ev.time_ns.min(now),
                ends_ns: None,
            };
            // A resend period of zero: each conflict is news, always sent.
            Self::set(st, &mut out, AlertKind::BindConflict, Some(alert), now, 0);
        }
        out
    }

    /// Each watch's status, for the gauges.
    pub fn status(&self, table: &HolderTable) -> Vec<WatchedStatus> {
        self.watches
            .iter()
            .map(|w| {
                let hs = w.holders(table);
                let ok = hs
                    .iter()
                    .any(|h| h.owners.iter().any(|p| owner_matches(&w.cfg.owner, p)));
                let shadowed = w.shadow(table, &hs).map(|s| s.describe());
                WatchedStatus {
                    watch: w.name.clone(),
                    proto: w.proto(),
                    port: w.cfg.port,
                    ok,
                    holders: hs
                        .iter()
                        .flat_map(|h| {
                            let c = h
                                .owner
                                .as_ref()
                                .and_then(|o| o.container.as_ref())
                                .map(|c| c.metric_name())
                                .unwrap_or_default();
                            h.owners.iter().map(move |p| {
                                (
                                    p.pid,
                                    p.comm.clone(),
                                    p.unit.clone().unwrap_or_default(),
                                    c.clone(),
                                )
                            })
                        })
                        .collect(),
                    shadowed,
                }
            })
            .collect()
    }

    /// Pids on watched ports whose details are not read yet: read them
    /// before evaluating, or an incomplete owner would look like a stranger.
    pub fn incomplete_owners(&self, table: &HolderTable) -> Vec<u32> {
        let mut v = Vec::new();
        for w in &self.watches {
            let Some(ns) = w.netns else { continue };
            for h in table.on_port((ns, w.proto(), w.cfg.port)) {
                for pid in &h.owners {
                    if !table.process(*pid).is_some_and(|p| p.complete) {
                        v.push(*pid);
                    }
                }
            }
        }
        v
    }

    /// Alerts firing now. Nothing resolves them at shutdown: Alertmanager
    /// lets them lapse at their end time, and a restarted agent re-evaluates.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.states.iter().flat_map(|s| s.firing.values())
    }
}

#[cfg(test)]
mod tests;
