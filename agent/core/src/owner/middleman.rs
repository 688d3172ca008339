//! Processes that hold a socket for someone else, and what their own
//! command line or role says about whom.

use std::net::IpAddr;

use crate::event::Proto;

use super::container::PortMapping;

/// Docker's userland proxy: one process per published port and family,
/// started by dockerd with the mapping on its command line
/// (`docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 18080
/// -container-ip 172.17.0.2 -container-port 80`).
pub const DOCKER_PROXY: &str = "docker-proxy";

/// Runtime daemons that hold a published port themselves: dockerd with
/// `--userland-proxy=false`, Podman's rootless port forwarder.
pub const RUNTIME_DAEMONS: [&str; 3] = ["dockerd", "rootlessport", "rootlessport-ch"];

/// The mapping on docker-proxy's command line; None for any other command
/// or one that lacks the ports.
pub fn docker_proxy_mapping(comm: &str, cmdline: &str) -> Option<PortMapping> {
    let exe = cmdline.split_whitespace().next().unwrap_or("");
    if comm != DOCKER_PROXY && !exe.ends_with("/docker-proxy") && exe != DOCKER_PROXY {
        return None;
    }
    let mut proto = Proto::Tcp;
    let (mut host_ip, mut host_port, mut container_ip, mut container_port) =
        (None, None, None, None);
    let mut args = cmdline.split_whitespace().skip(1);
    while let Some(flag) = args.next() {
        // Go's flag package takes `-flag value`, `--flag value` and `-flag=value`.
        let flag = flag.trim_start_matches('-');
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let Some(value) = value.or_else(|| args.next()) else {
            break;
        };
        match name {
            "proto" => proto = Proto::parse(value).unwrap_or(Proto::Unknown),
            "host-ip" => host_ip = value.parse::<IpAddr>().ok(),
            "host-port" => host_port = value.parse::<u16>().ok(),
            "container-ip" => container_ip = value.parse::<IpAddr>().ok(),
            "container-port" => container_port = value.parse::<u16>().ok(),
            _ => {}
        }
    }
    Some(PortMapping {
        proto,
        host_ip: host_ip.filter(|a| !a.is_unspecified()),
        host_port: host_port?,
        container_ip,
        container_port: container_port?,
    })
}

/// Whether `comm` may bind on someone else's behalf (a proxy or a runtime
/// daemon): only then is a failed bind's requester looked for.
pub fn binds_for_others(comm: &str) -> bool {
    comm == DOCKER_PROXY || is_runtime_daemon(comm)
}

/// Whether `comm` is a runtime daemon that may hold a published port.
pub fn is_runtime_daemon(comm: &str) -> bool {
    RUNTIME_DAEMONS.contains(&comm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_proxy_command_lines() {
        // As seen on Debian's docker.io 20.10.
        let m = docker_proxy_mapping(
            "docker-proxy",
            "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 18080 -container-ip 172.17.0.2 -container-port 80",
        )
        .unwrap();
        assert_eq!(m.proto, Proto::Tcp);
        assert_eq!(m.host_ip, None, "the wildcard is every address");
        assert_eq!(m.host_port, 18080);
        assert_eq!(m.container_ip, Some("172.17.0.2".parse().unwrap()));
        assert_eq!(m.container_port, 80);
        assert_eq!(m.flag(), "18080:80");

        let m = docker_proxy_mapping(
            "docker-proxy",
            "docker-proxy --proto=udp --host-ip=127.0.0.1 --host-port=5353 --container-ip=172.17.0.3 --container-port=53",
        )
        .unwrap();
        assert_eq!(m.flag(), "127.0.0.1:5353:53/udp");

        assert!(docker_proxy_mapping("nginx", "nginx -g daemon off;").is_none());
        assert!(
            docker_proxy_mapping("docker-proxy", "/usr/sbin/docker-proxy -proto tcp").is_none(),
            "no ports, no mapping"
        );
    }
}
