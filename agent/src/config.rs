//! The daemon's configuration: serde structs with explicit defaults. With no
//! file, [`Config::default`] is the embedded configuration `bindwatch run`
//! starts with. Unknown keys and bad values are errors that name the key and
//! the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::containers::ContainersConfig;
pub use crate::error::ConfigError;
pub use crate::metrics::MetricsConfig;
pub use crate::serve::HttpConfig;
pub use bindwatch_core::alerts::{AlertsConfig, OwnerConfig, WatchConfig, WatchProto};

pub use crate::platform::files::DEFAULT_STATE_DIR;
pub use crate::secret::read_secret;

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_ring() -> u32 {
    8 << 20
}
fn default_reconcile() -> u64 {
    30
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub http: HttpConfig,
    /// Where bindwatch keeps its state (the timeline).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub probes: ProbesConfig,
    #[serde(default)]
    pub holders: HoldersConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub timeline: TimelineConfig,
    #[serde(default)]
    pub export: ExportConfig,
    #[serde(default)]
    pub redact: RedactConfig,
    /// The container runtimes read for the owners behind holders.
    #[serde(default)]
    pub containers: ContainersConfig,
    /// Ports whose holder is watched.
    #[serde(default)]
    pub watch: Vec<WatchConfig>,
}

/// Secrets masked in command lines wherever bindwatch shows them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// Apply the built-in patterns (`--password=`, `token=`, `*_SECRET=`,
    /// `--api-key VALUE`, `scheme://user:PASSWORD@`).
    #[serde(default = "yes")]
    pub builtin: bool,
    /// More regular expressions; the group named `secret` is masked, or the
    /// whole match when there is no such group.
    #[serde(default)]
    pub patterns: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            patterns: Vec::new(),
        }
    }
}

impl RedactConfig {
    pub fn redactor(&self) -> Result<crate::redact::Redactor, crate::redact::PatternError> {
        crate::redact::Redactor::new(self.builtin, &self.patterns)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            state_dir: default_state_dir(),
            probes: ProbesConfig::default(),
            holders: HoldersConfig::default(),
            metrics: MetricsConfig::default(),
            alerts: AlertsConfig::default(),
            timeline: TimelineConfig::default(),
            export: ExportConfig::default(),
            redact: RedactConfig::default(),
            containers: ContainersConfig::default(),
            watch: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbesConfig {
    /// Kernel ring buffer size: a power of two, at least 4096.
    #[serde(default = "default_ring")]
    pub ring_buffer_bytes: u32,
    /// Which hooks carry binds and listens: auto (the first the kernel
    /// loads of fexit, tracepoint and tracepoint_entry), tracepoint (exit
    /// tracepoints, else tracepoint_entry), tracepoint_entry, fexit.
    #[serde(default)]
    pub mode: crate::source::ProbeMode,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: default_ring(),
            mode: crate::source::ProbeMode::Auto,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HoldersConfig {
    /// Seconds between reconciliations with the kernel (0: never).
    #[serde(default = "default_reconcile")]
    pub reconcile_every_secs: u64,
}

impl Default for HoldersConfig {
    fn default() -> Self {
        Self {
            reconcile_every_secs: default_reconcile(),
        }
    }
}

fn default_max_age_days() -> u64 {
    30
}
fn default_max_bytes() -> u64 {
    256 << 20
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimelineConfig {
    /// Records older than this many days are pruned.
    #[serde(default = "default_max_age_days")]
    pub max_age_days: u64,
    /// The oldest records are pruned while the database holds more.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        Self {
            max_age_days: default_max_age_days(),
            max_bytes: default_max_bytes(),
        }
    }
}

impl TimelineConfig {
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            max_age: std::time::Duration::from_secs(self.max_age_days * 86_400),
            max_bytes: self.max_bytes,
        }
    }
}

