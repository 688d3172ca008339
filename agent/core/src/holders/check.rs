//! `bindwatch check`: would this bind succeed now? Judged in the kernel's
//! own order (the address, then the privileged-port rule, then the port)
//! with the rules, holder table and host facts the diagnosis of a failed
//! bind uses, binding nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

use super::diagnose::{Diagnosis, DiagnosisKind, HostFacts, in_use_for, not_available_among};
use super::{EphemeralPorts, HolderTable};
use crate::conflict::{SockSpec, SockState};
use crate::errno::{EACCES, EADDRINUSE, EADDRNOTAVAIL};
use crate::event::{Event, EventKind, JSON_SCHEMA_VERSION, Proto, SockOptions, endpoint};

/// A bind someone means to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindRequest {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
    #[serde(default)]
    pub reuseaddr: bool,
    #[serde(default)]
    pub reuseport: bool,
    /// IPV6_V6ONLY; Linux's default (`net.ipv6.bindv6only` = 0) is off.
    #[serde(default)]
    pub v6only: bool,
    /// The user the service binds as (root passes the privileged-port rule).
    pub uid: u32,
    /// The network namespace's cookie; None: the asking process's own.
    #[serde(default)]
    pub netns: Option<u64>,
}

impl fmt::Display for BindRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.proto, endpoint(self.addr, self.port))?;
        let mut opts = Vec::new();
        if self.reuseaddr {
            opts.push("SO_REUSEADDR");
        }
        if self.reuseport {
            opts.push("SO_REUSEPORT");
        }
        if self.v6only && self.addr.is_ipv6() {
            opts.push("IPV6_V6ONLY");
        }
        if !opts.is_empty() {
            write!(f, " with {}", opts.join(", "))?;
        }
        write!(f, " as uid {}", self.uid)
    }
}

impl BindRequest {
    fn spec(&self) -> SockSpec {
        SockSpec {
            netns: self.netns,
            proto: self.proto,
            addr: self.addr,
            port: self.port,
            v6only: self.v6only && self.addr.is_ipv6(),
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            uid: self.uid,
            bound_ifindex: None,
            state: SockState::Bound,
        }
    }

    /// The bind as the diagnosis words it, failing with `errno`.
    fn as_event(&self, errno: i32, tid: u32) -> Event {
        Event {
            schema: JSON_SCHEMA_VERSION,
            time_ns: 0,
            kind: EventKind::Bind,
            pid: 0,
            tid,
            uid: self.uid,
            gid: 0,
            comm: "the service".into(),
            cgroup_id: 0,
            netns_cookie: self.netns,
            sock_cookie: None,
            proto: self.proto,
            addr: self.addr,
            port: self.port,
            bound_port: None,
            errno,
            error: crate::errno::name(errno),
            options: SockOptions {
                reuseaddr: self.reuseaddr,
                reuseport: self.reuseport,
                bound_ifindex: None,
                unread: false,
            },
            backlog: None,
            fd: None,
            state: None,
            skaddr: 0,
        }
    }
}

/// Who judged: the daemon from its table, or the asking process from the
/// host's tables read for the question.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    #[default]
    Host,
    Daemon,
}

/// The answer: whether the bind would succeed, and if not, the diagnosis
/// the failure would get. Read back from a daemon's JSON without the
/// diagnosis (the verdict, the summary and the fix are enough to act on).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// The request in words.
    pub request: String,
    pub would_bind: bool,
    #[serde(default)]
    pub answered_by: AnsweredBy,
    /// The errno the bind would fail with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// False when the verdict rests on an option bindwatch could not read
    /// (a holder's flags, a TIME_WAIT socket's).
    pub certain: bool,
    /// One line for people.
    pub summary: String,
    /// What to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// A risk even when the bind would succeed now: the port lies inside
    /// the namespace's ephemeral range, unreserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// The bind would succeed, but a NAT rule sends the port's traffic
    /// elsewhere: the service would never see a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadowed: Option<crate::owner::Shadow>,
}

impl CheckAnswer {
    fn fails(req: &BindRequest, errno: i32, d: Diagnosis, certain: bool) -> Self {
        Self {
            request: req.to_string(),
            would_bind: false,
            answered_by: AnsweredBy::Host,
            error: crate::errno::name(errno).map(str::to_owned),
            certain,
            summary: d.summary.clone(),
            hint: d.hint.clone(),
            note: None,
            diagnosis: Some(d),
            shadowed: None,
        }
    }

