//! A real Docker engine of the test's own: Debian's dockerd (with the
//! containerd it starts) inside a network namespace of the test, its state,
//! sockets and containerd namespace under a temporary directory, and an
//! image imported from a busybox root file system (no registry).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{Netns, Proc, require_root, wait_for};

/// The test image: busybox's `httpd` and `sh`, imported with `docker import`.
pub const IMAGE: &str = "bw-busybox:test";

pub struct Docker {
    pub dir: PathBuf,
    pub ns: Netns,
    daemon: Option<Proc>,
}

impl Docker {
    /// Starts dockerd in a namespace of its own (`--userland-proxy=false`
    /// when `proxy` is false) and imports the test image; fails the test
    /// with dockerd's log when it does not come up.
    pub fn start(tag: &str, proxy: bool) -> Self {
        require_root();
        let dir = std::env::temp_dir().join(format!("bwd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ns = Netns::new(tag);
        let log = dir.join("dockerd.log");
        let mut args = vec![
            format!("--net=/run/netns/{}", ns.name),
            "dockerd".to_owned(),
            format!("--data-root={}", dir.join("data").display()),
            format!("--exec-root={}", dir.join("x").display()),
            format!("--pidfile={}", dir.join("dockerd.pid").display()),
            format!("--host=unix://{}", dir.join("docker.sock").display()),
            format!("--containerd-namespace=bw-{tag}"),
            format!("--containerd-plugins-namespace=bw-{tag}-plugins"),
        ];
        if !proxy {
            args.push("--userland-proxy=false".to_owned());
        }
        // nsenter, not `ip netns exec`: the latter remounts /sys, which
        // hides the cgroup hierarchies dockerd needs.
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let daemon = crate::spawn("nsenter", &args, &log);
        let d = Self {
            dir,
            ns,
            daemon: Some(daemon),
        };
        wait_for("dockerd to answer on its socket", 90, || {
            d.try_docker(&["info", "--format", "{{.ServerVersion}}"])
                .ok()
        });
        d.import_image();
        d
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `DOCKER_HOST` for this engine, as bindwatch and the docker CLI read it.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The engine's pid (to stop or freeze it).
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("dockerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("docker: {e}"))
    }

    /// `docker ARGS`: its standard output, or Err with its standard error.
    pub fn try_docker(&self, args: &[&str]) -> Result<String, String> {
        let out = self.run(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `docker ARGS`, which must succeed.
    pub fn docker(&self, args: &[&str]) -> String {
        self.try_docker(args)
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// The container's inspect document.
    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.docker(&["inspect", name])).unwrap();
        v[0].clone()
    }

    fn import_image(&self) {
        let root = self.dir.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("/bin/busybox (Debian's busybox-static)");
        for l in ["sh", "httpd", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(l)).unwrap();
        }
        let tar = self.dir.join("rootfs.tar");
        crate::run_ok(
            "tar",
            &[
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        self.docker(&["import", tar.to_str().unwrap(), IMAGE]);
    }

    /// Waits until `port` is listened on in the engine's namespace (the
    /// published port's proxy, or dockerd itself).
    pub fn wait_listening(&self, port: u16) {
        let ns = self.ns.name.clone();
        wait_for(&format!("a listener on {port}"), 30, || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "ss",
                    "-Hltn",
                    &format!("sport = :{port}"),
                ])
                .output()
                .ok()?;
            (!out.stdout.is_empty()).then_some(())
        });
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .env("DOCKER_HOST", self.host())
            .args(["rm", "-f"])
            .args(
                self.try_docker(&["ps", "-aq"])
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .output();
        if let Some(mut p) = self.daemon.take() {
            // SIGTERM: dockerd unmounts its layers and stops its containerd.
            // Gone already is fine: the point is that it is gone.
            let _ = crate::signal(p.0.id(), crate::Signal::TERM);
            let _ = p.0.wait();
        }
        let _ = umount_below(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts whatever dockerd left mounted below `dir` (a killed engine
/// leaves its overlay and shm mounts).
fn umount_below(dir: &Path) -> std::io::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let d = dir.to_string_lossy();
    let mut below: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(d.as_ref()))
        .collect();
    below.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in below {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
    Ok(())
}
