//! `bindwatch check`: would this bind succeed now? Exit 0 when it would,
//! 1 when it would not (with who blocks it, why and what to change), 2 on
//! bad input, so a unit can run it before its service starts
//! (`ExecStartPre=bindwatch check :80`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use bindwatch::event::Proto;
use bindwatch::holders::BindRequest;
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

#[cfg(unix)]
fn uid_of(user: Option<&str>) -> anyhow::Result<u32> {
    use anyhow::Context as _;
    let Some(u) = user else {
        return Ok(nix::unistd::getuid().as_raw());
    };
    if let Ok(n) = u.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(u).with_context(|| format!("looking up user {u:?}"))? {
        Some(p) => Ok(p.uid.as_raw()),
        None => bail!("no user {u:?} on this host"),
    }
}

#[cfg(not(unix))]
fn uid_of(user: Option<&str>) -> anyhow::Result<u32> {
    match user {
        None => Ok(0),
        Some(_) => bail!("--user is for Linux: Windows has no privileged ports"),
    }
}

#[cfg(target_os = "linux")]
fn netns_of(path: Option<&std::path::Path>) -> anyhow::Result<Option<u64>> {
    use anyhow::Context as _;
    let path = path.unwrap_or(std::path::Path::new("/proc/self/ns/net"));
    let cookie = bindwatch::linux::netns::cookie_of_path(path)
        .with_context(|| format!("reading the network namespace {}", path.display()))?;
    Ok(Some(cookie))
}

#[cfg(not(target_os = "linux"))]
fn netns_of(path: Option<&std::path::Path>) -> anyhow::Result<Option<u64>> {
    match path {
        None => Ok(None),
        Some(_) => bail!("--netns is for Linux"),
    }
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
        uid: uid_of(a.user.as_deref())?,
        netns: netns_of(a.netns.as_deref())?,
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
        let got = bindwatch::cmd::check::from_daemon(&client, &req).await;
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
            Ok(c) => (bindwatch::cmd::check::standalone(&req, &c), None),
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
