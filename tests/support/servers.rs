//! Real servers as holders and receivers (nginx, socat, Alertmanager, a
//! webhook), the certificates a TLS test needs, and plain HTTP clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::*;

/// A server process (nginx, socat) running inside a namespace, killed on drop.
pub struct Server {
    pub child: Child,
    pub pid: u32,
    pub dir: Option<std::path::PathBuf>,
}

impl Server {
    /// `ip netns exec NS ARGS...`: `ip` execs the command after entering the
    /// namespace, so the child's pid is the server's.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            // Held open: socat's `-` end would end the server at EOF.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let pid = child.id();
        Self {
            child,
            pid,
            dir: None,
        }
    }

    /// nginx with one worker, in the foreground, listening on `listen`
    /// (nginx `listen` arguments). Waits until it listens on `port`.
    pub fn nginx(ns: &Netns, listen: &[&str], port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "bindwatch-nginx-{}-{}",
            std::process::id(),
            NS_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let listens: String = listen.iter().map(|l| format!("listen {l};\n")).collect();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             server {{ {listens} return 200 ok; }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let conf = dir.join("nginx.conf");
        let prefix = format!("{}/", dir.display());
        let mut s = Self::spawn(ns, &["nginx", "-p", &prefix, "-c", conf.to_str().unwrap()]);
        s.dir = Some(dir);
        s.wait_listening(ns, port);
        // The master listens before it forks its worker: a tracer started
        // in between would find the master alone in its snapshot while
        // `family` (read later) names both. Return once the worker is there.
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.family().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "nginx {} forked no worker within 10 s",
                s.pid
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Another nginx with this one's configuration (a restart), started
    /// without waiting for it to listen: it may fail to.
    pub fn nginx_again(&self, ns: &Netns) -> Self {
        let dir = self
            .dir
            .as_ref()
            .expect("an nginx started by Server::nginx");
        let prefix = format!("{}/", dir.display());
        let conf = format!("{}/nginx.conf", dir.display());
        Self::spawn(ns, &["nginx", "-p", &prefix, "-c", &conf])
    }

    /// Waits until some socket in `ns` listens on (or, for UDP, holds) `port`.
    pub fn wait_listening(&mut self, ns: &Netns, port: u16) {
        self.wait_ss(ns, port, "-tu")
    }

    /// Waits until a UDP socket in `ns` holds `port`.
    pub fn wait_udp(&mut self, ns: &Netns, port: u16) {
        self.wait_ss(ns, port, "-u")
    }

    fn wait_ss(&mut self, ns: &Netns, port: u16, which: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.name, "ss", "-H", "-ln", which])
                .arg(format!("sport = :{port}"))
                .output()
                .unwrap();
            if !out.stdout.is_empty() {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                panic!("server exited ({st}) before holding port {port}: {err}");
            }
            assert!(Instant::now() < deadline, "nothing holds port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of the server and its children (nginx workers).
    pub fn family(&self) -> Vec<u32> {
        let mut v = vec![self.pid];
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", self.pid, self.pid))
                .unwrap_or_default();
        v.extend(
            kids.split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
        v.sort_unstable();
        v
    }

    /// SIGTERM (nginx: fast shutdown, which ends its workers), then waits.
    pub fn stop(&mut self) {
        // Gone already is fine: the point is that it is gone.
        let _ = crate::signal(self.pid, crate::Signal::TERM);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Children first (nginx workers outlive a killed master, and would
        // keep the namespace alive).
        for pid in self.family().into_iter().rev() {
            // Gone already is fine: the point is that it is gone.
            let _ = crate::signal(pid, crate::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// GET `url` with curl; Err says what failed (connection, HTTP status).
pub fn curl(url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sSf", "-m", "5", url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "GET {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A real Alertmanager on `listen` that keeps what it gets (a null
/// receiver, no grouping delay), its files in `dir`; `web_config` serves
/// it over HTTPS (`--web.config.file`).
pub fn alertmanager(dir: &Path, listen: &str, web_config: Option<&Path>) -> Proc {
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: 'null'\n  group_wait: 0s\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let mut args = vec![
        format!("--config.file={}", dir.join("am.yml").display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address={listen}"),
        "--cluster.listen-address=".to_owned(),
    ];
    if let Some(w) = web_config {
        args.push(format!("--web.config.file={}", w.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn("prometheus-alertmanager", &args, &dir.join("am.log"))
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl in
/// `dir`: (ca.pem, server.pem, server.key).
pub fn ca_and_server_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |f: &str| dir.join(f);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (ca, ca_key, cert, key, csr, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("server.pem"),
        p("server.key"),
        p("server.csr"),
        p("server.ext"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_s, ca_key_s) = (s(&ca), s(&ca_key));
    args.extend([
        "-days",
        "1",
        "-subj",
        "/CN=bindwatch test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        &ca_key_s,
        "-out",
        &ca_s,
    ]);
    run_ok("openssl", &args);
    let (key_s, csr_s, cert_s, ext_s) = (s(&key), s(&csr), s(&cert), s(&ext));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=127.0.0.1", "-keyout", &key_s, "-out", &csr_s]);
    run_ok("openssl", &args);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n").unwrap();
    run_ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr_s,
            "-CA",
            &ca_s,
            "-CAkey",
            &ca_key_s,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext_s,
            "-out",
            &cert_s,
        ],
    );
    (ca, cert, key)
}

/// GET `path` from the plain-HTTP server at `addr` with a request of our
/// own (no process per request: some tests ask thousands of times).
/// Returns the status and body; Err when the exchange fails.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no header end in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status in {head:?}"))?;
    // The API answers with a length or closes; chunked bodies are not
    // decoded (none of its answers are chunked).
    Ok((status, body.to_owned()))
}

/// A webhook endpoint on loopback that answers at once and keeps every
/// request body it gets, each after its `authorization:` header line when
/// it has one.
pub fn webhook_receiver(port: u16) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = got.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("authorization:") {
                            sink.lock().unwrap().push_str(&line);
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&body));
                    if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    got
}