    /// The answer as text: the verdict, then why and what to change.
    pub fn render(&self) -> String {
        let mut s = if let (true, Some(sh)) = (self.would_bind, &self.shadowed) {
            format!(
                "SHADOWED: {} would bind, but {}: the service would never see a connection\n  \
                 fix: {}\n",
                self.request,
                sh.describe(),
                sh.fix()
            )
        } else if self.would_bind {
            format!("ok: {} would bind now\n", self.request)
        } else {
            format!(
                "FAIL: {} would fail with {}{}\n",
                self.request,
                self.error.as_deref().unwrap_or("an error"),
                match (self.certain, self.error.as_deref()) {
                    (true, _) => "",
                    (false, Some("EACCES")) => " (unless it is granted CAP_NET_BIND_SERVICE)",
                    (false, _) => " (probably: an option of the holder could not be read)",
                }
            )
        };
        if !self.would_bind {
            s.push_str(&format!("  why: {}\n", self.summary));
            if let Some(h) = &self.hint {
                s.push_str(&format!("  fix: {h}\n"));
            }
        }
        if let Some(n) = &self.note {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}

/// Whether `addr` is one a socket in the namespace may bind: the
/// wildcard, one of its addresses, or (IPv4) any of 127.0.0.0/8 once
/// loopback is up, since the whole range is local there.
fn bindable(addr: IpAddr, have: &[IpAddr]) -> bool {
    let addr = match addr {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        a => a,
    };
    addr.is_unspecified()
        || have.contains(&addr)
        || (addr.is_loopback() && addr.is_ipv4() && have.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)))
}

/// Judges `req` against the table and, for what the table does not follow
/// (connections, TIME_WAIT), the host. `tid` names the namespace when
/// `req.netns` is None.
pub fn check(
    table: &HolderTable,
    req: &BindRequest,
    tid: u32,
    facts: &mut dyn HostFacts,
) -> CheckAnswer {
    // Read once: the excluded ranges refuse the bind, the dynamic range
    // warns of the next outbound connection.
    let eph = (req.port != 0)
        .then(|| facts.ephemeral_ports(req.netns, tid, req.proto))
        .flatten();
    let mut answer = verdict(table, req, tid, facts, eph.as_ref());
    if answer.would_bind {
        let dir = table.directory();
        answer.shadowed = req
            .netns
            .or(dir.home_netns)
            .and_then(|ns| dir.shadow(ns, req.proto, req.addr, req.port));
    }
    // The reason itself names an outbound connection; otherwise warn of
    // the next one.
    let named = answer.diagnosis.as_ref().is_some_and(|d| {
        d.holders
            .iter()
            .any(|b| b.reason == crate::conflict::Reason::EphemeralPort)
    });
    if !named && let Some(eph) = eph.filter(|e| e.hands_out(req.port)) {
        answer.note = Some(eph.warning(req.proto.as_str(), req.port));
    }
    answer
}

fn verdict(
    table: &HolderTable,
    req: &BindRequest,
    tid: u32,
    facts: &mut dyn HostFacts,
    eph: Option<&EphemeralPorts>,
) -> CheckAnswer {
    // The address: EADDRNOTAVAIL comes before any other check.
    if !req.addr.is_unspecified()
        && let Some(have) = facts.addresses(req.netns, tid)
        && !bindable(req.addr, &have)
    {
        let ev = req.as_event(EADDRNOTAVAIL, tid);
        let d = not_available_among(&ev, Some(have), table.rules);
        return CheckAnswer::fails(req, EADDRNOTAVAIL, d, true);
    }
    // Windows: a range a system component excluded refuses every bind.
    if let Some(d) =
        eph.and_then(|e| super::rules::of(table.rules).excluded(&req.as_event(EACCES, tid), e))
    {
        return CheckAnswer::fails(req, EACCES, d, true);
    }
    // The privileged-port rule: root passes; anyone else needs
    // CAP_NET_BIND_SERVICE, which a unit or file may grant.
    if req.port != 0 && req.uid != 0 {
        let start = facts.unprivileged_port_start(req.netns, tid);
        if start.is_some_and(|s| req.port < s) {
            let start = start.unwrap_or(1024);
            let summary = format!(
                "{} port {} is privileged: ports below {start} need CAP_NET_BIND_SERVICE, which \
                 uid {} has only if it is granted",
                req.proto, req.port, req.uid
            );
            let mut d = Diagnosis::new(DiagnosisKind::PrivilegedPort, summary);
            d.hint = Some(format!(
                "grant the capability (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a \
                 binary: setcap cap_net_bind_service=+ep), use a port at or above {start}, or \
                 lower net.ipv4.ip_unprivileged_port_start in this namespace"
            ));
            d.unprivileged_port_start = Some(start);
            return CheckAnswer::fails(req, EACCES, d, false);
        }
    }
    // The port. Port 0 asks the kernel to choose: only an exhausted range
    // fails it, which is not judged here.
    if req.port != 0 {
        let ev = req.as_event(EADDRINUSE, tid);
        let d = in_use_for(table, &ev, &req.spec(), true, facts);
        if d.kind == DiagnosisKind::Conflict {
            let certain = d.holders.iter().any(|b| b.certain);
            return CheckAnswer::fails(req, EADDRINUSE, d, certain);
        }
    }
    CheckAnswer {
        shadowed: None,
        request: req.to_string(),
        would_bind: true,
        answered_by: AnsweredBy::Host,
        error: None,
        certain: true,
        summary: format!("nothing holds or blocks {}", endpoint(req.addr, req.port)),
        hint: None,
        note: None,
        diagnosis: None,
    }
}

