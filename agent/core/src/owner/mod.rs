//! The owner behind a holder: whom a socket is really for when the process
//! holding it stands for someone else (docker-proxy or dockerd for a
//! container's published port, a process inside a container or a pod), and
//! the fix that works on that owner rather than on the middleman.
//!
//! One resolver per kind of middleman (`container`, `middleman`, `nat`,
//! and on Windows `http_sys` for the URLs http.sys holds a port for, with
//! `iis` for the IIS sites whose bindings registered them), all
//! answering [`Owner`] or its platform's equivalent; every
//! surface (trace, who, check, the daemon's log line, alerts, the timeline,
//! the API) reads it from the holder's view. Pure: the platform hands in a
//! [`Directory`] of the host's containers, read from the runtimes off the
//! event loop.

pub mod container;
pub mod http_sys;
pub mod iis;
pub mod middleman;
pub mod nat;

use serde::{Deserialize, Serialize};

pub use container::{Container, Directory, Identity, PortMapping, RuntimeStatus};
pub use nat::{NatRule, Shadow};

use crate::event::Proto;

/// How the holder stands for its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The holding process runs inside the container.
    Process,
    /// Docker's userland proxy publishes the container's port.
    DockerProxy,
    /// The runtime's daemon holds the published port itself (dockerd with
    /// the userland proxy off, rootlessport).
    Runtime,
}

/// Whom a holder's socket is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub via: Via,
    /// The middleman's command (`docker-proxy`, `dockerd`); None when the
    /// owner's own process holds the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub middleman: Option<String>,
    /// Who the container is; None when its runtime could not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Identity>,
    /// What the host alone knows of it when the runtime could not say (a
    /// cgroup's `runtime:id`, or the container address on docker-proxy's
    /// command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ref: Option<String>,
    /// The published port, for a middleman.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping: Option<PortMapping>,
    /// The container's state when it is not running (a start under way or
    /// failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why the identity is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

impl Owner {
    /// The owner in words: `container web (image nginx)`, or what is
    /// known of it.
    pub fn who(&self) -> String {
        match (&self.container, &self.container_ref) {
            (Some(c), _) => c.label(),
            (None, Some(r)) => format!("container {r} (identity unknown)"),
            (None, None) => "a container (identity unknown)".to_owned(),
        }
    }

    /// The holder's label with its owner: `httpd (pid 5, root) in
    /// container web (image nginx)`, or for a middleman `container web
    /// (image nginx), published -p 18080:80 by docker-proxy (pid 4930,
    /// root)`.
    pub fn label_with(&self, processes: &str) -> String {
        match (self.via, &self.mapping) {
            (Via::Process, _) => format!("{processes} in {}", self.who()),
            (_, Some(m)) => format!("{}, published -p {} by {processes}", self.who(), m.flag()),
            (_, None) => format!("{}, published by {processes}", self.who()),
        }
    }

    /// What to change, on the owner rather than on the middleman.
    pub fn fix(&self) -> String {
        let Some(c) = &self.container else {
            let why = self.unknown.as_deref().unwrap_or("its runtime did not say");
            return match (self.via, &self.mapping) {
                (Via::Process, _) => format!(
                    "stop or reconfigure {} with its runtime ({why})",
                    self.who()
                ),
                (_, Some(m)) => format!(
                    "the port is published for a container (-p {}); stop that container or change \
                     its mapping, not {} ({why})",
                    m.flag(),
                    self.middleman.as_deref().unwrap_or("the proxy")
                ),
                (_, None) => format!("stop the container it publishes for ({why})"),
            };
        };
        let stop = c.stop_command();
        match (self.via, &self.mapping) {
            (Via::Process, _) if c.pod_name.is_some() => format!(
                "stop it ({stop}; its controller may start it again) or change the port of \
                 container {} in its pod spec",
                c.pod_container.as_deref().unwrap_or("?")
            ),
            (Via::Process, _) => format!(
                "stop {} ({stop}) or change the port it listens on",
                c.label_short()
            ),
            (_, Some(m)) => {
                let change = match (&c.compose_project, &c.compose_service) {
                    (Some(p), Some(s)) => format!(
                        "change the ports: entry \"{}\" of service {s} in Compose project {p}",
                        m.flag()
                    ),
                    _ => format!("publish it on another host port (change -p {})", m.flag()),
                };
                let mm = self.middleman.as_deref().unwrap_or("the proxy");
                let not = if self.via == Via::Runtime {
                    format!("{mm} holds it only on the container's behalf")
                } else {
                    format!("stopping {mm} alone is not a fix")
                };
                format!(
                    "the port is published for {}: stop it ({stop}) or {change}; {not}",
                    c.label_short()
                )
            }
            (_, None) => format!("stop {} ({stop})", c.label_short()),
        }
    }
}

