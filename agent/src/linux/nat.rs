//! Each network namespace's destination-NAT rules, read with nftables'
//! own tool (`nft -a list ruleset`) from a thread inside the namespace;
//! parsed by the core (`owner::nat`). Bounded in time: a tool that hangs
//! is killed and the namespace left out.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::Namespace;
use bindwatch_core::owner::NatRule;

/// Longest wait for `nft`.
const NFT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest listing read (a host with kube-proxy's rules reaches a few MiB).
const MAX_LISTING: u64 = 32 << 20;

/// The namespace's rules, or why they could not be read.
pub fn rules_in(ns: &Namespace) -> Result<Vec<NatRule>, String> {
    ns.run(listing)
        .ok_or_else(|| "could not enter the namespace".to_owned())?
        .map(|text| bindwatch_core::owner::nat::parse_ruleset(&text))
}

/// `nft -a list ruleset` in the calling thread's namespace.
fn listing() -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(["-a", "list", "ruleset"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    let mut out = String::new();
    let reader = child.stdout.take().map(|s| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = s.take(MAX_LISTING).read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + NFT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "nft gave no answer within {} s",
                    NFT_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("nft: {e}")),
        }
    };
    if let Some(r) = reader {
        out = r.join().unwrap_or_default();
    }
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        return Err(format!("nft: {status}: {}", err.trim()));
    }
    Ok(out)
}
