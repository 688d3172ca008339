//! The alerts' settings: delivery targets and timing, and the watched
//! ports with their expected owners. `config` composes them.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::event::Proto;

fn default_resend() -> u64 {
    60
}
fn default_queue() -> usize {
    1024
}
fn default_retries() -> u32 {
    3
}
fn default_conflict_window() -> u64 {
    300
}
fn default_timeout_ms() -> u64 {
    2000
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Seconds between re-sends of a firing alert.
    #[serde(default = "default_resend")]
    pub resend_every_secs: u64,
    /// Alert notifications waiting for delivery; past it they are dropped
    /// (counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Attempts per notification beyond the first, with doubling backoff
    /// (capped at 10 s a wait, jittered; at most 20 retries).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Timeout of one delivery attempt, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// A bind-conflict alert resolves this many seconds after the last
    /// conflict, or, when the failing process was the expected owner (by
    /// command name), as soon as the owner holds the port.
    #[serde(default = "default_conflict_window")]
    pub conflict_resolve_after_secs: u64,
    /// Alertmanager base URLs (the v2 API is used).
    #[serde(default)]
    pub alertmanager: Vec<Target>,
    /// Plain JSON webhooks.
    #[serde(default)]
    pub webhook: Vec<Target>,
}

/// Where alerts go: a URL (`"https://am:9093"`), or a table with the CA
/// that signed the target's certificate and a bearer token
/// (`{ url = "...", ca_file = "/etc/bindwatch/am-ca.pem",
/// bearer_token_file = "/etc/bindwatch/am-token" }`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    /// PEM certificates trusted for this target beside the system roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// A file holding a token sent as `Authorization: Bearer TOKEN`.
    pub bearer_token_file: Option<std::path::PathBuf>,
}

impl Target {
    pub fn url(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ca_file: None,
            bearer_token_file: None,
        }
    }
}

/// The table form, with its own unknown-key errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    url: String,
    #[serde(default)]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    bearer_token_file: Option<std::path::PathBuf>,
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Target;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a URL, or a table with url, ca_file and bearer_token_file")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Target, E> {
                Ok(Target::url(s))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<Target, A::Error> {
                let t = TargetTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(Target {
                    url: t.url,
                    ca_file: t.ca_file,
                    bearer_token_file: t.bearer_token_file,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            resend_every_secs: default_resend(),
            queue: default_queue(),
            retries: default_retries(),
            timeout_ms: default_timeout_ms(),
            conflict_resolve_after_secs: default_conflict_window(),
            alertmanager: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

/// A port whose holder is watched.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// A name for alerts and metrics; defaults to `PORT/PROTO`.
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default = "default_proto")]
    pub proto: WatchProto,
    /// Only holders that would block a bind of this address count.
    #[serde(default)]
    pub address: Option<IpAddr>,
    /// The network namespace: a path such as /run/netns/web or
    /// /proc/PID/ns/net; the agent's own when absent.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Who should hold it: any of these that is given must match one owner.
    #[serde(default)]
    pub owner: OwnerConfig,
    /// Seconds nobody may hold the port before "port lost" fires.
    #[serde(default)]
    pub grace_secs: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WatchProto {
    Tcp,
    Udp,
}

fn default_proto() -> WatchProto {
    WatchProto::Tcp
}

impl WatchProto {
    pub fn proto(self) -> Proto {
        match self {
            Self::Tcp => Proto::Tcp,
            Self::Udp => Proto::Udp,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnerConfig {
    /// systemd unit, e.g. nginx.service.
    #[serde(default)]
    pub unit: Option<String>,
    /// Command name (comm), e.g. nginx.
    #[serde(default)]
    pub command: Option<String>,
    /// Executable path, e.g. /usr/sbin/nginx.
    #[serde(default)]
    pub exe: Option<PathBuf>,
}

impl OwnerConfig {
    pub fn is_empty(&self) -> bool {
        self.unit.is_none() && self.command.is_none() && self.exe.is_none()
    }

    /// `nginx.service or nginx or /usr/sbin/nginx`.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(u) = &self.unit {
            v.push(u.clone());
        }
        if let Some(c) = &self.command {
            v.push(c.clone());
        }
        if let Some(e) = &self.exe {
            v.push(e.display().to_string());
        }
        if v.is_empty() {
            "anyone".to_owned()
        } else {
            v.join(" or ")
        }
    }
}

impl WatchConfig {
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                self.port,
                match self.proto {
                    WatchProto::Tcp => "tcp",
                    WatchProto::Udp => "udp",
                }
            )
        })
    }
}