impl Identity {
    /// The value of a metric's `container` label: `web`,
    /// `monitoring/node-exporter-x7`.
    pub fn metric_name(&self) -> String {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(p)) => format!("{ns}/{p}"),
            _ => self
                .name
                .clone()
                .unwrap_or_else(|| self.short_id().to_owned()),
        }
    }

    /// `container web`, `pod monitoring/node-exporter-x7`.
    pub fn label_short(&self) -> String {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(p)) => format!("pod {ns}/{p}"),
            _ => format!(
                "container {}",
                self.name.as_deref().unwrap_or(self.short_id())
            ),
        }
    }
}

/// What a resolver reads of a process: its command, command line, and
/// the container its cgroup names (`runtime:id`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Process<'a> {
    pub comm: &'a str,
    pub cmdline: &'a str,
    pub container: Option<&'a str>,
}

/// Whom `p`'s socket on `proto` `port` is for; None when `p` stands for
/// nobody but itself. Each resolver asks the directory; a runtime that did
/// not answer leaves the identity unknown, and says why.
pub fn resolve(dir: &Directory, p: Process<'_>, proto: Proto, port: u16) -> Option<Owner> {
    docker_proxy(dir, p)
        .or_else(|| runtime_daemon(dir, p, proto, port))
        .or_else(|| in_container(dir, p))
}

/// Whom a middleman that failed to bind `proto` `port` was binding for.
/// Its command line is read when the process is still there; a
/// docker-proxy that failed exits at once, and then the container being
/// started that publishes the port names it.
pub fn requester(
    dir: &Directory,
    comm: &str,
    p: Option<Process<'_>>,
    proto: Proto,
    port: u16,
) -> Option<Owner> {
    if let Some(o) = p.and_then(|p| resolve(dir, p, proto, port)) {
        return Some(o);
    }
    if !middleman::binds_for_others(comm) {
        return None;
    }
    let found = dir.starting(proto, port);
    let runtime = found.map_or("docker".to_owned(), |(c, _)| c.identity.runtime.clone());
    let mapping = found.map(|(_, m)| m.clone());
    let mut o = published(
        dir,
        if comm == middleman::DOCKER_PROXY {
            Via::DockerProxy
        } else {
            Via::Runtime
        },
        &runtime,
        comm,
        mapping.clone().unwrap_or(PortMapping {
            proto,
            host_ip: None,
            host_port: port,
            container_ip: None,
            container_port: 0,
        }),
        found.map(|(c, _)| c),
    );
    if mapping.is_none() {
        o.mapping = None;
        o.unknown = Some(format!(
            "{comm} exited before its command line was read, and {}",
            dir.trouble(&runtime)
                .unwrap_or_else(|| format!("no {runtime} container publishes {proto}/{port}"))
        ));
    }
    Some(o)
}

fn docker_proxy(dir: &Directory, p: Process<'_>) -> Option<Owner> {
    let m = middleman::docker_proxy_mapping(p.comm, p.cmdline)?;
    let found = m
        .container_ip
        .and_then(|a| dir.by_address(a))
        .filter(|c| c.ports.iter().any(|x| x.host_port == m.host_port))
        .or_else(|| dir.publishing(m.proto, m.host_port).map(|(c, _)| c));
    Some(published(dir, Via::DockerProxy, "docker", p.comm, m, found))
}

fn runtime_daemon(dir: &Directory, p: Process<'_>, proto: Proto, port: u16) -> Option<Owner> {
    if !middleman::is_runtime_daemon(p.comm) {
        return None;
    }
    // A daemon's own sockets (dockerd's API on tcp/2375) publish nothing.
    let (c, m) = dir.publishing(proto, port)?;
    let runtime = c.identity.runtime.clone();
    Some(published(
        dir,
        Via::Runtime,
        &runtime,
        p.comm,
        m.clone(),
        Some(c),
    ))
}

fn published(
    dir: &Directory,
    via: Via,
    runtime: &str,
    middleman: &str,
    mapping: PortMapping,
    found: Option<&Container>,
) -> Owner {
    let unknown = found.is_none().then(|| {
        dir.trouble(runtime)
            .unwrap_or_else(|| format!("no {runtime} container publishes this port"))
    });
    Owner {
        via,
        middleman: Some(middleman.to_owned()),
        container: found.map(|c| c.identity.clone()),
        container_ref: mapping
            .container_ip
            .filter(|_| found.is_none())
            .map(|a| format!("at {a}")),
        state: found.map(|c| c.state.clone()).filter(|s| s != "running"),
        mapping: Some(mapping),
        unknown,
    }
}

