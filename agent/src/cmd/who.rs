//! `bindwatch who`: the daemon's table when one runs, else a snapshot of
//! the host's socket tables taken for the query.

use super::ask::{DaemonClient, NoAnswer};
use crate::holders::WhoQuery;
use crate::who::WhoAnswer;

#[cfg(windows)]
pub use crate::windows::who::standalone;

/// Asks a running daemon; Err says why it did not answer, and the caller
/// falls back to [`standalone`].
pub async fn from_daemon(daemon: &DaemonClient, query: &WhoQuery) -> Result<WhoAnswer, NoAnswer> {
    let mut params = vec![("port", query.port.to_string())];
    if let Some(p) = query.proto {
        params.push(("proto", p.to_string()));
    }
    if let Some(a) = query.addr {
        params.push(("addr", a.to_string()));
    }
    let body = daemon.get("/api/v1/holders", &params).await?;
    serde_json::from_str(&body)
        .map_err(|e| NoAnswer::Failed(format!("its answer is not a holders document: {e}")))
}

/// Answers from the kernel: sock_diag filtered by port in every namespace
/// this process may enter, then one /proc walk for the owners (what
/// `ss -ltnp 'sport = :PORT'` does, plus the options and the namespaces).
#[cfg(target_os = "linux")]
pub fn standalone(query: WhoQuery, containers: &crate::containers::ContainersConfig) -> WhoAnswer {
    use crate::event::Proto;
    use crate::linux::kernel::KernelView;
    use crate::linux::sockdiag::{self, DiagQuery};
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
    let mut containers = crate::platform::read_containers(containers);
    containers.nat = kv.nat_rules(r.holders.iter().map(|h| h.netns));
    let mut answer = WhoAnswer::from_host(query, r.holders, r.processes, containers.into());
    answer.notes = crate::who::ephemeral_notes(&answer.holders, &mut kv);
    answer
}
