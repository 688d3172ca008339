//! A timeline record as it is stored and read back.

use serde::{Deserialize, Serialize};

/// A record's detail: JSON kept as text, serialized straight from the
/// event (no intermediate `Value` tree on the event loop).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Detail(Box<serde_json::value::RawValue>);

impl Detail {
    pub fn of<T: Serialize + ?Sized>(v: &T) -> Self {
        serde_json::value::to_raw_value(v)
            .map(Self)
            .unwrap_or_default()
    }

    /// Text read back from the store (already JSON when written).
    pub fn from_text(s: String) -> Self {
        serde_json::value::RawValue::from_string(s)
            .map(Self)
            .unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The detail as a JSON value, for reading.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).unwrap_or_default()
    }
}

impl Default for Detail {
    fn default() -> Self {
        Self(serde_json::value::RawValue::from_string("null".into()).expect("valid JSON"))
    }
}

impl PartialEq for Detail {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// One row of the timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Unix ns.
    pub time_ns: u64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Everything else (the event, the diagnosis, the alert), as JSON.
    #[serde(default)]
    pub detail: Detail,
}
