//! The reconcile queue (an SQS FIFO queue, one message group per tenant)
//! and the billing queue (billing reconciliation runs and their parts).

use crate::app::ports::{PortError, Queue, SyncRuns};
use crate::core::sources::stripe::SyncRequest;
use crate::core::reconcile::ReconcileRequest;
use aws_sdk_sqs::Client;

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
