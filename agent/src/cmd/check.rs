//! `bindwatch check`: the daemon's table when one runs, else the host's
//! sockets on the port, read for the question. Nothing is bound.

use crate::holders::{BindRequest, CheckAnswer, HolderTable, check};

/// Asks a running daemon: its answer, and the JSON as it sent it (with the
/// whole diagnosis). None when none answers at `base` (connection refused
/// or no answer within the timeout), so the caller falls back to
/// [`standalone`].
pub async fn from_daemon(base: &str, req: &BindRequest) -> Option<(CheckAnswer, String)> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .ok()?;
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
    let resp = client
        .get(format!("{}/api/v1/check", base.trim_end_matches('/')))
        .query(&params)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        tracing::warn!(status = %resp.status(), "the daemon refused the check");
        return None;
    }
    let body = resp.text().await.ok()?;
    let answer = serde_json::from_str(&body).ok()?;
    Some((answer, body))
}

/// Answers from the host: the sockets on the port in the request's
/// namespace (with their options and owners), its addresses and its
/// privileged-port start, read now.
pub fn standalone(req: &BindRequest) -> CheckAnswer {
    let mut host = crate::platform::KernelView::new();
    check(&HolderTable::new(), req, std::process::id(), &mut host)
}