fn default_export_bytes() -> u64 {
    100 << 20
}
fn default_export_keep() -> u32 {
    5
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Every event as JSON lines to this file (`-`: standard output); off
    /// when absent.
    #[serde(default)]
    pub events_jsonl: Option<String>,
    /// The file rotates when it would grow past this size.
    #[serde(default = "default_export_bytes")]
    pub max_bytes: u64,
    /// Rotated files kept (PATH.1 .. PATH.keep).
    #[serde(default = "default_export_keep")]
    pub keep: u32,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            events_jsonl: None,
            max_bytes: default_export_bytes(),
            keep: default_export_keep(),
        }
    }
}

/// A privileged daemon must not take orders from a file anyone can write.
fn refuse_world_writable(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    match crate::platform::files::writable_by_anyone(&meta, path) {
        Some(message) => Err(ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        }),
        None => Ok(()),
    }
}

/// The most retries of one notification (`alerts.retries`).
pub const MAX_ALERT_RETRIES: u32 = 20;

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// One step of a key's path: a key, or the index in an array (of tables).
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// The line of the key (or array element) at `path`, from the TOML
/// parser's spans: a search of the text would find the same word in a
/// comment or under another table.
fn line_of_path(text: &str, path: &[Seg]) -> Option<usize> {
    use toml_edit::TableLike;
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table: Option<&dyn TableLike> = Some(doc.as_table());
    let mut item: Option<&toml_edit::Item> = None;
    let mut span = None;
    for seg in path {
        match *seg {
            Seg::Key(k) => {
                let (key, next) = table?.get_key_value(k)?;
                span = key.span();
                table = next.as_table_like();
                item = Some(next);
            }
            Seg::Index(i) => {
                let it = item?;
                if let Some(tables) = it.as_array_of_tables() {
                    let t = tables.get(i)?;
                    span = t.span();
                    table = Some(t);
                } else {
                    let v = it.as_array()?.get(i)?;
                    span = v.span();
                    table = v.as_inline_table().map(|t| t as &dyn TableLike);
                }
                item = None;
            }
        }
    }
    span.map(|s| line_of(text, s.start))
}

