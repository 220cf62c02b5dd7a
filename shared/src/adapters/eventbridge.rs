//! The EventBridge bus for access-changed events.

use crate::app::ports::{Bus, PortError};
use crate::core::events::SOURCE;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

#[derive(Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: String) -> Self {
        EventBus { client, bus }
    }
}

impl Bus for EventBus {
    async fn put(&self, events: &[Value]) -> Result<bool, PortError> {
        let mut all = true;
        for chunk in events.chunks(10) {
            let entries: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|e| {
                    let mut entry = PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(e["type"].as_str().unwrap_or("entitle.event"))
                        .detail(e.to_string());
                    // The event's time is when it happened (for the sweep, its "as of").
                    if let Some(at) = e["due_at"].as_str().or(e["at"].as_str()).and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok()) {
                        entry = entry.time(aws_sdk_eventbridge::primitives::DateTime::from_secs(at.timestamp()));
                    }
                    entry.build()
                })
                .collect();
            let out = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| PortError::unavailable("PutEvents", aws_sdk_eventbridge::Error::from(e)))?;
            all &= out.failed_entry_count() == 0;
        }
        Ok(all)
    }
}
