//! A plain JSON webhook: one alert with its status, posted to the URL as
//! configured.

use serde::Serialize;

use bindwatch_core::alerts::Alert;

pub struct Webhook;

/// The webhook's body: one alert with its status.
#[derive(Serialize)]
pub struct WebhookBody<'a> {
    pub version: &'static str,
    pub status: &'static str,
    pub alert: WebhookAlert<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert<'a> {
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub annotations: &'a std::collections::BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

impl super::Destination for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn url(&self, base: &str) -> String {
        base.to_owned()
    }

    fn body(&self, a: &Alert) -> serde_json::Value {
        serde_json::json!(WebhookBody {
            version: "1",
            status: if a.firing() { "firing" } else { "resolved" },
            alert: WebhookAlert {
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: bindwatch_core::clock::rfc3339_utc(a.starts_ns),
                ends_at: a.ends_ns.map(bindwatch_core::clock::rfc3339_utc),
            },
        })
    }
}
