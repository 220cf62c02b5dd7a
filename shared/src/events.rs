//! Access-changed events on an EventBridge bus. Events are written to the
//! outbox in the same transaction as the change they describe, published
//! after commit, and removed from the outbox only once the bus accepted them:
//! a crash in between publishes them again on the next run (consumers
//! deduplicate on the event's `id`).

use crate::store::{Store, StoreError};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

/// `source` of every Entitle event on the bus.
pub const SOURCE: &str = "entitle";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("EventBridge refused the events")]
    Bus(#[source] Box<aws_sdk_eventbridge::Error>),
}

#[derive(Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: String) -> Self {
        EventBus { client, bus }
    }

    /// Publishes everything in the outbox; returns how many were published.
    pub async fn publish_outbox(&self, store: &Store) -> Result<usize, PublishError> {
        let pending = store.outbox().await?;
        let mut published = 0;
        for chunk in pending.chunks(10) {
            let entries: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|(_, e)| {
                    let mut entry = PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(e["type"].as_str().unwrap_or("entitle.event"))
                        .detail(e.to_string());
                    // The event's time is when it happened (the sweep's "as of").
                    if let Some(at) = e["due_at"].as_str().and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok()) {
                        entry = entry.time(aws_sdk_eventbridge::primitives::DateTime::from_secs(at.timestamp()));
                    }
                    entry.build()
                })
                .collect();
            let out = self.client.put_events().set_entries(Some(entries)).send().await.map_err(|e| PublishError::Bus(Box::new(e.into())))?;
            // Entries come back in order; only those accepted leave the outbox.
            for ((key, _), result) in chunk.iter().zip(out.entries()) {
                if result.error_code().is_none() {
                    store.outbox_done(key).await?;
                    published += 1;
                }
            }
        }
        Ok(published)
    }
}
