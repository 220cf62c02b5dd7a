//! Publishing access-changed events: written to the outbox in the
//! transaction that makes the change, put on the bus after commit, and
//! removed from the outbox only once the bus accepted them. A publisher
//! claims an entry for a while first, so that two publishers do not both
//! send it; a claim left by one that died expires. Delivery is at least
//! once: consumers deduplicate on the event's `id`.

use super::ports::{Bus, Outbox};
use super::Error;

/// Publishes everything in the outbox; returns how many events were published.
pub async fn publish<O: Outbox, B: Bus>(outbox: &O, bus: &B) -> Result<usize, Error> {
    let mut published = 0;
    for (key, events) in outbox.entries().await? {
        if !outbox.claim(&key, chrono::Utc::now()).await? {
            continue;
        }
        if bus.put(&events).await? {
            outbox.published(&key).await?;
            published += events.len();
        }
    }
    Ok(published)
}