fn in_container(dir: &Directory, p: Process<'_>) -> Option<Owner> {
    let c = p.container?;
    let (runtime, id) = c.split_once(':').unwrap_or(("container", c));
    let found = dir.by_id(id);
    Some(Owner {
        via: Via::Process,
        middleman: None,
        container: found.map(|c| c.identity.clone()),
        container_ref: found.is_none().then(|| c.to_owned()),
        mapping: None,
        state: found.map(|c| c.state.clone()).filter(|s| s != "running"),
        unknown: found.is_none().then(|| {
            dir.trouble(runtime)
                .unwrap_or_else(|| format!("{runtime} does not know container {id}"))
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = include_str!("testdata/docker-inspect-web.json");
    const FAILED: &str = include_str!("testdata/docker-inspect-failed-start.json");

    fn dir() -> Directory {
        Directory::new(
            vec![
                container::from_docker_inspect("docker", WEB).unwrap(),
                container::from_docker_inspect("docker", FAILED).unwrap(),
            ],
            vec![RuntimeStatus {
                runtime: "docker".into(),
                endpoint: "unix:///run/docker.sock".into(),
                error: None,
                containers: 2,
            }],
            0,
        )
    }

    fn proc_<'a>(comm: &'a str, cmdline: &'a str, container: Option<&'a str>) -> Process<'a> {
        Process {
            comm,
            cmdline,
            container,
        }
    }

    const LABEL: &str = "docker-proxy (pid 4930, root)";

    const PROXY: &str = "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 18080 -container-ip 172.17.0.2 -container-port 80";

    #[test]
    fn docker_proxy_names_the_container_and_the_fix_works_on_it() {
        let p = proc_("docker-proxy", PROXY, None);
        let o = resolve(&dir(), p, Proto::Tcp, 18080).unwrap();
        assert_eq!(o.via, Via::DockerProxy);
        assert_eq!(o.container.as_ref().unwrap().name.as_deref(), Some("web"));
        assert_eq!(
            o.label_with(LABEL),
            "container web (image bw-busybox:test, Compose project shop, service front), \
             published -p 18080:80 by docker-proxy (pid 4930, root)"
        );
        let fix = o.fix();
        assert!(fix.contains("docker compose -p shop stop front"), "{fix}");
        assert!(
            fix.contains("ports: entry \"18080:80\" of service front"),
            "{fix}"
        );
        assert!(
            fix.contains("stopping docker-proxy alone is not a fix"),
            "{fix}"
        );
    }

    #[test]
    fn a_failed_proxy_names_the_container_that_was_starting() {
        let p = proc_(
            "docker-proxy",
            "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 18082 -container-ip 172.17.0.3 -container-port 80",
            None,
        );
        let o = resolve(&dir(), p, Proto::Tcp, 18082).unwrap();
        let c = o.container.as_ref().unwrap();
        assert_eq!(c.name.as_deref(), Some("web3b"));
        assert_eq!(o.state.as_deref(), Some("created"));
        assert!(o.fix().contains("docker stop web3b"), "{}", o.fix());
        assert!(o.fix().contains("change -p 18082:80"), "{}", o.fix());
    }

    #[test]
    fn dockerd_holding_a_published_port_is_a_middleman_but_not_for_its_own_ports() {
        let p = proc_("dockerd", "/usr/sbin/dockerd --userland-proxy=false", None);
        let o = resolve(&dir(), p, Proto::Tcp, 18080).unwrap();
        assert_eq!(o.via, Via::Runtime);
        assert_eq!(o.container.as_ref().unwrap().name.as_deref(), Some("web"));
        assert!(resolve(&dir(), p, Proto::Tcp, 2375).is_none());
    }

    #[test]
    fn a_process_in_a_container_is_named_by_it() {
        let p = proc_("httpd", "/bin/httpd -f -p 80", Some("docker:714ec9f3e977"));
        let o = resolve(&dir(), p, Proto::Tcp, 80).unwrap();
        assert_eq!(o.via, Via::Process);
        assert!(
            o.label_with(LABEL).ends_with(
                " in container web (image bw-busybox:test, Compose project shop, service front)"
            ),
            "{}",
            o.label_with(LABEL)
        );
        assert!(resolve(&dir(), proc_("nginx", "nginx", None), Proto::Tcp, 80).is_none());
    }

    #[test]
    fn a_runtime_that_is_down_leaves_the_identity_unknown_and_says_why() {
        let down = Directory::new(
            Vec::new(),
            vec![RuntimeStatus {
                runtime: "docker".into(),
                endpoint: "unix:///run/docker.sock".into(),
                error: Some("timed out after 1 s".into()),
                containers: 0,
            }],
            0,
        );
        let p = proc_("docker-proxy", PROXY, None);
        let o = resolve(&down, p, Proto::Tcp, 18080).unwrap();
        assert!(o.container.is_none());
        assert_eq!(
            o.unknown.as_deref(),
            Some("docker at unix:///run/docker.sock: timed out after 1 s")
        );
        assert_eq!(o.who(), "container at 172.17.0.2 (identity unknown)");
        assert!(o.fix().contains("not docker-proxy"), "{}", o.fix());
        let p = proc_("httpd", "httpd", Some("docker:714ec9f3e977"));
        let o = resolve(&down, p, Proto::Tcp, 80).unwrap();
        assert_eq!(o.who(), "container docker:714ec9f3e977 (identity unknown)");
    }
}
