//! Sends alert notifications from a task of its own: the event loop only
//! enqueues (bounded; a full queue drops and counts), retries back off, and
//! every outcome is counted. Each kind of destination is one file that
//! says where a notification goes and what its body is ([`Destination`]);
//! the queue, the clients, the tokens, the retries and the counting are
//! here, once.

mod alertmanager;
mod webhook;

use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::Metrics;
use bindwatch_core::alerts::{Alert, AlertsConfig, Target};

/// One kind of alert destination: a configured target's URL becomes the
/// URL posted to, and a notification its JSON body.
pub trait Destination: Send + Sync {
    /// The `destination` label of `bindwatch_alert_deliveries_total`.
    fn kind(&self) -> &'static str;
    /// Where a notification for the target at `base` is posted.
    fn url(&self, base: &str) -> String;
    /// The body for one notification.
    fn body(&self, a: &Alert) -> serde_json::Value;
}

/// Every kind of destination, with the targets the configuration gives it.
fn destinations<'a>(
    cfg: &'a AlertsConfig,
    generator: &str,
) -> Vec<(Box<dyn Destination>, &'a [Target])> {
    // Alertmanager resolves an alert by itself at endsAt unless it is
    // re-sent: four resend periods, as Prometheus does.
    let hold_ns = cfg.resend_every_secs.max(1) * 4 * 1_000_000_000;
    vec![
        (
            Box::new(alertmanager::Alertmanager {
                generator: generator.to_owned(),
                hold_ns,
            }),
            &cfg.alertmanager[..],
        ),
        (Box::new(webhook::Webhook), &cfg.webhook[..]),
    ]
}

/// The enqueueing side, owned by the event loop.
pub struct Deliverer {
    tx: mpsc::Sender<Alert>,
    dropped: prometheus::IntCounter,
    task: tokio::task::JoinHandle<()>,
}

impl Deliverer {
    /// Starts the delivery task. `generator` goes into each alert's
    /// generatorURL (the daemon's API).
    pub fn start(cfg: &AlertsConfig, metrics: &Metrics, generator: String) -> Self {
        let (tx, rx) = mpsc::channel(cfg.queue);
        let task = tokio::spawn(run(
            rx,
            cfg.clone(),
            metrics.delivery.alert_deliveries.clone(),
            generator,
        ));
        Self {
            tx,
            dropped: metrics.delivery.alert_dropped.clone(),
            task,
        }
    }

    /// Closes the queue and waits, at most `within`, until the task has
    /// sent what was queued; false when it had not finished by then.
    pub async fn finish(self, within: Duration) -> bool {
        drop(self.tx);
        tokio::time::timeout(within, self.task).await.is_ok()
    }

    /// Never waits: a full queue drops the notification (counted).
    /// Queues a notification; Err gives it back when the queue is full
    /// (counted as dropped), for the caller to offer again later.
    pub fn send(&self, a: Alert) -> Result<(), Alert> {
        self.tx.try_send(a).map_err(|e| {
            self.dropped.inc();
            tracing::debug!("alert queue full; notification dropped (counted)");
            match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            }
        })
    }
}

/// The first wait before a retry, and the most any wait grows to.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The wait before retry `attempt` (0 for the first): doubling from
/// 100 ms, capped at 10 s, then drawn from its upper half (`jitter` in
/// 0..1) so that agents on many hosts that lost the same Alertmanager do
/// not retry in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF);
    full / 2 + full.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// One target as the delivery task reaches it: its own client (the
/// system roots plus its CA file) and its token.
struct Endpoint {
    url: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Endpoint {
    fn new(t: &Target, timeout: Duration) -> Result<Self, String> {
        let client = crate::tls_client::http_client(t.ca_file.as_deref(), timeout)?;
        let token = match &t.bearer_token_file {
            Some(p) => Some(crate::secret::read_secret(p).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Self {
            url: t.url.clone(),
            client,
            token,
        })
    }
}

async fn post(to: &Endpoint, url: &str, body: &serde_json::Value, retries: u32) -> bool {
    for attempt in 0..=retries {
        let mut req = to.client.post(url).json(body);
        if let Some(t) = &to.token {
            req = req.bearer_auth(t);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => tracing::warn!(url, status = %r.status(), attempt, "alert delivery refused"),
            Err(e) => {
                tracing::warn!(url, error = %crate::error::chain(&e), attempt, "alert delivery failed")
            }
        }
        if attempt < retries {
            tokio::time::sleep(backoff(attempt, fastrand::f64())).await;
        }
    }
    false
}

async fn run(
    mut rx: mpsc::Receiver<Alert>,
    cfg: AlertsConfig,
    outcomes: prometheus::IntCounterVec,
    generator: String,
) {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    // A target whose CA or token cannot be read now (the configuration
    // checked them at load) fails each notification, counted.
    let endpoints = |targets: &[Target]| -> Vec<Option<Endpoint>> {
        targets
            .iter()
            .map(|t| match Endpoint::new(t, timeout) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::error!(url = %t.url, error = %e, "alert target unusable; its alerts fail");
                    None
                }
            })
            .collect()
    };
    let kinds: Vec<_> = destinations(&cfg, &generator)
        .into_iter()
        .map(|(d, targets)| (d, endpoints(targets)))
        .collect();
    while let Some(a) = rx.recv().await {
        let mut delivered = 0;
        let mut failed = 0;
        for (kind, targets) in &kinds {
            let body = kind.body(&a);
            for to in targets {
                let ok = match to {
                    Some(to) => post(to, &kind.url(&to.url), &body, cfg.retries).await,
                    None => false,
                };
                if ok {
                    delivered += 1
                } else {
                    failed += 1
                }
                outcomes
                    .with_label_values(&[kind.kind(), if ok { "ok" } else { "failed" }])
                    .inc();
            }
        }
        tracing::info!(
            alert = %a.labels.get("alertname").map(String::as_str).unwrap_or(""),
            watch = %a.labels.get("watch").map(String::as_str).unwrap_or(""),
            firing = a.firing(),
            summary = %a.annotations.get("summary").map(String::as_str).unwrap_or(""),
            delivered,
            failed,
            "alert notification"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_is_jittered_within_its_upper_half() {
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(backoff(0, 0.0)), 50);
        assert_eq!(ms(backoff(0, 1.0)), 100);
        assert_eq!(ms(backoff(3, 1.0)), 800);
        assert_eq!(backoff(7, 1.0), MAX_BACKOFF, "12.8 s is capped");
        for attempt in [7, 31, 32, 64, u32::MAX] {
            let d = backoff(attempt, 0.5);
            assert!(d >= MAX_BACKOFF / 2 && d <= MAX_BACKOFF, "{attempt}: {d:?}");
        }
        // Two draws of the same attempt differ: hosts do not retry in step.
        let draws: std::collections::HashSet<_> =
            (0..20).map(|_| backoff(4, fastrand::f64())).collect();
        assert!(draws.len() > 1);
    }
}
