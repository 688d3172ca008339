//! Containers as their runtimes describe them, and the directory the
//! platform hands the core: every container the host's runtimes know, by
//! id and by address, with the ports each publishes.
//!
//! The runtimes' own documents are parsed here (the Docker Engine API's
//! container inspect answer, an OCI bundle's `config.json` with the CRI's
//! annotations), so the parsing is tested without a runtime; fetching them
//! is the platform's.

use std::collections::HashMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::Proto;

/// Docker's Compose labels.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// What the kubelet's CRI sets on a container: as labels (Docker shim,
/// `ctr --label`) or as OCI annotations in the bundle (containerd's CRI).
const POD_NAME: [&str; 2] = ["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"];
const POD_NAMESPACE: [&str; 2] = [
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.sandbox-namespace",
];
const POD_CONTAINER: [&str; 2] = [
    "io.kubernetes.container.name",
    "io.kubernetes.cri.container-name",
];
const POD_IMAGE: &str = "io.kubernetes.cri.image-name";

/// Most containers a directory holds (a host runs far fewer; past it the
/// rest are left out and counted).
pub const DIRECTORY_CAPACITY: usize = 4096;

/// Who a container is, as people name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `docker`, `podman`, `containerd`.
    pub runtime: String,
    /// The full id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The container's name within its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_container: Option<String>,
    /// containerd's namespace (`k8s.io`, `moby`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Identity {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// `pod monitoring/node-exporter-x7 (container node-exporter, image
    /// prom/node-exporter)`, `container web (image nginx:1.25, Compose
    /// project shop, service front)`.
    pub fn label(&self) -> String {
        let mut extra = Vec::new();
        let head = match (&self.pod_namespace, &self.pod_name) {
            (Some(ns), Some(pod)) => {
                if let Some(c) = &self.pod_container {
                    extra.push(format!("container {c}"));
                }
                format!("pod {ns}/{pod}")
            }
            _ => format!(
                "container {}",
                self.name.as_deref().unwrap_or(self.short_id())
            ),
        };
        if let Some(i) = &self.image {
            extra.push(format!("image {i}"));
        }
        match (&self.compose_project, &self.compose_service) {
            (Some(p), Some(s)) => extra.push(format!("Compose project {p}, service {s}")),
            (Some(p), None) => extra.push(format!("Compose project {p}")),
            _ => {}
        }
        if extra.is_empty() {
            head
        } else {
            format!("{head} ({})", extra.join(", "))
        }
    }

    /// How an operator stops it with the runtime's own tool.
    pub fn stop_command(&self) -> String {
        if let (Some(ns), Some(pod)) = (&self.pod_namespace, &self.pod_name) {
            return format!("kubectl -n {ns} delete pod {pod}");
        }
        let name = self.name.as_deref().unwrap_or(self.short_id());
        if self.runtime == "podman" {
            return format!("podman stop {name}");
        }
        if let (Some(p), Some(s)) = (&self.compose_project, &self.compose_service) {
            return format!("docker compose -p {p} stop {s}");
        }
        match self.runtime.as_str() {
            "podman" => format!("podman stop {name}"),
            "containerd" => format!(
                "ctr -n {} task kill {}",
                self.namespace.as_deref().unwrap_or("default"),
                self.id
            ),
            _ => format!("docker stop {name}"),
        }
    }

    fn from_labels(runtime: &str, id: &str, labels: &HashMap<String, String>) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
        Self {
            runtime: runtime.to_owned(),
            id: id.to_owned(),
            compose_project: labels.get(COMPOSE_PROJECT).cloned(),
            compose_service: labels.get(COMPOSE_SERVICE).cloned(),
            pod_namespace: first(&POD_NAMESPACE),
            pod_name: first(&POD_NAME),
            pod_container: first(&POD_CONTAINER),
            image: labels.get(POD_IMAGE).cloned(),
            ..Self::default()
        }
    }
}

/// A port a container publishes on the host (`-p 18080:80`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub proto: Proto,
    /// None: every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ip: Option<IpAddr>,
    pub container_port: u16,
}

impl PortMapping {
    /// As `docker run -p` takes it: `18080:80`, `127.0.0.1:18080:80/udp`.
    pub fn flag(&self) -> String {
        let ip = match self.host_ip {
            Some(IpAddr::V4(a)) => format!("{a}:"),
            Some(IpAddr::V6(a)) => format!("[{a}]:"),
            None => String::new(),
        };
        let proto = if self.proto == Proto::Udp { "/udp" } else { "" };
        format!("{ip}{}:{}{proto}", self.host_port, self.container_port)
    }
}

