//! `bindwatch check`: the daemon's table when one runs, else the host's
//! sockets on the port, read for the question. Nothing is bound.

use super::ask::{DaemonClient, NoAnswer};
use crate::holders::{BindRequest, CheckAnswer, HolderTable, check};

/// Asks a running daemon: its answer, and the JSON as it sent it (with the
/// whole diagnosis). Err says why it did not answer, and the caller falls
/// back to [`standalone`].
pub async fn from_daemon(
    daemon: &DaemonClient,
    req: &BindRequest,
) -> Result<(CheckAnswer, String), NoAnswer> {
    let mut params = vec![
        ("port", req.port.to_string()),
        ("addr", req.addr.to_string()),
        ("proto", req.proto.to_string()),
        ("reuseaddr", req.reuseaddr.to_string()),
        ("reuseport", req.reuseport.to_string()),
        ("v6only", req.v6only.to_string()),
        ("uid", req.uid.to_string()),
    ];
    if let Some(ns) = req.netns {
        params.push(("netns", ns.to_string()));
    }
    let body = daemon.get("/api/v1/check", &params).await?;
    let answer = serde_json::from_str(&body)
        .map_err(|e| NoAnswer::Failed(format!("its answer is not a check document: {e}")))?;
    Ok((answer, body))
}

/// Answers from the host: the sockets on the port in the request's
/// namespace (with their options and owners), its addresses and its
/// privileged-port start, read now.
pub fn standalone(
    req: &BindRequest,
    containers: &crate::containers::ContainersConfig,
) -> CheckAnswer {
    let mut host = crate::platform::KernelView::new();
    let mut table = HolderTable::new();
    let mut dir = crate::platform::read_containers(containers);
    dir.home_netns = host.own_netns();
    dir.nat = host.nat_rules(req.netns.or(dir.home_netns));
    table.set_directory(dir.into());
    check(&table, req, std::process::id(), &mut host)
}
