//! The event envelope: CloudEvents 1.0 JSON with the `tenantid` extension.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: Uuid,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    pub datacontenttype: String,
    pub tenantid: Uuid,
    pub data: Value,
}

impl CloudEvent {
    pub fn new(id: Uuid, tenant: Uuid, kind: &str, time: DateTime<Utc>, data: Value) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id,
            source: format!("/savdo/tenants/{tenant}"),
            kind: kind.to_string(),
            time,
            datacontenttype: "application/json".into(),
            tenantid: tenant,
            data,
        }
    }
}

mod rfc3339 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields() {
        let t = Uuid::now_v7();
        let e = CloudEvent::new(
            Uuid::now_v7(),
            t,
            "receipt.created",
            Utc::now(),
            serde_json::json!({"a": 1}),
        );
        let v = serde_json::to_value(&e).unwrap();
        for k in [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "tenantid",
            "data",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["specversion"], "1.0");
        let back: CloudEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back.id, e.id);
    }
}