#[cfg(test)]
mod tests {
    use bindwatch_common::{IPPROTO_TCP, kind};

    use super::*;
    use crate::holders::{NoFacts, ProcessInfo};
    use crate::testing;

    struct Facts {
        addrs: Vec<IpAddr>,
        start: u16,
    }

    impl HostFacts for Facts {
        fn unprivileged_port_start(&mut self, _: Option<u64>, _: u32) -> Option<u16> {
            Some(self.start)
        }
        fn addresses(&mut self, _: Option<u64>, _: u32) -> Option<Vec<IpAddr>> {
            Some(self.addrs.clone())
        }
        fn port_sockets(
            &mut self,
            _: Option<u64>,
            _: u32,
            _: Proto,
            _: u16,
        ) -> Option<(Vec<super::super::Holder>, Vec<ProcessInfo>)> {
            None
        }
    }

    fn facts() -> Facts {
        Facts {
            addrs: vec!["127.0.0.1".parse().unwrap(), "10.0.0.6".parse().unwrap()],
            start: 1024,
        }
    }

    fn nginx_on(addr: &str, port: u16) -> HolderTable {
        let mut t = HolderTable::new();
        for k in [kind::BIND, kind::LISTEN] {
            let mut r = testing::with_comm(testing::raw(k, addr, port, IPPROTO_TCP, 0), "nginx");
            r.pid = 100;
            r.sock_cookie = 7;
            t.apply(&testing::event(&r));
        }
        t
    }

    fn req(addr: &str, port: u16, uid: u32) -> BindRequest {
        BindRequest {
            proto: Proto::Tcp,
            addr: addr.parse().unwrap(),
            port,
            reuseaddr: false,
            reuseport: false,
            v6only: false,
            uid,
            // The namespace the test events carry.
            netns: testing::event(&testing::raw(kind::BIND, "0.0.0.0", 1, IPPROTO_TCP, 0))
                .netns_cookie,
        }
    }

    #[test]
    fn a_wildcard_listener_blocks_a_specific_address() {
        let t = nginx_on("0.0.0.0", 80);
        let a = check(&t, &req("10.0.0.6", 80, 0), 1, &mut facts());
        assert!(!a.would_bind);
        assert_eq!(a.error.as_deref(), Some("EADDRINUSE"));
        assert!(a.summary.contains("nginx (pid 100"), "{}", a.summary);
        assert!(a.render().starts_with("FAIL: tcp 10.0.0.6:80 as uid 0"));
        let ok = check(&t, &req("10.0.0.6", 8080, 0), 1, &mut facts());
        assert!(ok.would_bind, "{ok:?}");
    }

    #[test]
    fn the_kernels_order_address_then_privilege_then_port() {
        let t = nginx_on("0.0.0.0", 80);
        let a = check(&t, &req("192.0.2.1", 80, 1000), 1, &mut facts());
        assert_eq!(a.error.as_deref(), Some("EADDRNOTAVAIL"));
        let a = check(&t, &req("10.0.0.6", 80, 1000), 1, &mut facts());
        assert_eq!(a.error.as_deref(), Some("EACCES"));
        assert!(
            a.diagnosis
                .unwrap()
                .hint
                .unwrap()
                .contains("CAP_NET_BIND_SERVICE")
        );
        let a = check(&t, &req("127.0.0.9", 8080, 1000), 1, &mut facts());
        assert!(a.would_bind, "all of 127/8 is local: {a:?}");
    }

    #[test]
    fn without_facts_only_the_table_speaks() {
        let t = nginx_on("127.0.0.1", 8080);
        assert!(check(&t, &req("192.0.2.1", 9, 1000), 1, &mut NoFacts).would_bind);
        assert!(!check(&t, &req("0.0.0.0", 8080, 1000), 1, &mut NoFacts).would_bind);
    }
}
