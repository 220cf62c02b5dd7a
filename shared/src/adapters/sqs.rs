//! The reconcile queue (an SQS FIFO queue, one message group per tenant),
//! its dead-letter queue as an operator sees it, and the billing queue
//! (billing reconciliation runs and their parts).

use crate::app::ports::{PortError, Queue, SyncRuns};
use crate::core::reconcile::ReconcileRequest;
use crate::core::sources::stripe::SyncRequest;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName};
use aws_sdk_sqs::Client;
use serde::Serialize;

/// SQS deduplication ids allow 128 characters of `[A-Za-z0-9!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~]`.
pub fn dedup_id(parts: &[&str]) -> String {
    let raw = parts.join(":");
    let clean: String = raw.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    if clean.len() <= 128 {
        clean
    } else {
        crate::core::audit::hash_of(&clean)
    }
}

#[derive(Clone)]
pub struct ReconcileQueue {
    client: Client,
    url: String,
}

impl ReconcileQueue {
    pub fn new(client: Client, url: String) -> Self {
        ReconcileQueue { client, url }
    }
}

impl Queue for ReconcileQueue {
    /// Queues a reconcile; `dedup` makes redelivery of the same cause within
    /// SQS's five-minute window a no-op (and a reconcile is idempotent anyway).
    async fn send(&self, request: &ReconcileRequest, dedup: &str) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(request).expect("serialisable"))
            .message_group_id(request.tenant_id.as_str())
            .message_deduplication_id(dedup_id(&[dedup]))
            .send()
            .await
            .map_err(|e| PortError::unavailable("SendMessage", aws_sdk_sqs::Error::from(e)))?;
        Ok(())
    }
}

/// The billing queue: a standard queue of [`SyncRequest`]s (a run asked
/// for, or the rest of one that stopped before its deadline).
#[derive(Clone)]
pub struct BillingQueue {
    client: Client,
    url: String,
}

impl BillingQueue {
    pub fn new(client: Client, url: String) -> Self {
        BillingQueue { client, url }
    }
}

impl SyncRuns for BillingQueue {
    async fn start(&self, request: &SyncRequest) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(request).expect("serialisable"))
            .send()
            .await
            .map_err(|e| PortError::unavailable("SendMessage", aws_sdk_sqs::Error::from(e)))?;
        Ok(())
    }
}

/// The work queue of rollouts and previews: a standard queue of
/// [`Work`](crate::core::versions::Work) messages (a batch of tenants
/// each), which only provision reads.
#[derive(Clone)]
pub struct WorkQueueSqs {
    client: Client,
    url: String,
}

impl WorkQueueSqs {
    pub fn new(client: Client, url: String) -> Self {
        WorkQueueSqs { client, url }
    }
}

impl crate::app::ports::WorkQueue for WorkQueueSqs {
    async fn send_work(&self, work: &crate::core::versions::Work) -> Result<(), PortError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(work).expect("serialisable"))
            .send()
            .await
            .map_err(|e| PortError::unavailable("SendMessage", aws_sdk_sqs::Error::from(e)))?;
        Ok(())
    }
}

/// Most messages one listing or redrive looks at.
pub const MAX_DEAD_LETTERS: usize = 1000;

/// A reconcile message parked on the dead-letter queue, with the cause
/// provision gave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// The tenant (the message group); `None` for a message that names none.
    pub tenant_id: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// How often provision received it before parking it.
    pub receive_count: Option<u32>,
    /// When it was parked (ISO 8601).
    pub parked_at: Option<String>,
    /// The message as it was queued (a reconcile request, or what a poison
    /// message carried).
    pub body: serde_json::Value,
    #[serde(skip)]
    receipt: String,
    #[serde(skip)]
    raw_body: String,
    #[serde(skip)]
    group: String,
}

/// The reconcile dead-letter queue (FIFO) and the queue its messages go
/// back to.
#[derive(Clone)]
pub struct DeadLetterQueue {
    client: Client,
    url: String,
    queue_url: String,
}

fn attribute(m: &Message, name: &str) -> Option<String> {
    m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).map(str::to_string)
}

impl DeadLetterQueue {
    pub fn new(client: Client, url: String, queue_url: String) -> Self {
        DeadLetterQueue { client, url, queue_url }
    }

    fn unavailable(what: &'static str) -> impl FnOnce(aws_sdk_sqs::Error) -> PortError {
        move |e| PortError::unavailable(what, e)
    }

