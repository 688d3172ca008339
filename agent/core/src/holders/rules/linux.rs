//! Linux's rules: the kernel's conflict rules (`crate::conflict`) with
//! every unknown option tried, and the privileged-port rule for EACCES.

use super::{Judged, PlatformRules, Verdict};
use crate::event::{Event, endpoint};
use crate::holders::diagnose::judge;
use crate::holders::{Diagnosis, DiagnosisKind, HolderTable, HostFacts};

pub struct Linux;

impl PlatformRules for Linux {
    fn judge(&self, j: &Judged) -> Option<Verdict> {
        let (reason, certain) = judge(j.req, j.req_v6only_known, j.holder)?;
        Some(Verdict {
            reason,
            certain,
            explanation: reason.explain(j.req, &j.holder.spec()),
            hint: reason.hint().to_owned(),
        })
    }

    fn denied(&self, _: &HolderTable, ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
        privileged(ev, facts)
    }

    fn address_scope(&self) -> &'static str {
        "network namespace"
    }

    fn address_hint(&self) -> &'static str {
        "bind one of those addresses or the wildcard, add the address to an \
         interface (`ip addr add`), or set net.ipv4.ip_nonlocal_bind=1 / IP_FREEBIND to bind \
         before it exists"
    }
}

fn privileged(ev: &Event, facts: &mut dyn HostFacts) -> Diagnosis {
    let start = facts.unprivileged_port_start(ev.netns_cookie, ev.tid);
    let below = start.is_none_or(|s| ev.port < s);
    // The kernel checks the capability only below the start; its refusal
    // there proves the thread lacked it at that moment.
    let cap = below.then_some(false);
    let summary = if below {
        format!(
            "{} port {} is privileged: ports below {} need CAP_NET_BIND_SERVICE, and {} (pid {}, uid {}) did not have it",
            ev.proto,
            ev.port,
            start.map_or("net.ipv4.ip_unprivileged_port_start".to_owned(), |s| s
                .to_string()),
            ev.comm,
            ev.pid,
            ev.uid,
        )
    } else {
        format!(
            "permission denied binding {} {}: port {} is above ip_unprivileged_port_start ({}), so a security module or cgroup program refused it",
            ev.proto,
            endpoint(ev.addr, ev.port),
            ev.port,
            start.unwrap_or_default()
        )
    };
    let mut d = Diagnosis::new(DiagnosisKind::PrivilegedPort, summary);
    d.hint = Some(if below {
        format!(
            "grant the capability (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; a binary: \
             setcap cap_net_bind_service=+ep), use a port at or above {}, or lower \
             net.ipv4.ip_unprivileged_port_start in this namespace",
            start.unwrap_or(1024)
        )
    } else {
        "check the audit log for an AppArmor or SELinux denial".to_owned()
    });
    d.unprivileged_port_start = start;
    d.cap_net_bind_service = cap;
    d
}
