//! What bindwatch says about a process that holds a socket: its command,
//! user, and the systemd unit or container it runs in.

use serde::{Deserialize, Serialize};

/// A process, as read once from /proc and cached by pid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    /// Arguments joined by spaces; empty when unreadable (kernel threads,
    /// exited processes).
    pub cmdline: String,
    /// The executable's path (`/proc/PID/exe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Effective uid.
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The innermost systemd service or scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `runtime:id12`, when the cgroup path names a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// When the process started (Unix ns): a lower bound for how long it
    /// has held a socket bound before bindwatch watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ns: Option<u64>,
    /// Whether cmdline, user, unit and container were read (false: only what
    /// the kernel event carried).
    #[serde(skip)]
    pub complete: bool,
}

impl ProcessInfo {
    /// What the probe event carried, before /proc is read.
    pub fn from_event(pid: u32, comm: &str, uid: u32) -> Self {
        Self {
            pid,
            comm: comm.to_owned(),
            uid,
            ..Self::default()
        }
    }

    /// What the owner resolvers read of it.
    pub fn candidate(&self) -> crate::owner::Process<'_> {
        crate::owner::Process {
            comm: &self.comm,
            cmdline: &self.cmdline,
            container: self.container.as_deref(),
        }
    }

    /// `nginx (pid 812, www-data, nginx.service)`.
    pub fn label(&self) -> String {
        let mut parts = vec![format!("pid {}", self.pid)];
        parts.push(
            self.user
                .clone()
                .unwrap_or_else(|| format!("uid {}", self.uid)),
        );
        if let Some(c) = &self.container {
            parts.push(format!("container {c}"));
        } else if let Some(u) = &self.unit {
            parts.push(u.clone());
        }
        let name = if self.comm.is_empty() {
            "an unreadable process"
        } else {
            &self.comm
        };
        format!("{name} ({})", parts.join(", "))
    }
}

/// The systemd unit and container id a cgroup v2 path names.
///
/// `/system.slice/nginx.service` → unit `nginx.service`;
/// `/system.slice/docker-<64 hex>.scope` → container `docker:<12 hex>`;
/// kubepods and podman, containerd and CRI-O paths likewise.
pub fn units_from_cgroup(path: &str) -> (Option<String>, Option<String>) {
    let mut unit = None;
    let mut container = None;
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in comps.iter().enumerate() {
        if c.ends_with(".service") || c.ends_with(".scope") {
            unit = Some((*c).to_owned());
        }
        let stem = c
            .strip_suffix(".scope")
            .or_else(|| c.strip_suffix(".service"))
            .unwrap_or(c);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = stem.strip_prefix(prefix)
                && is_container_id(id)
            {
                container = Some(format!("{runtime}:{}", &id[..12]));
            }
        }
        // cgroupfs driver: /docker/<id>, /kubepods/.../<id>, /lxc/<name>.
        if i > 0 && is_container_id(c) {
            let runtime = match comps[0] {
                "docker" => "docker",
                // containerd's own cgroups (`ctr run`, the CRI with the
                // cgroupfs driver): /<namespace>/<id>.
                "k8s.io" | "default" => "containerd",
                "kubepods" | "kubepods.slice" => "kubepods",
                _ => "container",
            };
            container = Some(format!("{runtime}:{}", &c[..12]));
        }
        if i == 1 && comps[0] == "lxc" {
            container = Some(format!("lxc:{c}"));
        }
    }
    (unit, container)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cgroup v2 path from the text of /proc/PID/cgroup; on a hybrid layout
/// without processes in v2, the name=systemd v1 path.
pub fn cgroup_path(proc_cgroup: &str) -> Option<&str> {
    let mut systemd = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() && path != "/" {
            return Some(path);
        }
        if ctrl == "name=systemd" {
            systemd = Some(path);
        }
    }
    systemd
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4b2c1d9e8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c";

    #[test]
    fn systemd_service() {
        assert_eq!(
            units_from_cgroup("/system.slice/nginx.service"),
            (Some("nginx.service".into()), None)
        );
        assert_eq!(
            units_from_cgroup(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/web.service"
            ),
            (Some("web.service".into()), None)
        );
    }

    #[test]
    fn containers() {
        let (unit, c) = units_from_cgroup(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(c.as_deref(), Some("docker:3f4b2c1d9e8a"));
        assert_eq!(unit, Some(format!("docker-{ID}.scope")));
        let (_, c) = units_from_cgroup(&format!("/docker/{ID}"));
        assert_eq!(c.as_deref(), Some("docker:3f4b2c1d9e8a"));
        let (_, c) = units_from_cgroup(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(c.as_deref(), Some("containerd:3f4b2c1d9e8a"));
        let (_, c) = units_from_cgroup(&format!("/k8s.io/{ID}"));
        assert_eq!(c.as_deref(), Some("containerd:3f4b2c1d9e8a"));
        let (_, c) = units_from_cgroup(&format!("/kubepods/besteffort/pod1/{ID}"));
        assert_eq!(c.as_deref(), Some("kubepods:3f4b2c1d9e8a"));
        let (_, c) = units_from_cgroup(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(c.as_deref(), Some("podman:3f4b2c1d9e8a"));
        assert_eq!(units_from_cgroup("/"), (None, None));
        assert_eq!(units_from_cgroup("/docker/not-an-id").1, None);
    }

    #[test]
    fn v2_path_preferred_then_systemd_v1() {
        let hybrid = "12:cpu:/\n1:name=systemd:/system.slice/ssh.service\n0::/\n";
        assert_eq!(cgroup_path(hybrid), Some("/system.slice/ssh.service"));
        let unified = "0::/system.slice/nginx.service\n";
        assert_eq!(cgroup_path(unified), Some("/system.slice/nginx.service"));
        assert_eq!(cgroup_path("garbage"), None);
    }

    #[test]
    fn label_prefers_container_over_unit() {
        let p = ProcessInfo {
            pid: 5,
            comm: "nginx".into(),
            uid: 33,
            user: Some("www-data".into()),
            unit: Some("nginx.service".into()),
            ..ProcessInfo::default()
        };
        assert_eq!(p.label(), "nginx (pid 5, www-data, nginx.service)");
        let p = ProcessInfo {
            container: Some("docker:3f4b2c1d9e8a".into()),
            ..p
        };
        assert_eq!(
            p.label(),
            "nginx (pid 5, www-data, container docker:3f4b2c1d9e8a)"
        );
    }
}
