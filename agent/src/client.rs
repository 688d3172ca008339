//! Asking a running daemon over its API (`who`, `check`): where it listens, its bearer
//! token and its certificate come from its configuration file when this
//! user can read them, so a protected daemon answers too. What could not
//! be read, and why a daemon did not answer, is said, never swallowed: the
//! caller then answers from the kernel and says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::error::chain;
use crate::secret::read_secret;
use bindwatch_core::holders::{BindRequest, CheckAnswer, WhoQuery};
use bindwatch_core::who::WhoAnswer;

/// The daemon's configuration when none is named and this file exists.
pub const DEFAULT_CONFIG: &str = "/etc/bindwatch/bindwatch.toml";

/// How long a daemon has to answer before the kernel is asked instead.
const TIMEOUT: Duration = Duration::from_millis(2000);

/// Why the daemon did not answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// Nothing listens there: no daemon runs (the usual standalone case).
    NotRunning,
    /// Something answered, or failed in a way worth telling: a refusal
    /// (401 without the token), a certificate not trusted, a timeout.
    Failed(String),
}

/// A client for one daemon.
pub struct DaemonClient {
    pub base: String,
    client: Option<reqwest::Client>,
    token: Option<String>,
    /// What of the configuration could not be used, for the message when
    /// the daemon refuses.
    pub notes: Vec<String>,
}

/// `0.0.0.0:7685` is reached at `127.0.0.1:7685`, `[::]` at `[::1]`.
fn reachable(listen: std::net::SocketAddr) -> std::net::SocketAddr {
    let mut a = listen;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

impl DaemonClient {
    /// `daemon`: a URL given on the command line (wins over the
    /// configuration's address). `config`: the daemon's configuration
    /// file; None reads [`DEFAULT_CONFIG`] when it exists. Err only when a
    /// file named on the command line cannot be read or parsed.
    pub fn new(daemon: Option<&str>, config: Option<&Path>) -> Result<Self, String> {
        let mut notes = Vec::new();
        let path: Option<PathBuf> = match config {
            Some(p) => Some(p.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let cfg = match &path {
            // The text alone: the alert targets' files are the daemon's
            // business, and may be unreadable to this user.
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => match Config::parse(&text, &p.display().to_string()) {
                    Ok(c) => Some(c),
                    Err(e) if config.is_some() => return Err(e.to_string()),
                    Err(e) => {
                        notes.push(e.to_string());
                        None
                    }
                },
                Err(e) if config.is_some() => return Err(format!("{}: {e}", p.display())),
                Err(e) => {
                    notes.push(format!("{}: {e}", p.display()));
                    None
                }
            },
            None => None,
        };
        let http = cfg.map(|c| c.http).unwrap_or_default();
        let scheme = if http.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let base = daemon.map_or_else(
            || format!("{scheme}://{}", reachable(http.listen)),
            |d| d.trim_end_matches('/').to_owned(),
        );
        let token = http
            .token_file
            .as_deref()
            .and_then(|f| match read_secret(f) {
                Ok(t) => Some(t),
                Err(e) => {
                    notes.push(format!("the daemon's token file cannot be used: {e}"));
                    None
                }
            });
        // The daemon's own certificate is trusted as it stands (a
        // self-signed one), beside the system roots.
        let cert =
            http.tls_cert
                .as_deref()
                .filter(|c| match crate::tls_client::read_pem_certs(c) {
                    Ok(_) => true,
                    Err(e) => {
                        notes.push(format!("the daemon's certificate cannot be used: {e}"));
                        false
                    }
                });
        let plain = base
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        let client = match if plain {
            crate::tls_client::plain_http_client(TIMEOUT)
        } else {
            crate::tls_client::http_client(cert, TIMEOUT)
        } {
            Ok(c) => Some(c),
            Err(e) => {
                notes.push(e);
                None
            }
        };
        Ok(Self {
            base,
            client,
            token,
            notes,
        })
    }

    /// GET `path` with `params`: the body of a 2xx answer.
    pub async fn get(&self, path: &str, params: &[(&str, String)]) -> Result<String, NoAnswer> {
        let Some(client) = &self.client else {
            return Err(NoAnswer::Failed(self.notes.join("; ")));
        };
        let mut req = client.get(format!("{}{path}", self.base)).query(params);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() && refused(&e) => {
                tracing::debug!(base = %self.base, error = %chain(&e), "no daemon answers");
                return Err(NoAnswer::NotRunning);
            }
            Err(e) => return Err(NoAnswer::Failed(chain(&e))),
        };
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body);
        }
        let mut why = format!("{status}");
        let first = body.lines().next().unwrap_or_default().trim();
        if !first.is_empty() {
            why.push_str(&format!(": {first}"));
        }
        if status == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            why.push_str(" (it needs the bearer token of its http.token_file");
            why.push_str(&match self.notes.is_empty() {
                true => "; name its configuration with --config)".to_owned(),
                false => format!("; {})", self.notes.join("; ")),
            });
        }
        Err(NoAnswer::Failed(why))
    }

    /// `who`: the daemon's `/api/v1/holders` answer.
    pub async fn who(&self, query: &WhoQuery) -> Result<WhoAnswer, NoAnswer> {
        let mut params = vec![("port", query.port.to_string())];
        if let Some(p) = query.proto {
            params.push(("proto", p.to_string()));
        }
        if let Some(a) = query.addr {
            params.push(("addr", a.to_string()));
        }
        let body = self.get("/api/v1/holders", &params).await?;
        serde_json::from_str(&body)
            .map_err(|e| NoAnswer::Failed(format!("its answer is not a holders document: {e}")))
    }

    /// `check`: the daemon's `/api/v1/check` answer, and the JSON as it
    /// sent it (with the whole diagnosis).
    pub async fn check(&self, req: &BindRequest) -> Result<(CheckAnswer, String), NoAnswer> {
        let mut params = vec![
            ("port", req.port.to_string()),
            ("addr", req.addr.to_string()),
            ("proto", req.proto.to_string()),
            ("reuseaddr", req.reuseaddr.to_string()),
            ("reuseport", req.reuseport.to_string()),
            ("v6only", req.v6only.to_string()),
            ("uid", req.uid.to_string()),
        ];
        if let Some(ns) = req.netns {
            params.push(("netns", ns.to_string()));
        }
        let body = self.get("/api/v1/check", &params).await?;
        let answer = serde_json::from_str(&body)
            .map_err(|e| NoAnswer::Failed(format!("its answer is not a check document: {e}")))?;
        Ok((answer, body))
    }

    /// The line to print when the daemon did not answer and the kernel is
    /// asked instead; None when no daemon runs.
    pub fn fallback_note(&self, why: &NoAnswer) -> Option<String> {
        match why {
            NoAnswer::NotRunning => None,
            NoAnswer::Failed(w) => Some(format!(
                "the daemon at {} did not answer: {w}; answering from the kernel's tables instead",
                self.base
            )),
        }
    }
}

/// Connection refused: nothing listens, so no daemon runs.
fn refused(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        src = s.source();
    }
    false
}