/// A container and what it publishes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub identity: Identity,
    /// `running`, `created`, `exited`, ...
    pub state: String,
    /// The ports it publishes (declared: a container that failed to start
    /// still has them).
    pub ports: Vec<PortMapping>,
    /// Its addresses on the runtime's networks.
    pub addresses: Vec<IpAddr>,
    /// On the host's network namespace (`--network host`, `hostNetwork`).
    pub host_network: bool,
}

/// Why a runtime's containers are or are not in the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    pub runtime: String,
    /// Where it was asked (a socket, a state directory).
    pub endpoint: String,
    /// None when it answered; else why not (refused, timed out, absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Containers it reported.
    pub containers: usize,
}

/// Every container the host's runtimes know, as of `taken_ns`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    containers: Vec<Container>,
    by_id: HashMap<String, usize>,
    by_short: HashMap<String, usize>,
    by_addr: HashMap<IpAddr, usize>,
    pub statuses: Vec<RuntimeStatus>,
    pub taken_ns: u64,
    /// Containers left out past [`DIRECTORY_CAPACITY`].
    pub left_out: usize,
    /// Each network namespace's destination-NAT rules (by cookie), for the
    /// listeners they shadow; a namespace whose rules could not be read
    /// is absent.
    pub nat: HashMap<u64, Vec<super::NatRule>>,
    /// The asking process's own namespace: where a question that names
    /// none (`bindwatch check 80`) is judged.
    pub home_netns: Option<u64>,
}

impl Directory {
    pub fn new(
        mut containers: Vec<Container>,
        statuses: Vec<RuntimeStatus>,
        taken_ns: u64,
    ) -> Self {
        let left_out = containers.len().saturating_sub(DIRECTORY_CAPACITY);
        containers.truncate(DIRECTORY_CAPACITY);
        // A running container wins an address or a short id over one that
        // stopped and kept its record.
        containers.sort_by_key(|c| c.state != "running");
        let mut d = Self {
            statuses,
            taken_ns,
            left_out,
            ..Self::default()
        };
        for (i, c) in containers.iter().enumerate() {
            d.by_id.entry(c.identity.id.clone()).or_insert(i);
            d.by_short
                .entry(c.identity.short_id().to_owned())
                .or_insert(i);
            for a in &c.addresses {
                d.by_addr.entry(*a).or_insert(i);
            }
        }
        d.containers = containers;
        d
    }

    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    /// By full id or a prefix of at least 12 characters.
    pub fn by_id(&self, id: &str) -> Option<&Container> {
        if let Some(&i) = self.by_id.get(id) {
            return Some(&self.containers[i]);
        }
        let short = id.get(..12)?;
        let c = &self.containers[*self.by_short.get(short)?];
        c.identity.id.starts_with(id).then_some(c)
    }

    pub fn by_address(&self, a: IpAddr) -> Option<&Container> {
        self.by_addr.get(&a).map(|&i| &self.containers[i])
    }

    /// The container that publishes `proto` `port` on the host, running
    /// ones first, then one whose start is under way or failed.
    pub fn publishing(&self, proto: Proto, port: u16) -> Option<(&Container, &PortMapping)> {
        self.containers.iter().find_map(|c| {
            c.ports
                .iter()
                .find(|m| m.proto == proto && m.host_port == port)
                .map(|m| (c, m))
        })
    }

    /// The container whose start is binding `proto` `port`: one not yet
    /// running that publishes it, else any that does.
    pub fn starting(&self, proto: Proto, port: u16) -> Option<(&Container, &PortMapping)> {
        self.containers
            .iter()
            .filter(|c| c.state != "running")
            .find_map(|c| {
                c.ports
                    .iter()
                    .find(|m| m.proto == proto && m.host_port == port)
                    .map(|m| (c, m))
            })
            .or_else(|| self.publishing(proto, port))
    }

    /// The rule that sends a listener's traffic elsewhere, if any.
    pub fn shadow(
        &self,
        netns: u64,
        proto: Proto,
        addr: IpAddr,
        port: u16,
    ) -> Option<super::Shadow> {
        super::nat::shadow_of(self.nat.get(&netns)?, self, proto, addr, port)
    }