    /// Every message on the queue (up to [`MAX_DEAD_LETTERS`]), each held
    /// out of sight meanwhile: a FIFO queue shows a group's next message only
    /// once the one before it is out of sight.
    async fn receive_all(&self) -> Result<Vec<DeadLetter>, PortError> {
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut empty = 0;
        while out.len() < MAX_DEAD_LETTERS && empty < 2 {
            let got = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                // A short poll samples some servers only: an empty answer is
                // confirmed with a one-second long poll.
                .wait_time_seconds(empty)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .map_err(|e| Self::unavailable("ReceiveMessage")(e.into()))?;
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                empty += 1;
                continue;
            }
            for m in messages {
                let raw_body = m.body().unwrap_or_default().to_string();
                let system = m.attributes();
                let group = system.and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned().unwrap_or_default();
                let parked_at = system
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|t| t.parse::<i64>().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let tenant_id = serde_json::from_str::<ReconcileRequest>(&raw_body).ok().map(|r| r.tenant_id.to_string());
                out.push(DeadLetter {
                    message_id: m.message_id().unwrap_or_default().to_string(),
                    tenant_id,
                    error_code: attribute(&m, "error_code"),
                    error_message: attribute(&m, "error_message"),
                    receive_count: attribute(&m, "receive_count").and_then(|c| c.parse().ok()),
                    parked_at,
                    body: serde_json::from_str(&raw_body).unwrap_or(serde_json::Value::String(raw_body.clone())),
                    receipt: m.receipt_handle().unwrap_or_default().to_string(),
                    raw_body,
                    group,
                });
            }
        }
        Ok(out)
    }

    /// Puts the messages back in sight, as they were.
    async fn release(&self, letters: &[DeadLetter]) -> Result<(), PortError> {
        for chunk in letters.chunks(10) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, l)| ChangeMessageVisibilityBatchRequestEntry::builder().id(i.to_string()).receipt_handle(&l.receipt).visibility_timeout(0).build().expect("id and receipt set"))
                .collect();
            self.client.change_message_visibility_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.map_err(|e| Self::unavailable("ChangeMessageVisibilityBatch")(e.into()))?;
        }
        Ok(())
    }

    /// The messages on the queue, oldest first, left on it.
    pub async fn list(&self) -> Result<Vec<DeadLetter>, PortError> {
        let mut letters = self.receive_all().await?;
        self.release(&letters).await?;
        letters.sort_by(|a, b| a.parked_at.cmp(&b.parked_at));
        Ok(letters)
    }

    /// Moves the messages `chosen` by id (all when `None`) back to the
    /// reconcile queue, in their group, then off the dead-letter queue; the
    /// others stay. `moved` is called for each message once it is back on
    /// the queue and before it leaves the dead-letter queue (to audit it):
    /// a crash in between leaves it on both, and a redrive within five
    /// minutes is deduplicated by SQS (its deduplication id is the
    /// message's). Returns what moved, and the ids asked for and not found.
    pub async fn redrive<F, Fut>(&self, chosen: Option<&[String]>, mut moved: F) -> Result<(Vec<DeadLetter>, Vec<String>), PortError>
    where
        F: FnMut(DeadLetter) -> Fut,
        Fut: std::future::Future<Output = Result<(), PortError>>,
    {
        let letters = self.receive_all().await?;
        let (take, keep): (Vec<DeadLetter>, Vec<DeadLetter>) = letters.into_iter().partition(|l| chosen.is_none_or(|ids| ids.contains(&l.message_id)));
        self.release(&keep).await?;
        let missing: Vec<String> = chosen.unwrap_or_default().iter().filter(|id| !take.iter().any(|l| &l.message_id == *id)).cloned().collect();
        let mut done = Vec::new();
        for letter in take {
            let group = if letter.group.is_empty() { "redriven".to_string() } else { letter.group.clone() };
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&letter.raw_body)
                .message_group_id(group)
                .message_deduplication_id(dedup_id(&["redrive", &letter.message_id]))
                .send()
                .await
                .map_err(|e| Self::unavailable("SendMessage")(e.into()))?;
            moved(letter.clone()).await?;
            self.client.delete_message().queue_url(&self.url).receipt_handle(&letter.receipt).send().await.map_err(|e| Self::unavailable("DeleteMessage")(e.into()))?;
            done.push(letter);
        }
        Ok((done, missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_valid_and_bounded() {
        assert_eq!(dedup_id(&["stripe", "evt_1"]), "stripe:evt_1");
        assert_eq!(dedup_id(&["a b"]), "a_b");
        assert_eq!(dedup_id(&[&"x".repeat(300)]).len(), 64);
    }
}
