//! The host's container runtimes, read through their public interfaces:
//! the Docker Engine API on its unix socket (Podman's compatible API on
//! its own), and containerd's OCI bundles on disk. Each answer is bounded
//! by a timeout; a runtime that is slow or gone leaves its containers out
//! of the directory with the reason, and nothing waits on it but the
//! reader's own task.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::containers::{ContainersConfig, SharedDirectory};
use bindwatch_core::owner::container::{
    self, Container, DIRECTORY_CAPACITY, Directory, RuntimeStatus,
};

/// Largest answer read from a runtime (a container's inspect document is
/// a few KiB; a list of thousands, a few MiB).
const MAX_ANSWER: usize = 16 << 20;

/// Sends `GET path` over a unix socket: the response, whose body is read
/// as it comes, and the connection's task (aborted once done with).
async fn send(sock: &Path, path: &str) -> Result<(Response<Incoming>, Connection), String> {
    let stream = UnixStream::connect(sock).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, conn)),
        Err(e) => {
            conn.abort();
            Err(e.to_string())
        }
    }
}

type Connection = tokio::task::JoinHandle<Result<(), hyper::Error>>;

/// One HTTP/1.1 exchange over a unix socket; the body in full.
async fn get(sock: &Path, path: &str) -> Result<Bytes, String> {
    let (resp, conn) = send(sock, path).await?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| e.to_string());
    conn.abort();
    let body = body?.to_bytes();
    if !status.is_success() {
        return Err(format!(
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok(body)
}

#[derive(serde::Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// Every container a Docker-API runtime knows, inspected one by one (the
/// list lacks the declared port bindings of a container that did not
/// start).
async fn docker_api(runtime: &str, sock: &Path) -> Result<Vec<Container>, String> {
    let list = get(sock, "/containers/json?all=1").await?;
    let listed: Vec<Listed> =
        serde_json::from_slice(&list).map_err(|e| format!("container list: {e}"))?;
    let mut out = Vec::with_capacity(listed.len().min(DIRECTORY_CAPACITY));
    for l in listed.into_iter().take(DIRECTORY_CAPACITY) {
        let body = match get(sock, &format!("/containers/{}/json", l.id)).await {
            Ok(b) => b,
            // Removed between the list and its inspection.
            Err(e) if e.contains("404") => continue,
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&body);
        out.push(
            container::from_docker_inspect(runtime, &text)
                .map_err(|e| format!("container {}: {e}", l.id))?,
        );
    }
    Ok(out)
}

/// containerd's running tasks, from their bundles
/// (`<state>/io.containerd.runtime.v2.task/<namespace>/<id>/config.json`).
/// Docker's own namespace (`moby`) is left to the Docker API, which names
/// its containers.
fn containerd_bundles(state: &Path) -> Result<Vec<Container>, String> {
    let tasks = state.join("io.containerd.runtime.v2.task");
    let namespaces = std::fs::read_dir(&tasks).map_err(|e| format!("{}: {e}", tasks.display()))?;
    let mut out = Vec::new();
    for ns in namespaces.flatten() {
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        if ns_name == "moby" {
            continue;
        }
        let Ok(ids) = std::fs::read_dir(ns.path()) else {
            continue;
        };
        for id in ids.flatten() {
            if out.len() >= DIRECTORY_CAPACITY {
                return Ok(out);
            }
            let id_name = id.file_name().to_string_lossy().into_owned();
            let Ok(json) = std::fs::read_to_string(id.path().join("config.json")) else {
                continue;
            };
            match container::from_oci_bundle(&ns_name, &id_name, &json) {
                Ok(c) => out.push(c),
                Err(e) => {
                    tracing::debug!(bundle = %id.path().display(), error = %e, "unreadable OCI bundle")
                }
            }
        }
    }
    Ok(out)
}

fn status(runtime: &str, endpoint: String, r: &Result<Vec<Container>, String>) -> RuntimeStatus {
    RuntimeStatus {
        runtime: runtime.to_owned(),
        endpoint,
        error: r.as_ref().err().cloned(),
        containers: r.as_ref().map_or(0, Vec::len),
    }
}

/// Reads every runtime once, each within the configured timeout.
pub async fn read(cfg: &ContainersConfig) -> Directory {
    let timeout = cfg.timeout();
    let bounded = |r: Result<Result<Vec<Container>, String>, _>| {
        r.unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    };
    let mut all = Vec::new();
    let mut statuses = Vec::new();
    let docker = match cfg.docker_socket() {
        Ok(sock) => bounded(tokio::time::timeout(timeout, docker_api("docker", &sock)).await),
        Err(e) => Err(e),
    };
    statuses.push(status("docker", cfg.docker_host.clone(), &docker));
    let podman = if cfg.podman_socket.exists() {
        bounded(tokio::time::timeout(timeout, docker_api("podman", &cfg.podman_socket)).await)
    } else {
        Err("no socket (Podman's API service is not running)".to_owned())
    };
    statuses.push(status(
        "podman",
        format!("unix://{}", cfg.podman_socket.display()),
        &podman,
    ));
    let state = cfg.containerd_state.clone();
    let containerd = bounded(
        tokio::time::timeout(
            timeout,
            tokio::task::spawn_blocking(move || containerd_bundles(&state)),
        )
        .await
        .map(|j| j.unwrap_or_else(|e| Err(e.to_string()))),
    );
    statuses.push(status(
        "containerd",
        cfg.containerd_state.display().to_string(),
        &containerd,
    ));
    for r in [docker, podman] {
        all.extend(r.unwrap_or_default());
    }
    // Docker's own tasks are containerd bundles too, named only by the
    // Docker API: a bundle whose id the API gave is left out.
    let known: std::collections::HashSet<String> =
        all.iter().map(|c| c.identity.id.clone()).collect();
    all.extend(
        containerd
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !known.contains(&c.identity.id)),
    );
    Directory::new(all, statuses, bindwatch_core::clock::now_unix_ns())
}

/// Reads the runtimes once from synchronous code (the CLI's verbs).
pub fn read_now(cfg: &ContainersConfig) -> Directory {
    if !cfg.enabled {
        return Directory::default();
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(read(cfg)),
        Err(e) => Directory::new(
            Vec::new(),
            vec![RuntimeStatus {
                runtime: "docker".into(),
                endpoint: cfg.docker_host.clone(),
                error: Some(format!("no runtime to ask it from: {e}")),
                containers: 0,
            }],
            0,
        ),
    }
}

/// What the event stream asks of the watcher.
enum Ask {
    /// Inspect this Docker container again (created, started, renamed,
    /// stopped): a container being created is known within milliseconds,
    /// before its proxy binds.
    Container(String),
    /// Gone: drop it.
    Destroyed(String),
    /// Read everything again (the stream reconnected; a network changed).
    All,
}

/// Keeps `shared` current: a full read at start and every `refresh_secs`,
/// and one container inspected at each of Docker's container events.
pub fn spawn_watch(cfg: ContainersConfig, shared: SharedDirectory) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !cfg.enabled {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Ask>(256);
        let sock = cfg.docker_socket().ok();
        if let Some(sock) = sock.clone() {
            tokio::spawn(follow_docker_events(sock, tx));
        }
        let every = Duration::from_secs(cfg.refresh_secs.max(1));
        let mut dir = read(&cfg).await;
        shared.set(dir.clone());
        let mut next_full = tokio::time::Instant::now() + every;
        loop {
            let ask = tokio::select! {
                _ = tokio::time::sleep_until(next_full) => Ask::All,
                a = rx.recv() => a.unwrap_or(Ask::All),
            };
            match (ask, &sock) {
                (Ask::Container(id), Some(sock)) => {
                    let got = tokio::time::timeout(
                        cfg.timeout(),
                        get(sock, &format!("/containers/{id}/json")),
                    )
                    .await;
                    let c = match got {
                        Ok(Ok(body)) => container::from_docker_inspect(
                            "docker",
                            &String::from_utf8_lossy(&body),
                        )
                        .ok(),
                        _ => None,
                    };
                    dir = with_container(&dir, &id, c);
                }
                (Ask::Destroyed(id), _) => dir = with_container(&dir, &id, None),
                _ => {
                    dir = read(&cfg).await;
                    next_full = tokio::time::Instant::now() + every;
                }
            }
            shared.set(dir.clone());
        }
    })
}