impl Config {
    /// Parses and checks a configuration's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        };
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!("line {}: ", line_of(text, s.start)))
                .unwrap_or_default();
            invalid(format!("{at}{}", e.message()))
        })?;
        let line_of_key = |path: &[Seg]| {
            line_of_path(text, path)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default()
        };
        use Seg::{Index, Key};
        let r = cfg.probes.ring_buffer_bytes;
        if r < 4096 || !r.is_power_of_two() {
            return Err(invalid(format!(
                "{}probes.ring_buffer_bytes = {r}: must be a power of two of at least 4096",
                line_of_key(&[Key("probes"), Key("ring_buffer_bytes")])
            )));
        }
        if cfg.alerts.queue == 0 {
            return Err(invalid(format!(
                "{}alerts.queue must be at least 1",
                line_of_key(&[Key("alerts"), Key("queue")])
            )));
        }
        // One notification's retries hold the delivery queue: bounded.
        if cfg.alerts.retries > MAX_ALERT_RETRIES {
            return Err(invalid(format!(
                "{}alerts.retries = {}: at most {MAX_ALERT_RETRIES} (each wait is capped at 10 s)",
                line_of_key(&[Key("alerts"), Key("retries")]),
                cfg.alerts.retries
            )));
        }
        for (key, urls) in [
            ("alertmanager", &cfg.alerts.alertmanager),
            ("webhook", &cfg.alerts.webhook),
        ] {
            for (i, url) in urls.iter().map(|t| &t.url).enumerate() {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(format!(
                        "{}alerts.{key}: {url:?} is not an http:// or https:// URL",
                        line_of_key(&[Key("alerts"), Key(key), Index(i)])
                    )));
                }
            }
        }
        if cfg.http.tls_cert.is_some() != cfg.http.tls_key.is_some() {
            return Err(invalid(format!(
                "{}http.tls_cert and http.tls_key go together: set both or neither",
                line_of_key(&[
                    Key("http"),
                    Key(if cfg.http.tls_cert.is_some() {
                        "tls_cert"
                    } else {
                        "tls_key"
                    })
                ])
            )));
        }
        // The user's patterns only: the built-in ones are known to compile.
        if let Err(e) = crate::redact::Redactor::new(false, &cfg.redact.patterns) {
            let i = cfg.redact.patterns.iter().position(|p| *p == e.pattern);
            let at = i.map_or_else(
                || line_of_key(&[Key("redact"), Key("patterns")]),
                |i| line_of_key(&[Key("redact"), Key("patterns"), Index(i)]),
            );
            return Err(invalid(format!("{at}{e}")));
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in cfg.watch.iter().enumerate() {
            if w.port == 0 {
                return Err(invalid(format!(
                    "{}watch.port must be 1-65535",
                    line_of_key(&[Key("watch"), Index(i), Key("port")])
                )));
            }
            if !names.insert(w.display_name()) {
                return Err(invalid(format!(
                    "{}watch {:?} is listed twice; give each a distinct name",
                    line_of_key(&[Key("watch"), Index(i)]),
                    w.display_name()
                )));
            }
        }
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        refuse_world_writable(path)?;
        let origin = path.display().to_string();
        let cfg = Self::parse(&text, &origin)?;
        cfg.check_target_files(&text, &origin)?;
        Ok(cfg)
    }

    /// Each alert target's CA file holds certificates and its token file
    /// a token: a target that could never be reached is refused now, with
    /// its key and line, not found out at the first alert.
    fn check_target_files(&self, text: &str, origin: &str) -> Result<(), ConfigError> {
        use Seg::{Index, Key};
        for (key, targets) in [
            ("alertmanager", &self.alerts.alertmanager),
            ("webhook", &self.alerts.webhook),
        ] {
            for (i, t) in targets.iter().enumerate() {
                let fail = |field: &str, what: String| {
                    let at = line_of_path(text, &[Key("alerts"), Key(key), Index(i), Key(field)])
                        .map(|l| format!("line {l}: "))
                        .unwrap_or_default();
                    ConfigError::Invalid {
                        path: origin.to_owned(),
                        message: format!("{at}alerts.{key}[{i}].{field}: {what}"),
                    }
                };
                if let Some(ca) = &t.ca_file {
                    crate::tls_client::read_pem_certs(ca).map_err(|e| fail("ca_file", e))?;
                    if !t.url.starts_with("https://") {
                        return Err(fail(
                            "ca_file",
                            format!("{} is not an https:// URL: a CA file has no use", t.url),
                        ));
                    }
                }
                if let Some(tok) = &t.bearer_token_file {
                    read_secret(tok).map_err(|e| fail("bearer_token_file", e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_embedded_default() {
        assert_eq!(Config::parse("", "x").unwrap(), Config::default());
        let d = Config::default();
        assert_eq!(d.http.listen.to_string(), "127.0.0.1:7685");
        assert_eq!(d.state_dir, PathBuf::from("/var/lib/bindwatch"));
    }

    #[test]
    fn a_world_writable_config_is_refused_and_a_readable_token_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bw-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("world-writable") && e.contains("chmod o-w"),
            "{e}"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Config::load(&f).is_ok());
        let t = dir.join("token");
        std::fs::write(&t, "s3cret\n").unwrap();
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            read_secret(&t)
                .unwrap_err()
                .to_string()
                .contains("readable by everyone")
        );
        std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&t).unwrap(), "s3cret");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tls_cert_without_key_is_refused() {
        let e = Config::parse("[http]\ntls_cert = \"/c.pem\"\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
    }

    #[test]
    fn a_bad_redact_pattern_names_itself_and_its_line() {
        let e = Config::parse("[redact]\npatterns = ['(open']\n", "b.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2") && msg.contains("(open"), "{msg}");
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../deploy/bindwatch.toml");
        let c = Config::parse(text, "deploy/bindwatch.toml").unwrap();
        assert_eq!(c.watch[0].port, 80);
        assert_eq!(c.watch[0].owner.unit.as_deref(), Some("nginx.service"));
        assert_eq!(c.alerts.alertmanager.len(), 1);
        assert_eq!(c.containers.docker_host, "unix:///var/run/docker.sock");
        assert_eq!(c.containers.timeout_ms, 1000);
    }

    #[test]
    fn a_bad_containers_key_names_itself() {
        let e = Config::parse("[containers]\ndocker_sock = 'x'\n", "c.toml").unwrap_err();
        assert!(e.to_string().contains("docker_sock"), "{e}");
    }

    #[test]
    fn alert_targets_are_urls_or_tables_with_a_ca_and_a_token() {
        let c = Config::parse(
            "[alerts]\nalertmanager = [\"http://am:9093\", { url = \"https://am2:9093\", \
             ca_file = \"/etc/bindwatch/ca.pem\" }]\n\n[[alerts.webhook]]\nurl = \"https://h/x\"\n\
             bearer_token_file = \"/etc/bindwatch/hook-token\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.alerts.alertmanager[0],
            bindwatch_core::alerts::Target::url("http://am:9093")
        );
        assert_eq!(
            c.alerts.alertmanager[1].ca_file.as_deref(),
            Some(Path::new("/etc/bindwatch/ca.pem"))
        );
        assert_eq!(
            c.alerts.webhook[0].bearer_token_file.as_deref(),
            Some(Path::new("/etc/bindwatch/hook-token"))
        );
        for (text, want) in [
            (
                "[alerts]\nalertmanager = [{ url = \"https://a\", ca_fle = \"x\" }]\n",
                "ca_fle",
            ),
            ("[alerts]\nwebhook = [{ ca_file = \"x\" }]\n", "url"),
            ("[alerts]\nwebhook = [7]\n", "a URL, or a table"),
            (
                "[alerts]\n\n[[alerts.webhook]]\nurl = \"smtp://mail\"\n",
                "line 3: alerts.webhook: \"smtp://mail\" is not an http:// or https:// URL",
            ),
        ] {
            let e = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("line "), "{text:?}: {e}");
        }
    }

    /// A target that could never be reached is refused at load, naming
    /// its key and line: an unreadable or empty CA file, a CA file on a
    /// plain http:// URL, a token file others can read.
    #[test]
    fn unusable_alert_target_files_are_refused_at_load_with_key_and_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("bw-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "t\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = dir.join("c.toml");
        for (text, want) in [
            (
                "[alerts]\nalertmanager = [\n  { url = \"https://am\", ca_file = \"/nonexistent/ca.pem\" }]\n"
                    .to_owned(),
                "line 3: alerts.alertmanager[0].ca_file: /nonexistent/ca.pem: I/O error: No such file".to_owned(),
            ),
            (
                format!("[[alerts.webhook]]\nurl = \"https://h\"\nca_file = {empty:?}\n"),
                format!("line 3: alerts.webhook[0].ca_file: {}: holds no PEM certificate", empty.display()),
            ),
            (
                format!("[[alerts.webhook]]\nurl = \"https://h\"\n\nbearer_token_file = {token:?}\n"),
                "line 4: alerts.webhook[0].bearer_token_file: ".to_owned(),
            ),
        ] {
            std::fs::write(&cfg, &text).unwrap();
            let e = Config::load(&cfg).unwrap_err().to_string();
            assert!(e.contains(&want), "{text:?}: {e}");
        }
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            &cfg,
            format!("[[alerts.webhook]]\nurl = \"https://h\"\nbearer_token_file = {token:?}\n"),
        )
        .unwrap();
        assert!(Config::load(&cfg).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The line comes from the parser's spans: the same words in a comment
    /// or under another table do not mislead it.
    #[test]
    fn error_lines_are_the_keys_not_the_first_match_of_their_text() {
        for (text, want) in [
            (
                "# ring_buffer_bytes: the ring's size\n[probes]\nring_buffer_bytes = 5000\n",
                "line 3: probes.ring_buffer_bytes",
            ),
            (
                "# port = 0 is refused\n[[watch]]\nport = 80\n[[watch]]\nport = 0\n",
                "line 5: watch.port",
            ),
            (
                "# was \"ftp://x\"\n[alerts]\nwebhook = [\"http://ok/\",\n  \"ftp://x\"]\n",
                "line 4: alerts.webhook",
            ),
            (
                "[[watch]]\nport = 80\n\n[[watch]]\nport = 80\n",
                "line 4: watch \"80/tcp\" is listed twice",
            ),
            (
                "[redact]\n# '(open' would not compile\npatterns = ['a',\n '(open']\n",
                "line 4: ",
            ),
            (
                "probes.ring_buffer_bytes = 3\n",
                "line 1: probes.ring_buffer_bytes",
            ),
            (
                "[alerts]\n\nretries = 100\n",
                "line 3: alerts.retries = 100: at most 20",
            ),
        ] {
            let e = Config::parse(text, "b.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    /// The DaemonSet's configuration parses, and it is protected: the pod
    /// listens on the node's addresses, so token and TLS are set, and
    /// the paths are where its Secrets are mounted.
    #[test]
    fn the_daemonset_config_parses_and_is_protected() {
        let yaml = include_str!("../../deploy/daemonset.yaml");
        let start = yaml
            .find("bindwatch.toml: |\n")
            .expect("the ConfigMap's file")
            + 18;
        let text: String = yaml[start..]
            .lines()
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
            .collect();
        let c = Config::parse(&text, "deploy/daemonset.yaml").unwrap();
        assert!(c.http.listen.ip().is_unspecified(), "the node's port");
        let under = |p: &Option<PathBuf>, dir: &str| {
            let p = p.as_deref().expect("set").to_str().unwrap();
            assert!(p.starts_with(dir), "{p}");
            assert!(
                yaml.contains(&format!("mountPath: {dir}")),
                "{dir} is mounted"
            );
        };
        under(&c.http.token_file, "/etc/bindwatch/token");
        under(&c.http.tls_cert, "/etc/bindwatch/tls");
        under(&c.http.tls_key, "/etc/bindwatch/tls");
        assert!(
            !yaml.contains("prometheus.io/scrape"),
            "no plain-HTTP scrape"
        );
        assert!(yaml.contains("kind: PodMonitor") && yaml.contains("scheme: https"));
    }

    #[test]
    fn errors_name_the_key_and_line() {
        for (text, want) in [
            ("[http]\nlisten = \"127.0.0.1:1\"\ncolour = 1\n", "line 3"),
            ("[http]\nlisten = \"nope\"\n", "line 2"),
            ("[[watch]]\nport = 70000\n", "line 2"),
            ("[[watch]]\nport = 80\nprto = \"tcp\"\n", "prto"),
            ("[[watch]]\nport = 80\nproto = \"sctp\"\n", "sctp"),
            ("[probes]\nring_buffer_bytes = 5000\n", "ring_buffer_bytes"),
            ("[probes]\nmode = \"kprobe\"\n", "kprobe"),
            ("[alerts]\nwebhook = [\"ftp://x\"]\n", "ftp://x"),
            ("[[watch]]\nport = 80\n[[watch]]\nport = 80\n", "twice"),
            (
                "[[watch]]\nport = 80\n[watch.owner]\nbinary = \"x\"\n",
                "binary",
            ),
        ] {
            let e = Config::parse(text, "bindwatch.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("bindwatch.toml: "), "{e}");
        }
        let e = Config::parse("[http]\nlisten = \"127.0.0.1:1\"\ncolour = 1\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }
}
