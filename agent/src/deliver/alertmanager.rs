//! Alertmanager's v2 API: a list of `postableAlert`s posted to
//! `/api/v2/alerts`.

use serde::Serialize;

use bindwatch_core::alerts::Alert;

pub struct Alertmanager {
    /// The daemon's API, as each alert's generatorURL.
    pub generator: String,
    /// How long a firing alert holds before Alertmanager resolves it by
    /// itself, unless re-sent.
    pub hold_ns: u64,
}

/// Alertmanager's `postableAlert`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AmAlert<'a> {
    labels: &'a std::collections::BTreeMap<String, String>,
    annotations: &'a std::collections::BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

impl super::Destination for Alertmanager {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn url(&self, base: &str) -> String {
        format!("{}/api/v2/alerts", base.trim_end_matches('/'))
    }

    fn body(&self, a: &Alert) -> serde_json::Value {
        let ends = a
            .ends_ns
            .unwrap_or_else(|| bindwatch_core::clock::now_unix_ns() + self.hold_ns);
        serde_json::json!([AmAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: bindwatch_core::clock::rfc3339_utc(a.starts_ns),
            ends_at: bindwatch_core::clock::rfc3339_utc(ends),
            generator_url: &self.generator,
        }])
    }
}