    /// What the directory says of a runtime that could not be read, in
    /// words; None when it answered.
    pub fn trouble(&self, runtime: &str) -> Option<String> {
        let matching: Vec<&RuntimeStatus> = self
            .statuses
            .iter()
            .filter(|s| runtime_matches(&s.runtime, runtime))
            .collect();
        if matching.is_empty() {
            return Some(format!("no {runtime} runtime was asked"));
        }
        if matching.iter().any(|s| s.error.is_none()) {
            return None;
        }
        Some(
            matching
                .iter()
                .map(|s| {
                    format!(
                        "{} at {}: {}",
                        s.runtime,
                        s.endpoint,
                        s.error.as_deref().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

/// Whether a status's runtime answers for a cgroup's runtime name
/// (`kubepods` and `container` paths may be any CRI runtime).
fn runtime_matches(status: &str, wanted: &str) -> bool {
    status == wanted || matches!(wanted, "kubepods" | "container")
}

/// The parts of the Docker Engine API's container inspect answer
/// (`GET /containers/{id}/json`) bindwatch reads; Podman's compatible API
/// answers the same shape.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerInspect {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: Option<DockerConfig>,
    #[serde(default)]
    state: Option<DockerState>,
    #[serde(default)]
    host_config: Option<DockerHostConfig>,
    #[serde(default)]
    network_settings: Option<DockerNetworkSettings>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerState {
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerHostConfig {
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    port_bindings: Option<HashMap<String, Option<Vec<DockerBinding>>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerBinding {
    #[serde(default)]
    host_ip: String,
    #[serde(default)]
    host_port: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerNetworkSettings {
    #[serde(default)]
    networks: Option<HashMap<String, DockerNetwork>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerNetwork {
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
    #[serde(default, rename = "GlobalIPv6Address")]
    global_ipv6_address: String,
}

/// A container from the Docker Engine API's inspect answer; `runtime` is
/// `docker` or `podman` (whose API is Docker's).
pub fn from_docker_inspect(runtime: &str, json: &str) -> Result<Container, serde_json::Error> {
    let d: DockerInspect = serde_json::from_str(json)?;
    let labels = d
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let mut identity = Identity::from_labels(runtime, &d.id, &labels);
    let name = d.name.trim_start_matches('/');
    if !name.is_empty() {
        identity.name = Some(name.to_owned());
    }
    identity.image = d.config.as_ref().and_then(|c| c.image.clone());
    let mut addresses: Vec<IpAddr> = d
        .network_settings
        .and_then(|n| n.networks)
        .map(|nets| {
            nets.values()
                .flat_map(|n| {
                    [
                        n.ip_address.parse().ok(),
                        n.global_ipv6_address.parse().ok(),
                    ]
                })
                .flatten()
                .collect()
        })
        .unwrap_or_default();
    addresses.sort();
    let container_ip = addresses.iter().copied().find(IpAddr::is_ipv4);
    let mut ports = Vec::new();
    let host = d.host_config.as_ref();
    for (spec, bindings) in host
        .and_then(|h| h.port_bindings.as_ref())
        .into_iter()
        .flatten()
    {
        let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let (Ok(container_port), Some(proto)) = (port.parse::<u16>(), Proto::parse(proto)) else {
            continue;
        };
        for b in bindings.iter().flatten() {
            // An empty host port asks Docker for an ephemeral one, known
            // only once it runs (and then in the list's `Ports`).
            let Ok(host_port) = b.host_port.parse::<u16>() else {
                continue;
            };
            let host_ip = b
                .host_ip
                .parse()
                .ok()
                .filter(|a: &IpAddr| !a.is_unspecified());
            ports.push(PortMapping {
                proto,
                host_ip,
                host_port,
                container_ip,
                container_port,
            });
        }
    }
    ports.sort_by_key(|m| (m.host_port, m.container_port));
    let host_network = host.and_then(|h| h.network_mode.as_deref()) == Some("host");
    Ok(Container {
        identity,
        state: d.state.map(|s| s.status).unwrap_or_default(),
        ports,
        addresses,
        host_network,
    })
}

#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// A container from its OCI bundle's `config.json`, as containerd lays it
/// out (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>/`): the
/// CRI's annotations name the pod; the bundle itself is the runtime's
/// documented state, read without its API.
pub fn from_oci_bundle(
    namespace: &str,
    id: &str,
    config_json: &str,
) -> Result<Container, serde_json::Error> {
    let spec: OciSpec = serde_json::from_str(config_json)?;
    let mut identity = Identity::from_labels("containerd", id, &spec.annotations);
    identity.namespace = Some(namespace.to_owned());
    Ok(Container {
        identity,
        state: "running".to_owned(),
        ..Container::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = include_str!("testdata/docker-inspect-web.json");
    const FAILED: &str = include_str!("testdata/docker-inspect-failed-start.json");

    #[test]
    fn docker_inspect_of_a_running_published_container() {
        let c = from_docker_inspect("docker", WEB).unwrap();
        assert_eq!(c.identity.name.as_deref(), Some("web"));
        assert_eq!(c.identity.image.as_deref(), Some("bw-busybox:test"));
        assert_eq!(c.identity.compose_project.as_deref(), Some("shop"));
        assert_eq!(c.identity.compose_service.as_deref(), Some("front"));
        assert_eq!(c.state, "running");
        assert_eq!(c.addresses, vec!["172.17.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].flag(), "18080:80");
        assert_eq!(
            c.identity.label(),
            "container web (image bw-busybox:test, Compose project shop, service front)"
        );
        assert_eq!(
            c.identity.stop_command(),
            "docker compose -p shop stop front"
        );
    }

    #[test]
    fn a_container_whose_start_failed_keeps_its_declared_ports() {
        let c = from_docker_inspect("docker", FAILED).unwrap();
        assert_eq!(c.identity.name.as_deref(), Some("web3b"));
        assert_eq!(c.state, "created");
        assert!(c.addresses.is_empty(), "{:?}", c.addresses);
        assert_eq!(c.ports[0].host_port, 18082);
        let d = Directory::new(vec![c], Vec::new(), 0);
        let (c, m) = d.publishing(Proto::Tcp, 18082).unwrap();
        assert_eq!(c.identity.name.as_deref(), Some("web3b"));
        assert_eq!(m.container_port, 80);
        assert!(d.publishing(Proto::Udp, 18082).is_none());
    }

    #[test]
    fn podman_api_inspect_of_a_created_container() {
        // Recorded from Podman 4.3's Docker-compatible API (`podman system
        // service`) on Debian 12, for a container created with `-p 18480:80`
        // and Compose labels (its start failed there: runc cannot set
        // rlimits on those machines).
        let c = from_docker_inspect(
            "podman",
            include_str!("testdata/podman-inspect-created.json"),
        )
        .unwrap();
        assert_eq!(c.identity.runtime, "podman");
        assert_eq!(c.identity.name.as_deref(), Some("pweb"));
        assert_eq!(
            c.identity.image.as_deref(),
            Some("localhost/bw-busybox:test")
        );
        assert_eq!(c.identity.compose_service.as_deref(), Some("cache"));
        assert_eq!(c.state, "created");
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].flag(), "18480:80");
        assert_eq!(c.identity.stop_command(), "podman stop pweb");
    }

    #[test]
    fn oci_bundle_annotations_name_the_pod() {
        let json = r#"{"ociVersion":"1.0.2","annotations":{
            "io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.sandbox-name":"node-exporter-x7",
            "io.kubernetes.cri.sandbox-namespace":"monitoring",
            "io.kubernetes.cri.container-name":"node-exporter",
            "io.kubernetes.cri.image-name":"quay.io/prometheus/node-exporter:v1.8"}}"#;
        let c = from_oci_bundle("k8s.io", &"a".repeat(64), json).unwrap();
        assert_eq!(
            c.identity.label(),
            "pod monitoring/node-exporter-x7 (container node-exporter, image quay.io/prometheus/node-exporter:v1.8)"
        );
        assert_eq!(
            c.identity.stop_command(),
            "kubectl -n monitoring delete pod node-exporter-x7"
        );
        // A bundle without the CRI's annotations is still a container.
        let c = from_oci_bundle("default", "job1", r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(c.identity.label(), "container job1");
        assert_eq!(c.identity.stop_command(), "ctr -n default task kill job1");
    }

    #[test]
    fn lookups_by_short_id_and_address_prefer_running_containers() {
        let web = from_docker_inspect("docker", WEB).unwrap();
        let mut old = web.clone();
        old.state = "exited".into();
        old.identity.id = format!("{}ffff", &web.identity.id[..60]);
        old.identity.name = Some("old".into());
        let d = Directory::new(vec![old, web.clone()], Vec::new(), 0);
        assert_eq!(
            d.by_id(web.identity.short_id())
                .unwrap()
                .identity
                .name
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            d.by_id(&web.identity.id).unwrap().identity.name.as_deref(),
            Some("web")
        );
        assert!(
            d.by_id("714e").is_none(),
            "a prefix shorter than 12 is not an id"
        );
        assert_eq!(
            d.by_address("172.17.0.2".parse().unwrap())
                .unwrap()
                .identity
                .name
                .as_deref(),
            Some("web")
        );
    }

    #[test]
    fn a_runtime_that_did_not_answer_is_named() {
        let d = Directory::new(
            Vec::new(),
            vec![RuntimeStatus {
                runtime: "docker".into(),
                endpoint: "unix:///run/docker.sock".into(),
                error: Some("connection refused".into()),
                containers: 0,
            }],
            0,
        );
        assert_eq!(
            d.trouble("docker").as_deref(),
            Some("docker at unix:///run/docker.sock: connection refused")
        );
        assert_eq!(
            d.trouble("podman").as_deref(),
            Some("no podman runtime was asked")
        );
    }
}
