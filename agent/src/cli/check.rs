//! `bindwatch check`: would this bind succeed now? Exit 0 when it would,
//! 1 when it would not (with who blocks it, why and what to change), 2 on
//! bad input, so a unit can run it before its service starts
//! (`ExecStartPre=bindwatch check :80`). The daemon's table answers when
//! one runs, else the host's sockets on the port, read for the question.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use bindwatch::containers::ContainersConfig;
use bindwatch_core::event::Proto;
use bindwatch_core::holders::{BindRequest, CheckAnswer, HolderTable, check};
use clap::Args as ClapArgs;

use super::daemon_args::DaemonArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// ADDR:PORT, [ADDR6]:PORT, :PORT or PORT (the last two: 0.0.0.0).
    target: String,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    proto: String,
    /// The service sets SO_REUSEADDR.
    #[arg(long)]
    reuseaddr: bool,
    /// The service sets SO_REUSEPORT.
    #[arg(long)]
    reuseport: bool,
    /// The service sets IPV6_V6ONLY.
    #[arg(long)]
    v6only: bool,
    /// The user the service runs as, by name or uid (default: yours).
    #[arg(long)]
    user: Option<String>,
    /// The service's network namespace (/run/netns/NAME, /proc/PID/ns/net).
    #[arg(long)]
    netns: Option<std::path::PathBuf>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

/// The address and port of TARGET.
fn parse_target(s: &str) -> anyhow::Result<(IpAddr, u16)> {
    let wildcard = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = port_only.parse::<u16>() {
        return Ok((wildcard, p));
    }
    let sa: SocketAddr = s.parse().map_err(|_| {
        anyhow!("bad target {s:?}: write ADDR:PORT, [ADDR6]:PORT, :PORT or PORT (port 0-65535)")
    })?;
    Ok((sa.ip(), sa.port()))
}

fn request(a: &Args) -> anyhow::Result<BindRequest> {
    let (addr, port) = parse_target(&a.target)?;
    let proto =
        Proto::parse(&a.proto).ok_or_else(|| anyhow!("bad --proto {:?}: tcp or udp", a.proto))?;
    if a.v6only && !addr.is_ipv6() {
        bail!("--v6only is for an IPv6 address, and {addr} is not one");
    }
    Ok(BindRequest {
        proto,
        addr,
        port,
        reuseaddr: a.reuseaddr,
        reuseport: a.reuseport,
        v6only: a.v6only,
        uid: bindwatch::platform::user_id(a.user.as_deref()).map_err(|e| anyhow!(e))?,
        netns: bindwatch::platform::netns_cookie(a.netns.as_deref()).map_err(|e| anyhow!(e))?,
    })
}

pub fn exec(a: Args) -> ExitCode {
    super::init_logging("error");
    let req = match request(&a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bindwatch check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let from_daemon = match a.daemon.ask("check", |client| async {
        let got = client.check(&req).await;
        (client, got)
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bindwatch check: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (answer, daemon_json) = match from_daemon {
        Some((answer, json)) => (answer, Some(json)),
        None => match a.daemon.containers() {
            Ok(c) => (standalone(&req, &c), None),
            Err(e) => {
                eprintln!("bindwatch check: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let text = if a.daemon.json {
        match daemon_json {
            Some(j) => j + "\n",
            None => serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n",
        }
    } else {
        answer.render()
    };
    if let Err(e) = super::print_out(&text) {
        eprintln!("bindwatch check: {e:#}");
        return ExitCode::from(2);
    }
    if answer.would_bind && answer.shadowed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Answers from the host: the sockets on the port in the request's
/// namespace (with their options and owners), its addresses and its
/// privileged-port start, read now. Nothing is bound.
fn standalone(req: &BindRequest, containers: &ContainersConfig) -> CheckAnswer {
    let mut host = bindwatch::platform::KernelView::new();
    let mut table = HolderTable::new();
    let mut dir = bindwatch::platform::read_containers(containers);
    dir.home_netns = host.own_netns();
    dir.nat = host.nat_rules(req.netns.or(dir.home_netns));
    table.set_directory(dir.into());
    check(&table, req, std::process::id(), &mut host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        assert_eq!(parse_target("80").unwrap(), (any, 80));
        assert_eq!(parse_target(":80").unwrap(), (any, 80));
        assert_eq!(
            parse_target("10.0.0.6:80").unwrap(),
            ("10.0.0.6".parse().unwrap(), 80)
        );
        assert_eq!(
            parse_target("[::]:443").unwrap(),
            ("::".parse().unwrap(), 443)
        );
        for bad in ["", "http", "10.0.0.6", "::1:80", "99999", "10.0.0.6:99999"] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.contains("bad target"), "{bad}: {e}");
        }
    }
}
