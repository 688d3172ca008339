//! `bindwatch who` without a daemon on Linux: sock_diag filtered by port in
//! every namespace this process may enter, then one /proc walk for the
//! owners (what `ss -ltnp 'sport = :PORT'` does, plus the options, the
//! namespaces and the containers).

use super::kernel::KernelView;
use super::sockdiag::{self, DiagQuery};
use bindwatch_core::event::Proto;
use bindwatch_core::holders::WhoQuery;
use bindwatch_core::who::WhoAnswer;

pub fn standalone(query: WhoQuery, containers: &crate::containers::ContainersConfig) -> WhoAnswer {
    let mut kv = KernelView::new();
    let protos: Vec<Proto> = match query.proto {
        Some(p) => vec![p],
        None => vec![Proto::Tcp, Proto::Udp],
    };
    let queries: Vec<DiagQuery> = protos
        .into_iter()
        .map(|proto| DiagQuery {
            proto,
            states: if proto == Proto::Udp {
                sockdiag::ALL_STATES
            } else {
                sockdiag::TABLE_STATES
            },
            port: Some(query.port),
        })
        .collect();
    let r = kv.resolve(
        query.netns.as_ref().map(std::slice::from_ref),
        &queries,
        true,
    );
    let mut containers = super::containers::read_now(containers);
    containers.nat = kv.nat_rules(r.holders.iter().map(|h| h.netns));
    let mut answer = WhoAnswer::from_host(query, r.holders, r.processes, containers.into());
    answer.notes = bindwatch_core::who::ephemeral_notes(&answer.holders, &mut kv);
    answer
}
