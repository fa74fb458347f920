//! NATS JetStream: stream `SAVDO_EVENTS`, subjects `savdo.<tenant>.<type>`, deduplicated by
//! `Nats-Msg-Id` (the event id) within the stream's duplicate window.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, context::PublishAckFuture, stream};
use bytes::Bytes;
use savdo_storage::OutboxEvent;

pub const STREAM: &str = "SAVDO_EVENTS";

#[derive(Clone)]
pub struct NatsBus {
    js: jetstream::Context,
}

pub fn subject(e: &OutboxEvent) -> String {
    format!("savdo.{}.{}", e.tenant_id, e.kind)
}

/// The JSON of [`crate::envelope`], byte for byte, written straight from the row instead of
/// through a `CloudEvent` (which would clone the event's data).
pub fn envelope_json(e: &OutboxEvent) -> serde_json::Result<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::with_capacity(256);
    let time = e.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        r#"{{"specversion":"1.0","id":"{}","source":"/savdo/tenants/{}","type":"#,
        e.id, e.tenant_id
    );
    serde_json::to_writer(&mut out, &e.kind)?;
    let _ = write!(
        out,
        r#","time":"{time}","datacontenttype":"application/json","tenantid":"{}","data":"#,
        e.tenant_id
    );
    serde_json::to_writer(&mut out, &e.data)?;
    out.push(b'}');
    Ok(out)
}

impl NatsBus {
    pub async fn connect(url: &str) -> anyhow::Result<NatsBus> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .name("savdo")
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: STREAM.to_string(),
            subjects: vec!["savdo.>".to_string()],
            // Re-publishing after a relay crash is deduplicated within this window.
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot create stream {STREAM}: {e}"))?;
        Ok(NatsBus { js })
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publish all, then await all acks: one round trip per batch instead of per event.
    pub async fn publish(&self, events: &[OutboxEvent]) -> anyhow::Result<usize> {
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        for e in events {
            let msg = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(envelope_json(e)?))
                .message_id(e.id.to_string());
            acks.push(self.js.send_publish(subject(e), msg).await?);
        }
        let mut duplicates = 0;
        for a in acks {
            let ack = a.await?;
            if ack.duplicate {
                duplicates += 1;
            }
        }
        Ok(duplicates)
    }

    /// A durable pull consumer named after ours, so several workers share its events.
    pub async fn durable(
        &self,
        name: &str,
    ) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
        let stream = self.js.get_stream(STREAM).await?;
        let durable = name.replace(['.', ' ', '*', '>'], "_");
        let c = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                },
            )
            .await?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_json_is_the_envelope_serialized() {
        let e = OutboxEvent {
            seq: 7,
            id: uuid::Uuid::now_v7(),
            tenant_id: uuid::Uuid::now_v7(),
            kind: "product.\"odd\"\n".into(),
            data: serde_json::json!({"name": "Non \u{1F35E} \"bread\"", "qty": 3, "nested": [1, null, {"a": true}]}),
            time: chrono::Utc::now(),
        };
        assert_eq!(
            envelope_json(&e).unwrap(),
            serde_json::to_vec(&crate::envelope(&e)).unwrap()
        );
    }
}