/// `dir` with Docker container `id` replaced by `c` (or removed).
fn with_container(dir: &Directory, id: &str, c: Option<Container>) -> Directory {
    let mut all: Vec<Container> = dir
        .containers()
        .iter()
        .filter(|x| x.identity.id != id)
        .cloned()
        .collect();
    all.extend(c);
    Directory::new(
        all,
        dir.statuses.clone(),
        bindwatch_core::clock::now_unix_ns(),
    )
}

/// Docker's event stream: container events name the container to read
/// again; anything else asks for a full read. Reconnects while dockerd is
/// away.
async fn follow_docker_events(sock: std::path::PathBuf, tx: tokio::sync::mpsc::Sender<Ask>) {
    let path = "/events?filters=%7B%22type%22%3A%5B%22container%22%2C%22network%22%5D%7D";
    loop {
        if let Err(e) = stream_events(&sock, path, &tx).await {
            tracing::debug!(socket = %sock.display(), error = %e, "Docker event stream ended");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(serde::Deserialize)]
struct DockerEvent {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(default)]
    id: Option<String>,
}

/// What one line of Docker's event stream asks for.
fn ask_of(line: &[u8]) -> Option<Ask> {
    let e: DockerEvent = serde_json::from_slice(line).ok()?;
    match (e.kind.as_str(), e.id) {
        ("container", Some(id)) if e.action == "destroy" => Some(Ask::Destroyed(id)),
        // exec_start and the like change nothing bindwatch shows.
        ("container", Some(id)) if !e.action.starts_with("exec_") => Some(Ask::Container(id)),
        ("container", _) => None,
        _ => Some(Ask::All),
    }
}

async fn stream_events(
    sock: &Path,
    path: &str,
    tx: &tokio::sync::mpsc::Sender<Ask>,
) -> Result<(), String> {
    let (resp, conn) = send(sock, path).await?;
    let mut body = resp.into_body();
    // Events may have been missed while the stream was away.
    let _ = tx.try_send(Ask::All);
    let mut line: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for &b in data.iter() {
            if b != b'\n' {
                if line.len() < MAX_ANSWER {
                    line.push(b);
                }
                continue;
            }
            if let Some(ask) = ask_of(&line)
                && tx.send(ask).await.is_err()
            {
                conn.abort();
                return Ok(());
            }
            line.clear();
        }
    }
    conn.abort();
    Ok(())
}
